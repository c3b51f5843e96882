"""Random interleavings of receipts, redeliveries and conflicts, checked against invariants."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from punchcard_devstack import Endpoints
from punchcard_platform.db import Database
from punchcard_platform.kafka import create_topics
from punchcard_platform.settings import Settings, TopicNames
from punchcard_receipt_consumer.handler import ReceiptHandler

from tests.documents import receipt_document, redelivery_of
from tests.helpers import unique_id
from tests.integration.receipts.support import (
    Feeder,
)

pytestmark = pytest.mark.integration

CUSTOMERS = 3
COUPONS = 3


@dataclass(frozen=True)
class Sale:
    """A sale by customer index (None: anonymous) with coupon uses by coupon index."""

    customer: int | None
    coupons: dict[int, int]
    used: int
    earned: int


@dataclass(frozen=True)
class Plan:
    """Which version of which sale is delivered when, cut into batches."""

    sales: list[Sale]
    deliveries: list[tuple[int, int]]  # (sale index, version: 0 the original, >0 a conflict)
    batches: list[int]  # batch sizes, summing to len(deliveries)


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    """Each sale sent 1 to 3 times, plus up to 2 conflicting versions, shuffled and batched."""
    sales = draw(
        st.lists(
            st.builds(
                Sale,
                customer=st.none() | st.integers(0, CUSTOMERS - 1),
                coupons=st.dictionaries(st.integers(0, COUPONS - 1), st.integers(1, 3), max_size=2),
                used=st.integers(0, 50),
                earned=st.integers(0, 50),
            ),
            min_size=1,
            max_size=6,
        )
    )
    deliveries = []
    for index in range(len(sales)):
        deliveries += [(index, 0)] * draw(st.integers(1, 3))
        deliveries += [(index, version) for version in range(1, draw(st.integers(0, 2)) + 1)]
    deliveries = draw(st.permutations(deliveries))
    batches: list[int] = []
    left = len(deliveries)
    while left:
        size = draw(st.integers(1, left))
        batches.append(size)
        left -= size
    return Plan(sales, deliveries, batches)


def version_of(sale: Sale, version: int) -> Sale:
    """A conflicting version differs in points (or, if anonymous, only in its total)."""
    if version == 0 or sale.customer is None:
        return sale
    return Sale(sale.customer, sale.coupons, sale.used, sale.earned + version)


def document(
    sale: Sale, version: int, transaction_no: str, customers: list[str], coupons: list[str]
) -> dict[str, Any]:
    """The JSON a POS would send for this version of the sale."""
    chosen = version_of(sale, version)
    customer = None if chosen.customer is None else customers[chosen.customer]
    return receipt_document(
        customer,
        transaction_no=transaction_no,
        coupons=[(coupons[c], n) for c, n in chosen.coupons.items()],
        points_used=0 if customer is None else chosen.used,
        points_earned=0 if customer is None else chosen.earned,
        total=str(1980 + version),
    )


async def run_plan(stack: Endpoints, plan: Plan) -> None:
    """Deliver the plan batch by batch through one handler, then check the invariants."""
    customers = [unique_id("C") for _ in range(CUSTOMERS)]
    coupons = [unique_id("K") for _ in range(COUPONS)]
    transactions = [unique_id("TX") for _ in plan.sales]
    suffix = unique_id("t")
    # Output topics of this example's own, so no other test's relay or reader meets its rows.
    topics = TopicNames.suffixed(suffix)
    # Created, because a relay of another test publishes every outbox row it finds.
    await create_topics(
        Settings(kafka_bootstrap_servers=stack.bootstrap_servers, topics=topics),
        [topics.coupon_usage, topics.points],
        partitions=1,
    )
    db = await Database.connect(stack.database_url, max_size=2)
    try:
        handler = ReceiptHandler(db, topics)
        feeder = Feeder(handler, topics.receipts)
        originals = {
            i: document(sale, 0, transactions[i], customers, coupons)
            for i, sale in enumerate(plan.sales)
        }

        standing: dict[int, int] = {}
        expected_dead: list[int] = []
        dead: list[int] = []
        offset = 0
        start = 0
        for size in plan.batches:
            docs = []
            for index, version in plan.deliveries[start : start + size]:
                if version == 0:
                    docs.append(redelivery_of(originals[index]))
                else:
                    docs.append(
                        document(
                            plan.sales[index], version, transactions[index], customers, coupons
                        )
                    )
                if standing.setdefault(index, version) != version:
                    expected_dead.append(offset)
                offset += 1
            start += size
            letters = await handler.apply(feeder.batch(*docs))
            dead += [letter.record.offset for letter in letters]

        # Every input was applied once, ignored as a redelivery, or dead-lettered.
        assert sorted(dead) == expected_dead

        stood = {i: version_of(plan.sales[i], v) for i, v in standing.items()}
        want_uses: Counter[tuple[str, str]] = Counter()
        want_balance: Counter[str] = Counter()
        for sale in stood.values():
            if sale.customer is None:
                continue
            for coupon, uses in sale.coupons.items():
                want_uses[customers[sale.customer], coupons[coupon]] += uses
            want_balance[customers[sale.customer]] += sale.earned - sale.used

        async with db.connection() as conn:
            stored = await conn.fetch(
                "SELECT customer_id, coupons, total FROM receipts"
                " WHERE transaction_no = ANY($1::text[])",
                transactions,
            )
            usage = await conn.fetch(
                "SELECT customer_id, coupon_id, uses_made FROM coupon_usage"
                " WHERE customer_id = ANY($1::text[])",
                customers,
            )
            balances = await conn.fetch(
                "SELECT customer_id, balance FROM points_balances"
                " WHERE customer_id = ANY($1::text[])",
                customers,
            )
            ledger = await conn.fetch(
                "SELECT customer_id, sum(points)::bigint AS total FROM points_ledger"
                " WHERE customer_id = ANY($1::text[]) GROUP BY customer_id",
                customers,
            )

        assert len(stored) == len(plan.sales)
        assert sorted(int(r["total"]) - 1980 for r in stored) == sorted(standing.values())
        in_receipts: Counter[tuple[str, str]] = Counter()
        for row in stored:
            if row["customer_id"] is not None:
                for use in row["coupons"]:
                    in_receipts[row["customer_id"], use["coupon_id"]] += use["uses"]
        made = {(r["customer_id"], r["coupon_id"]): r["uses_made"] for r in usage}
        # Uses made == the uses in the stored receipts == the uses of the sales that stood.
        assert made == dict(in_receipts) == dict(want_uses)
        # The balance is the sum of the ledger, and the ledger is what the sales booked.
        balance = {r["customer_id"]: r["balance"] for r in balances}
        assert balance == {r["customer_id"]: r["total"] for r in ledger}
        assert {c: balance.get(c, 0) for c in customers} == {c: want_balance[c] for c in customers}
    finally:
        await db.close()


@settings(max_examples=25, deadline=None)
@given(plan=plans())
def test_random_deliveries_leave_exact_counts_and_balances(stack: Endpoints, plan: Plan) -> None:
    """Uses made match stored receipts, balances match the ledger, every input is accounted for."""
    asyncio.run(run_plan(stack, plan))
