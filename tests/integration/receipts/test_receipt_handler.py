"""The receipt handler against the real PostgreSQL: batches applied directly, no Kafka loop."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from uuid import UUID

import pytest
from punchcard_contract import DeadLetterReason, event_id_for
from punchcard_platform.db import Database
from punchcard_platform.settings import Settings
from punchcard_receipt_consumer.handler import ReceiptHandler

from tests.documents import receipt_document, redelivery_of
from tests.helpers import unique_id
from tests.integration.receipts.support import (
    Feeder,
    balance,
    ledger,
    outbox,
    stored_receipts,
    uses_made,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def handler(db: Database, settings: Settings) -> ReceiptHandler:
    """A handler writing to this test's output topics."""
    return ReceiptHandler(db, settings.topics)


@pytest.fixture
def feeder(handler: ReceiptHandler, settings: Settings) -> Feeder:
    """Decoded records of this test's receipts topic."""
    return Feeder(handler, settings.topics.receipts)


async def test_a_plain_batch_counts_coupons_books_points_and_stores_receipts(
    db: Database, handler: ReceiptHandler, feeder: Feeder
) -> None:
    """Coupon uses are counted per customer, points booked burn then earn, receipts kept."""
    alice, bob, tea, bun = unique_id("C"), unique_id("C"), unique_id("K"), unique_id("K")
    first = receipt_document(alice, coupons=[(tea, 1), (bun, 2), (tea, 1)], points_earned=19)
    second = receipt_document(alice, coupons=[(tea, 1)], points_used=100, points_earned=5)
    third = receipt_document(bob, coupons=[(bun, 3)], points_earned=7)

    dead = await handler.apply(feeder.batch(first, second, third))

    assert dead == []
    assert await uses_made(db, alice) == {tea: 3, bun: 2}
    assert await uses_made(db, bob) == {bun: 3}
    assert await balance(db, alice) == 19 - 100 + 5
    assert await balance(db, bob) == 7
    assert sorted(await ledger(db, alice)) == sorted(
        [
            (first["transaction_no"], "earn", 19),
            (second["transaction_no"], "burn", -100),
            (second["transaction_no"], "earn", 5),
        ]
    )
    stored = await stored_receipts(db, [first["transaction_no"]])
    row = stored[first["transaction_no"]]
    assert row["customer_id"] == alice
    assert row["coupons"] == [{"coupon_id": tea, "uses": 2}, {"coupon_id": bun, "uses": 2}]
    assert row["event_id"] == first["event_id"]
    assert row["returned_at"] is None


async def test_the_stored_document_is_the_receipt_as_sent_with_unknown_fields_and_exact_numbers(
    db: Database, handler: ReceiptHandler, feeder: Feeder
) -> None:
    """Unknown fields survive and numbers are not rounded through a binary float."""
    transaction_no = unique_id("TX")
    text = (
        (
            '{"schema_version": 1, "event_id": "e-1", "transaction_no": "TXNO",'
            ' "store_id": "S1", "terminal_id": "T1", "customer_id": "CUST",'
            ' "occurred_at": "2026-11-22T10:15:30+09:00",'
            ' "currency": "JPY", "total": 1980.10000000000000000001,'
            ' "lines": [{"sku": "x", "description": "tea", "quantity": 0.5, "unit_price": "3.30",'
            ' "amount": "1.65", "tax_rate": 0.08000000000000000001}],'
            ' "pos_vendor": {"name": "Acme", "build": 12345678901234567890}}'
        )
        .replace("TXNO", transaction_no)
        .replace("CUST", unique_id("C"))
    )

    await handler.apply(feeder.batch(text))

    row = (await stored_receipts(db, [transaction_no]))[transaction_no]
    assert json.loads(row["document_text"], parse_float=Decimal) == json.loads(
        text, parse_float=Decimal
    )
    assert row["total"] == Decimal("1980.10000000000000000001")
    assert row["coupons"] == []


