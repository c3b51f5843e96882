"""Reservations asked for close together, decided in one transaction.

A reservation's transaction is a few round trips (take the locks, read, write, commit)
whatever the number of reservations in it, and each round trip costs the process and
PostgreSQL more than deciding one more ask. So a process runs one reservation transaction
at a time and starts one at most every ``MIN_BATCH_INTERVAL``; asks that come meanwhile
wait and then go together, up to ``MAX_ASKS`` a transaction. An ask in a quiet process
goes at once (when the event loop next turns), in a transaction of its own.

In a batch the asks are decided in the order they came (``decision.decide``), each
counting the holds of the ones before it: the answers are those they would get one after
another. A deadlock, or a change the batch must not decide on (another transaction
claimed one of its ``Idempotency-Key`` values meanwhile, a coupon was given a
campaign-wide limit after the locks were taken), rolls the whole batch back, and it is
decided again from the start. A transaction that has not committed within ``MAX_WAIT``
is cancelled (it rolls back, nothing is held) and its asks fail with
``DeadlineExceededError``: 503, try again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence

import structlog
from punchcard_platform.db import Database, is_retryable

from punchcard_coupon_query.metrics import RESERVATION_BATCH_ASKS
from punchcard_coupon_query.problems import DeadlineExceededError, QueueFullError
from punchcard_coupon_query.reservations import store
from punchcard_coupon_query.reservations.decision import Ask, Made, Outcome, decide

__all__ = ["ReservationBatcher"]

log = structlog.get_logger(__name__)


class _DecideAgainError(Exception):
    """The batch met a change it must not decide on: roll back and decide it again."""


class ReservationBatcher:
    """Each process's one way to make reservations (see the module)."""

    MAX_ASKS = 64
    MIN_BATCH_INTERVAL = 0.003
    """Seconds between the starts of two reservation transactions of one process, at least."""
    MAX_WAITING = 1_000
    """Asks a process lets queue; beyond that they fail at once with ``QueueFullError``."""
    MAX_WAIT = 5.0
    """Seconds a batch's transaction may take before it is cancelled."""
    ATTEMPTS = 5

    def __init__(self, db: Database) -> None:
        self._db = db
        self._waiting: list[tuple[Ask, asyncio.Future[Outcome]]] = []
        self._running: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_start = -self.MIN_BATCH_INTERVAL

    def reserve(self, ask: Ask) -> asyncio.Future[Outcome]:
        """The ask's outcome, once its batch has committed (or failed, with why)."""
        answer: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if len(self._waiting) >= self.MAX_WAITING:
            answer.set_exception(QueueFullError(f"{len(self._waiting)} reservations already wait"))
            return answer
        self._waiting.append((ask, answer))
        self._schedule()
        return answer

    def _schedule(self) -> None:
        """Start the next batch now, or when the interval since the last one has passed."""
        if self._running is not None or self._timer is not None or not self._waiting:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_start + self.MIN_BATCH_INTERVAL - loop.time()
        if wait > 0:
            self._timer = loop.call_later(wait, self._start)
        else:
            self._start()

    def _start(self) -> None:
        self._timer = None
        self._last_start = asyncio.get_running_loop().time()
        self._running = asyncio.create_task(self._run())
        self._running.add_done_callback(self._finished)

    def _finished(self, _: asyncio.Task[None]) -> None:
        self._running = None
        self._schedule()

    async def _run(self) -> None:
        # The batch is taken when the task runs, so asks that came meanwhile go with it.
        batch = [(a, f) for a, f in self._waiting[: self.MAX_ASKS] if not f.done()]
        del self._waiting[: self.MAX_ASKS]
        if not batch:
            return
        RESERVATION_BATCH_ASKS.observe(len(batch))
        try:
            async with asyncio.timeout(self.MAX_WAIT):
                outcomes = await self._decide([ask for ask, _ in batch])
        except TimeoutError:
            late = DeadlineExceededError("the reservation was not decided in time; try again")
            _fail(batch, late)
        except (Exception, asyncio.CancelledError) as exc:
            _fail(batch, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            for (_, answer), outcome in zip(batch, outcomes, strict=True):
                if not answer.done():
                    answer.set_result(outcome)

    async def _decide(self, asks: Sequence[Ask]) -> list[Outcome]:
        for attempt in range(1, self.ATTEMPTS + 1):
            try:
                async with self._db.transaction() as conn:
                    return await _decided(conn, asks)
            except Exception as exc:
                if attempt == self.ATTEMPTS or not (
                    isinstance(exc, _DecideAgainError) or is_retryable(exc)
                ):
                    raise
                log.info("reservations_decided_again", attempt=attempt, reason=str(exc))
        raise AssertionError("unreachable")  # pragma: no cover


async def _decided(conn: store.Connection, asks: Sequence[Ask]) -> list[Outcome]:
    """Lock, read, decide, write: the batch's transaction, on ``conn``."""
    locked = await store.lock(conn, asks)
    found = await store.read(conn, asks)
    if not found.capped <= locked:
        raise _DecideAgainError("a coupon was given a campaign-wide limit meanwhile")
    outcomes = decide(asks, found.seen, now=found.now, new_ids=_new_ids())
    holds = [outcome.hold for outcome in outcomes if isinstance(outcome, Made)]
    if holds and await store.write(conn, holds) != len(holds):
        raise _DecideAgainError("another request claimed an Idempotency-Key meanwhile")
    return outcomes


def _new_ids() -> Iterator[str]:
    while True:
        yield str(uuid.uuid4())


def _fail(batch: Sequence[tuple[Ask, asyncio.Future[Outcome]]], exc: BaseException) -> None:
    for _, answer in batch:
        if not answer.done():
            if isinstance(exc, asyncio.CancelledError):
                answer.cancel()
            else:
                answer.set_exception(exc)
