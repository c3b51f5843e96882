"""Returns of some lines, through the real broker and database (CONTRACT.md section 2)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from punchcard_platform.consumer import ConsumerLoop
from punchcard_platform.db import Database
from punchcard_platform.relay import OutboxRelay
from punchcard_platform.settings import Settings
from punchcard_returns.handler import ReturnHandler
from punchcard_returns.waiting import PendingReturnResolver

from tests.documents import receipt_document, return_document, sale_lines
from tests.helpers import consume, eventually, produce, unique_id
from tests.integration.returns.support import (
    add_coupon,
    outbox,
    points,
    receipt_return,
    return_states,
    send_returns,
    store_sales,
    uses_made,
)


def a_sale(customer: str, **extra: Any) -> dict[str, Any]:
    """Two teas (300), a bento (1,000) and a bag (0): W = 1,300."""
    return receipt_document(
        customer,
        lines=sale_lines((2, "300"), (1, "1000"), (1, "0")),
        total="1300",
        points_used=130,
        points_earned=13,
        **extra,
    )


@asynccontextmanager
async def returns_service(settings: Settings, db: Database) -> AsyncIterator[None]:
    """The returns service as it runs: consumer loop, waiting-return resolver, outbox relay."""
    resolver = PendingReturnResolver(settings, db)
    loop = ConsumerLoop(
        settings,
        handler=ReturnHandler(settings, db, on_parked=resolver.wake),
        topic=settings.topics.returns,
        group_id=settings.consumer_group("returns"),
    )
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(part(stop))
        for part in (loop.run, OutboxRelay(settings, db).run, resolver.run)
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def publish(settings: Settings, *documents: dict[str, Any]) -> None:
    await produce(
        settings,
        settings.topics.returns,
        [(d["transaction_no"].encode(), json.dumps(d).encode()) for d in documents],
    )


async def test_partial_returns_on_kafka_move_their_share_once_and_the_last_one_the_rest(
    db: Database, settings: Settings
) -> None:
    """Each rule in one stream: partial, redelivered return_id, conflicts, rejections, the rest."""
    customer, coupon = unique_id("C"), unique_id("CP")
    await add_coupon(db, coupon, uses_permitted=3)
    sale = a_sale(customer, coupons=[(coupon, 1)])
    tx = sale["transaction_no"]
    await store_sales(db, settings, sale)
    one_tea = return_document(tx, lines=[(1, 1)])
    redelivered = {**one_tea, "event_id": unique_id("RE")}
    conflicting = {**one_tea, "event_id": unique_id("RE"), "lines": [{"line_no": 2, "quantity": 1}]}
    unknown = return_document(tx, lines=[(4, 1)])
    too_many = return_document(tx, lines=[(1, 2)])
    bento = return_document(tx, lines=[(2, "1")])
    bento_again = return_document(tx, lines=[(2, 1)])
    rest = return_document(tx)
    again = return_document(tx)
    decided = [one_tea, unknown, too_many, bento, bento_again, rest, again]

    async with returns_service(settings, db):
        await publish(settings, one_tea, one_tea, redelivered, conflicting, unknown, too_many)
        await publish(settings, bento, bento_again, rest, again)
        records = await consume(settings, settings.topics.return_outcomes, count=len(decided))
        dead = await consume(settings, settings.topics.returns_dlq, count=1)
        # The sale's burn and earn (booked without the relay) are not on the topic here.
        booked = await consume(settings, settings.topics.points, count=6)

    outcomes = [json.loads(record.value) for record in records]
    assert [o["return_event_id"] for o in outcomes] == [d["event_id"] for d in decided]
    assert [(o["status"], o["reason"]) for o in outcomes] == [
        ("accepted", None),
        ("rejected", "unknown_line"),
        ("rejected", "exceeds_remaining"),
        ("accepted", None),
        ("rejected", "already_returned"),
        ("accepted", None),
        ("rejected", "already_returned"),
    ]
    # 150 of 1,300 back: floor(13 * 150/1300) = 1 revoked, floor(130 * 150/1300) = 15 restored.
    # 1,150 of 1,300 back: 11 and 115 in all. The rest: exactly 13 and 130 in all.
    moved = [(o["points_revoked"], o["points_restored"]) for o in outcomes]
    assert [moved[i] for i in (0, 3, 5)] == [(1, 15), (10, 100), (2, 15)]
    assert [o["lines"] for o in outcomes if o["status"] == "accepted"] == [
        [{"line_no": 1, "quantity": "1"}],
        [{"line_no": 2, "quantity": "1"}],
        [{"line_no": 1, "quantity": "1"}, {"line_no": 3, "quantity": "1"}],
    ]
    # A rejection says whether the sale is all back: the last one finds nothing left.
    assert [o["fully_returned"] for o in outcomes] == [False] * 5 + [True, True]
    assert [o["coupons_restored"] for o in outcomes if o["status"] == "accepted"] == [
        [],
        [],
        [{"coupon_id": coupon, "uses": 1}],
    ]
    assert outcomes[0]["return_id"] == one_tea["return_id"]
    headers = dict(dead[0].headers)
    assert headers["punchcard.error.reason"] == b"conflicting_duplicate"
    assert json.loads(dead[0].value) == conflicting

    balance, ledger = await points(db, customer)
    assert balance == sum(n for _, _, n in ledger) == 0
    assert await uses_made(db, customer) == {coupon: 0}
    assert await receipt_return(db, tx) == rest["event_id"]
    assert [
        (e["kind"], e["points"], e["balance"])
        for e in (json.loads(r.value) for r in booked)
        if e["kind"] in ("restore", "revoke")
    ] == [
        ("restore", 15, -102),
        ("revoke", -1, -103),
        ("restore", 100, -3),
        ("revoke", -10, -13),
        ("restore", 15, 2),
        ("revoke", -2, 0),
    ]


async def test_a_return_before_its_sale_that_names_lines_waits_and_then_applies(
    db: Database, settings: Settings
) -> None:
    """The POS refunds a line while the sale is still in an offline till's queue."""
    customer = unique_id("C")
    sale = a_sale(customer)
    tx = sale["transaction_no"]
    early = return_document(tx, lines=[(2, 1)])
    later = return_document(tx, lines=[(2, 1)])

    async with returns_service(settings, db):
        await publish(settings, early, later)

        async def both_waiting() -> bool:
            states = await return_states(db, tx)
            return [s for _, s, _ in states] == ["pending", "pending"]

        await eventually(both_waiting, what="both returns waiting for their sale")
        await store_sales(db, settings, sale)
        records = await consume(settings, settings.topics.return_outcomes, count=2)

    outcomes = [json.loads(record.value) for record in records]
    assert [(o["return_event_id"], o["status"], o["reason"]) for o in outcomes] == [
        (early["event_id"], "accepted", None),
        (later["event_id"], "rejected", "already_returned"),
    ]
    assert (outcomes[0]["points_revoked"], outcomes[0]["points_restored"]) == (10, 100)