async def test_an_anonymous_sale_is_stored_but_counts_no_coupon_use(
    db: Database, handler: ReceiptHandler, feeder: Feeder
) -> None:
    """Nobody's coupon count moves, no points are booked, no event is written."""
    coupon = unique_id("K")
    sale = receipt_document(None, coupons=[(coupon, 2)])

    dead = await handler.apply(feeder.batch(sale))

    assert dead == []
    row = (await stored_receipts(db, [sale["transaction_no"]]))[sale["transaction_no"]]
    assert row["customer_id"] is None
    assert row["coupons"] == [{"coupon_id": coupon, "uses": 2}]
    async with db.connection() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM coupon_usage WHERE coupon_id = $1", coupon)
            == 0
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM points_ledger WHERE transaction_no = $1",
                sale["transaction_no"],
            )
            == 0
        )


async def test_every_receipt_delivered_two_and_three_times_counts_once(
    db: Database, handler: ReceiptHandler, feeder: Feeder
) -> None:
    """Repeats in the same batch and in later batches are redeliveries: no effect."""
    customer, coupon = unique_id("C"), unique_id("K")
    twice = receipt_document(customer, coupons=[(coupon, 1)], points_earned=10)
    thrice = receipt_document(customer, coupons=[(coupon, 2)], points_used=3)

    first = await handler.apply(feeder.batch(twice, thrice, redelivery_of(thrice), twice))
    second = await handler.apply(feeder.batch(redelivery_of(thrice)))
    third = await handler.apply(feeder.batch(thrice, twice))

    assert first == second == third == []
    assert await uses_made(db, customer) == {coupon: 3}
    assert await balance(db, customer) == 7
    assert len(await ledger(db, customer)) == 2
    assert len(await outbox(db, [customer])) == 4


async def test_the_same_batch_applied_again_changes_nothing(
    db: Database, handler: ReceiptHandler, feeder: Feeder
) -> None:
    """A batch replayed after a crash (same records, same offsets) has no second effect."""
    customer, coupon = unique_id("C"), unique_id("K")
    batch = feeder.batch(
        receipt_document(customer, coupons=[(coupon, 1)], points_earned=4),
        receipt_document(customer, coupons=[(coupon, 1)], points_used=1),
    )

    await handler.apply(batch)
    before = (
        await uses_made(db, customer),
        await balance(db, customer),
        await outbox(db, [customer]),
    )
    assert await handler.apply(batch) == []

    after = (
        await uses_made(db, customer),
        await balance(db, customer),
        await outbox(db, [customer]),
    )
    assert after == before == ({coupon: 2}, 3, before[2])


async def test_a_conflicting_duplicate_is_dead_lettered_and_the_first_stands(
    db: Database, handler: ReceiptHandler, feeder: Feeder
) -> None:
    """Same transaction_no with other content, in the batch or later: refused, no effect."""
    customer, coupon = unique_id("C"), unique_id("K")
    original = receipt_document(customer, coupons=[(coupon, 1)], points_earned=10)
    changed = {**original, "points_earned": 99, "event_id": unique_id("E")}
    also_changed = {**original, "total": "1", "event_id": unique_id("E")}

    same_batch = feeder.batch(original, changed)
    dead_now = await handler.apply(same_batch)
    later = feeder.batch(also_changed, redelivery_of(original))
    dead_later = await handler.apply(later)

    assert [d.record for d in dead_now] == [same_batch[1].record]
    assert [d.record for d in dead_later] == [later[0].record]
    for letter in [*dead_now, *dead_later]:
        assert letter.reason is DeadLetterReason.CONFLICTING_DUPLICATE
        assert original["transaction_no"] in letter.detail
    assert await uses_made(db, customer) == {coupon: 1}
    assert await balance(db, customer) == 10
    row = (await stored_receipts(db, [original["transaction_no"]]))[original["transaction_no"]]
    assert row["event_id"] == original["event_id"]
    assert row["points_earned"] == 10


async def test_a_later_delivery_equal_to_the_stored_one_is_not_a_conflict_even_after_one(
    db: Database, handler: ReceiptHandler, feeder: Feeder
) -> None:
    """In a batch holding a conflict and then the stored content again, only the conflict goes."""
    customer = unique_id("C")
    original = receipt_document(customer, points_earned=10)
    changed = {**original, "points_earned": 11}
    await handler.apply(feeder.batch(original))

    batch = feeder.batch(changed, redelivery_of(original))
    dead = await handler.apply(batch)

    assert [d.record for d in dead] == [batch[0].record]
    assert await balance(db, customer) == 10


