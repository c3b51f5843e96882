"""Returns and sales as a POS sends them, and the database state the returns service leaves."""

from __future__ import annotations

import itertools
import json
from typing import Any

from punchcard_contract import ParsedReturn
from punchcard_platform.db import Database
from punchcard_platform.records import Decoded, InboundRecord
from punchcard_platform.settings import Settings
from punchcard_receipt_consumer.handler import ReceiptHandler
from punchcard_returns.handler import ReturnHandler

_offsets = itertools.count()


def _record(topic: str, document: dict[str, Any]) -> InboundRecord:
    return InboundRecord(
        topic=topic,
        partition=0,
        offset=next(_offsets),
        key=document["transaction_no"].encode(),
        value=json.dumps(document).encode(),
    )


def returns_batch(
    handler: ReturnHandler, topic: str, *documents: dict[str, Any]
) -> list[Decoded[ParsedReturn]]:
    """Decode return documents through the handler, as the consumer loop does."""
    records = [_record(topic, document) for document in documents]
    return [Decoded(record, handler.decode(record)) for record in records]


async def send_returns(
    handler: ReturnHandler, settings: Settings, *documents: dict[str, Any]
) -> None:
    """Apply return documents as one batch."""
    await handler.apply(returns_batch(handler, settings.topics.returns, *documents))


async def store_sales(db: Database, settings: Settings, *documents: dict[str, Any]) -> None:
    """Store sales with the real receipt consumer (which also NOTIFYs the returns service)."""
    handler = ReceiptHandler(db, settings.topics)
    records = [_record(settings.topics.receipts, document) for document in documents]
    refused = await handler.apply([Decoded(r, handler.decode(r)) for r in records])
    assert refused == []


async def add_coupon(
    db: Database,
    coupon_id: str,
    *,
    uses_permitted: int | None = None,
    restore_on_return: bool = True,
) -> None:
    """Put a coupon in the catalog."""
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO coupons (coupon_id, name, uses_permitted, restore_on_return)"
            " VALUES ($1, $1, $2, $3)",
            coupon_id,
            uses_permitted,
            restore_on_return,
        )


async def set_uses_made(db: Database, customer_id: str, coupon_id: str, uses: int) -> None:
    """Overwrite a count, as an operator correcting it would."""
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE coupon_usage SET uses_made = $3 WHERE customer_id = $1 AND coupon_id = $2",
            customer_id,
            coupon_id,
            uses,
        )


async def uses_made(db: Database, customer_id: str) -> dict[str, int]:
    """The customer's coupon counts."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT coupon_id, uses_made FROM coupon_usage WHERE customer_id = $1", customer_id
        )
    return {row["coupon_id"]: row["uses_made"] for row in rows}


async def points(db: Database, customer_id: str) -> tuple[int | None, list[tuple[str, str, int]]]:
    """The customer's balance and ledger as (transaction_no, kind, points), oldest first."""
    async with db.connection() as conn:
        balance = await conn.fetchval(
            "SELECT balance FROM points_balances WHERE customer_id = $1", customer_id
        )
        rows = await conn.fetch(
            "SELECT transaction_no, kind, points FROM points_ledger WHERE customer_id = $1"
            " ORDER BY id",
            customer_id,
        )
    return balance, [(row["transaction_no"], row["kind"], row["points"]) for row in rows]


async def return_states(db: Database, transaction_no: str) -> list[tuple[str, str, str | None]]:
    """(event_id, status, outcome reason) of every return of a sale, first received first."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT event_id, status, outcome->>'reason' AS reason FROM return_events"
            " WHERE transaction_no = $1 ORDER BY seq",
            transaction_no,
        )
    return [(row["event_id"], row["status"], row["reason"]) for row in rows]


async def receipt_return(db: Database, transaction_no: str) -> str | None:
    """The return event id the stored receipt is marked returned by, if any."""
    async with db.connection() as conn:
        value: str | None = await conn.fetchval(
            "SELECT return_event_id FROM receipts"
            " WHERE transaction_no = $1 AND returned_at IS NOT NULL",
            transaction_no,
        )
    return value


async def outbox(db: Database, topic: str) -> list[dict[str, Any]]:
    """The outbox rows of one (per-test) topic, in the order they were written."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT key, event_id, payload FROM outbox WHERE topic = $1 ORDER BY id", topic
        )
    # The payload is the event's JSON exactly as it will be published.
    return [{**row, "payload": json.loads(row["payload"])} for row in rows]
