"""Points lots: spending order, debt, expiry, and what returns do to them (pure rules)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from punchcard_contract.program import Duration, ExpiryRules
from punchcard_platform.ledger import (
    SALE,
    LedgerState,
    Lot,
    PointsPosting,
    Posted,
    post,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
NO_GRACE = ExpiryRules(restore_grace=Duration())


def earn(tx: str, points: int, expires_at: datetime | None, *, at: datetime = T0) -> PointsPosting:
    return PointsPosting("C1", tx, SALE, "earn", points, at, expires_at)


def burn(tx: str, points: int, *, at: datetime = T0) -> PointsPosting:
    return PointsPosting("C1", tx, SALE, "burn", -points, at)


def after(state: LedgerState, posted: Posted) -> LedgerState:
    """The state the store holds once ``posted`` is written (what ``book`` writes)."""
    lots = {lot.key: lot for lot in state.lots}
    for n, lot in enumerate(posted.lots):
        lots[lot.key] = lot if lot.lot_id is not None else replace(lot, lot_id=10_000 + n)
    allocations = {tx: list(a) for tx, a in state.allocations.items()}
    for allocation in posted.allocations:
        mine = allocations.setdefault(allocation.transaction_no, [])
        mine[allocation.seq : allocation.seq + 1] = [allocation]
    balances = dict(state.balances)
    for customer, delta in posted.balance_deltas().items():
        balances[customer] = balances.get(customer, 0) + delta
    debts = dict(state.debts)
    for customer, delta in posted.debt_deltas.items():
        debts[customer] = debts.get(customer, 0) + delta
    return LedgerState(
        balances=balances, debts=debts, lots=list(lots.values()), allocations=allocations
    )


def remaining(state: LedgerState) -> dict[str, int]:
    return {"/".join(map(str, lot.key)): lot.remaining for lot in state.lots}


def test_a_burn_spends_the_soonest_expiring_lot_first_and_never_expiring_ones_last() -> None:
    """Soonest expiry first, then the older of two with the same expiry, then no expiry."""
    state = after(
        LedgerState(),
        post(
            LedgerState(),
            [
                earn("NEVER", 100, None),
                earn("LATE", 100, T0 + 20 * DAY),
                earn("SOON-NEW", 100, T0 + 10 * DAY, at=T0 + DAY),
                earn("SOON-OLD", 100, T0 + 10 * DAY),
            ],
            [],
            now=T0,
        ),
    )
    posted = post(state, [burn("B", 250)], [], now=T0 + 2 * DAY)

    assert remaining(after(state, posted)) == {
        "NEVER/sale/0": 100,
        "LATE/sale/0": 50,
        "SOON-NEW/sale/0": 0,
        "SOON-OLD/sale/0": 0,
    }
    assert [(a.lot, a.points) for a in posted.allocations] == [
        (("SOON-OLD", SALE, 0), 100),
        (("SOON-NEW", SALE, 0), 100),
        (("LATE", SALE, 0), 50),
    ]


def test_a_burn_beyond_every_lot_is_debt_which_the_next_earn_pays_first() -> None:
    """The balance goes negative; the next lot holds only what is left after the debt."""
    state = after(LedgerState(), post(LedgerState(), [earn("E1", 30, None)], [], now=T0))
    state = after(state, post(state, [burn("B", 50)], [], now=T0))
    assert state.debts == {"C1": 20}
    assert state.balances == {"C1": -20}

    state = after(state, post(state, [earn("E2", 100, T0 + DAY)], [], now=T0))

    assert state.debts == {"C1": 0}
    assert remaining(state)["E2/sale/0"] == 80
    assert state.balances == {"C1": 80}


def test_due_lots_expire_first_and_once_at_their_own_moment() -> None:
    """One expire entry per lot, dated at its expiry; a later booking finds nothing due."""
    state = after(
        LedgerState(),
        post(LedgerState(), [earn("E1", 40, T0 + DAY), earn("E2", 60, None)], [], now=T0),
    )
    posted = post(state, [burn("B", 70)], [], now=T0 + 2 * DAY)

    [expiry] = posted.expiries()
    assert (expiry.transaction_no, expiry.cause, expiry.points) == ("E1", "sale#0", -40)
    assert expiry.occurred_at == T0 + DAY
    state = after(state, posted)
    assert state.balances == {"C1": -10}
    assert state.debts == {"C1": 10}
    assert post(state, [], [], now=T0 + 3 * DAY).expiries() == []


def test_a_revoke_takes_the_sales_own_lot_first_then_the_spending_order() -> None:
    """Its own lot before any other, even one expiring sooner."""
    state = after(
        LedgerState(),
        post(
            LedgerState(), [earn("SOON", 50, T0 + DAY), earn("OWN", 30, T0 + 9 * DAY)], [], now=T0
        ),
    )
    revoke = PointsPosting("C1", "OWN", "ret-1", "revoke", -40, T0)
    state = after(state, post(state, [revoke], [], now=T0))

    assert remaining(state) == {"SOON/sale/0": 40, "OWN/sale/0": 0}


def test_restored_points_keep_the_expiry_they_were_taken_with_but_never_end_before_the_grace() -> (
    None
):
    """The last part taken comes back first; an expiry already near moves to the grace's end."""
    rules = ExpiryRules(restore_grace=Duration(days=30))
    state = after(
        LedgerState(),
        post(
            LedgerState(),
            [earn("A", 10, T0 + 5 * DAY), earn("B", 10, T0 + 100 * DAY), earn("N", 10, None)],
            [],
            now=T0,
        ),
    )
    state = after(state, post(state, [burn("S", 45)], [], now=T0))
    assert state.debts == {"C1": 15}
    restore = PointsPosting("C1", "S", "ret-1", "restore", 40, T0 + DAY)
    posted = post(state, [restore], [], now=T0 + DAY, rules=rules)
    new = sorted(
        (
            (lot.expires_at, lot.points, lot.remaining)
            for lot in posted.lots
            if lot.key[1] == "ret-1"
        ),
        key=lambda part: (part[0] is None, part[0] or T0),
    )

    # Back: the 15 the burn took as debt (as if earned now: no lifetime, so no expiry),
    # 10 from N (never), 10 from B (day 100), 5 from A (day 5, moved to day 31). The debt
    # of 15 is paid from the soonest-expiring of them: the customer keeps the longest-lived.
    assert new == [
        (T0 + 31 * DAY, 5, 0),
        (T0 + 100 * DAY, 10, 0),
        (None, 25, 25),
    ]
    assert after(state, posted).debts == {"C1": 0}


