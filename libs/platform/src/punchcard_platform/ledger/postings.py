"""What a batch of postings does to balances, lots and coupon counts, decided on plain values.

A *posting* is one change a sale or a return makes: points booked to a customer's ledger,
or uses added to (or given back from) a customer's count of a coupon. Both consumers
describe their effects as postings; ``post`` walks them in order from the state the store
read under the customers' locks and says, for each, the value right after it. That value
is what the output event reports, so a customer's events read as a running account.

Points live in *lots* (CONTRACT.md section 2): each credit (a sale's earn, or each expiry
a return's restore gives back into) is a lot that may expire. A burn spends the lots
soonest-expiring first, then older first, lots that never expire last; what no lot covers
becomes *debt*, which the next credits pay first. So at every step, per customer::

    balance = sum of the ledger = sum(lot.remaining) - debt

and a lot's points are, for good, either remaining, spent or expired (once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal, TypeVar

from punchcard_contract.program import ExpiryRules

__all__ = [
    "SALE",
    "Allocation",
    "LedgerState",
    "Lot",
    "LotKey",
    "PointsKind",
    "PointsPosting",
    "Posted",
    "PostedPoints",
    "PostedUses",
    "UsageKey",
    "UsePosting",
    "post",
]

PointsKind = Literal["earn", "burn", "restore", "revoke", "expire"]
UsageKey = tuple[str, str]
"""``(customer_id, coupon_id)``: the unit a coupon's uses are counted in."""
LotKey = tuple[str, str, int]
"""``(transaction_no, cause, seq)``: a lot's once-only key (its sale, its credit, its part)."""

SALE = "sale"
"""The cause of the points a sale itself books (its ``earn`` and ``burn``)."""

_NEVER = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PointsPosting:
    """One ledger entry to book: signed points (burn, revoke and expire are negative).

    ``cause`` is what booked it within its sale: ``SALE`` for the sale's own entries, the
    return's event id for a return's, ``"<lot cause>#<seq>"`` for a lot's expiry.
    ``(transaction_no, cause, kind)`` books once. ``expires_at`` is an earn's lot expiry.
    """

    customer_id: str
    transaction_no: str
    cause: str
    kind: PointsKind
    points: int
    occurred_at: datetime
    expires_at: datetime | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        """The ledger's once-only key."""
        return (self.transaction_no, self.cause, self.kind)


@dataclass(frozen=True, slots=True)
class Lot:
    """Points of one credit: how many, how many are left, and when they expire."""

    key: LotKey
    customer_id: str
    points: int
    remaining: int
    expires_at: datetime | None
    occurred_at: datetime
    expired: int = 0
    lot_id: int | None = None
    """The store's id; ``None`` for a lot this batch made."""

    def spend_order(self) -> tuple[bool, datetime, datetime, float, LotKey]:
        """Soonest expiry first, then older first, then as stored; never-expiring last."""
        return (
            self.expires_at is None,
            self.expires_at or _NEVER,
            self.occurred_at,
            float("inf") if self.lot_id is None else self.lot_id,
            self.key,
        )

    def left(self, remaining: int, expired: int) -> Lot:
        """This lot with ``remaining`` points left and ``expired`` expired (cheaper than
        ``dataclasses.replace``, which a batch calls for every lot it spends)."""
        return Lot(
            self.key,
            self.customer_id,
            self.points,
            remaining,
            self.expires_at,
            self.occurred_at,
            expired,
            self.lot_id,
        )

    def due(self, now: datetime) -> bool:
        """Its expiry has come and points remain to expire."""
        return self.remaining > 0 and self.expires_at is not None and self.expires_at <= now

    def expiry_cause(self) -> str:
        """The cause of this lot's ``expire`` ledger entry: one per lot."""
        return f"{self.key[1]}#{self.key[2]}"


