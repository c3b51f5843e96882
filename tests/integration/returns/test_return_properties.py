"""Random interleavings of sales, returns, repeats and redeliveries keep the books exact."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st
from punchcard_platform.db import Database, is_retryable
from punchcard_platform.settings import Settings
from punchcard_returns.handler import ReturnHandler
from punchcard_returns.waiting import PendingReturnResolver

from tests.documents import receipt_document, return_document
from tests.helpers import unique_id
from tests.integration.returns.support import (
    add_coupon,
    send_returns,
    store_sales,
)

SALES = 4
RETURNS_PER_SALE = 3


@dataclass(frozen=True)
class Sale:
    customer: int | None
    coupons: tuple[tuple[int, int], ...]
    points_used: int
    points_earned: int


@st.composite
def sales(draw: st.DrawFn) -> Sale:
    customer = draw(st.sampled_from([0, 0, 1, None]))
    coupons = draw(
        st.lists(
            st.tuples(st.integers(0, 2), st.integers(1, 3)), max_size=3, unique_by=lambda c: c[0]
        )
    )
    points = st.integers(0, 50) if customer is not None else st.just(0)
    return Sale(customer, tuple(coupons), draw(points), draw(points))


sale_index = st.integers(0, SALES - 1)
a_return = st.tuples(sale_index, st.integers(0, RETURNS_PER_SALE - 1))
steps: st.SearchStrategy[tuple[str, list[Any]]] = st.one_of(
    st.tuples(st.just("receipts"), st.lists(sale_index, min_size=1, max_size=SALES)),
    st.tuples(st.just("returns"), st.lists(a_return, min_size=1, max_size=3)),
    st.tuples(st.just("concurrent"), st.lists(a_return, min_size=2, max_size=3)),
    st.tuples(st.just("sweep"), st.just([])),
)


@examples(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plan=st.lists(sales(), min_size=SALES, max_size=SALES),
    script=st.lists(steps, min_size=3, max_size=12),
)
def test_any_interleaving_keeps_every_return_once_and_the_books_exact(
    settings: Settings, plan: list[Sale], script: list[tuple[str, list[Any]]]
) -> None:
    """No sale restored twice; balance == ledger; uses == uses of sales not returned."""
    # One event loop per example; ids are fresh per example, the (created) topics are shared.
    asyncio.run(_run(settings, plan, script))


async def _run(config: Settings, plan: list[Sale], script: list[tuple[str, list[Any]]]) -> None:
    db = await Database.connect(config.database_url, max_size=6)
    try:
        world = _World(unique_id("P"), plan)
        # Coupon 0 is not in the catalog, 1 is never restored, 2 allows one use.
        await add_coupon(db, world.coupon(1), restore_on_return=False)
        await add_coupon(db, world.coupon(2), uses_permitted=1)
        handlers = [ReturnHandler(config, db), ReturnHandler(config, db)]
        resolver = PendingReturnResolver(config, db)
        for kind, items in script:
            if kind == "receipts":
                await store_sales(db, config, *(world.sale(i) for i in items))
                world.stored.update(items)
            elif kind == "returns":
                await send_returns(handlers[0], config, *(world.return_of(*r) for r in items))
            elif kind == "concurrent":
                await asyncio.gather(
                    *(
                        _retrying(
                            partial(send_returns, handlers[n % 2], config, world.return_of(*r))
                        )
                        for n, r in enumerate(items)
                    )
                )
            else:
                await resolver.resolve_due()
        await resolver.resolve_due()
        await _check(db, config, world)
    finally:
        await db.close()


class _World:
    """The scenario's ids and what it has sent."""

    def __init__(self, prefix: str, plan: list[Sale]) -> None:
        self.prefix = prefix
        self.plan = plan
        self.stored: set[int] = set()
        self.returns_sent: set[tuple[int, int]] = set()

    def customer(self, n: int | None) -> str | None:
        return None if n is None else f"{self.prefix}-C{n}"

    def coupon(self, n: int) -> str:
        return f"{self.prefix}-K{n}"

    def transaction(self, i: int) -> str:
        return f"{self.prefix}-T{i}"

    def sale(self, i: int) -> dict[str, Any]:
        sale = self.plan[i]
        document = receipt_document(
            self.customer(sale.customer),
            transaction_no=self.transaction(i),
            coupons=[(self.coupon(k), n) for k, n in sale.coupons],
            points_used=sale.points_used,
            points_earned=sale.points_earned,
        )
        document["event_id"] = f"{self.prefix}-E{i}"  # a redelivery, not a conflict
        return document

    def return_of(self, i: int, j: int) -> dict[str, Any]:
        self.returns_sent.add((i, j))
        return return_document(self.transaction(i), event_id=f"{self.prefix}-R{i}-{j}")


