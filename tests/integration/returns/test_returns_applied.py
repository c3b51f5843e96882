"""Returns applied against the real PostgreSQL: once per sale, exactly as the contract says."""

from __future__ import annotations

import asyncio

from punchcard_platform.db import Database
from punchcard_platform.settings import Settings
from punchcard_returns.handler import ReturnHandler

from tests.documents import receipt_document, return_document
from tests.helpers import unique_id
from tests.integration.returns.support import (
    add_coupon,
    outbox,
    points,
    receipt_return,
    return_states,
    send_returns,
    set_uses_made,
    store_sales,
    uses_made,
)


async def test_an_accepted_return_moves_points_and_coupons_exactly_once(
    db: Database, settings: Settings
) -> None:
    """Burned points back, earned points revoked, coupon uses given back, sale marked returned."""
    customer, coupon = unique_id("C"), unique_id("CP")
    await add_coupon(db, coupon, uses_permitted=5)
    sale = receipt_document(customer, coupons=[(coupon, 2)], points_used=100, points_earned=19)
    tx = sale["transaction_no"]
    await store_sales(db, settings, sale)
    handler = ReturnHandler(settings, db)
    ret = return_document(tx)

    await send_returns(handler, settings, ret)

    balance, ledger = await points(db, customer)
    assert sorted((kind, n) for _, kind, n in ledger) == [
        ("burn", -100),
        ("earn", 19),
        ("restore", 100),
        ("revoke", -19),
    ]
    assert balance == sum(n for _, _, n in ledger) == 0
    assert await uses_made(db, customer) == {coupon: 0}
    assert await receipt_return(db, tx) == ret["event_id"]
    assert await return_states(db, tx) == [(ret["event_id"], "accepted", None)]
    (outcome,) = [row["payload"] for row in await outbox(db, settings.topics.return_outcomes)]
    assert outcome["status"] == "accepted"
    assert (outcome["points_restored"], outcome["points_revoked"]) == (100, 19)
    assert outcome["coupons_restored"] == [{"coupon_id": coupon, "uses": 2}]
    usage = [row["payload"] for row in await outbox(db, settings.topics.coupon_usage)]
    assert [(u["source"], u["delta"], u["uses_made"]) for u in usage] == [
        ("receipt", 2, 2),
        ("return", -2, 0),
    ]
    booked = [row["payload"] for row in await outbox(db, settings.topics.points)]
    assert [(p["kind"], p["points"], p["balance"]) for p in booked][-2:] == [
        ("restore", 100, 19),
        ("revoke", -19, 0),
    ]


async def test_a_second_return_of_a_sale_is_rejected_and_changes_nothing(
    db: Database, settings: Settings
) -> None:
    """The return desk sees already_returned; counts and balances stay as the first left them."""
    customer, coupon = unique_id("C"), unique_id("CP")
    sale = receipt_document(customer, coupons=[(coupon, 1)], points_used=10, points_earned=3)
    tx = sale["transaction_no"]
    await store_sales(db, settings, sale)
    handler = ReturnHandler(settings, db)
    first, second = return_document(tx), return_document(tx)
    await send_returns(handler, settings, first)
    before = (await points(db, customer), await uses_made(db, customer))

    await send_returns(handler, settings, second)

    assert (await points(db, customer), await uses_made(db, customer)) == before
    assert await return_states(db, tx) == [
        (first["event_id"], "accepted", None),
        (second["event_id"], "rejected", "already_returned"),
    ]
    outcomes = [row["payload"] for row in await outbox(db, settings.topics.return_outcomes)]
    assert [(o["return_event_id"], o["status"], o["reason"]) for o in outcomes] == [
        (first["event_id"], "accepted", None),
        (second["event_id"], "rejected", "already_returned"),
    ]
    assert outcomes[1]["customer_id"] == customer
    assert await receipt_return(db, tx) == first["event_id"]


async def test_a_redelivered_return_changes_nothing_and_publishes_nothing(
    db: Database, settings: Settings
) -> None:
    """The same event_id again is dropped: no new outcome, no outbox row."""
    customer = unique_id("C")
    sale = receipt_document(customer, points_used=10)
    await store_sales(db, settings, sale)
    handler = ReturnHandler(settings, db)
    ret = return_document(sale["transaction_no"])
    await send_returns(handler, settings, ret)
    rows = await outbox(db, settings.topics.return_outcomes) + await outbox(
        db, settings.topics.points
    )
    state = await points(db, customer)

    await send_returns(handler, settings, ret, ret)

    again = await outbox(db, settings.topics.return_outcomes) + await outbox(
        db, settings.topics.points
    )
    assert again == rows
    assert await points(db, customer) == state
    assert await return_states(db, sale["transaction_no"]) == [(ret["event_id"], "accepted", None)]


