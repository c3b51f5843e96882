"""The list batcher's bounds, over a database that stalls or answers at will (no PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg
import pytest
from prometheus_client import REGISTRY
from punchcard_coupon_query.hotroute.batcher import CouponListBatcher
from punchcard_coupon_query.metrics import LIST_SHED
from punchcard_coupon_query.problems import DeadlineExceededError, QueueFullError
from punchcard_platform.db import Database


class _Connection:
    """Answers the list statements with an empty catalog, noting who was asked for."""

    def __init__(self, asked: list[str], release: asyncio.Event) -> None:
        self._asked = asked
        self._release = release

    async def fetch(self, query: str, customers: str | list[str]) -> list[Any]:
        """No coupons for anyone, once the database is let go."""
        if isinstance(customers, str):  # the one-customer statement: a row per coupon
            self._asked.append(customers)
            await self._release.wait()
            return []
        self._asked.extend(customers)
        await self._release.wait()
        # The several-customer statement: the catalog's row, then one row per customer.
        return [
            (0, [], None, [], None, None),
            *((n, None, None, [], None, None) for n in range(1, len(customers) + 1)),
        ]


class FakeDatabase(Database):
    """A database whose statements wait until ``release`` is set: stalled until then."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.release = asyncio.Event()
        self.connections = 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection whose ``fetch`` waits for ``release``."""
        self.connections += 1
        yield cast("asyncpg.Connection", _Connection(self.asked, self.release))


def shed(reason: str) -> float:
    """How many requests were shed for ``reason`` so far in this process."""
    LIST_SHED.labels(reason)  # so the series exists before its first increment
    value = REGISTRY.get_sample_value("punchcard_coupon_query_list_shed_total", {"reason": reason})
    assert value is not None
    return value


async def test_a_request_is_failed_at_its_deadline_while_the_query_hangs() -> None:
    """The database never answers: the future fails with DeadlineExceededError in MAX_WAIT."""
    db = FakeDatabase()
    batcher = CouponListBatcher(db, max_wait=0.1)
    before = shed("deadline")
    listed = batcher.fetch("C1")
    with pytest.raises(DeadlineExceededError):
        await asyncio.wait_for(listed, timeout=2)
    assert shed("deadline") == before + 1


async def test_requests_queued_behind_a_stuck_query_are_failed_at_their_own_deadlines() -> None:
    """Queued requests never outwait MAX_WAIT, though the query before them is stuck."""
    db = FakeDatabase()
    batcher = CouponListBatcher(db, max_wait=0.2)
    loop = asyncio.get_running_loop()
    first = batcher.fetch("C1")
    await asyncio.sleep(0.05)
    started = loop.time()
    queued = [batcher.fetch(f"C{n}") for n in range(2, 6)]
    results = await asyncio.wait_for(
        asyncio.gather(first, *queued, return_exceptions=True), timeout=2
    )
    assert all(isinstance(result, DeadlineExceededError) for result in results)
    assert loop.time() - started < 0.2 + 0.1


async def test_requests_beyond_the_queue_bound_are_refused_at_once() -> None:
    """With MAX_WAITING queued, the next one fails with QueueFullError before any wait."""
    db = FakeDatabase()
    batcher = CouponListBatcher(db, max_wait=5, max_waiting=3)
    batcher.fetch("C0")  # in flight, stuck
    await asyncio.sleep(0)
    queued = [batcher.fetch(f"C{n}") for n in range(1, 4)]
    before = shed("queue_full")
    refused = batcher.fetch("C4")
    assert refused.done()
    assert isinstance(refused.exception(), QueueFullError)
    assert shed("queue_full") == before + 1
    assert not any(answer.done() for answer in queued)
    db.release.set()
    assert await asyncio.wait_for(asyncio.gather(*queued), timeout=2) == [[], [], []]


async def test_a_request_whose_client_left_is_left_out_of_the_next_query() -> None:
    """A cancelled future (the protocol cancels it when the client goes) is not asked for."""
    db = FakeDatabase()
    db.release.set()
    batcher = CouponListBatcher(db)
    await batcher.fetch("C-first")  # the next query now waits for the interval
    gone = batcher.fetch("C-gone")
    kept = batcher.fetch("C-kept")
    gone.cancel()
    before = shed("client_gone")
    assert await asyncio.wait_for(kept, timeout=2) == []
    assert "C-gone" not in db.asked
    assert "C-kept" in db.asked
    assert shed("client_gone") == before + 1


async def test_a_query_past_its_deadline_no_longer_holds_back_the_next_one() -> None:
    """After a miss the next batch starts on another connection, answered once the database is."""
    db = FakeDatabase()
    batcher = CouponListBatcher(db, max_wait=0.1)
    stuck = batcher.fetch("C1")
    with pytest.raises(DeadlineExceededError):
        await asyncio.wait_for(stuck, timeout=2)
    later = batcher.fetch("C2")
    await asyncio.sleep(0.01)
    assert db.connections == 2
    db.release.set()
    assert await asyncio.wait_for(later, timeout=2) == []
