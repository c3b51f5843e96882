"""Waiting for the first of several events, or a timeout: how every background loop sleeps."""

from __future__ import annotations

import asyncio

__all__ = ["wait_for_any"]


async def wait_for_any(*events: asyncio.Event, seconds: float) -> None:
    """Return when any of ``events`` is set or ``seconds`` have passed, whichever is first."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
