"""Returns that arrived before their receipt: apply them when it lands, give up after the wait.

Waiting returns are rows (``return_events.status = 'pending'``), so they survive a restart.
The resolver wakes when

- the receipt consumer NOTIFYs ``punchcard_receipts`` (it does so in the transaction that
  stores receipts, so the notification arrives after they are visible),
- the handler has just parked returns (their receipt may have committed between the
  handler's check and its commit, with the NOTIFY already gone),
- the earliest wait is over,
- or, as a safety net for a lost notification, every ``sweep_seconds``.

The LISTEN connection is watched (a termination listener, and a question every few
seconds, since it can die silently) and made again when lost; a sweep follows every new
LISTEN, so what was notified meanwhile is not missed.

It decides with ``handler.apply_pending``, the same code the handler uses, under the
sales' locks (``store.lock_due_returns`` only tries them, skipping sales someone else is
deciding), so several instances share the work, never decide a return twice and always
decide a sale's first return first.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from prometheus_client import Gauge
from punchcard_platform.db import Database, is_retryable, is_unavailable
from punchcard_platform.settings import Settings
from punchcard_platform.waits import wait_for_any

from punchcard_returns import store
from punchcard_returns.handler import apply_pending, count_decisions

__all__ = ["RETURNS_WAITING", "PendingReturnResolver"]

log = structlog.get_logger(__name__)

RETURNS_WAITING = Gauge(
    "punchcard_returns_waiting", "Returns waiting for their receipt, as of the last sweep."
)

_EXPIRY_SLACK_SECONDS = 0.01
"""Wake a little after the earliest wait_until, never just before it."""
_LIVENESS_SECONDS = 5.0
"""How often the LISTEN connection is asked whether it is still there."""
_LIVENESS_TIMEOUT_SECONDS = 3.0


class PendingReturnResolver:
    """Applies or rejects waiting returns; run one per service instance."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        sweep_seconds: float = 5.0,
        batch_size: int = 500,
        retry_seconds: float = 1.0,
    ) -> None:
        """``sweep_seconds`` bounds how late a lost notification can make a return."""
        self._settings = settings
        self._rules = settings.expiry_rules
        self._db = db
        self._sweep_seconds = sweep_seconds
        self._batch_size = batch_size
        self._retry_seconds = retry_seconds
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        """Ask for a sweep now; safe to call from a LISTEN callback or after a commit."""
        self._wakeup.set()

    async def resolve_due(self) -> int:
        """Decide every waiting return that can be decided now; return how many were."""
        decided = 0
        while True:
            async with self._db.transaction() as conn:
                pending = await store.lock_due_returns(conn, self._batch_size)
                applied = await apply_pending(
                    conn, pending, self._settings.topics, rules=self._rules
                )
            count_decisions(applied)
            decided += len(applied.outcomes)
            if len(pending) < self._batch_size or not applied.outcomes:
                return decided

    async def run(self, stop: asyncio.Event) -> None:
        """Listen and sweep until ``stop`` is set; ride out database outages."""
        while not stop.is_set():
            try:
                async with store.listen(self._db, store.RECEIPTS_CHANNEL, self.wake) as listening:
                    await self._serve(stop, listening)
            except Exception as exc:
                if not (is_unavailable(exc) or is_retryable(exc)):
                    raise
                log.warning("waiting returns: database trouble, retrying", error=str(exc))
                await wait_for_any(stop, seconds=self._retry_seconds)

    async def _serve(self, stop: asyncio.Event, listening: store.Listening) -> None:
        checked = time.monotonic()
        while not stop.is_set():
            if not listening.alive:
                raise ConnectionError("the LISTEN connection was lost")
            if time.monotonic() - checked >= _LIVENESS_SECONDS:
                # A LISTEN connection can die silently (asyncpg issue 519): ask it something.
                await listening.check(_LIVENESS_TIMEOUT_SECONDS)
                checked = time.monotonic()
            # Cleared before the sweep: a wake-up during the sweep means sweep again.
            self._wakeup.clear()
            await self.resolve_due()
            async with self._db.connection() as conn:
                waiting, until_expiry = await store.waiting_summary(conn)
            RETURNS_WAITING.set(waiting)
            # Never longer than the liveness check's period, so a dead LISTEN is noticed.
            timeout = min(self._sweep_seconds, _LIVENESS_SECONDS)
            if until_expiry is not None:
                timeout = min(timeout, until_expiry + _EXPIRY_SLACK_SECONDS)
            await wait_for_any(self._wakeup, stop, seconds=timeout)
