"""The return rules of CONTRACT.md section 2, whole and partial, decided on plain values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from punchcard_returns.decisions import (
    Accepted,
    BatchDecisions,
    PendingReturn,
    Rejected,
    ReturnState,
    SaleLine,
    StoredSale,
    decide_return,
    decide_returns,
    returned_amount,
)

NOW = datetime(2026, 11, 23, 0, 0, 0, tzinfo=UTC)
D = Decimal


def a_sale(
    lines: Sequence[tuple[str, str]] = (("2", "300"), ("1", "1680")),
    *,
    customer_id: str | None = "C1",
    used: int = 100,
    earned: int = 19,
    coupons: Mapping[str, int] | None = None,
) -> StoredSale:
    return StoredSale(
        transaction_no="T1",
        customer_id=customer_id,
        points_used=used,
        points_earned=earned,
        lines=tuple(SaleLine(D(q), D(a)) for q, a in lines),
        coupons=tuple((coupons or {"TEA": 1}).items()),
    )


def waiting(
    event_id: str,
    lines: Sequence[tuple[int, str]] | None = None,
    *,
    seq: int = 1,
    transaction_no: str = "T1",
    wait: float = 600,
) -> PendingReturn:
    return PendingReturn(
        event_id=event_id,
        transaction_no=transaction_no,
        seq=seq,
        wait_until=NOW + timedelta(seconds=wait),
        occurred_at=NOW,
        return_id=None if lines is None else f"R-{event_id}",
        lines=None if lines is None else tuple((n, D(q)) for n, q in lines),
    )


def decide(
    pending: Sequence[PendingReturn],
    sale: StoredSale | None = None,
    *,
    state: ReturnState | None = None,
    restore: Mapping[str, bool] | None = None,
) -> BatchDecisions:
    return decide_returns(
        pending,
        sales={} if sale is None else {sale.transaction_no: sale},
        states={} if state is None or sale is None else {sale.transaction_no: state},
        restore_on_return=restore or {},
        now=NOW,
    )


def fresh(sale: StoredSale) -> ReturnState:
    return ReturnState.nothing_returned(sale)


def test_a_whole_return_restores_burned_points_revokes_earned_ones_and_gives_uses_back() -> None:
    """Without lines, everything of the sale comes back, coupon uses included."""
    sale = a_sale()
    verdict = decide_return(sale, fresh(sale), None)

    assert isinstance(verdict, Accepted)
    assert (verdict.points_restored, verdict.points_revoked) == (100, 19)
    assert verdict.taken == ((1, D(2)), (2, D(1)))
    assert verdict.fully_returned
    batch = decide([waiting("r1")], sale)
    assert [(p.kind, p.points, p.cause) for p in batch.points] == [
        ("restore", 100, "r1"),
        ("revoke", -19, "r1"),
    ]
    assert [(u.coupon_id, u.delta, u.source) for u in batch.uses] == [("TEA", -1, "return")]


def test_a_second_whole_return_is_already_returned_and_changes_nothing() -> None:
    """The seeds' permanent error still holds."""
    sale = a_sale()
    batch = decide([waiting("r1", seq=1), waiting("r2", seq=2)], sale)

    assert [type(d.verdict).__name__ for d in batch.decided] == ["Accepted", "Rejected"]
    assert batch.decided[1].verdict == Rejected("already_returned", fully_returned=True)
    assert len(batch.points) == 2


def test_a_partial_return_moves_its_share_of_the_points_floored() -> None:
    """One of two teas (150 of 1980): floor(19 * 150/1980) = 1 revoked, floor(100 * ...) = 7."""
    sale = a_sale()
    verdict = decide_return(sale, fresh(sale), ((1, D(1)),))

    assert isinstance(verdict, Accepted)
    assert (verdict.points_revoked, verdict.points_restored) == (1, 7)
    assert not verdict.fully_returned
    assert verdict.state.returned == (D(1), D(0))


def test_coupon_uses_come_back_only_with_the_return_that_leaves_nothing() -> None:
    """Partial returns keep the coupon's use; the last one gives it back."""
    sale = a_sale()
    batch = decide([waiting("r1", [(1, "2")], seq=1), waiting("r2", [(2, "1")], seq=2)], sale)

    assert [u.cause for u in batch.uses] == ["r2"]
    assert batch.states["T1"].fully_returned


def test_the_last_return_books_exactly_the_rest() -> None:
    """However split, the sale in all moves exactly points_earned and points_used."""
    sale = a_sale(lines=(("3", "100"),), used=10, earned=10)
    batch = decide(
        [waiting(f"r{i}", [(1, "1")], seq=i) for i in (1, 2, 3)],
        sale,
    )

    revoked = [d.verdict.points_revoked for d in batch.decided if isinstance(d.verdict, Accepted)]
    assert revoked == [3, 3, 4]
    assert batch.states["T1"].points_revoked == 10