async def test_concurrent_handlers_applying_overlapping_batches_give_exact_counts(
    db: Database, settings: Settings
) -> None:
    """Two instances applying one customer's receipts at once neither lose nor double a use."""
    customer, coupon = unique_id("C"), unique_id("K")
    receipts = [
        receipt_document(customer, coupons=[(coupon, 1)], points_earned=2, points_used=1)
        for _ in range(60)
    ]
    other_db = await Database.connect(settings.database_url, max_size=4)
    try:
        handler_one = ReceiptHandler(db, settings.topics)
        handler_two = ReceiptHandler(other_db, settings.topics)
        one = Feeder(handler_one, settings.topics.receipts)
        two = Feeder(handler_two, settings.topics.receipts)
        rounds = [
            (one.batch(*receipts[0:20]), two.batch(*receipts[10:30])),
            (one.batch(*receipts[30:60]), two.batch(*reversed(receipts[20:60]))),
            (one.batch(*receipts[::2]), two.batch(*receipts[1::2])),
        ]
        for batch_one, batch_two in rounds:
            dead_one, dead_two = await asyncio.gather(
                handler_one.apply(batch_one), handler_two.apply(batch_two)
            )
            assert dead_one == dead_two == []
    finally:
        await other_db.close()

    assert await uses_made(db, customer) == {coupon: 60}
    assert await balance(db, customer) == 60
    assert len(await ledger(db, customer)) == 120
    events = await outbox(db, [customer])
    assert len(events) == 180
    coupon_counts = [
        e["payload"]["uses_made"] for e in events if e["topic"].startswith("punchcard.coupon")
    ]
    assert coupon_counts == list(range(1, 61))


async def test_a_use_past_the_catalog_limit_is_counted_and_flagged_over_limit(
    db: Database, handler: ReceiptHandler, feeder: Feeder, settings: Settings
) -> None:
    """The sale happened, so the use counts, and its event says over_limit."""
    customer, coupon = unique_id("C"), unique_id("K")
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO coupons (coupon_id, name, uses_permitted) VALUES ($1, 'Tea 10% off', 2)",
            coupon,
        )
    sales = [receipt_document(customer, coupons=[(coupon, 1)]) for _ in range(3)]

    await handler.apply(feeder.batch(*sales[:2]))
    await handler.apply(feeder.batch(sales[2]))

    assert await uses_made(db, customer) == {coupon: 3}
    events = [e["payload"] for e in await outbox(db, [customer])]
    assert [(e["uses_made"], e["uses_permitted"], e["over_limit"]) for e in events] == [
        (1, 2, False),
        (2, 2, False),
        (3, 2, True),
    ]


async def test_output_events_are_in_the_outbox_with_stable_event_ids(
    db: Database, handler: ReceiptHandler, feeder: Feeder, settings: Settings
) -> None:
    """Each effect queues its events once, keyed by customer, with ids derived from the cause."""
    customer, coupon = unique_id("C"), unique_id("K")
    sale = receipt_document(customer, coupons=[(coupon, 2)], points_used=100, points_earned=19)
    tx = sale["transaction_no"]

    await handler.apply(feeder.batch(sale))
    await handler.apply(feeder.batch(redelivery_of(sale)))

    rows = await outbox(db, [customer])
    assert [(r["topic"], r["key"], r["event_id"]) for r in rows] == [
        (settings.topics.coupon_usage, customer, event_id_for(tx, "coupon", coupon, "receipt")),
        (settings.topics.points, customer, event_id_for(tx, "points", "burn")),
        (settings.topics.points, customer, event_id_for(tx, "points", "earn")),
    ]
    coupon_event, burn, earn = (r["payload"] for r in rows)
    assert coupon_event == {
        "schema_version": 1,
        "event_id": str(event_id_for(tx, "coupon", coupon, "receipt")),
        "occurred_at": coupon_event["occurred_at"],
        "customer_id": customer,
        "coupon_id": coupon,
        "transaction_no": tx,
        "source": "receipt",
        "delta": 2,
        "uses_made": 2,
        "uses_permitted": None,
        "over_limit": False,
        "reservation_id": None,
        "total_uses_made": 2,
    }
    assert (burn["kind"], burn["points"], burn["balance"]) == ("burn", -100, -100)
    assert (earn["kind"], earn["points"], earn["balance"]) == ("earn", 19, -81)
    assert UUID(burn["event_id"]) == event_id_for(tx, "points", "burn")
