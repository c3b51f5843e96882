"""The one ledger: points, balances and coupon counts, for every service that changes them.

The receipt consumer books what sales earn, burn and use; the returns service books what
returns give back and take back. Both describe their effects as postings and call
``book``, so the rule for a balance, a count and their output events is written once:
``postings.post`` decides (pure), ``store`` holds the only SQL that writes these tables,
and ``punchcard_contract.outputs`` builds the events.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from punchcard_contract import json_time
from punchcard_contract.outputs import OutputEvent, coupon_usage_event, points_event
from punchcard_contract.program import ExpiryRules

from punchcard_platform.db import Connection
from punchcard_platform.ledger import store, totals
from punchcard_platform.ledger.postings import (
    SALE,
    Allocation,
    LedgerState,
    Lot,
    LotKey,
    PointsKind,
    PointsPosting,
    Posted,
    PostedPoints,
    PostedUses,
    UsageKey,
    UsePosting,
    post,
)

__all__ = [
    "SALE",
    "Allocation",
    "Booked",
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
    "book",
    "expire_due",
    "ledger_events",
    "post",
]


@dataclass(frozen=True, slots=True)
class Booked:
    """What ``book`` changed, and its output events grouped by cause.

    ``events[(transaction_no, cause)]`` holds that sale's or return's coupon and points
    events in posting order, so a caller can put each next to its own records.
    ``expiries`` are the events of the lots the booking found due and expired first: a
    caller publishes them before the others.
    """

    posted: Posted
    events: dict[tuple[str, str], list[OutputEvent]]
    expiries: list[OutputEvent] = field(default_factory=list)

    def in_order(self, causes: Sequence[tuple[str, str]]) -> list[OutputEvent]:
        """The expiries, then the events of each cause in the order given."""
        return [*self.expiries, *(e for cause in causes for e in self.events.get(cause, []))]


async def book(
    conn: Connection,
    points: Sequence[PointsPosting],
    uses: Sequence[UsePosting],
    *,
    committed_at: datetime,
    rules: ExpiryRules | None = None,
    also_expire_for: Collection[str] = (),
) -> Booked:
    """Write the postings in the caller's transaction and build their output events.

    The caller must hold ``lock_customers`` for every customer named (and every one of
    ``also_expire_for``): the state read here is then the state the postings apply to, and
    the values the events report are exact. Those customers' lots due at ``committed_at``
    expire first. A points entry already in the ledger (same sale, cause and kind) is not
    booked again.
    """
    demands: dict[str, int] = {}
    for p in points:
        if p.kind in ("burn", "revoke"):
            demands[p.customer_id] = demands.get(p.customer_id, 0) - p.points
    state = await store.load_state(
        conn,
        {p.customer_id for p in points} | set(also_expire_for),
        {u.usage_key for u in uses},
        now=committed_at,
        demands=demands,
        own_lots_of={p.transaction_no for p in points if p.kind == "revoke"},
        allocations_of={p.transaction_no for p in points if p.kind == "restore"},
    )
    state = await totals.with_totals(conn, state, {u.coupon_id for u in uses})
    booked = await store.insert_entries(conn, [p for p in points if p.points])
    posted = post(
        state,
        [p for p in points if p.key in booked],
        uses,
        now=committed_at,
        rules=rules,
    )
    await store.insert_expiries(conn, posted.expiries())
    await store.write_lots(conn, posted.lots)
    await store.write_allocations(conn, posted.allocations)
    await store.add_balances(conn, posted.balance_deltas(), posted.debt_deltas)
    await store.add_uses(conn, posted.usage_deltas())
    await totals.add_totals(conn, posted.total_deltas())
    events, expiries = ledger_events(posted, json_time(committed_at))
    return Booked(posted, events, expiries)


async def expire_due(conn: Connection, customer_ids: Collection[str], *, now: datetime) -> Booked:
    """Expire these customers' lots due at ``now`` (the caller holds their locks)."""
    return await book(conn, [], [], committed_at=now, also_expire_for=customer_ids)


def ledger_events(
    posted: Posted, occurred_at: str
) -> tuple[dict[tuple[str, str], list[OutputEvent]], list[OutputEvent]]:
    """The coupon usage and points events of ``posted``, grouped by (transaction_no, cause),
    and apart, the events of the lots that expired.

    Each id is derived from the sale, the cause and what changed, so booking the same
    effect again could only ever give the same event. A sale's own events keep the ids of
    v1 (sale, kind); a return's points add the return's event id, since a sale may now be
    returned in several parts.
    """
    events: dict[tuple[str, str], list[OutputEvent]] = {}
    expiries: list[OutputEvent] = []
    for use in posted.uses:
        entry = use.posting
        events.setdefault((entry.transaction_no, entry.cause), []).append(
            coupon_usage_event(
                cause=(entry.transaction_no, "coupon", entry.coupon_id, entry.source),
                occurred_at=occurred_at,
                customer_id=entry.customer_id,
                coupon_id=entry.coupon_id,
                transaction_no=entry.transaction_no,
                source=entry.source,
                delta=use.delta,
                uses_made=use.uses_made,
                uses_permitted=use.uses_permitted,
                reservation_id=entry.reservation_id,
                total_uses_made=use.total_uses_made,
                total_uses_permitted=use.total_uses_permitted,
            )
        )
    for booking in posted.points:
        points = booking.posting
        cause: tuple[str, ...] = (points.transaction_no, "points", points.kind)
        if points.cause != SALE:
            cause = (*cause, points.cause)
        group = (
            expiries
            if points.kind == "expire"
            else events.setdefault((points.transaction_no, points.cause), [])
        )
        group.append(
            points_event(
                cause=cause,
                occurred_at=occurred_at,
                customer_id=points.customer_id,
                transaction_no=points.transaction_no,
                kind=points.kind,
                points=points.points,
                balance=booking.balance,
            )
        )
    return events, expiries