@dataclass(frozen=True, slots=True)
class Allocation:
    """What a sale's burn took from one lot (``lot`` None: from no lot, as debt)."""

    transaction_no: str
    seq: int
    lot: LotKey | None
    points: int
    expires_at: datetime | None
    restored: int = 0


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
    """What the store read before the postings: balances and counts (absent means 0).

    ``lots`` holds at least every lot of these customers that is due, that a burn or a
    revoke could reach in spending order, and each returned sale's own lot;
    ``allocations`` what each returned sale's burn took, in the order taken.
    """

    balances: Mapping[str, int] = field(default_factory=dict)
    uses_made: Mapping[UsageKey, int] = field(default_factory=dict)
    uses_permitted: Mapping[str, int | None] = field(default_factory=dict)
    """Limits of the catalog coupons; a coupon absent here has no limit."""
    debts: Mapping[str, int] = field(default_factory=dict)
    lots: Sequence[Lot] = ()
    allocations: Mapping[str, Sequence[Allocation]] = field(default_factory=dict)
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
    """Every posting that changed something, with the value after it, in posting order.

    ``points`` starts with the ``expire`` entries of the lots found due. ``lots`` and
    ``allocations`` are the ones made or changed, as they stand after the postings.
    """

    points: list[PostedPoints]
    uses: list[PostedUses]
    lots: list[Lot] = field(default_factory=list)
    allocations: list[Allocation] = field(default_factory=list)
    debt_deltas: dict[str, int] = field(default_factory=dict)

    def balance_deltas(self) -> dict[str, int]:
        """How much each customer's balance moves, sorted by customer (the lock order)."""
        return _summed((p.posting.customer_id, p.posting.points) for p in self.points)

    def expiries(self) -> list[PointsPosting]:
        """The ``expire`` entries, which no caller asked for: the ledger books them itself."""
        return [p.posting for p in self.points if p.posting.kind == "expire"]

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
    *,
    now: datetime | None = None,
    rules: ExpiryRules | None = None,
) -> Posted:
    """Apply the postings in order to ``state``; say what each changed and the value after.

    First the lots in ``state`` that are due at ``now`` expire (one ``expire`` entry each),
    so nothing spends points that are gone. Points are never clamped: a balance may go
    negative (CONTRACT.md section 2). A count is never taken below zero: giving back more
    uses than are counted gives back what there is, and a change of nothing is left out
    (no event says "0"). A coupon's total across customers moves by exactly what its
    customers' counts moved.
    """
    book = _PointsBook(state, now or datetime.now(UTC), rules or ExpiryRules())
    book.expire_due()
    for entry in points:
        if entry.points:
            book.apply(entry)
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
    return Posted(
        book.posted,
        posted_uses,
        lots=[book.lots[key] for key in sorted(book.changed_lots)],
        allocations=[
            allocation
            for tx in sorted(book.changed_allocations)
            for allocation in book.allocations[tx]
        ],
        debt_deltas={
            c: book.debts.get(c, 0) - state.debts.get(c, 0)
            for c in sorted(book.debts)
            if book.debts.get(c, 0) != state.debts.get(c, 0)
        },
    )


