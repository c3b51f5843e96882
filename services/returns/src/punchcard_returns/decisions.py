"""What a return changes, decided from plain values: no database, no Kafka.

The store loads the facts (the returns to decide, their stored sales, what has been
returned of each so far, the catalog flags) and writes back what these functions say. The
rules are CONTRACT.md section 2 ("ReturnEvent"): a return takes back some lines of a sale,
or everything that remains of it; the points it moves are cumulative per sale, so that the
points moved depend only on what has been returned, never on how it was split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from punchcard_platform.ledger import PointsKind, PointsPosting, UsePosting

__all__ = [
    "Accepted",
    "BatchDecisions",
    "Decided",
    "PendingReturn",
    "Rejected",
    "ReturnState",
    "SaleLine",
    "StoredSale",
    "decide_return",
    "decide_returns",
    "decimal_text",
    "returned_amount",
]

RejectReason = Literal[
    "already_returned", "unknown_transaction", "unknown_line", "exceeds_remaining"
]
LineTaken = tuple[int, Decimal]
"""``(line_no, quantity)``: how much of a line (1-based) a return takes back."""


@dataclass(frozen=True, slots=True)
class SaleLine:
    """What a return needs of one line of the sale."""

    quantity: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class StoredSale:
    """What a return needs of the stored sale: who, which points, lines and coupon uses."""

    transaction_no: str
    customer_id: str | None
    points_used: int
    points_earned: int
    lines: tuple[SaleLine, ...] = ()
    coupons: tuple[tuple[str, int], ...] = ()
    """(coupon_id, uses) as the receipt consumer summed them."""
    points_expired: int = 0
    """What of the points it earned has expired by the decision (its lot's expired part)."""


@dataclass(frozen=True, slots=True)
class ReturnState:
    """What has been returned of a sale so far, over all its accepted returns."""

    returned: tuple[Decimal, ...]
    """Per line of the sale, the quantity returned."""
    points_restored: int = 0
    points_revoked: int = 0
    fully_returned: bool = False

    @classmethod
    def nothing_returned(cls, sale: StoredSale) -> ReturnState:
        """A sale no return has touched."""
        return cls(returned=tuple(Decimal(0) for _ in sale.lines))

    def remaining(self, sale: StoredSale) -> tuple[Decimal, ...]:
        """Per line, the quantity not returned yet."""
        return tuple(
            line.quantity - returned
            for line, returned in zip(sale.lines, self.returned, strict=True)
        )


@dataclass(frozen=True, slots=True)
class PendingReturn:
    """A return event stored but not yet decided (it may be waiting for its sale)."""

    event_id: str
    transaction_no: str
    seq: int
    wait_until: datetime
    occurred_at: datetime
    return_id: str | None = None
    lines: tuple[LineTaken, ...] | None = None
    """None: everything of the sale that remains."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A return that applies: what it took, the sale's state after it, the points it moves."""

    taken: tuple[LineTaken, ...]
    state: ReturnState
    points_restored: int
    points_revoked: int

    @property
    def fully_returned(self) -> bool:
        """Nothing of the sale remains: this return also gives the coupon uses back."""
        return self.state.fully_returned


@dataclass(frozen=True, slots=True)
class Rejected:
    """A return that changes nothing, and why; ``fully_returned`` says the sale is all back."""

    reason: RejectReason
    fully_returned: bool = False


def decide_return(
    sale: StoredSale, state: ReturnState, lines: Sequence[LineTaken] | None
) -> Accepted | Rejected:
    """Decide one return of ``sale`` given what its earlier returns took (rules 4 to 7).

    Rejections are checked in the contract's order: a line the sale does not have, then
    nothing left to return, then a quantity over what remains.
    """
    remaining = state.remaining(sale)
    done = state.fully_returned
    if lines is None:
        if done:
            return Rejected("already_returned", done)
        taken = tuple((n, left) for n, left in enumerate(remaining, start=1) if left > 0)
    else:
        if any(n > len(sale.lines) for n, _ in lines):
            return Rejected("unknown_line", done)
        if all(remaining[n - 1] <= 0 for n, _ in lines):
            return Rejected("already_returned", done)
        if any(quantity > remaining[n - 1] for n, quantity in lines):
            return Rejected("exceeds_remaining", done)
        taken = tuple(sorted(lines))
    returned = list(state.returned)
    for n, quantity in taken:
        returned[n - 1] += quantity
    fully = all(r == line.quantity for r, line in zip(returned, sale.lines, strict=True))
    restored_total, revoked_total = _points_after(sale, returned, fully=fully)
    # Points of the sale that expired are never revoked as well (CONTRACT.md section 2):
    # the customer lost them once already. What was revoked before stands.
    revoked_total = max(
        min(revoked_total, sale.points_earned - sale.points_expired), state.points_revoked
    )
    after = ReturnState(
        returned=tuple(returned),
        points_restored=restored_total,
        points_revoked=revoked_total,
        fully_returned=fully,
    )
    return Accepted(
        taken=taken,
        state=after,
        points_restored=restored_total - state.points_restored,
        points_revoked=revoked_total - state.points_revoked,
    )


def _points_after(sale: StoredSale, returned: Sequence[Decimal], *, fully: bool) -> tuple[int, int]:
    """The sale's restored and revoked totals once ``returned`` is back (rule 6).

    ``floor(points * R / W)`` in exact integer arithmetic, so the totals only grow as more
    comes back and the last return books exactly the rest, however the sale was split.
    """
    if sale.customer_id is None:
        return 0, 0
    if fully:
        return sale.points_used, sale.points_earned
    whole_n, whole_d = _positive_total(sale)
    if whole_n == 0:
        return 0, 0
    share_n, share_d = _returned_share(sale, returned)
    # points * (share_n / share_d) / (whole_n / whole_d), all denominators positive.
    numerator, denominator = share_n * whole_d, share_d * whole_n
    return (
        sale.points_used * numerator // denominator,
        sale.points_earned * numerator // denominator,
    )


# R and W are sums of a few exact fractions. They are kept as (numerator, denominator)
# pairs of plain integers, reduced once at the end if at all: fractions.Fraction reduces
# at every step and cost most of a return's decision (a profile of 1,000 returns).
_Ratio = tuple[int, int]


def _positive_total(sale: StoredSale) -> _Ratio:
    """W: the sum of the sale's positive line amounts."""
    total_n, total_d = 0, 1
    for line in sale.lines:
        if line.amount > 0:
            n, d = line.amount.as_integer_ratio()
            total_n, total_d = total_n * d + n * total_d, total_d * d
    return total_n, total_d


def _returned_share(sale: StoredSale, returned: Sequence[Decimal]) -> _Ratio:
    """R: each line's returned share of its amount, lines with amount <= 0 counting 0."""
    total_n, total_d = 0, 1
    for line, back in zip(sale.lines, returned, strict=True):
        if line.amount > 0 and back:
            an, ad = line.amount.as_integer_ratio()
            bn, bd = back.as_integer_ratio()
            qn, qd = line.quantity.as_integer_ratio()
            n, d = an * bn * qd, ad * bd * qn
            total_n, total_d = total_n * d + n * total_d, total_d * d
    return total_n, total_d


def returned_amount(sale: StoredSale, state: ReturnState) -> Decimal:
    """R as a decimal: exact when it has a finite decimal form, else to the amounts' places.

    Returning one of three items sold for 100 gives 33.33...: shown to the places the
    sale's own amounts have (rounded half to even), which is what the till printed.
    """
    share = Fraction(*_returned_share(sale, state.returned))
    denominator = share.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator == 1:
        return _exact_decimal(share)
    places = max((_places(line.amount) for line in sale.lines), default=0)
    quantum = Decimal(1).scaleb(-places)
    scaled = share * 10**places
    rounded = round(scaled)  # Fraction rounds half to even
    return (Decimal(rounded) * quantum).quantize(quantum)


def _exact_decimal(value: Fraction) -> Decimal:
    places = 0
    while (value * 10**places).denominator != 1:
        places += 1
    return Decimal(int(value * 10**places)).scaleb(-places)


def _places(amount: Decimal) -> int:
    exponent = amount.as_tuple().exponent
    return max(-exponent, 0) if isinstance(exponent, int) else 0


def decimal_text(value: Decimal) -> str:
    """A quantity as the contract writes it: plain digits, never an exponent."""
    return format(value, "f")


@dataclass(frozen=True, slots=True)
class Decided:
    """One decided return: the verdict and the sale it was about (None if unknown)."""

    item: PendingReturn
    sale: StoredSale | None
    verdict: Accepted | Rejected


@dataclass(slots=True)
class BatchDecisions:
    """Every decision of a batch in decision order, and what they book."""

    decided: list[Decided] = field(default_factory=list)
    still_pending: list[PendingReturn] = field(default_factory=list)
    states: dict[str, ReturnState] = field(default_factory=dict)
    """The state after the batch of every sale an accepted return changed."""
    points: list[PointsPosting] = field(default_factory=list)
    uses: list[UsePosting] = field(default_factory=list)


def decide_returns(
    pending: Sequence[PendingReturn],
    *,
    sales: Mapping[str, StoredSale],
    states: Mapping[str, ReturnState],
    restore_on_return: Mapping[str, bool],
    now: datetime,
) -> BatchDecisions:
    """Decide every return of ``pending`` in the order they were published (``seq``).

    ``states`` holds what earlier returns took of each sale (absent: nothing); returns of one
    sale in the same batch see each other's effects. A return whose sale is unknown waits
    until ``wait_until`` and is then ``unknown_transaction``. ``restore_on_return`` holds
    the catalog's flag per coupon (absent: true, a coupon not in the catalog is given back).
    """
    batch = BatchDecisions()
    for item in sorted(pending, key=lambda p: p.seq):
        sale = sales.get(item.transaction_no)
        if sale is None:
            if item.wait_until <= now:
                batch.decided.append(Decided(item, None, Rejected("unknown_transaction")))
            else:
                batch.still_pending.append(item)
            continue
        state = batch.states.get(sale.transaction_no) or states.get(sale.transaction_no)
        if state is None:
            state = ReturnState.nothing_returned(sale)
        verdict = decide_return(sale, state, item.lines)
        batch.decided.append(Decided(item, sale, verdict))
        if isinstance(verdict, Accepted):
            batch.states[sale.transaction_no] = verdict.state
            _post(batch, item, sale, verdict, restore_on_return)
    return batch


def _post(
    batch: BatchDecisions,
    item: PendingReturn,
    sale: StoredSale,
    verdict: Accepted,
    restore_on_return: Mapping[str, bool],
) -> None:
    customer_id = sale.customer_id
    if customer_id is None:
        # An anonymous sale counted toward nobody and booked no points: nothing to give back.
        return
    moves: tuple[tuple[PointsKind, int], ...] = (
        ("restore", verdict.points_restored),
        ("revoke", -verdict.points_revoked),
    )
    for kind, points in moves:
        if points:
            batch.points.append(
                PointsPosting(
                    customer_id=customer_id,
                    transaction_no=sale.transaction_no,
                    cause=item.event_id,
                    kind=kind,
                    points=points,
                    occurred_at=item.occurred_at,
                )
            )
    if not verdict.fully_returned:
        return
    # Coupon uses come back only with the return that leaves nothing of the sale (rule 7).
    for coupon_id, uses in sale.coupons:
        if restore_on_return.get(coupon_id, True):
            batch.uses.append(
                UsePosting(
                    customer_id=customer_id,
                    coupon_id=coupon_id,
                    transaction_no=sale.transaction_no,
                    cause=item.event_id,
                    source="return",
                    delta=-uses,
                )
            )
