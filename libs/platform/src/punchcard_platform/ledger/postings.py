"""What a batch of postings does to balances and coupon counts, decided on plain values.

A *posting* is one change a sale or a return makes: points booked to a customer's ledger,
or uses added to (or given back from) a customer's count of a coupon. Both consumers
describe their effects as postings; ``post`` walks them in order from the state the store
read under the customers' locks and says, for each, the value right after it. That value
is what the output event reports, so a customer's events read as a running account.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeVar

__all__ = [
    "SALE",
    "LedgerState",
    "PointsKind",
    "PointsPosting",
    "Posted",
    "PostedPoints",
    "PostedUses",
    "UsageKey",
    "UsePosting",
    "post",
]

PointsKind = Literal["earn", "burn", "restore", "revoke"]
UsageKey = tuple[str, str]
"""``(customer_id, coupon_id)``: the unit a coupon's uses are counted in."""

SALE = "sale"
"""The cause of the points a sale itself books (its ``earn`` and ``burn``)."""


@dataclass(frozen=True, slots=True)
class PointsPosting:
    """One ledger entry to book: signed points (burn and revoke are negative).

    ``cause`` is what booked it within its sale: ``SALE`` for the sale's own entries, the
    return's event id for a return's. ``(transaction_no, cause, kind)`` books once.
    """

    customer_id: str
    transaction_no: str
    cause: str
    kind: PointsKind
    points: int
    occurred_at: datetime

    @property
    def key(self) -> tuple[str, str, str]:
        """The ledger's once-only key."""
        return (self.transaction_no, self.cause, self.kind)


@dataclass(frozen=True, slots=True)
class UsePosting:
    """Uses of a coupon added (a sale) or given back (a return, negative) for a customer."""

    customer_id: str
    coupon_id: str
    transaction_no: str
    cause: str
    source: Literal["receipt", "return"]
    delta: int
    reservation_id: str | None = None
    """The reservation a sale named for these uses (reported, never a condition)."""

    @property
    def usage_key(self) -> UsageKey:
        """The count this posting changes."""
        return (self.customer_id, self.coupon_id)


@dataclass(frozen=True, slots=True)
class LedgerState:
    """What the store read before the postings: balances and counts (absent means 0)."""

    balances: Mapping[str, int] = field(default_factory=dict)
    uses_made: Mapping[UsageKey, int] = field(default_factory=dict)
    uses_permitted: Mapping[str, int | None] = field(default_factory=dict)
    """Limits of the catalog coupons; a coupon absent here has no limit."""
    total_uses_made: Mapping[str, int] = field(default_factory=dict)
    """Each coupon's uses across all customers."""
    total_uses_permitted: Mapping[str, int | None] = field(default_factory=dict)
    """Campaign-wide limits of the catalog coupons; absent means none."""


@dataclass(frozen=True, slots=True)
class PostedPoints:
    """A booked entry and the customer's balance right after it."""

    posting: PointsPosting
    balance: int


@dataclass(frozen=True, slots=True)
class PostedUses:
    """A change of a count as applied: ``delta`` may be less than asked (never below 0)."""

    posting: UsePosting
    delta: int
    uses_made: int
    uses_permitted: int | None
    total_uses_made: int = 0
    total_uses_permitted: int | None = None


@dataclass(frozen=True, slots=True)
class Posted:
    """Every posting that changed something, with the value after it, in posting order."""

    points: list[PostedPoints]
    uses: list[PostedUses]

    def balance_deltas(self) -> dict[str, int]:
        """How much each customer's balance moves, sorted by customer (the lock order)."""
        return _summed((p.posting.customer_id, p.posting.points) for p in self.points)

    def usage_deltas(self) -> dict[UsageKey, int]:
        """How much each count moves, sorted by key (the row lock order)."""
        return _summed((u.posting.usage_key, u.delta) for u in self.uses)

    def total_deltas(self) -> dict[str, int]:
        """How much each coupon's total across customers moves, sorted by coupon."""
        return _summed((u.posting.coupon_id, u.delta) for u in self.uses)


_K = TypeVar("_K", str, UsageKey)


def _summed(pairs: Iterable[tuple[_K, int]]) -> dict[_K, int]:
    totals: dict[_K, int] = {}
    for key, delta in pairs:
        totals[key] = totals.get(key, 0) + delta
    return dict(sorted(totals.items()))


def post(
    state: LedgerState,
    points: Sequence[PointsPosting],
    uses: Sequence[UsePosting],
) -> Posted:
    """Apply the postings in order to ``state``; say what each changed and the value after.

    Points are never clamped: a balance may go negative (CONTRACT.md section 2). A count is
    never taken below zero: giving back more uses than are counted gives back what there is,
    and a change of nothing is left out (no event says "0"). A coupon's total across
    customers moves by exactly what its customers' counts moved.
    """
    balances = dict(state.balances)
    posted_points: list[PostedPoints] = []
    for entry in points:
        if not entry.points:
            continue
        balance = balances.get(entry.customer_id, 0) + entry.points
        balances[entry.customer_id] = balance
        posted_points.append(PostedPoints(entry, balance))
    counts = dict(state.uses_made)
    totals = dict(state.total_uses_made)
    posted_uses: list[PostedUses] = []
    for use in uses:
        before = counts.get(use.usage_key, 0)
        after = max(before + use.delta, 0)
        if after == before:
            continue
        counts[use.usage_key] = after
        total = totals[use.coupon_id] = totals.get(use.coupon_id, 0) + after - before
        posted_uses.append(
            PostedUses(
                use,
                after - before,
                after,
                state.uses_permitted.get(use.coupon_id),
                total,
                state.total_uses_permitted.get(use.coupon_id),
            )
        )
    return Posted(posted_points, posted_uses)
