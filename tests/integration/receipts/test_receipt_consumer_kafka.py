"""The receipt consumer fed through the real Kafka broker by the shared ConsumerLoop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from punchcard_platform.consumer import ConsumerLoop
from punchcard_platform.db import Database
from punchcard_platform.settings import Settings
from punchcard_receipt_consumer.handler import ReceiptHandler

from tests.documents import receipt_document
from tests.helpers import consume, eventually, produce, unique_id
from tests.integration.receipts.support import (
    balance,
    stored_receipts,
    uses_made,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def running_consumer(db: Database, settings: Settings) -> AsyncIterator[None]:
    """The receipt consumer's loop running for the duration of the test."""
    handler = ReceiptHandler(db, settings.topics)
    loop = ConsumerLoop(
        settings,
        handler=handler,
        topic=settings.topics.receipts,
        group_id=settings.consumer_group(handler.name),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


def encoded(document: dict[str, Any]) -> bytes:
    """The bytes a POS would publish."""
    return json.dumps(document).encode()


@pytest.mark.usefixtures("running_consumer")
@pytest.mark.parametrize("compression", [None, "gzip", "snappy", "lz4", "zstd"])
async def test_receipts_produced_to_kafka_are_applied(
    db: Database, settings: Settings, compression: str | None
) -> None:
    """Receipts keyed by customer, in any compression, end up counted exactly once."""
    customer, coupon = unique_id("C"), unique_id("K")
    sales = [receipt_document(customer, coupons=[(coupon, 1)], points_earned=10) for _ in range(20)]
    records = [(customer.encode(), encoded(sale)) for sale in sales]

    # Sent twice: the second pass is a producer retry, and must change nothing.
    await produce(
        settings, settings.topics.receipts, records + records, compression_type=compression
    )

    async def applied() -> bool:
        stored = await stored_receipts(db, [s["transaction_no"] for s in sales])
        return len(stored) == len(sales) and await uses_made(db, customer) == {coupon: 20}

    await eventually(applied, what="all receipts applied")
    assert await balance(db, customer) == 200


@pytest.mark.usefixtures("running_consumer")
async def test_records_that_cannot_be_applied_go_to_the_dlq_and_the_next_is_still_applied(
    db: Database, settings: Settings
) -> None:
    """Each bad record lands in the DLQ unchanged with its reason and origin; work goes on."""
    customer = unique_id("C")
    first = receipt_document(customer, points_earned=10)
    conflicting = {**first, "points_earned": 11, "event_id": unique_id("E")}
    too_large = receipt_document(customer, padding="x" * (1024 * 1024))
    schema_violation = receipt_document(customer, currency="yen")
    version_two = {**receipt_document(customer), "schema_version": 2}
    after = receipt_document(customer, points_earned=5)
    bad = [
        (b"not json", "invalid_json"),
        (encoded(schema_violation), "schema_violation"),
        (encoded(version_two), "unsupported_schema_version"),
        (encoded(too_large), "payload_too_large"),
        (encoded(conflicting), "conflicting_duplicate"),
    ]
    key = customer.encode()

    await produce(settings, settings.topics.receipts, [(key, encoded(first))], partition=0)
    await eventually(lambda: balance(db, customer), what="the first receipt applied")
    await produce(
        settings,
        settings.topics.receipts,
        [*((key, value) for value, _ in bad), (key, encoded(after))],
        partition=0,
    )

    letters = await consume(settings, settings.topics.receipts_dlq, count=len(bad))
    letters.sort(key=lambda letter: letter.offset)
    assert [(letter.key, letter.value) for letter in letters] == [(key, value) for value, _ in bad]
    for offset, (letter, (_, reason)) in enumerate(zip(letters, bad, strict=True), start=1):
        headers = dict(letter.headers)
        assert headers["punchcard.error.reason"] == reason.encode()
        assert headers["punchcard.error.detail"]
        assert len(headers["punchcard.error.detail"]) <= 4096
        assert headers["punchcard.source.topic"] == settings.topics.receipts.encode()
        assert headers["punchcard.source.partition"] == b"0"
        assert headers["punchcard.source.offset"] == str(offset).encode()

    async def next_one_applied() -> bool:
        return await balance(db, customer) == 10 + 5

    await eventually(next_one_applied, what="the record after the bad ones applied")
    stored = await stored_receipts(db, [first["transaction_no"]])
    assert stored[first["transaction_no"]]["points_earned"] == 10