class _PointsBook:
    """The points side of ``post``: balances, lots, debts and burns' allocations, mutable."""

    def __init__(self, state: LedgerState, now: datetime, rules: ExpiryRules) -> None:
        self.now = now
        self.rules = rules
        self.balances = dict(state.balances)
        self.debts = dict(state.debts)
        self.lots: dict[LotKey, Lot] = {lot.key: lot for lot in state.lots}
        self.lots_of: dict[str, list[LotKey]] = {}
        for key, lot in self.lots.items():
            self.lots_of.setdefault(lot.customer_id, []).append(key)
        self.allocations: dict[str, list[Allocation]] = {
            tx: list(taken) for tx, taken in state.allocations.items()
        }
        self.posted: list[PostedPoints] = []
        self.changed_lots: set[LotKey] = set()
        self.changed_allocations: set[str] = set()

    def expire_due(self) -> None:
        """Expire every lot that is due: its remaining points, once, at its own moment."""
        due = sorted((lot for lot in self.lots.values() if lot.due(self.now)), key=Lot.spend_order)
        for lot in due:
            self._set(lot.left(0, lot.expired + lot.remaining))
            self._book(
                PointsPosting(
                    lot.customer_id,
                    lot.key[0],
                    lot.expiry_cause(),
                    "expire",
                    -lot.remaining,
                    lot.expires_at or self.now,
                )
            )

    def apply(self, entry: PointsPosting) -> None:
        if entry.kind == "earn":
            self._credit(entry, [(entry.points, entry.expires_at)])
        elif entry.kind == "restore":
            self._credit(entry, self._give_back(entry.transaction_no, entry.points))
        elif entry.kind == "burn":
            taken = self._spend(entry.customer_id, -entry.points, first=None)
            self._allocate(entry.transaction_no, taken)
        elif entry.kind == "revoke":
            self._spend(entry.customer_id, -entry.points, first=(entry.transaction_no, SALE, 0))
        else:
            raise ValueError(f"the ledger books {entry.kind} entries itself")
        self._book(entry)

    def _book(self, entry: PointsPosting) -> None:
        balance = self.balances.get(entry.customer_id, 0) + entry.points
        self.balances[entry.customer_id] = balance
        self.posted.append(PostedPoints(entry, balance))

    def _set(self, lot: Lot) -> None:
        if lot.key not in self.lots:
            self.lots_of.setdefault(lot.customer_id, []).append(lot.key)
        self.lots[lot.key] = lot
        self.changed_lots.add(lot.key)

    def _credit(self, entry: PointsPosting, parts: Sequence[tuple[int, datetime | None]]) -> None:
        """New lots for a credit, soonest-expiring first; they pay the debt first, in that order."""
        debt = self.debts.get(entry.customer_id, 0)
        ordered = (
            parts
            if len(parts) == 1
            else sorted(parts, key=lambda part: (part[1] is None, part[1] or _NEVER))
        )
        for seq, (points, expires_at) in enumerate(ordered):
            paid = min(debt, points)
            debt -= paid
            self._set(
                Lot(
                    (entry.transaction_no, entry.cause, seq),
                    entry.customer_id,
                    points,
                    points - paid,
                    expires_at,
                    entry.occurred_at,
                )
            )
        if debt or entry.customer_id in self.debts:
            self.debts[entry.customer_id] = debt

    def _spend(
        self, customer_id: str, amount: int, *, first: LotKey | None
    ) -> list[tuple[Lot | None, int]]:
        """Take ``amount`` from the customer's lots (``first`` before the spending order);
        what they do not hold becomes debt. What was taken from which lot, in order."""
        order = sorted(
            (
                lot
                for lot in map(self.lots.__getitem__, self.lots_of.get(customer_id, ()))
                if lot.remaining > 0 and not lot.due(self.now) and lot.key != first
            ),
            key=Lot.spend_order,
        )
        own = self.lots.get(first) if first is not None else None
        if own is not None and own.remaining > 0 and not own.due(self.now):
            order.insert(0, own)
        taken: list[tuple[Lot | None, int]] = []
        for lot in order:
            if not amount:
                break
            n = min(lot.remaining, amount)
            self._set(lot.left(lot.remaining - n, lot.expired))
            taken.append((lot, n))
            amount -= n
        if amount:
            self.debts[customer_id] = self.debts.get(customer_id, 0) + amount
            taken.append((None, amount))
        return taken

    def _allocate(self, transaction_no: str, taken: Sequence[tuple[Lot | None, int]]) -> None:
        allocations = self.allocations.setdefault(transaction_no, [])
        for lot, n in taken:
            allocations.append(
                Allocation(
                    transaction_no,
                    len(allocations),
                    None if lot is None else lot.key,
                    n,
                    None if lot is None else lot.expires_at,
                )
            )
        self.changed_allocations.add(transaction_no)

    def _give_back(self, transaction_no: str, amount: int) -> list[tuple[int, datetime | None]]:
        """Points a return restores, by the expiry they come back with: the burn's last
        parts first, each with the expiry of the lot it came from, never sooner than the
        grace after the return; a part beyond what was allocated counts as taken from no lot."""
        allocations = self.allocations.get(transaction_no, [])
        by_expiry: dict[datetime | None, int] = {}
        for index in reversed(range(len(allocations))):
            if not amount:
                break
            allocation = allocations[index]
            n = min(allocation.points - allocation.restored, amount)
            if not n:
                continue
            allocations[index] = replace(allocation, restored=allocation.restored + n)
            self.changed_allocations.add(transaction_no)
            expiry = self.rules.restored_expiry(
                allocation.expires_at, from_a_lot=allocation.lot is not None, applied_at=self.now
            )
            by_expiry[expiry] = by_expiry.get(expiry, 0) + n
            amount -= n
        if amount:
            expiry = self.rules.restored_expiry(None, from_a_lot=False, applied_at=self.now)
            by_expiry[expiry] = by_expiry.get(expiry, 0) + amount
        return [(n, expiry) for expiry, n in by_expiry.items()]