async def test_several_returns_of_one_sale_in_one_batch_accept_only_the_first(
    db: Database, settings: Settings
) -> None:
    """The first sent applies; the others are already_returned."""
    customer = unique_id("C")
    sale = receipt_document(customer, points_earned=7)
    tx = sale["transaction_no"]
    await store_sales(db, settings, sale)
    returns = [return_document(tx) for _ in range(3)]

    await send_returns(ReturnHandler(settings, db), settings, *returns)

    assert [status for _, status, _ in await return_states(db, tx)] == [
        "accepted",
        "rejected",
        "rejected",
    ]
    assert (await points(db, customer))[0] == 0


async def test_returns_of_one_sale_applied_at_once_by_two_instances_accept_exactly_one(
    db: Database, settings: Settings
) -> None:
    """The once-only insert decides between concurrent transactions, not a read."""
    customer, coupon = unique_id("C"), unique_id("CP")
    sales = [
        receipt_document(customer, coupons=[(coupon, 1)], points_used=5, points_earned=2)
        for _ in range(5)
    ]
    await store_sales(db, settings, *sales)
    first, second = ReturnHandler(settings, db), ReturnHandler(settings, db)

    await asyncio.gather(
        *(
            send_returns(handler, settings, return_document(sale["transaction_no"]))
            for sale in sales
            for handler in (first, second)
        )
    )

    for sale in sales:
        statuses = sorted(s for _, s, _ in await return_states(db, sale["transaction_no"]))
        assert statuses == ["accepted", "rejected"]
    balance, ledger = await points(db, customer)
    assert balance == sum(n for _, _, n in ledger) == 0
    assert len(ledger) == 4 * len(sales)
    assert await uses_made(db, customer) == {coupon: 0}


async def test_a_coupon_defined_not_to_restore_keeps_its_use(
    db: Database, settings: Settings
) -> None:
    """restore_on_return false: the sale's use stays counted; other coupons come back."""
    customer, kept, restored = unique_id("C"), unique_id("CP"), unique_id("CP")
    await add_coupon(db, kept, uses_permitted=1, restore_on_return=False)
    sale = receipt_document(customer, coupons=[(kept, 1), (restored, 1)])
    await store_sales(db, settings, sale)

    await send_returns(
        ReturnHandler(settings, db), settings, return_document(sale["transaction_no"])
    )

    assert await uses_made(db, customer) == {kept: 1, restored: 0}
    (outcome,) = [row["payload"] for row in await outbox(db, settings.topics.return_outcomes)]
    assert outcome["coupons_restored"] == [{"coupon_id": restored, "uses": 1}]


async def test_coupon_uses_never_go_below_zero(db: Database, settings: Settings) -> None:
    """A count lowered since the sale stops at zero and the real amount is reported."""
    customer, coupon = unique_id("C"), unique_id("CP")
    sale = receipt_document(customer, coupons=[(coupon, 3)])
    await store_sales(db, settings, sale)
    await set_uses_made(db, customer, coupon, 1)

    await send_returns(
        ReturnHandler(settings, db), settings, return_document(sale["transaction_no"])
    )

    assert await uses_made(db, customer) == {coupon: 0}
    (outcome,) = [row["payload"] for row in await outbox(db, settings.topics.return_outcomes)]
    assert outcome["coupons_restored"] == [{"coupon_id": coupon, "uses": 1}]
    (usage,) = [
        row["payload"]
        for row in await outbox(db, settings.topics.coupon_usage)
        if row["payload"]["source"] == "return"
    ]
    assert (usage["delta"], usage["uses_made"]) == (-1, 0)


async def test_a_balance_goes_negative_when_earned_points_were_spent(
    db: Database, settings: Settings
) -> None:
    """Revoked points are taken even if the customer already used them."""
    customer = unique_id("C")
    earned = receipt_document(customer, points_earned=50)
    spent = receipt_document(customer, points_used=50)
    await store_sales(db, settings, earned, spent)

    await send_returns(
        ReturnHandler(settings, db), settings, return_document(earned["transaction_no"])
    )

    balance, ledger = await points(db, customer)
    assert balance == sum(n for _, _, n in ledger) == -50
