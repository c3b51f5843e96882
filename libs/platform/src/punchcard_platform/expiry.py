"""The expiry job: expires the lots whose time has come, once each, whoever runs it.

Every receipt-consumer instance runs one; a session advisory lock elects the one that
works, and another takes over when its connection goes. Each round takes the customers
of the soonest lots due (a bounded batch), locks them as every writer of points does,
and lets the ledger expire their due lots in one transaction with the output events in
the outbox. A lot is expired once: the ledger's entry for it is unique, its remaining
points go to zero in the same transaction, and a booking that meets a due lot first
expires it the same way, so the job and the consumers can never both do it.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

import asyncpg
import structlog

from punchcard_platform import ledger
from punchcard_platform.db import Database, is_unavailable, lock_customers
from punchcard_platform.ledger import store
from punchcard_platform.metrics import POINTS_EXPIRED, POINTS_EXPIRY_OVERDUE
from punchcard_platform.outbox import outbox_messages, write_outbox
from punchcard_platform.settings import Settings
from punchcard_platform.waits import wait_for_any

__all__ = ["ExpiryJob"]

log = structlog.get_logger(__name__)

_LEADER_LOCK_KEY = 0x657870697279  # "expiry"


class ExpiryJob:
    """Expire due points lots every ``points_expiry_check_seconds``, leader-elected."""

    def __init__(
        self, settings: Settings, db: Database, *, batch_lots: int = 2000, workers: int = 2
    ) -> None:
        self._settings = settings
        self._db = db
        self._batch_lots = batch_lots
        self._workers = workers
        self._wake = asyncio.Event()
        self.expired_lots = 0

    def wake(self) -> None:
        """Look now instead of at the next check."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Expire lots until ``stop`` is set, surviving database outages."""
        while not stop.is_set():
            try:
                await self._lead(stop)
            except Exception as exc:
                if is_unavailable(exc) or isinstance(exc, asyncpg.PostgresError):
                    log.warning("expiry job lost the database; retrying", error=str(exc))
                else:
                    log.exception("expiry job failed; restarting it")
                await self._wait(stop, 1.0)

    async def _lead(self, stop: asyncio.Event) -> None:
        async with self._db.connection() as leader:
            try:
                while not stop.is_set():
                    if await leader.fetchval("SELECT pg_try_advisory_lock($1)", _LEADER_LOCK_KEY):
                        break
                    # Another instance expires; stand by in case it goes away.
                    await self._wait(stop, self._settings.points_expiry_check_seconds)
                while not stop.is_set():
                    await self.expire_due()
                    await self._wait(stop, self._settings.points_expiry_check_seconds)
            finally:
                with contextlib.suppress(Exception):
                    await leader.execute("SELECT pg_advisory_unlock($1)", _LEADER_LOCK_KEY)

    async def expire_due(self) -> int:
        """Expire every lot due now, a batch per transaction; how many lots expired.

        The customers are split among ``workers`` by a hash, each worker with its own
        transactions: while one waits on PostgreSQL the other builds its batch, so a month's
        end of lots uses both the database's core and this process's.
        """
        counts = await asyncio.gather(*(self._drain(k) for k in range(self._workers)))
        await self._measure_overdue()
        return sum(counts)

    async def _drain(self, shard: int) -> int:
        lots = 0
        while (expired := await self._expire_batch(shard)) is not None:
            lots += expired
        return lots

    async def _expire_batch(self, shard: int) -> int | None:
        """Expire the due lots of the customers of the soonest ones; None: nothing was due."""
        async with self._db.transaction() as conn:
            now: datetime = await conn.fetchval("SELECT clock_timestamp()")
            customers = await store.customers_with_lots_due(
                conn, now, self._batch_lots, shard=(shard, self._workers)
            )
            if not customers:
                return None
            await lock_customers(conn, customers)
            now = await conn.fetchval("SELECT clock_timestamp()")
            booked = await ledger.expire_due(conn, customers, now=now)
            await write_outbox(conn, outbox_messages(booked.expiries, self._settings.topics))
        expired = booked.posted.expiries()
        POINTS_EXPIRED.inc(-sum(entry.points for entry in expired))
        self.expired_lots += len(expired)
        if expired:
            log.info("points expired", lots=len(expired), customers=len(customers))
        return len(expired)

    async def _measure_overdue(self) -> None:
        async with self._db.connection() as conn:
            overdue = await conn.fetchval(
                """
                SELECT coalesce(extract(epoch FROM clock_timestamp() - min(expires_at)), 0)
                FROM points_lots WHERE remaining > 0 AND expires_at <= clock_timestamp()
                """
            )
        POINTS_EXPIRY_OVERDUE.set(float(overdue))

    async def _wait(self, stop: asyncio.Event, seconds: float) -> None:
        await wait_for_any(stop, self._wake, seconds=seconds)
        self._wake.clear()
