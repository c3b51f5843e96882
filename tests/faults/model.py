"""What the system must end up as, computed from the input topics as they were written.

Written from CONTRACT.md alone; it shares no code with the services. The input is the
log itself (read back after the load), not what the load generator meant to send: a send
that timed out during a broker restart may or may not be in the log, and its retry may be
there twice, so the log is the only truth about what was published and in what order.

The rules, from the contract (section 2):
- receipts: the first record of a ``transaction_no`` stands; a later one with the same
  content (``event_id`` aside) is a redelivery; with other content it is a
  ``conflicting_duplicate`` dead letter.
- returns of one sale are decided in log order (one partition, keyed by the sale): a
  repeated ``event_id`` is a redelivery; a repeated ``return_id`` with the same content is
  one too (no outcome), with other content a ``conflicting_duplicate`` dead letter.
- a return without ``lines`` takes back all that remains; with ``lines``, those
  quantities. Rejected, in this order: ``unknown_line``, ``already_returned`` (nothing
  remains of the sale, or of every named line), ``exceeds_remaining``.
- points are cumulative per sale: after a return, ``floor(earned * R / W)`` revoked and
  ``floor(used * R / W)`` restored in all (W: positive line amounts; R: their returned
  share), the return that leaves nothing books the rest, each return books the difference.
- coupon uses come back only with the return that leaves nothing of the sale.
- a coupon's total (issue 20) is the sum of its uses over customers (an anonymous sale
  counts toward nobody); a sale's ``coupons[].reservation_id`` is named again in its
  CouponUsageEvent (null when the sale named none) and consumes that reservation, for
  the sale that stands (a redelivery names it again and consumes nothing more).

Expiry (section 2, issue 19): a sale's ``points_earned`` is a lot; one with
``points_expire_at`` loses what remains in it at that moment, once: one ``expire`` entry
(``transaction_no`` the sale, cause ``sale#0``). What remains depends on which burns took
from the lot, and a customer's burns take from whichever lots were booked before them, in
whatever order the partitions were applied; so the model is exact only where that order
cannot matter. The load is made so that every lot whose amount could depend on when it
expires (``ExpiringLot.after_load``) expires after all of the records are applied (then
no return meets an expired lot), restored points come back with the grace of days (they
never expire within a run), and a customer either burns or holds limited-time lots, or
both:
- a customer who never burns: each expiring lot loses ``points_earned`` less what the
  sale's returns revoked (a revoke takes from the sale's own lot first, and only the
  sale's own returns touch it), and the balance is exact; a lot of a sale never
  returned loses all it earned whenever it expires, so the load expires some of those
  during the faults;
- a customer who burns and holds expiring lots is *uncertain*: how much expires depends
  on the order of application, so the checks hold the invariants instead (at most one
  ``expire`` entry per lot, never more than the lot earned, the balance equal to the
  ledger's sum and to the lots' remaining less the debt).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

__all__ = [
    "EXPIRY_CAUSE",
    "SALE",
    "Expected",
    "ExpiringLot",
    "InputRecord",
    "Outcome",
    "coupon_totals",
    "expected_state",
    "expires_at",
    "quantity",
]

SALE = "sale"
"""The ledger's cause for a sale's own earn and burn; a return's entries name its event_id."""

EXPIRY_CAUSE = "sale#0"
"""The cause of a sale's lot's ``expire`` entry: the lot's own cause and its part (one)."""


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One record of an input topic as it sits in the log."""

    partition: int
    offset: int
    value: bytes


PointsKey = tuple[str, str, str]
"""(transaction_no, kind, cause)"""
UsageKey = tuple[str, str, str]
"""(transaction_no, coupon_id, source)"""
Lines = tuple[tuple[int, Fraction], ...]
"""(line_no, quantity) pairs, by line_no"""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a ReturnOutcomeEvent must say (quantities compared exactly, not as text)."""

    status: str
    reason: str | None
    points_restored: int
    points_revoked: int
    return_id: str | None
    lines: Lines
    fully_returned: bool


@dataclass(frozen=True, slots=True)
class ExpiringLot:
    """A sale's lot that carries ``points_expire_at``; ``expires`` is None when uncertain.

    ``after_load``: what it loses depends on when it expires (its sale is returned, or its
    customer burns), so it must expire after every record is applied.
    """

    customer_id: str
    points: int
    expires_at: datetime
    expires: int | None
    after_load: bool = True


