"""What a batch of receipts changes, decided on plain values.

Nothing here touches the database or Kafka. The store reports what the database holds
(which receipts were new, the counters after the batch's increments) and these functions
turn that into per-receipt bookings and output events. Because the increments are applied
as one atomic statement per batch, the value *after* each receipt is derived backwards
from the final value: the last receipt sees the final count, each earlier one sees it
minus the uses of the receipts after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar

from punchcard_contract import event_id_text, json_time

__all__ = [
    "CouponBooking",
    "Deliverable",
    "OutputEvent",
    "PointsBooking",
    "PointsEntry",
    "ReceiptFacts",
    "Repeats",
    "UsageKey",
    "coupon_bookings",
    "coupon_usage_deltas",
    "judge_repeats",
    "output_events",
    "points_bookings",
    "points_deltas",
    "points_entries",
    "split_first_deliveries",
]

PointsKind = Literal["burn", "earn"]
UsageKey = tuple[str, str]
"""``(customer_id, coupon_id)``: the unit a coupon's uses are counted in."""


@dataclass(frozen=True, slots=True)
class ReceiptFacts:
    """The parts of a receipt that booking decides on."""

    transaction_no: str
    customer_id: str | None
    occurred_at: datetime
    coupon_uses: Mapping[str, int]
    points_used: int
    points_earned: int
    fingerprint: bytes


class Deliverable(Protocol):
    """Anything that arrives under a dedup key with a content fingerprint."""

    @property
    def transaction_no(self) -> str:
        """The dedup key of the contract."""
        ...

    @property
    def fingerprint(self) -> bytes:
        """Tells a redelivery (same content) from a conflicting duplicate."""
        ...


D = TypeVar("D", bound=Deliverable)


@dataclass(frozen=True, slots=True)
class Repeats(Generic[D]):
    """Deliveries of a transaction that already stands: harmless, or to refuse."""

    redelivered: list[D] = field(default_factory=list)
    conflicting: list[D] = field(default_factory=list)


def split_first_deliveries(deliveries: Sequence[D]) -> tuple[list[D], list[D]]:
    """Split a batch into the first delivery of each transaction and the repeats after it.

    Only a first delivery can be new; whether it is, only the database can say.
    """
    firsts: list[D] = []
    repeats: list[D] = []
    seen: set[str] = set()
    for delivery in deliveries:
        if delivery.transaction_no in seen:
            repeats.append(delivery)
        else:
            seen.add(delivery.transaction_no)
            firsts.append(delivery)
    return firsts, repeats


def judge_repeats(repeats: Sequence[D], standing: Mapping[str, bytes]) -> Repeats[D]:
    """Compare each repeat with the fingerprint of the receipt that stands for its transaction.

    Same content (``event_id`` aside) is a redelivery and changes nothing; different content
    is a ``conflicting_duplicate`` and the first one stands. ``standing`` holds the stored
    fingerprint, or the fingerprint of a first delivery stored by this very batch.
    """
    verdict: Repeats[D] = Repeats()
    for repeat in repeats:
        fingerprint = standing.get(repeat.transaction_no)
        if fingerprint is None:
            # Only possible if a stored receipt vanished mid-transaction: never guess.
            raise LookupError(f"no standing receipt for transaction {repeat.transaction_no}")
        if fingerprint == repeat.fingerprint:
            verdict.redelivered.append(repeat)
        else:
            verdict.conflicting.append(repeat)
    return verdict


@dataclass(frozen=True, slots=True)
class CouponBooking:
    """One receipt's uses of one coupon, and the customer's count right after it."""

    transaction_no: str
    customer_id: str
    coupon_id: str
    delta: int
    uses_made: int
    uses_permitted: int | None

    @property
    def over_limit(self) -> bool:
        """The sale happened, so the use counts; it is flagged when past the limit."""
        return self.uses_permitted is not None and self.uses_made > self.uses_permitted


def coupon_usage_deltas(receipts: Sequence[ReceiptFacts]) -> dict[UsageKey, int]:
    """Uses to add per (customer, coupon), sorted by key; anonymous sales count for nobody."""
    deltas: dict[UsageKey, int] = {}
    for receipt in receipts:
        if receipt.customer_id is None:
            continue
        for coupon_id, uses in receipt.coupon_uses.items():
            key = (receipt.customer_id, coupon_id)
            deltas[key] = deltas.get(key, 0) + uses
    return dict(sorted(deltas.items()))


def coupon_bookings(
    receipts: Sequence[ReceiptFacts],
    uses_made_after_batch: Mapping[UsageKey, int],
    uses_permitted: Mapping[str, int | None],
) -> list[CouponBooking]:
    """Each receipt's coupon uses with the count after it, in receipt order.

    ``uses_made_after_batch`` is the count once the whole batch is added; a coupon missing
    from ``uses_permitted`` is not in the catalog and so has no limit.
    """
    remaining = dict(uses_made_after_batch)
    bookings: list[CouponBooking] = []
    for receipt in reversed(receipts):
        if receipt.customer_id is None:
            continue
        for coupon_id, uses in reversed(list(receipt.coupon_uses.items())):
            key = (receipt.customer_id, coupon_id)
            after = remaining[key]
            remaining[key] = after - uses
            bookings.append(
                CouponBooking(
                    transaction_no=receipt.transaction_no,
                    customer_id=receipt.customer_id,
                    coupon_id=coupon_id,
                    delta=uses,
                    uses_made=after,
                    uses_permitted=uses_permitted.get(coupon_id),
                )
            )
    bookings.reverse()
    return bookings