async def _retrying(apply: Callable[[], Awaitable[None]]) -> None:
    """Retry deadlocks as the consumer loop does."""
    for _ in range(10):
        try:
            await apply()
        except Exception as exc:
            if not is_retryable(exc):
                raise
        else:
            return
    raise AssertionError("still deadlocking after 10 attempts")


async def _check(db: Database, config: Settings, world: _World) -> None:
    like = f"{world.prefix}-%"
    async with db.connection() as conn:
        events = await conn.fetch(
            "SELECT event_id, transaction_no, status FROM return_events"
            " WHERE transaction_no LIKE $1",
            like,
        )
        receipts = {
            row["transaction_no"]: row["return_event_id"]
            for row in await conn.fetch(
                "SELECT transaction_no, return_event_id FROM receipts WHERE transaction_no LIKE $1",
                like,
            )
        }
        outcomes = await conn.fetch(
            "SELECT payload FROM outbox WHERE topic = $1 AND key LIKE $2",
            config.topics.return_outcomes,
            like,
        )
        ledger = await conn.fetch(
            "SELECT customer_id, transaction_no, kind, points FROM points_ledger"
            " WHERE transaction_no LIKE $1",
            like,
        )
        balances: dict[str, int] = {
            row["customer_id"]: row["balance"]
            for row in await conn.fetch(
                "SELECT customer_id, balance FROM points_balances WHERE customer_id LIKE $1", like
            )
        }
        usage = {
            (row["customer_id"], row["coupon_id"]): row["uses_made"]
            for row in await conn.fetch(
                "SELECT customer_id, coupon_id, uses_made FROM coupon_usage"
                " WHERE customer_id LIKE $1",
                like,
            )
        }

    sent = {f"{world.prefix}-R{i}-{j}" for i, j in world.returns_sent}
    assert {row["event_id"] for row in events} == sent
    assert {row["status"] for row in events} <= {"pending", "accepted", "rejected"}
    returned: set[int] = set()
    for i in range(SALES):
        tx = world.transaction(i)
        states = [row["status"] for row in events if row["transaction_no"] == tx]
        accepted = [
            row["event_id"]
            for row in events
            if row["transaction_no"] == tx and row["status"] == "accepted"
        ]
        if i not in world.stored:
            assert set(states) <= {"pending"}
        elif states:
            assert len(accepted) == 1, f"{tx}: {states}"
            assert receipts[tx] == accepted[0]
            assert "pending" not in states
            returned.add(i)
        else:
            assert receipts[tx] is None
    decided = [row["event_id"] for row in events if row["status"] != "pending"]
    published = [json.loads(row["payload"])["return_event_id"] for row in outcomes]
    assert sorted(published) == sorted(decided), "one outcome per decided return"
    assert not [
        key for key, n in Counter((r["transaction_no"], r["kind"]) for r in ledger).items() if n > 1
    ]

    for n in (0, 1):
        customer = world.customer(n)
        assert customer is not None
        mine = [world.plan[i] for i in world.stored if world.plan[i].customer == n]
        booked = sum(r["points"] for r in ledger if r["customer_id"] == customer)
        assert balances.get(customer, 0) == booked
        expected = sum(
            s.points_earned - s.points_used
            for i, s in enumerate(world.plan)
            if i in world.stored and i not in returned and s.customer == n
        )
        assert booked == expected
        for k in range(3):
            still_counted = sum(
                uses
                for i, s in enumerate(world.plan)
                if i in world.stored and s.customer == n and (i not in returned or k == 1)
                for coupon, uses in s.coupons
                if coupon == k
            )
            assert usage.get((customer, world.coupon(k)), 0) == still_counted, (n, k, mine)
