"""What a batch of receipts changes, decided on plain values.

Nothing here touches the database or Kafka. The store reports which receipts were new and
which stored receipt stands for each repeat; these functions tell redeliveries from
conflicts and turn the new receipts into postings for the shared ledger
(``punchcard_platform.ledger``), which books them and builds their output events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from punchcard_contract.program import ExpiryRules
from punchcard_platform.ledger import SALE, PointsKind, PointsPosting, UsePosting

__all__ = [
    "Deliverable",
    "ReceiptFacts",
    "Repeats",
    "judge_repeats",
    "receipt_postings",
    "split_first_deliveries",
]


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
    points_expire_at: datetime | None = None
    coupon_reservations: Mapping[str, str] = field(default_factory=dict)
    """The reservation named for each coupon's uses, where one was."""


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


def receipt_postings(
    receipts: Sequence[ReceiptFacts], rules: ExpiryRules | None = None
) -> tuple[list[PointsPosting], list[UsePosting]]:
    """What the new receipts book, in receipt order: points burned then earned, coupon uses.

    A sale spends points before it earns new ones; a zero amount books nothing, and an
    anonymous sale has nobody to book to (the contract refuses points on one anyway) and
    counts toward no customer's coupon usage. The earned points expire when the receipt
    says (``points_expire_at``), else when the program's lifetime says.
    """
    rules = rules or ExpiryRules()
    points: list[PointsPosting] = []
    uses: list[UsePosting] = []
    for receipt in receipts:
        customer_id = receipt.customer_id
        if customer_id is None:
            continue
        for coupon_id, n in receipt.coupon_uses.items():
            uses.append(
                UsePosting(
                    customer_id,
                    coupon_id,
                    receipt.transaction_no,
                    SALE,
                    "receipt",
                    n,
                    receipt.coupon_reservations.get(coupon_id),
                )
            )
        moves: tuple[tuple[PointsKind, int], ...] = (
            ("burn", -receipt.points_used),
            ("earn", receipt.points_earned),
        )
        for kind, amount in moves:
            if amount:
                points.append(
                    PointsPosting(
                        customer_id,
                        receipt.transaction_no,
                        SALE,
                        kind,
                        amount,
                        receipt.occurred_at,
                        rules.earned_expiry(receipt.occurred_at, receipt.points_expire_at)
                        if kind == "earn"
                        else None,
                    )
                )
    return points, uses
