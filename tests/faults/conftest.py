"""The fault suite: its own Kafka and PostgreSQL (it restarts them), and the summary table.

``make test`` collects these files but deselects them: a fault run takes minutes and
restarts the broker under everyone's feet. ``make faults`` sets ``PUNCHCARD_FAULTS=1``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from punchcard_devstack import DevStack

from tests.faults.harness import RECOVERY_LIMIT_SECONDS, Result
from tests.stacks import running_stack

# The suite's own clients see every broker restart; their reconnect chatter is not news.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

RESULTS: list[Result] = []
"""Every scenario run in this session, in order, for the table at the end."""

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave the fault scenarios out unless ``PUNCHCARD_FAULTS=1`` (``make faults``) asks."""
    if os.environ.get("PUNCHCARD_FAULTS") == "1":
        return
    faults = [item for item in items if _HERE in item.path.parents]
    if faults:
        config.hook.pytest_deselected(items=faults)
        items[:] = [item for item in items if _HERE not in item.path.parents]


@pytest.fixture(scope="session")
def fault_stack() -> Iterator[DevStack]:
    """A broker and a database of the fault run's own, which its scenarios kill and restart."""
    with running_stack(own=True, durable=True) as devstack:
        yield devstack


@pytest.fixture(scope="session")
def fault_cluster() -> Iterator[DevStack]:
    """Three Kafka nodes (replication 3, min.insync.replicas 2) and a database of their own."""
    with running_stack(own=True, durable=True, brokers=3) as devstack:
        yield devstack


def table(results: list[Result]) -> str:
    """The results as a Markdown table."""
    head = (
        "| scenario | records | lost | doubled | wrong | missing events | "
        "returns out of order | repeated publications | seconds to recover | "
        "exits by themselves | lots expired | reservations granted | over-reserved |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    )
    rows = []
    for r in results:
        seconds = r.recover_seconds
        shown = (
            "-" if seconds is None else ("never" if seconds == float("inf") else f"{seconds:.1f}")
        )
        rows.append(
            f"| {r.scenario} | {r.records} | {r.lost} | {r.doubled} | {r.wrong} | "
            f"{r.missing_events} | {r.out_of_order} | {r.repeated} | {shown} | "
            f"{r.unexpected_exits} | {r.expired_lots} | {r.reservations} | {r.over_reserved} |"
        )
    return "\n".join([head, *rows])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the table once every scenario has run."""
    if not RESULTS:
        return
    terminalreporter.write_sep("=", "fault scenarios")
    terminalreporter.write_line(table(RESULTS))
    terminalreporter.write_line(
        f"seconds to recover: after the broker or database answered again, until everything "
        f"published before then was applied and relayed (limit {RECOVERY_LIMIT_SECONDS:.0f}s)"
    )
    for r in RESULTS:
        for detail in r.details:
            terminalreporter.write_line(f"{r.scenario}: {detail}")