@dataclass(frozen=True, slots=True)
class PointsEntry:
    """One line of a customer's points ledger: burn is negative, earn positive."""

    transaction_no: str
    customer_id: str
    kind: PointsKind
    points: int
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class PointsBooking:
    """A ledger entry together with the customer's balance right after it."""

    entry: PointsEntry
    balance: int


def points_entries(receipts: Sequence[ReceiptFacts]) -> list[PointsEntry]:
    """The ledger entries of the receipts, in receipt order, burn before earn.

    A sale spends points before it earns new ones; a zero amount books nothing, and an
    anonymous sale has nobody to book to (the contract refuses points on one anyway).
    """
    entries: list[PointsEntry] = []
    for receipt in receipts:
        if receipt.customer_id is None:
            continue
        if receipt.points_used:
            entries.append(
                PointsEntry(
                    receipt.transaction_no,
                    receipt.customer_id,
                    "burn",
                    -receipt.points_used,
                    receipt.occurred_at,
                )
            )
        if receipt.points_earned:
            entries.append(
                PointsEntry(
                    receipt.transaction_no,
                    receipt.customer_id,
                    "earn",
                    receipt.points_earned,
                    receipt.occurred_at,
                )
            )
    return entries


def points_deltas(entries: Sequence[PointsEntry]) -> dict[str, int]:
    """The change of each customer's balance, sorted by customer."""
    deltas: dict[str, int] = {}
    for entry in entries:
        deltas[entry.customer_id] = deltas.get(entry.customer_id, 0) + entry.points
    return dict(sorted(deltas.items()))


def points_bookings(
    entries: Sequence[PointsEntry], balance_after_batch: Mapping[str, int]
) -> list[PointsBooking]:
    """Each entry with the balance after it, given each customer's balance after the batch."""
    remaining = dict(balance_after_batch)
    bookings: list[PointsBooking] = []
    for entry in reversed(entries):
        after = remaining[entry.customer_id]
        remaining[entry.customer_id] = after - entry.points
        bookings.append(PointsBooking(entry, after))
    bookings.reverse()
    return bookings


@dataclass(frozen=True, slots=True)
class OutputEvent:
    """An output event as plain values: which topic, its key and id, its JSON fields.

    ``payload`` holds exactly what ``CouponUsageEvent`` or ``PointsEvent`` would dump, in
    the same key order; it is built directly because validating our own values again
    would cost more than deciding them did.
    """

    kind: Literal["coupon_usage", "points"]
    key: str
    event_id: str
    payload: dict[str, Any]


def output_events(
    receipts: Sequence[ReceiptFacts],
    coupons: Sequence[CouponBooking],
    points: Sequence[PointsBooking],
    occurred_at: datetime,
) -> list[OutputEvent]:
    """The output events of the bookings in the order of ``receipts``, each with a stable id.

    The id is derived from the transaction and what changed, so applying the same receipt
    again could only ever produce the same event, never a second one.
    """
    when = json_time(occurred_at)
    by_receipt: dict[str, list[OutputEvent]] = {receipt.transaction_no: [] for receipt in receipts}
    for coupon in coupons:
        event_id = event_id_text(coupon.transaction_no, "coupon", coupon.coupon_id, "receipt")
        by_receipt[coupon.transaction_no].append(
            OutputEvent(
                "coupon_usage",
                coupon.customer_id,
                event_id,
                {
                    "schema_version": 1,
                    "event_id": event_id,
                    "occurred_at": when,
                    "customer_id": coupon.customer_id,
                    "coupon_id": coupon.coupon_id,
                    "transaction_no": coupon.transaction_no,
                    "source": "receipt",
                    "delta": coupon.delta,
                    "uses_made": coupon.uses_made,
                    "uses_permitted": coupon.uses_permitted,
                    "over_limit": coupon.over_limit,
                },
            )
        )
    for booking in points:
        entry = booking.entry
        event_id = event_id_text(entry.transaction_no, "points", entry.kind)
        by_receipt[entry.transaction_no].append(
            OutputEvent(
                "points",
                entry.customer_id,
                event_id,
                {
                    "schema_version": 1,
                    "event_id": event_id,
                    "occurred_at": when,
                    "customer_id": entry.customer_id,
                    "transaction_no": entry.transaction_no,
                    "kind": entry.kind,
                    "points": entry.points,
                    "balance": booking.balance,
                },
            )
        )
    return [event for events in by_receipt.values() for event in events]
