"""Coupon lists asked for close together, fetched in one query, each within a deadline.

Each query costs the process a round trip's socket writes, reads and wake-ups, and
PostgreSQL a statement execution and a backend wake-up, whatever the number of
customers in it. So a process runs one list query at a time and starts one at most
every ``MIN_QUERY_INTERVAL``; lists asked for meanwhile wait and then go together, up
to ``MAX_CUSTOMERS`` a query. A list asked for when the process has been quiet for that
long is fetched at once (in a task that starts when the event loop next turns, with the
one-customer statement if it is alone).

The busier the process, the fuller its queries, so it spends less per request instead
of queueing without end. One query in flight per process also keeps PostgreSQL's work
on few, busy backends (the measurements behind both are in bench/RESULTS.md).

An app backend at a checkout cannot wait on a database that does not answer, so no
request waits longer than ``MAX_WAIT`` for its list: past it, its future fails with
``DeadlineExceededError`` (503 with ``Retry-After``), whether it was still queued or in
a query that has not returned. A query that misses its deadline is cancelled and no
longer holds the process's query slot (its connection may take a while to come back),
so the next batch starts on another connection, and the first query after the database
answers again serves everyone waiting. At most ``MAX_WAITING`` requests queue; beyond
that they fail at once with ``QueueFullError``. Connections come from ``Database``, so
its acquire timeout and its dropping of stale connections after a failure apply.
"""

from __future__ import annotations

import asyncio
import math
from itertools import islice
from time import perf_counter

from punchcard_platform.db import Database

from punchcard_coupon_query import queries
from punchcard_coupon_query.metrics import LIST_QUERY_SECONDS, LIST_SHED, LIST_WAITING
from punchcard_coupon_query.problems import DeadlineExceededError, QueueFullError

__all__ = ["CouponListBatcher", "ListFuture"]

ListFuture = asyncio.Future[list[queries.CouponCandidate]]
"""A customer's candidate coupons, once their batch's query has returned."""

_SHED_QUEUE_FULL = LIST_SHED.labels("queue_full")
_SHED_DEADLINE = LIST_SHED.labels("deadline")
_SHED_CLIENT_GONE = LIST_SHED.labels("client_gone")
_QUERY_OK = LIST_QUERY_SECONDS.labels("ok")
_QUERY_FAILED = LIST_QUERY_SECONDS.labels("failed")
_QUERY_LATE = LIST_QUERY_SECONDS.labels("deadline")


class _Waiters:
    """The requests waiting for one customer's list, and when the first of them came."""

    __slots__ = ("answers", "since")

    def __init__(self, since: float) -> None:
        self.since = since
        self.answers: list[ListFuture] = []


class _Flight:
    """One query: its waiters, when they must be answered by, and its task."""

    __slots__ = ("batch", "deadline", "holds_slot", "missed", "task")

    def __init__(self, batch: dict[str, _Waiters], deadline: float) -> None:
        self.batch = batch
        self.deadline = deadline
        self.holds_slot = True
        self.missed = False
        self.task: asyncio.Task[None] | None = None