@dataclass(slots=True)
class Expected:
    """The state and the output events one clean pass over the logs gives."""

    receipts: set[str] = field(default_factory=set)
    customer_of: dict[str, str | None] = field(default_factory=dict)
    uses: dict[tuple[str, str], int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    """coupon_id -> its uses across all customers, for every coupon used"""
    usage_reservations: dict[UsageKey, str | None] = field(default_factory=dict)
    """(transaction_no, coupon_id, "receipt") -> the reservation the sale named, or None"""
    named: dict[str, str] = field(default_factory=dict)
    """reservation_id -> the standing sale that names it"""
    balances: dict[str, int] = field(default_factory=dict)
    """After every lot due has expired; an uncertain customer's is before expiry"""
    before_expiry: dict[str, int] = field(default_factory=dict)
    """Every customer's balance once all records are applied and before any lot expires"""
    expiring: dict[str, ExpiringLot] = field(default_factory=dict)
    """transaction_no -> its sale's lot, for every sale whose earned points expire"""
    uncertain: set[str] = field(default_factory=set)
    """Customers whose expiry amounts depend on the order the partitions were applied in"""
    ledger: Counter[tuple[str, str, str, str, int]] = field(default_factory=Counter)
    """(customer_id, transaction_no, kind, cause, signed points) -> 1"""
    returns: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    """return event_id -> (status, reason), for every return that gets an outcome"""
    tx_of_return: dict[str, str] = field(default_factory=dict)
    """return event_id -> transaction_no"""
    decided: dict[str, list[str]] = field(default_factory=dict)
    """transaction_no -> its returns' event ids in the order they must be decided"""
    sale_returns: dict[str, tuple[tuple[Fraction, ...], int, int, bool]] = field(
        default_factory=dict
    )
    """transaction_no -> (returned per line, points restored, points revoked, fully returned),
    for every sale with an accepted return"""
    points_events: dict[PointsKey, tuple[str, int]] = field(default_factory=dict)
    """(transaction_no, kind, cause) -> (customer_id, signed points)"""
    usage_events: dict[UsageKey, tuple[str, int]] = field(default_factory=dict)
    """(transaction_no, coupon_id, source) -> (customer_id, delta)"""
    outcome_events: dict[str, Outcome] = field(default_factory=dict)
    """return event_id -> its outcome"""
    conflicts: set[tuple[int, int]] = field(default_factory=set)
    """(partition, offset) of every receipt record that must be dead-lettered"""
    return_conflicts: set[tuple[int, int]] = field(default_factory=set)
    """(partition, offset) of every return record that must be dead-lettered"""
    input_records: int = 0

    def admit_expiries(
        self, entries: Iterable[tuple[str, str, str, str, int]]
    ) -> set[tuple[str, str, str, str, int]]:
        """Take the uncertain customers' ``expire`` entries as booked where the contract
        allows them (once, on one of the customer's expiring sale lots, losing at most what
        it earned) and say which it does not allow. Other customers' entries are left to
        the exact comparison."""
        refused: set[tuple[str, str, str, str, int]] = set()
        for entry in entries:
            customer, tx, kind, cause, points = entry
            if kind != "expire" or customer not in self.uncertain:
                continue
            lot = self.expiring.get(tx)
            key = (tx, kind, cause)
            if (
                lot is None
                or lot.customer_id != customer
                or cause != EXPIRY_CAUSE
                or not 0 < -points <= lot.points
                or key in self.points_events
            ):
                refused.add(entry)
                continue
            self.ledger[entry] += 1
            self.points_events[key] = (customer, points)
            self.balances[customer] += points
        return refused


def quantity(value: object) -> Fraction:
    """A quantity as the contract reads it: exactly, from a decimal string or JSON number."""
    return Fraction(Decimal(str(value)))


def _content(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != "event_id"}


def _coupon_uses(document: dict[str, Any]) -> dict[str, int]:
    summed: Counter[str] = Counter()
    for coupon in document.get("coupons") or []:
        summed[coupon["coupon_id"]] += int(coupon.get("uses", 1))
    return dict(summed)


def _named_reservations(document: dict[str, Any]) -> dict[str, str]:
    """coupon_id -> the first reservation_id its entries name."""
    named: dict[str, str] = {}
    for coupon in document.get("coupons") or []:
        reservation = coupon.get("reservation_id")
        if reservation is not None:
            named.setdefault(coupon["coupon_id"], reservation)
    return named


def _in_log_order(records: Iterable[InputRecord]) -> list[InputRecord]:
    return sorted(records, key=lambda r: (r.partition, r.offset))


def expected_state(receipts: Iterable[InputRecord], returns: Iterable[InputRecord]) -> Expected:
    """The expected end state after every record of both logs was applied once."""
    out = Expected()
    sales = _standing_sales(receipts, out)
    return_records = _returns_by_sale(returns, out)
    for tx, sale in sales.items():
        _book_sale(out, tx, sale)
    for tx, records in return_records.items():
        if tx not in sales:
            raise AssertionError(f"the workload returned {tx} but never sold it")
        _SaleReturns(out, tx, sales[tx]).replay(records)
    out.uses = {k: v for k, v in out.uses.items() if v}
    out.totals = coupon_totals(out.uses)
    out.before_expiry = dict(out.balances)
    _expire(out, sales)
    return out


def coupon_totals(uses: dict[tuple[str, str], int]) -> dict[str, int]:
    """Each coupon's uses across all customers, from the uses per (customer, coupon)."""
    totals: Counter[str] = Counter()
    for (_, coupon), count in uses.items():
        totals[coupon] += count
    return {coupon: count for coupon, count in totals.items() if count}


def expires_at(sale: dict[str, Any]) -> datetime | None:
    """The sale's ``points_expire_at``, if it has one."""
    text = sale.get("points_expire_at")
    return None if text is None else datetime.fromisoformat(text)


def _expire(out: Expected, sales: dict[str, dict[str, Any]]) -> None:
    """Every expiring lot's end, once all records are applied (the load sees to that)."""
    burners = {
        sale["customer_id"]
        for sale in sales.values()
        if sale.get("customer_id") and int(sale.get("points_used", 0))
    }
    for tx, sale in sorted(sales.items()):
        customer, moment = sale.get("customer_id"), expires_at(sale)
        earned = int(sale.get("points_earned", 0))
        if customer is None or moment is None or not earned:
            continue
        if customer in burners:
            out.uncertain.add(customer)
            out.expiring[tx] = ExpiringLot(customer, earned, moment, None)
            continue
        # Nothing but the sale's own revokes ever took from this lot.
        revoked = out.sale_returns.get(tx, ((), 0, 0, False))[2]
        left = earned - revoked
        out.expiring[tx] = ExpiringLot(customer, earned, moment, left, tx in out.decided)
        if left:
            out.ledger[(customer, tx, "expire", EXPIRY_CAUSE, -left)] += 1
            out.points_events[(tx, "expire", EXPIRY_CAUSE)] = (customer, -left)
            out.balances[customer] -= left


def _standing_sales(records: Iterable[InputRecord], out: Expected) -> dict[str, dict[str, Any]]:
    """The first receipt of each transaction; later ones with other content are conflicts."""
    sales: dict[str, dict[str, Any]] = {}
    for record in _in_log_order(records):
        out.input_records += 1
        document = json.loads(record.value)
        standing = sales.setdefault(document["transaction_no"], document)
        if standing is not document and _content(standing) != _content(document):
            out.conflicts.add((record.partition, record.offset))
    return sales


def _returns_by_sale(
    records: Iterable[InputRecord], out: Expected
) -> dict[str, list[tuple[InputRecord, dict[str, Any]]]]:
    """Each sale's return records in log order (all of a sale's share one partition)."""
    by_sale: dict[str, list[tuple[InputRecord, dict[str, Any]]]] = defaultdict(list)
    for record in _in_log_order(records):
        out.input_records += 1
        document = json.loads(record.value)
        by_sale[document["transaction_no"]].append((record, document))
    return by_sale


def _book_sale(out: Expected, tx: str, sale: dict[str, Any]) -> None:
    customer = sale.get("customer_id")
    out.receipts.add(tx)
    out.customer_of[tx] = customer
    if customer is None:
        # Anonymous: stored, counted toward nobody, no points.
        return
    used, earned = int(sale.get("points_used", 0)), int(sale.get("points_earned", 0))
    named = _named_reservations(sale)
    for coupon, count in _coupon_uses(sale).items():
        out.usage_events[(tx, coupon, "receipt")] = (customer, count)
        out.usage_reservations[(tx, coupon, "receipt")] = named.get(coupon)
        if coupon in named:
            out.named.setdefault(named[coupon], tx)
        out.uses[(customer, coupon)] = out.uses.get((customer, coupon), 0) + count
    for kind, points in (("burn", -used), ("earn", earned)):
        if points:
            out.ledger[(customer, tx, kind, SALE, points)] += 1
            out.points_events[(tx, kind, SALE)] = (customer, points)
    out.balances[customer] = out.balances.get(customer, 0) + earned - used


class _SaleReturns:
    """One sale's returns replayed in log order: what remains, and what has been booked."""

    def __init__(self, out: Expected, tx: str, sale: dict[str, Any]) -> None:
        self.out, self.tx, self.sale = out, tx, sale
        self.customer: str | None = sale.get("customer_id")
        lines = sale.get("lines") or []
        self.quantities = [quantity(line["quantity"]) for line in lines]
        self.amounts = [max(quantity(line["amount"]), Fraction(0)) for line in lines]
        self.returned = [Fraction(0)] * len(lines)
        self.whole_returned = False  # a sale without lines, returned whole
        self.restored = self.revoked = 0
        self.seen_events: set[str] = set()
        self.return_ids: dict[str, dict[str, Any]] = {}
        out.decided[tx] = []

    def replay(self, records: list[tuple[InputRecord, dict[str, Any]]]) -> None:
        """Decide each return record in log order, then note what the sale's row holds."""
        for record, document in records:
            self._one(record, document)
        if self.restored or self.revoked or any(self.returned) or self.whole_returned:
            self.out.sale_returns[self.tx] = (
                tuple(self.returned),
                self.restored,
                self.revoked,
                self._nothing_remains(),
            )

    def _one(self, record: InputRecord, document: dict[str, Any]) -> None:
        event_id = document["event_id"]
        if event_id in self.seen_events:
            return
        self.seen_events.add(event_id)
        return_id = document.get("return_id")
        if return_id is not None:
            standing = self.return_ids.setdefault(return_id, document)
            if standing is not document:
                if _content(standing) != _content(document):
                    self.out.return_conflicts.add((record.partition, record.offset))
                return
        self.out.tx_of_return[event_id] = self.tx
        self.out.decided[self.tx].append(event_id)
        outcome = self._decide(document)
        self.out.returns[event_id] = (outcome.status, outcome.reason)
        self.out.outcome_events[event_id] = outcome

    def _remaining(self, n: int) -> Fraction:
        return self.quantities[n] - self.returned[n]

    def _nothing_remains(self) -> bool:
        if not self.quantities:
            return self.whole_returned
        return all(self._remaining(n) == 0 for n in range(len(self.quantities)))

    def _returned_share(self) -> Fraction:
        """R / W: the returned share of the positive line amounts (0 when W is 0)."""
        whole = sum(self.amounts, Fraction(0))
        if not whole:
            return Fraction(0)
        parts = zip(self.amounts, self.returned, self.quantities, strict=True)
        return sum((a * r / q for a, r, q in parts), Fraction(0)) / whole

    def _rejected(self, return_id: str | None, reason: str) -> Outcome:
        return Outcome("rejected", reason, 0, 0, return_id, (), self._nothing_remains())

    def _decide(self, document: dict[str, Any]) -> Outcome:
        return_id = document.get("return_id")
        named = document.get("lines")
        count = len(self.quantities)
        if named is not None:
            wanted = {int(line["line_no"]): quantity(line["quantity"]) for line in named}
            if any(not 1 <= n <= count for n in wanted):
                return self._rejected(return_id, "unknown_line")
            if all(self._remaining(n - 1) == 0 for n in wanted):
                return self._rejected(return_id, "already_returned")
            if any(q > self._remaining(n - 1) for n, q in wanted.items()):
                return self._rejected(return_id, "exceeds_remaining")
        else:
            if self._nothing_remains():
                return self._rejected(return_id, "already_returned")
            wanted = {n + 1: self._remaining(n) for n in range(count) if self._remaining(n)}
        for n, q in wanted.items():
            self.returned[n - 1] += q
        if not self.quantities:
            self.whole_returned = True
        return self._accept(return_id, document["event_id"], wanted)

    def _accept(self, return_id: str | None, event_id: str, taken: dict[int, Fraction]) -> Outcome:
        fully = self._nothing_remains()
        used = int(self.sale.get("points_used", 0)) if self.customer else 0
        earned = int(self.sale.get("points_earned", 0)) if self.customer else 0
        share = Fraction(1) if fully else self._returned_share()
        restore = math.floor(used * share) - self.restored
        revoke = math.floor(earned * share) - self.revoked
        self.restored += restore
        self.revoked += revoke
        customer = self.customer
        if customer is not None:
            for kind, points in (("restore", restore), ("revoke", -revoke)):
                if points:
                    self.out.ledger[(customer, self.tx, kind, event_id, points)] += 1
                    self.out.points_events[(self.tx, kind, event_id)] = (customer, points)
            self.out.balances[customer] += restore - revoke
            if fully:
                for coupon, uses in _coupon_uses(self.sale).items():
                    self.out.usage_events[(self.tx, coupon, "return")] = (customer, -uses)
                    self.out.uses[(customer, coupon)] -= uses
        lines = tuple(sorted(taken.items()))
        return Outcome("accepted", None, restore, revoke, return_id, lines, fully)
