"""Points that expire, through the real broker and database with real elapsed time.

Each test runs the receipt consumer and the returns service as ``punchcard serve`` runs
them (consumer loop, outbox relay, expiry job, waiting-return resolver), with lifetimes
of seconds, and reads what a customer would see: the ledger, the balance, ``expiring``,
and the points events on ``punchcard.points.v1``. One numbered rule of CONTRACT.md
section 2 ("Points that expire") per test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from punchcard_coupon_query import queries
from punchcard_devstack import Endpoints
from punchcard_platform.db import Database
from punchcard_platform.expiry import ExpiryJob
from punchcard_platform.kafka import create_topics
from punchcard_platform.settings import Settings
from punchcard_receipt_consumer import service as receipt_consumer
from punchcard_returns import service as returns_service

from tests.conftest import make_settings
from tests.documents import receipt_document, return_document, sale_lines
from tests.helpers import consume, eventually, produce, unique_id
from tests.integration.returns.support import store_sales

pytestmark = pytest.mark.integration


@asynccontextmanager
async def program(
    stack: Endpoints, *, instances: int = 1, **overrides: object
) -> AsyncIterator[Settings]:
    """Both consumers running with these program settings (lifetimes of seconds)."""
    settings = make_settings(
        stack,
        http_port=0,
        points_expiry_check_seconds=0.2,
        batch_wait_ms=20,
        **overrides,
    )
    await create_topics(settings, settings.topics.all())
    stop = asyncio.Event()
    services = [
        asyncio.create_task(receipt_consumer.serve(settings, stop)) for _ in range(instances)
    ]
    services.append(asyncio.create_task(returns_service.serve(settings, stop)))
    try:
        yield settings
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*services), 60)


def iso(moment: datetime) -> str:
    return moment.isoformat()


async def sell(settings: Settings, *documents: dict[str, Any]) -> None:
    await produce(
        settings,
        settings.topics.receipts,
        [(d["transaction_no"].encode(), json.dumps(d).encode()) for d in documents],
    )


async def give_back(settings: Settings, *documents: dict[str, Any]) -> None:
    await produce(
        settings,
        settings.topics.returns,
        [(d["transaction_no"].encode(), json.dumps(d).encode()) for d in documents],
    )


async def points_view(db: Database, customer: str) -> dict[str, Any]:
    """What ``GET /v1/customers/{id}/points`` answers (its query), as plain values."""
    async with db.connection() as conn:
        balance, expiring, rows = await queries.fetch_points(conn, customer, None, 200)
    return {
        "balance": balance,
        "expiring": [(e.expires_at, e.points) for e in expiring],
        "ledger": [(e.kind, e.transaction_no, e.points) for _, e in rows],
    }


async def lots(db: Database, customer: str) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(transaction_no, cause) -> (points, remaining, expired) of each lot."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            """
            SELECT transaction_no, cause, seq, points, remaining, expired FROM points_lots
            WHERE customer_id = $1
            """,
            customer,
        )
    return {
        (r["transaction_no"], f"{r['cause']}#{r['seq']}"): (
            r["points"],
            r["remaining"],
            r["expired"],
        )
        for r in rows
    }


async def explained(db: Database, customer: str) -> tuple[int, int, int]:
    """(balance, sum of the ledger, sum of the lots' remaining less the debt)."""
    async with db.connection() as conn:
        row = await conn.fetchrow(
            """
            SELECT (SELECT balance FROM points_balances WHERE customer_id = $1) AS balance,
                   (SELECT coalesce(sum(points), 0) FROM points_ledger WHERE customer_id = $1)
                       AS ledger,
                   (SELECT coalesce(sum(remaining), 0) FROM points_lots WHERE customer_id = $1)
                   - (SELECT coalesce(debt, 0) FROM points_balances WHERE customer_id = $1)
                       AS lots
            """,
            customer,
        )
    assert row is not None
    return row["balance"], row["ledger"], row["lots"]


async def _accepted(db: Database, transaction_no: str) -> bool:
    async with db.connection() as conn:
        status = await conn.fetchval(
            "SELECT status FROM return_events WHERE transaction_no = $1", transaction_no
        )
    return bool(status == "accepted")


def booked(kind: str, tx: str) -> Callable[[dict[str, Any]], bool]:
    return lambda view: any(e[0] == kind and e[1] == tx for e in view["ledger"])


async def until(
    db: Database, customer: str, done: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        view = await points_view(db, customer)
        return view if done(view) else None

    found = await eventually(probe, timeout=30, what=what)
    assert found is not None
    return found


async def test_earned_points_are_a_lot_that_expires_once_with_one_event(
    stack: Endpoints, db: Database
) -> None:
    """Rules 1, 3, 7: one expire entry and one event per lot, even with two expiry jobs."""
    customer = unique_id("C")
    async with program(stack, instances=2, points_lifetime="PT2S") as settings:
        now = datetime.now(UTC)
        sale = receipt_document(customer, points_earned=100, occurred_at=iso(now))
        await sell(settings, sale)
        view = await until(db, customer, booked("earn", sale["transaction_no"]), "the earn")
        assert view["balance"] == 100
        [(expires_at, points)] = view["expiring"]
        assert points == 100
        assert expires_at == datetime.fromisoformat(iso(now)) + timedelta(seconds=2)

        view = await until(db, customer, booked("expire", sale["transaction_no"]), "the expiry")
        assert view["balance"] == 0
        assert view["expiring"] == []
        assert [e for e in view["ledger"] if e[0] == "expire"] == [
            ("expire", sale["transaction_no"], -100)
        ]
        assert await explained(db, customer) == (0, 0, 0)
        events = await consume(settings, settings.topics.points, count=2)
        mine = [
            json.loads(r.value) for r in events if json.loads(r.value)["customer_id"] == customer
        ]
        assert [(e["kind"], e["points"], e["balance"]) for e in mine] == [
            ("earn", 100, 100),
            ("expire", -100, 0),
        ]
        assert (await lots(db, customer))[(sale["transaction_no"], "sale#0")] == (100, 0, 100)


async def test_a_burn_spends_the_soonest_expiring_first_and_the_rest_becomes_debt_paid_first(
    stack: Endpoints, db: Database
) -> None:
    """Rule 2: soonest first, then older, no expiry last; beyond every lot the balance goes
    negative and the next earn pays it off before it makes a lot."""
    customer = unique_id("C")
    later = datetime.now(UTC) + timedelta(hours=1)
    async with program(stack) as settings:
        late = receipt_document(
            customer, points_earned=100, points_expire_at=iso(later + timedelta(hours=1))
        )
        never = receipt_document(customer, points_earned=100)
        soon = receipt_document(customer, points_earned=100, points_expire_at=iso(later))
        await sell(settings, late, never, soon)
        await until(db, customer, lambda v: v["balance"] == 300, "three earns")
        spend = receipt_document(customer, points_used=150)
        await sell(settings, spend)
        view = await until(db, customer, booked("burn", spend["transaction_no"]), "the burn")
        assert await lots(db, customer) == {
            (soon["transaction_no"], "sale#0"): (100, 0, 0),
            (late["transaction_no"], "sale#0"): (100, 50, 0),
            (never["transaction_no"], "sale#0"): (100, 100, 0),
        }
        assert [p for _, p in view["expiring"]] == [50]

        overspend = receipt_document(customer, points_used=200)
        await sell(settings, overspend)
        view = await until(db, customer, booked("burn", overspend["transaction_no"]), "overspend")
        assert view["balance"] == -50
        assert await explained(db, customer) == (-50, -50, -50)

        earn = receipt_document(customer, points_earned=80, points_expire_at=iso(later))
        await sell(settings, earn)
        view = await until(db, customer, booked("earn", earn["transaction_no"]), "the earn")
        assert view["balance"] == 30
        assert (await lots(db, customer))[(earn["transaction_no"], "sale#0")] == (80, 30, 0)
        assert view["expiring"] == [(later, 30)]


async def test_a_return_never_revokes_points_that_already_expired(
    stack: Endpoints, db: Database
) -> None:
    """Rule 4: the sale's lot expired, so its return takes nothing more; its revoke takes the
    sale's own lot first, before one expiring sooner."""
    customer = unique_id("C")
    async with program(stack) as settings:
        now = datetime.now(UTC)
        gone = receipt_document(
            customer, points_earned=100, points_expire_at=iso(now + timedelta(seconds=1))
        )
        soon = receipt_document(
            customer, points_earned=50, points_expire_at=iso(now + timedelta(hours=1))
        )
        own = receipt_document(
            customer, points_earned=30, points_expire_at=iso(now + timedelta(hours=2))
        )
        await sell(settings, gone, soon, own)
        await until(db, customer, booked("expire", gone["transaction_no"]), "the expiry")

        await give_back(
            settings,
            return_document(gone["transaction_no"]),
            return_document(own["transaction_no"]),
        )
        await eventually(
            lambda: _accepted(db, gone["transaction_no"]), what="the expired sale's return"
        )
        view = await until(db, customer, booked("revoke", own["transaction_no"]), "the revoke")
        assert not booked("revoke", gone["transaction_no"])(view)
        assert view["balance"] == 50
        found = await lots(db, customer)
        assert found[(own["transaction_no"], "sale#0")] == (30, 0, 0)
        assert found[(soon["transaction_no"], "sale#0")] == (50, 50, 0)
        assert await explained(db, customer) == (50, 50, 50)


async def test_restored_points_expire_as_the_lot_they_came_from_but_not_before_the_grace(
    stack: Endpoints, db: Database
) -> None:
    """Rule 5: a far expiry comes back as it was; a near one moves to the grace's end."""
    customer = unique_id("C")
    async with program(stack, points_restore_grace="PT1H") as settings:
        now = datetime.now(UTC)
        near = receipt_document(
            customer, points_earned=40, points_expire_at=iso(now + timedelta(minutes=5))
        )
        far = receipt_document(
            customer, points_earned=60, points_expire_at=iso(now + timedelta(days=9))
        )
        await sell(settings, near, far)
        await until(db, customer, lambda v: v["balance"] == 100, "the earns")
        spend = receipt_document(customer, points_used=100)
        await sell(settings, spend)
        await until(db, customer, booked("burn", spend["transaction_no"]), "the burn")

        await give_back(settings, return_document(spend["transaction_no"]))
        view = await until(db, customer, booked("restore", spend["transaction_no"]), "restore")
        assert view["balance"] == 100
        [(first, forty), (second, sixty)] = view["expiring"]
        assert (forty, sixty) == (40, 60)
        assert now + timedelta(hours=1) <= first <= datetime.now(UTC) + timedelta(hours=1)
        assert second == datetime.fromisoformat(far["points_expire_at"])


async def test_a_partial_return_revokes_its_share_but_no_expired_point(
    stack: Endpoints, db: Database
) -> None:
    """Rule 6: half the sale back revokes half its points, limited to what has not expired."""
    customer = unique_id("C")
    async with program(stack) as settings:
        now = datetime.now(UTC)
        sale = receipt_document(
            customer,
            lines=sale_lines((2, "500")),
            total="500",
            points_earned=100,
            points_expire_at=iso(now + timedelta(hours=1)),
        )
        await sell(settings, sale)
        await until(db, customer, booked("earn", sale["transaction_no"]), "the earn")
        half = return_document(sale["transaction_no"], lines=[(1, 1)])
        await give_back(settings, half)
        view = await until(db, customer, booked("revoke", sale["transaction_no"]), "the revoke")
        assert view["balance"] == 50
        assert view["expiring"][0][1] == 50
        assert await explained(db, customer) == (50, 50, 50)


async def test_another_instance_takes_the_expiry_over_when_the_leader_stops(
    db: Database, settings: Settings
) -> None:
    """One job leads (an advisory lock); when it stops, the one standing by expires the lots."""
    quick = settings.model_copy(update={"points_expiry_check_seconds": 0.2})
    leader, standby = ExpiryJob(quick, db), ExpiryJob(quick, db)
    stop_leader, stop_standby = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(leader.run(stop_leader))
    await eventually(lambda: _leading(db), what="a leader")
    second = asyncio.create_task(standby.run(stop_standby))
    try:
        stop_leader.set()
        await asyncio.wait_for(first, 30)
        customer = unique_id("C")
        soon = datetime.now(UTC) + timedelta(milliseconds=300)
        await store_sales(
            db,
            settings,
            receipt_document(customer, points_earned=7, points_expire_at=iso(soon)),
        )
        view = await until(db, customer, lambda v: v["balance"] == 0, "the expiry")
        assert [e[0] for e in view["ledger"]] == ["expire", "earn"]
        assert standby.expired_lots >= 1
    finally:
        stop_leader.set()
        stop_standby.set()
        await asyncio.wait_for(asyncio.gather(first, second), 30)


async def _leading(db: Database) -> bool:
    async with db.connection() as conn:
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1",
            0x657870697279 & 0xFFFFFFFF,
        )
    return bool(held)
