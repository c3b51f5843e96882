"""Two receipt-consumer instances in one group, one customer's receipts on every partition."""

from __future__ import annotations

import asyncio

from punchcard_platform.consumer import ConsumerLoop
from punchcard_platform.db import Database
from punchcard_platform.settings import Settings
from punchcard_receipt_consumer.handler import ReceiptHandler

from tests.documents import encode, receipt_document
from tests.helpers import eventually, produce, unique_id


async def test_two_instances_sharing_a_customers_partitions_count_exactly(
    settings: Settings, db: Database
) -> None:
    """Keyed badly on purpose: exact counts and balance must not depend on the producer's keys."""
    customer, coupon = unique_id("C"), unique_id("CPN")
    sales = [
        receipt_document(customer, coupons=[(coupon, 1)], points_used=1, points_earned=3)
        for _ in range(300)
    ]
    records = [(s["transaction_no"].encode(), encode(s)) for s in sales]
    for partition in range(settings.topic_partitions):
        await produce(
            settings,
            settings.topics.receipts,
            records[partition :: settings.topic_partitions],
            partition=partition,
        )
    # Every record once more, as a producer retry after a lost acknowledgement would.
    await produce(settings, settings.topics.receipts, records)

    stop = asyncio.Event()
    group = settings.consumer_group("receipt-consumer")
    instances = [
        ConsumerLoop(
            settings,
            handler=ReceiptHandler(db, settings.topics),
            topic=settings.topics.receipts,
            group_id=group,
        )
        for _ in range(2)
    ]
    tasks = [asyncio.create_task(instance.run(stop)) for instance in instances]
    try:
        await eventually(lambda: _stored(db, customer, len(sales)), what="all receipts stored")
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    async with db.connection() as conn:
        uses = await conn.fetchval(
            "SELECT uses_made FROM coupon_usage WHERE customer_id = $1 AND coupon_id = $2",
            customer,
            coupon,
        )
        balance = await conn.fetchval(
            "SELECT balance FROM points_balances WHERE customer_id = $1", customer
        )
        ledger = await conn.fetchval(
            "SELECT count(*) FROM points_ledger WHERE customer_id = $1", customer
        )
    assert (uses, balance, ledger) == (300, 300 * (3 - 1), 600)


async def _stored(db: Database, customer: str, count: int) -> bool:
    async with db.connection() as conn:
        stored = await conn.fetchval(
            "SELECT count(*) FROM receipts WHERE customer_id = $1", customer
        )
    return bool(stored == count)