def test_rejections_are_checked_in_the_contracts_order() -> None:
    """unknown_line, then already_returned, then exceeds_remaining."""
    sale = a_sale()
    back = ReturnState(returned=(D(2), D(0)), points_restored=15, points_revoked=2)

    assert decide_return(sale, back, ((3, D(1)), (1, D(9)))) == Rejected("unknown_line")
    assert decide_return(sale, back, ((1, D(1)),)) == Rejected("already_returned")
    assert decide_return(sale, back, ((1, D(1)), (2, D(2)))) == Rejected("exceeds_remaining")
    assert decide_return(sale, fresh(sale), ((2, D("1.5")),)) == Rejected("exceeds_remaining")


def test_lines_of_a_sale_without_lines_are_unknown() -> None:
    """A sale without lines can only be returned whole."""
    sale = a_sale(lines=())
    assert decide_return(sale, fresh(sale), ((1, D(1)),)) == Rejected("unknown_line")
    whole = decide_return(sale, fresh(sale), None)
    assert isinstance(whole, Accepted)
    assert whole.fully_returned
    assert whole.taken == ()


def test_a_sale_whose_amounts_are_not_positive_moves_points_only_at_the_end() -> None:
    """W = 0: nothing moves until nothing remains."""
    sale = a_sale(lines=(("1", "0"), ("1", "-50")))
    batch = decide([waiting("r1", [(1, "1")], seq=1), waiting("r2", [(2, "1")], seq=2)], sale)

    verdicts = [d.verdict for d in batch.decided]
    assert isinstance(verdicts[0], Accepted)
    assert (verdicts[0].points_restored, verdicts[0].points_revoked) == (0, 0)
    assert isinstance(verdicts[1], Accepted)
    assert (verdicts[1].points_restored, verdicts[1].points_revoked) == (100, 19)


def test_a_return_of_an_unknown_sale_waits_then_is_unknown_transaction() -> None:
    """The receipt may be in flight; after the wait it is rejected."""
    still = decide([waiting("r1")])
    over = decide([waiting("r1", wait=0)])

    assert still.still_pending
    assert not still.decided
    assert over.decided[0].verdict == Rejected("unknown_transaction")


def test_an_anonymous_sale_is_returned_without_touching_any_count() -> None:
    """Nobody's points or coupons: accepted, nothing posted."""
    batch = decide([waiting("r1")], a_sale(customer_id=None, used=0, earned=0))

    assert isinstance(batch.decided[0].verdict, Accepted)
    assert batch.points == []
    assert batch.uses == []


def test_a_coupon_not_restored_on_return_keeps_its_uses() -> None:
    """restore_on_return false: the return does not give the use back."""
    batch = decide([waiting("r1")], a_sale(), restore={"TEA": False})
    assert batch.uses == []


def test_the_returned_amount_is_exact_or_rounded_to_the_sales_places() -> None:
    """R is shown exactly when it can be, else to the places the amounts have."""
    sale = a_sale(lines=(("3", "100"), ("2", "10.50")))
    one_each = ReturnState(returned=(D(1), D(1)))
    assert returned_amount(sale, one_each) == D("38.58")  # 33.333... + 5.25
    halves = ReturnState(returned=(D(0), D(1)))
    assert returned_amount(sale, halves) == D("5.25")
    assert str(returned_amount(sale, fresh(sale))) == "0"


# Properties: any split of a sale into returns, in any order.

line_specs = st.lists(
    st.tuples(st.integers(min_value=1, max_value=4), st.integers(min_value=-200, max_value=2000)),
    min_size=1,
    max_size=4,
)


@st.composite
def sale_and_split(draw: st.DrawFn) -> tuple[StoredSale, list[list[tuple[int, Decimal]]]]:
    """A sale and a split of all its units into returns of some lines."""
    specs = draw(line_specs)
    sale = a_sale(
        lines=tuple((str(q), str(a)) for q, a in specs),
        used=draw(st.integers(min_value=0, max_value=10_000)),
        earned=draw(st.integers(min_value=0, max_value=10_000)),
    )
    units = [(n, Decimal(1)) for n, (q, _) in enumerate(specs, start=1) for _ in range(q)]
    order = draw(st.permutations(units))
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=max(len(order) - 1, 1)))))
    parts, start = [], 0
    for cut in [*cuts, len(order)]:
        if cut > start:
            part: dict[int, Decimal] = {}
            for n, q in order[start:cut]:
                part[n] = part.get(n, Decimal(0)) + q
            parts.append(sorted(part.items()))
            start = cut
    return sale, parts


