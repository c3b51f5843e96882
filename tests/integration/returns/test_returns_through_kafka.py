"""Returns published on the real broker come back as outcomes on punchcard.return-outcomes.v1."""

from __future__ import annotations

import asyncio
import json

from punchcard_platform.consumer import ConsumerLoop
from punchcard_platform.db import Database
from punchcard_platform.relay import OutboxRelay
from punchcard_platform.settings import Settings
from punchcard_returns.handler import ReturnHandler
from punchcard_returns.waiting import PendingReturnResolver

from tests.documents import receipt_document, return_document
from tests.helpers import consume, eventually, produce, unique_id
from tests.integration.returns.support import (
    outbox,
    return_states,
    store_sales,
)


async def test_returns_on_kafka_are_decided_once_and_their_outcomes_published(
    db: Database, settings: Settings
) -> None:
    """Accepted, already_returned, a waiting one applied, an unknown one rejected, a DLQ entry."""
    settings = settings.model_copy(update={"return_wait_seconds": 2.0})
    customer = unique_id("C")
    sold = receipt_document(customer, points_used=10, points_earned=2)
    late = receipt_document(customer, points_earned=5)
    await store_sales(db, settings, sold)
    first, again = return_document(sold["transaction_no"]), return_document(sold["transaction_no"])
    early, lost = return_document(late["transaction_no"]), return_document(unique_id("TX"))

    resolver = PendingReturnResolver(settings, db)
    handler = ReturnHandler(settings, db, on_parked=resolver.wake)
    loop = ConsumerLoop(
        settings,
        handler=handler,
        topic=settings.topics.returns,
        group_id=settings.consumer_group("returns"),
    )
    stop = asyncio.Event()
    parts = (loop.run, OutboxRelay(settings, db).run, resolver.run)
    tasks = [asyncio.create_task(part(stop)) for part in parts]
    try:
        documents = [first, first, again, early, lost]  # first twice: a redelivery
        await produce(
            settings,
            settings.topics.returns,
            [(d["transaction_no"].encode(), json.dumps(d).encode()) for d in documents]
            + [(b"TX-broken", b"{not json")],
        )

        async def early_is_waiting() -> bool:
            return await return_states(db, late["transaction_no"]) == [
                (early["event_id"], "pending", None)
            ]

        await eventually(early_is_waiting, what="the early return waiting")
        await store_sales(db, settings, late)

        records = await consume(settings, settings.topics.return_outcomes, count=4, timeout=60)
        dead = await consume(settings, settings.topics.returns_dlq, count=1)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)

    outcomes = {
        payload["return_event_id"]: payload
        for payload in (json.loads(record.value) for record in records)
    }
    assert {e: (o["status"], o["reason"]) for e, o in outcomes.items()} == {
        first["event_id"]: ("accepted", None),
        again["event_id"]: ("rejected", "already_returned"),
        early["event_id"]: ("accepted", None),
        lost["event_id"]: ("rejected", "unknown_transaction"),
    }
    assert all(
        record.key == json.loads(record.value)["transaction_no"].encode() for record in records
    )
    assert await outbox(db, settings.topics.return_outcomes) == [], "published rows are deleted"
    assert dict(dead[0].headers)["punchcard.error.reason"] == b"invalid_json"
    assert (dead[0].key, dead[0].value) == (b"TX-broken", b"{not json")
