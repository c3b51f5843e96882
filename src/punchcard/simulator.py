"""A POS fleet simulator (placeholder until the simulator lands)."""

from __future__ import annotations

import argparse

from punchcard_platform.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's options."""
    parser.add_argument("--count", type=int, default=1000)


async def run_simulation(settings: Settings, args: argparse.Namespace) -> int:
    """Publish simulated receipts and returns."""
    raise NotImplementedError
