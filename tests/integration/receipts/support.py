"""Receipts as a POS sends them, and the database state they should leave behind."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from punchcard_contract import ParsedReceipt
from punchcard_platform.db import Database
from punchcard_platform.records import Decoded, InboundRecord
from punchcard_receipt_consumer.handler import ReceiptHandler


def inbound(topic: str, value: bytes, *, offset: int, partition: int = 0) -> InboundRecord:
    """A record as the consumer loop would hand it over."""
    return InboundRecord(topic=topic, partition=partition, offset=offset, key=None, value=value)


class Feeder:
    """Turns documents into decoded records with increasing offsets, like one partition."""

    def __init__(self, handler: ReceiptHandler, topic: str) -> None:
        self._handler = handler
        self._topic = topic
        self._offset = 0

    def decoded(self, document: dict[str, Any] | str) -> Decoded[ParsedReceipt]:
        """Decode a document (or raw JSON text) through the handler, as the loop does."""
        text = document if isinstance(document, str) else json.dumps(document)
        record = inbound(self._topic, text.encode(), offset=self._offset)
        self._offset += 1
        return Decoded(record, self._handler.decode(record))

    def batch(self, *documents: dict[str, Any] | str) -> list[Decoded[ParsedReceipt]]:
        """Decode several documents into one batch."""
        return [self.decoded(document) for document in documents]


async def uses_made(db: Database, customer_id: str) -> dict[str, int]:
    """The customer's coupon counts."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT coupon_id, uses_made FROM coupon_usage WHERE customer_id = $1", customer_id
        )
    return {row["coupon_id"]: row["uses_made"] for row in rows}


async def balance(db: Database, customer_id: str) -> int | None:
    """The customer's points balance, or None if no points were ever booked."""
    async with db.connection() as conn:
        value: int | None = await conn.fetchval(
            "SELECT balance FROM points_balances WHERE customer_id = $1", customer_id
        )
    return value


async def ledger(db: Database, customer_id: str) -> list[tuple[str, str, int]]:
    """The customer's ledger as (transaction_no, kind, points), oldest first."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT transaction_no, kind, points FROM points_ledger WHERE customer_id = $1"
            " ORDER BY id",
            customer_id,
        )
    return [(row["transaction_no"], row["kind"], row["points"]) for row in rows]


async def stored_receipts(db: Database, transaction_nos: Sequence[str]) -> dict[str, Any]:
    """The stored receipt rows by transaction_no, ``document`` as its exact JSON text."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT *, document::text AS document_text FROM receipts"
            " WHERE transaction_no = ANY($1::text[])",
            list(transaction_nos),
        )
    return {row["transaction_no"]: row for row in rows}


async def outbox(db: Database, customer_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The outbox rows keyed by these customers, in the order they were written."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT topic, key, event_id, payload FROM outbox WHERE key = ANY($1::text[])"
            " ORDER BY id",
            list(customer_ids),
        )
    # The payload is the event's JSON exactly as it will be published.
    return [{**row, "payload": json.loads(row["payload"])} for row in rows]