async def test_two_partial_returns_racing_on_two_instances_move_exactly_the_sales_points(
    settings: Settings, db: Database
) -> None:
    """Two instances (own pools) decide returns of one sale at once: nothing doubled or lost."""
    customer = unique_id("C")
    sale = a_sale(customer)
    tx = sale["transaction_no"]
    await store_sales(db, settings, sale)
    other = await Database.connect(settings.database_url, max_size=4)
    try:
        first, second = ReturnHandler(settings, db), ReturnHandler(settings, other)
        parts = [return_document(tx, lines=[(n, 1)]) for n in (1, 1, 2, 3)]
        await asyncio.gather(
            send_returns(first, settings, parts[0], parts[2]),
            send_returns(second, settings, parts[1], parts[3]),
        )
    finally:
        await other.close()

    assert sorted(status for _, status, _ in await return_states(db, tx)) == ["accepted"] * 4
    balance, ledger = await points(db, customer)
    assert balance == sum(n for _, _, n in ledger) == 0
    restored = sum(n for _, kind, n in ledger if kind == "restore")
    revoked = sum(n for _, kind, n in ledger if kind == "revoke")
    assert (restored, revoked) == (130, -13)
    assert await receipt_return(db, tx) is not None


async def test_the_same_return_id_with_the_same_content_is_a_redelivery(
    db: Database, settings: Settings
) -> None:
    """A POS retry under a new event_id: no effect, no new outcome, no dead letter."""
    sale = a_sale(unique_id("C"))
    tx = sale["transaction_no"]
    await store_sales(db, settings, sale)
    handler = ReturnHandler(settings, db)
    first = return_document(tx, lines=[(1, 1)])

    await send_returns(handler, settings, first)
    await send_returns(handler, settings, {**first, "event_id": unique_id("RE")})

    assert await return_states(db, tx) == [(first["event_id"], "accepted", None)]
    assert len(await outbox(db, settings.topics.return_outcomes)) == 1