@given(sale_and_split())
def test_any_split_moves_exactly_the_sales_points_and_uses(
    case: tuple[StoredSale, list[list[tuple[int, Decimal]]]],
) -> None:
    """The sum over the returns is points_used and points_earned, and the uses come back once."""
    sale, parts = case
    batch = decide(
        [waiting(f"r{i}", [(n, str(q)) for n, q in p], seq=i) for i, p in enumerate(parts)], sale
    )

    assert all(isinstance(d.verdict, Accepted) for d in batch.decided)
    restored = sum(p.points for p in batch.points if p.kind == "restore")
    revoked = -sum(p.points for p in batch.points if p.kind == "revoke")
    assert (restored, revoked) == (sale.points_used, sale.points_earned)
    assert [u.delta for u in batch.uses] == [-1]
    assert batch.states["T1"].fully_returned
    assert all(p.points > 0 if p.kind == "restore" else p.points < 0 for p in batch.points)


@given(sale_and_split(), st.randoms(use_true_random=False))
def test_the_order_of_partial_returns_does_not_change_the_totals(
    case: tuple[StoredSale, list[list[tuple[int, Decimal]]]], random: object
) -> None:
    """Whatever order the parts come back in, what has been returned decides the totals."""
    sale, parts = case
    shuffled = list(parts)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    state = fresh(sale)
    for part in shuffled[:-1]:
        verdict = decide_return(sale, state, tuple(part))
        assert isinstance(verdict, Accepted)
        state = verdict.state
    in_order = fresh(sale)
    for part in sorted(shuffled[:-1]):
        verdict = decide_return(sale, in_order, tuple(part))
        assert isinstance(verdict, Accepted)
        in_order = verdict.state
    assert (state.points_restored, state.points_revoked, state.returned) == (
        in_order.points_restored,
        in_order.points_revoked,
        in_order.returned,
    )


@given(
    sale_and_split(),
    st.lists(st.tuples(st.integers(min_value=1, max_value=5), st.integers(1, 5)), max_size=8),
)
def test_no_quantity_ever_goes_below_zero_and_rejections_change_nothing(
    case: tuple[StoredSale, list[list[tuple[int, Decimal]]]],
    attempts: list[tuple[int, int]],
) -> None:
    """Random returns, some too large or of unknown lines: remaining stays within [0, sold]."""
    sale, _ = case
    state = fresh(sale)
    for line_no, quantity in attempts:
        verdict = decide_return(sale, state, ((line_no, Decimal(quantity)),))
        if isinstance(verdict, Accepted):
            state = verdict.state
        for left, line in zip(state.remaining(sale), sale.lines, strict=True):
            assert 0 <= left <= line.quantity
        assert 0 <= state.points_revoked <= sale.points_earned
        assert 0 <= state.points_restored <= sale.points_used
    whole = decide_return(sale, state, None)
    if isinstance(whole, Accepted):
        assert decide_return(sale, whole.state, None) == Rejected("already_returned", True)


def test_a_return_never_revokes_what_of_the_sale_has_expired() -> None:
    """Expired points were lost once: a whole return revokes only what had not expired."""
    sale = replace(a_sale(earned=100), points_expired=70)
    verdict = decide_return(sale, fresh(sale), None)

    assert isinstance(verdict, Accepted)
    assert verdict.points_revoked == 30
    assert verdict.points_restored == sale.points_used


@given(sale_and_split(), st.lists(st.integers(min_value=0, max_value=10_000), min_size=1))
def test_expiry_between_the_parts_caps_the_revoked_total_and_it_never_shrinks(
    case: tuple[StoredSale, list[list[tuple[int, Decimal]]]], expired_before_each: list[int]
) -> None:
    """Revoked total <= earned less expired so far; each part books the difference, >= 0."""
    sale, parts = case
    state = fresh(sale)
    expired = 0
    for i, part in enumerate(parts):
        # What of the lot has expired only grows, and never past what the sale earned.
        expired = min(
            max(expired, expired_before_each[i % len(expired_before_each)]), sale.points_earned
        )
        seen = replace(sale, points_expired=expired)
        verdict = decide_return(seen, state, tuple(part))
        assert isinstance(verdict, Accepted)
        assert verdict.points_revoked >= 0
        assert verdict.state.points_revoked >= state.points_revoked
        assert verdict.state.points_revoked <= max(
            sale.points_earned - expired, state.points_revoked
        )
        state = verdict.state
    assert state.points_revoked <= sale.points_earned
    assert state.points_restored == sale.points_used
