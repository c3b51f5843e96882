"""The receipt consumer's batch handler: where records come in and effects go out.

The shared consumer loop decodes each record with ``decode`` and hands the valid ones to
``apply`` a batch at a time. ``apply`` runs one database transaction: store the receipts
that are new (the ``transaction_no`` primary key decides), judge the repeats, then book
the new receipts' coupon uses and points and queue their output events in the outbox.
The decisions live in ``booking``, the SQL in ``store``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from punchcard_contract import ParsedReceipt, decode_receipt
from punchcard_contract.program import ExpiryRules
from punchcard_platform import ledger
from punchcard_platform.db import Connection, Database, lock_customers
from punchcard_platform.outbox import outbox_messages, write_outbox
from punchcard_platform.records import DeadLetter, Decoded, InboundRecord, refuse_conflicting
from punchcard_platform.settings import TopicNames

from punchcard_receipt_consumer import store
from punchcard_receipt_consumer.booking import (
    ReceiptFacts,
    judge_repeats,
    receipt_postings,
    split_first_deliveries,
)

__all__ = ["ReceiptHandler"]

logger = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Delivery:
    """One decoded record, seen the way the dedup rules see it."""

    decoded: Decoded[ParsedReceipt]
    transaction_no: str
    fingerprint: bytes

    @classmethod
    def of(cls, decoded: Decoded[ParsedReceipt]) -> _Delivery:
        parsed = decoded.event
        return cls(decoded, parsed.event.transaction_no, parsed.fingerprint)

    @property
    def receipt(self) -> ParsedReceipt:
        return self.decoded.event

    @property
    def record(self) -> InboundRecord:
        return self.decoded.record

    def facts(self) -> ReceiptFacts:
        event = self.decoded.event.event
        return ReceiptFacts(
            transaction_no=event.transaction_no,
            customer_id=event.customer_id,
            occurred_at=event.occurred_at,
            coupon_uses=event.coupon_uses(),
            points_used=event.points_used,
            points_earned=event.points_earned,
            fingerprint=self.fingerprint,
            coupon_reservations=event.coupon_reservations(),
            points_expire_at=event.points_expire_at,
        )


class ReceiptHandler:
    """Applies batches of ``pos.receipts.v1`` records exactly once in effect."""

    name = "receipt-consumer"

    def __init__(
        self, db: Database, topics: TopicNames, *, rules: ExpiryRules | None = None
    ) -> None:
        self._db = db
        self._topics = topics
        self._rules = rules or ExpiryRules()

    def decode(self, record: InboundRecord) -> ParsedReceipt:
        """Validate a record at the edge; ``InvalidEventError`` sends it to the DLQ."""
        return decode_receipt(record.value)

    async def apply(self, batch: Sequence[Decoded[ParsedReceipt]]) -> list[DeadLetter]:
        """Apply a batch in one transaction; return its conflicting duplicates.

        Applying the same batch again changes nothing: every receipt is then already
        stored with the same content, so each is recognised as a redelivery. Deadlocks and
        serialisation failures propagate; retrying them is the consumer loop's job.
        """
        # Sorted by transaction_no so concurrent batches insert (and lock) receipt keys in one
        # order; the sort is stable, so the earliest delivery of a transaction stays first.
        deliveries = sorted(map(_Delivery.of, batch), key=_transaction_no)
        firsts, repeats = split_first_deliveries(deliveries)
        async with self._db.transaction() as conn:
            stored_now = await store.insert_receipts(conn, [d.receipt for d in firsts])
            new = [d for d in firsts if d.transaction_no in stored_now]
            earlier = [d for d in firsts if d.transaction_no not in stored_now]
            standing = {d.transaction_no: d.fingerprint for d in new}
            standing |= await store.stored_fingerprints(conn, [d.transaction_no for d in earlier])
            verdict = judge_repeats([*earlier, *repeats], standing)
            if new:
                await self._book(conn, [d.facts() for d in new])
        logger.info(
            "receipts applied",
            stored=len(new),
            redelivered=len(verdict.redelivered),
            conflicting=len(verdict.conflicting),
        )
        return [_conflict(d) for d in verdict.conflicting]

    async def _book(self, conn: Connection, receipts: Sequence[ReceiptFacts]) -> None:
        # Customer locks first and in one order (see lock_customers): every writer of these
        # counters, the returns service included, then meets the rows in the same order.
        await lock_customers(conn, (receipt.customer_id for receipt in receipts))
        points, uses = receipt_postings(receipts, self._rules)
        # Under the customers' locks, which a reservation decision takes too: a hold is
        # either still counted (decided before) or already a use made (decided after).
        await store.consume_reservations(conn, uses)
        booked = await ledger.book(
            conn, points, uses, committed_at=await store.clock(conn), rules=self._rules
        )
        # Lots found due first, then each receipt's events together, in receipt order
        # (coupon uses, then points).
        events = booked.in_order([(receipt.transaction_no, ledger.SALE) for receipt in receipts])
        await write_outbox(conn, outbox_messages(events, self._topics))
        await store.notify_receipts_stored(conn)


def _transaction_no(delivery: _Delivery) -> str:
    return delivery.transaction_no


def _conflict(delivery: _Delivery) -> DeadLetter:
    return refuse_conflicting(
        delivery.record,
        f"transaction {delivery.transaction_no} was already received with different "
        "content; the first one stands",
        transaction_no=delivery.transaction_no,
        customer_id=delivery.receipt.event.customer_id,
    )