class CouponListBatcher:
    """Each process's one way to the coupon lists of the hot route (see the module)."""

    MAX_QUERIES = 1
    MAX_CUSTOMERS = 64
    MIN_QUERY_INTERVAL = 0.002
    """Seconds between the starts of two list queries of one process, at least."""
    MAX_WAIT = 2.0
    """Seconds a request may wait for its list, queue and query together."""
    MAX_WAITING = 1_000
    """Requests a process lets queue for a query; a healthy one has a few dozen at most."""

    def __init__(
        self, reads: Database, *, max_wait: float | None = None, max_waiting: int | None = None
    ) -> None:
        self._reads = reads
        self._max_wait = self.MAX_WAIT if max_wait is None else max_wait
        self._max_waiting = self.MAX_WAITING if max_waiting is None else max_waiting
        # In the order the customers were first asked for, so the oldest come first.
        self._waiting: dict[str, _Waiters] = {}
        self._queued = 0
        self._queries = 0
        self._flights: set[_Flight] = set()
        self._last_start = -self.MIN_QUERY_INTERVAL
        self._timer: asyncio.TimerHandle | None = None
        # One timer for every deadline, queued or in a query, armed for the earliest: a
        # timer per query cost as much as the rest of a one-customer query's bookkeeping.
        self._watchdog: asyncio.TimerHandle | None = None
        LIST_WAITING.set_function(lambda: self._queued)

    def fetch(self, customer_id: str) -> ListFuture:
        """The customer's candidate coupons, as ``queries.fetch_customer_coupons`` gives them.

        A future rather than a coroutine, so the HTTP protocol can answer from a callback
        without a task per request. It fails with a ``ServiceBusyError`` when the request
        is shed. Cancel it when the client goes: it is then left out of the next query.
        """
        loop = asyncio.get_running_loop()
        answer: ListFuture = loop.create_future()
        if self._queued >= self._max_waiting:
            _SHED_QUEUE_FULL.inc()
            answer.set_exception(
                QueueFullError(f"{self._queued} requests already wait for the database")
            )
            return answer
        waiters = self._waiting.get(customer_id)
        if waiters is None:
            waiters = self._waiting[customer_id] = _Waiters(loop.time())
        waiters.answers.append(answer)
        self._queued += 1
        self._start_batch()
        if self._watchdog is None and self._waiting:
            self._watch(next(iter(self._waiting.values())).since + self._max_wait)
        return answer

    def _start_batch(self) -> None:
        """Start a query for the waiting lists if one may start now, or when it may."""
        loop = asyncio.get_running_loop()
        while self._waiting and self._queries < self.MAX_QUERIES:
            due = self._last_start + self.MIN_QUERY_INTERVAL
            if loop.time() < due:
                if self._timer is None:
                    self._timer = loop.call_at(due, self._on_timer)
                return
            batch: dict[str, _Waiters] = {}
            for customer_id in list(islice(self._waiting, self.MAX_CUSTOMERS)):
                waiters = self._waiting.pop(customer_id)
                self._queued -= len(waiters.answers)
                waiters.answers = _still_waiting(waiters.answers)
                if waiters.answers:
                    batch[customer_id] = waiters
            if not batch:
                continue
            self._last_start = loop.time()
            self._queries += 1
            # The batch came from the front of the queue: its first customer waited longest.
            flight = _Flight(batch, next(iter(batch.values())).since + self._max_wait)
            self._flights.add(flight)
            flight.task = loop.create_task(self._fetch_batch(flight))
            if self._watchdog is None:
                self._watch(flight.deadline)

    def _on_timer(self) -> None:
        self._timer = None
        # The interval is over, whatever uvloop's millisecond clock says: compared again,
        # it can read a hair early, and the timer would spin until the next millisecond.
        self._last_start = -math.inf
        self._start_batch()

    def _watch(self, when: float) -> None:
        """Have ``_check_deadlines`` run at ``when``, unless it already runs no later."""
        if self._watchdog is not None:
            if self._watchdog.when() <= when:
                return
            self._watchdog.cancel()
        self._watchdog = asyncio.get_running_loop().call_at(when, self._check_deadlines)

    def _check_deadlines(self) -> None:
        """Fail every request past its deadline, queued or in a query; watch for the next."""
        self._watchdog = None
        now = asyncio.get_running_loop().time()
        earliest = math.inf
        for flight in list(self._flights):
            if flight.missed:
                continue
            if flight.deadline <= now:
                self._miss_deadline(flight)
            else:
                earliest = min(earliest, flight.deadline)
        while self._waiting:
            customer_id, waiters = next(iter(self._waiting.items()))
            if waiters.since + self._max_wait > now:
                earliest = min(earliest, waiters.since + self._max_wait)
                break
            del self._waiting[customer_id]
            self._queued -= len(waiters.answers)
            _SHED_DEADLINE.inc(_fail(waiters.answers, self._late()))
        if earliest < math.inf:
            self._watch(earliest)

    def _late(self) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"the database did not answer within {self._max_wait:g} s; try again"
        )

    def _miss_deadline(self, flight: _Flight) -> None:
        """Answer a query's waiters that it is too late, let the next query start, and
        cancel this one (``_fetch_lists`` turns that into a timeout ``Database`` sees)."""
        flight.missed = True
        late = self._late()
        _SHED_DEADLINE.inc(sum(_fail(w.answers, late) for w in flight.batch.values()))
        self._release(flight)
        if flight.task is not None:
            flight.task.cancel()

    def _release(self, flight: _Flight) -> None:
        if flight.holds_slot:
            flight.holds_slot = False
            self._queries -= 1
            self._start_batch()

    async def _fetch_batch(self, flight: _Flight) -> None:
        batch = flight.batch
        started = perf_counter()
        timing = _QUERY_FAILED
        try:
            lists = await self._fetch_lists(flight)
        except TimeoutError:
            timing = _QUERY_LATE
            _SHED_DEADLINE.inc(sum(_fail(w.answers, self._late()) for w in batch.values()))
        except asyncio.CancelledError:
            if not flight.missed:
                raise  # shutting down
            _uncancel()  # our own cancellation, which has done its job
            timing = _QUERY_LATE
        except Exception as exc:
            for waiters in batch.values():
                _fail(waiters.answers, exc)
        else:
            timing = _QUERY_OK
            for customer_id, waiters in batch.items():
                for answer in waiters.answers:
                    if not answer.done():
                        answer.set_result(lists[customer_id])
        finally:
            timing.observe(perf_counter() - started)
            for waiters in batch.values():  # cancelled (at shutdown): nobody waits forever
                for answer in waiters.answers:
                    answer.cancel()
            self._flights.discard(flight)
            self._release(flight)

    async def _fetch_lists(self, flight: _Flight) -> dict[str, list[queries.CouponCandidate]]:
        customer_ids = list(flight.batch)
        async with self._reads.connection() as conn:
            try:
                if len(customer_ids) == 1:  # the one-customer statement costs PostgreSQL less
                    (customer_id,) = customer_ids
                    return {customer_id: await queries.fetch_customer_coupons(conn, customer_id)}
                return await queries.fetch_many_customer_coupons(conn, customer_ids)
            except asyncio.CancelledError:
                if not flight.missed:
                    raise
                # Missed its deadline: raised as a timeout inside ``Database.connection``,
                # which then drops the pool's idle connections as possibly stale.
                _uncancel()
                raise TimeoutError from None


def _uncancel() -> None:
    """Undo the current task's cancellation request once it has been handled here."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _still_waiting(answers: list[ListFuture]) -> list[ListFuture]:
    """The answers whose clients are still there; the others are counted as dropped."""
    waiting = [answer for answer in answers if not answer.done()]
    if len(waiting) < len(answers):
        _SHED_CLIENT_GONE.inc(len(answers) - len(waiting))
    return waiting


def _fail(answers: list[ListFuture], failure: Exception) -> int:
    """Fail every answer not given yet with ``failure``; how many were."""
    failed = 0
    for answer in answers:
        if not answer.done():
            answer.set_exception(failure)
            failed += 1
    return failed