customer_ops = st.lists(
    st.one_of(
        st.tuples(st.just("earn"), st.integers(1, 500), st.one_of(st.none(), st.integers(0, 30))),
        st.tuples(st.just("burn"), st.integers(1, 700), st.none()),
        st.tuples(st.just("revoke"), st.integers(1, 300), st.none()),
        st.tuples(st.just("restore"), st.integers(1, 300), st.none()),
        st.tuples(st.just("wait"), st.integers(1, 10), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(customer_ops, st.integers(0, 40))
def test_any_interleaving_keeps_the_lots_explaining_the_balance_and_expires_each_lot_once(
    ops: list[tuple[str, int, int | None]], grace_days: int
) -> None:
    """balance = ledger = remaining - debt; lots never negative; no lot expires twice."""
    rules = ExpiryRules(restore_grace=Duration(days=grace_days))
    state = LedgerState()
    ledger_sum = 0
    now = T0
    expired_lots: list[tuple[str, str]] = []
    sales: list[str] = []
    for n, (op, amount, days) in enumerate(ops):
        tx = f"T{n}"
        if op == "wait":
            now += amount * DAY
            entries: list[PointsPosting] = []
        elif op == "earn":
            sales.append(tx)
            entries = [earn(tx, amount, None if days is None else now + days * DAY, at=now)]
        elif op == "burn":
            sales.append(tx)
            entries = [burn(tx, amount, at=now)]
        elif not sales:
            continue
        else:
            sale = sales[amount % len(sales)]
            signed = -amount if op == "revoke" else amount
            entries = [PointsPosting("C1", sale, f"R{n}", op, signed, now)]  # type: ignore[arg-type]
        before = {lot.key for lot in state.lots}
        posted = post(state, entries, [], now=now, rules=rules)
        ledger_sum += sum(p.posting.points for p in posted.points)
        expired_lots += [(p.transaction_no, p.cause) for p in posted.expiries()]
        state = after(state, posted)

        assert all(lot.remaining >= 0 for lot in state.lots)
        assert all(lot.remaining + lot.expired <= lot.points for lot in state.lots)
        # Whatever was due before the booking has expired (a lot made already due waits
        # for the next booking or the job).
        assert not any(lot.due(now) for lot in state.lots if lot.key in before)
        balance = state.balances.get("C1", 0)
        assert balance == ledger_sum
        assert balance == sum(lot.remaining for lot in state.lots) - state.debts.get("C1", 0)
        assert state.debts.get("C1", 0) >= 0
        assert len(expired_lots) == len(set(expired_lots))
    for allocations in state.allocations.values():
        assert all(0 <= a.restored <= a.points for a in allocations)


def lot(expires_at: datetime | None, remaining: int) -> Lot:
    return Lot(("T", SALE, 0), "C1", remaining, remaining, expires_at, T0, lot_id=1)


def test_a_lot_is_due_from_its_expiry_on_and_only_with_points_left() -> None:
    """``expires_at`` is exclusive: at that instant the points are gone."""
    assert lot(T0, 5).due(T0)
    assert not lot(T0, 5).due(T0 - timedelta(microseconds=1))
    assert not lot(T0, 0).due(T0 + DAY)
    assert not lot(None, 5).due(T0 + 1000 * DAY)
