"""Where return records come in: decode at the edge, apply a whole batch in one transaction.

``apply_pending`` is the one piece of code that decides and writes returns; the batch
handler and the waiting-return resolver (``waiting.py``) both call it, so a return applied
late follows exactly the rules of one applied on arrival.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import partial

import structlog
from prometheus_client import Counter
from punchcard_contract import ParsedReturn, decode_return, json_time
from punchcard_contract.outputs import OutputEvent, return_outcome_event
from punchcard_contract.program import ExpiryRules
from punchcard_platform import ledger
from punchcard_platform.db import Connection, Database, lock_customers
from punchcard_platform.outbox import outbox_messages, write_outbox
from punchcard_platform.records import DeadLetter, Decoded, InboundRecord, refuse_conflicting
from punchcard_platform.settings import Settings, TopicNames

from punchcard_returns import store
from punchcard_returns.decisions import (
    Accepted,
    BatchDecisions,
    Decided,
    PendingReturn,
    ReturnState,
    decide_returns,
    decimal_text,
    returned_amount,
)

__all__ = ["RETURNS_DECIDED", "AppliedReturns", "ReturnHandler", "apply_pending"]

log = structlog.get_logger(__name__)

RETURNS_DECIDED = Counter(
    "punchcard_returns_decided",
    "Returns decided, by status and reason (none, already_returned, unknown_transaction, "
    "unknown_line, exceeds_remaining).",
    ["status", "reason"],
)


@dataclass(slots=True)
class AppliedReturns:
    """What one call of ``apply_pending`` decided, and what still waits for its sale."""

    outcomes: list[OutputEvent] = field(default_factory=list)
    still_pending: list[PendingReturn] = field(default_factory=list)


async def apply_pending(
    conn: Connection,
    pending: Sequence[PendingReturn],
    topics: TopicNames,
    *,
    rules: ExpiryRules | None = None,
) -> AppliedReturns:
    """Decide and write these locked, undecided returns inside the caller's transaction.

    The caller holds the sales' locks (``store.lock_transactions`` or
    ``store.lock_due_returns``). Returns whose sale is not stored yet (and whose wait is
    not over) stay pending and come back in ``still_pending``.
    """
    if not pending:
        return AppliedReturns()
    now = await store.transaction_now(conn)
    sales = await store.load_sales(conn, {p.transaction_no for p in pending})
    # Customer locks after the sale locks and in one order, as every writer of counts does.
    await lock_customers(conn, (sale.customer_id for sale in sales.values()))
    expired = await store.load_expired(conn, sales.keys(), now)
    sales = {tx: replace(sale, points_expired=expired.get(tx, 0)) for tx, sale in sales.items()}
    batch = decide_returns(
        pending,
        sales=sales,
        states=await store.load_states(conn, sales.keys()),
        restore_on_return=await store.load_restore_flags(
            conn, {coupon_id for sale in sales.values() for coupon_id, _ in sale.coupons}
        ),
        now=now,
    )
    booked = await ledger.book(conn, batch.points, batch.uses, committed_at=now, rules=rules)
    outcomes: list[OutputEvent] = []
    events: list[OutputEvent] = list(booked.expiries)
    for decided in batch.decided:
        outcome = _outcome(decided, booked, now_text=json_time(now))
        events += booked.events.get((decided.item.transaction_no, decided.item.event_id), [])
        events.append(outcome)
        outcomes.append(outcome)
    await store.write_states(conn, _states_to_write(batch), now)
    await store.write_outcomes(
        conn, [(o.fields["return_event_id"], o.fields["status"], o.payload) for o in outcomes]
    )
    await write_outbox(conn, outbox_messages(events, topics))
    return AppliedReturns(outcomes, batch.still_pending)


def _outcome(decided: Decided, booked: ledger.Booked, *, now_text: str) -> OutputEvent:
    item, sale, verdict = decided.item, decided.sale, decided.verdict
    outcome = partial(
        return_outcome_event,
        return_event_id=item.event_id,
        occurred_at=now_text,
        transaction_no=item.transaction_no,
        return_id=item.return_id,
        customer_id=None if sale is None else sale.customer_id,
    )
    if not isinstance(verdict, Accepted):
        return outcome(
            status="rejected", reason=verdict.reason, fully_returned=verdict.fully_returned
        )
    return outcome(
        status="accepted",
        points_restored=verdict.points_restored,
        points_revoked=verdict.points_revoked,
        coupons_restored=[
            (use.posting.coupon_id, -use.delta)
            for use in booked.posted.uses
            if use.posting.cause == item.event_id
            and use.posting.transaction_no == item.transaction_no
        ],
        lines=[(line_no, decimal_text(quantity)) for line_no, quantity in verdict.taken],
        fully_returned=verdict.fully_returned,
    )


def _states_to_write(batch: BatchDecisions) -> dict[str, tuple[ReturnState, Decimal, str]]:
    """Each changed sale's state, its returned amount, and the return that changed it last."""
    last: dict[str, str] = {}
    for decided in batch.decided:
        if isinstance(decided.verdict, Accepted):
            last[decided.item.transaction_no] = decided.item.event_id
    result: dict[str, tuple[ReturnState, Decimal, str]] = {}
    for decided in batch.decided:
        sale = decided.sale
        if sale is None or sale.transaction_no not in batch.states:
            continue
        state = batch.states[sale.transaction_no]
        result[sale.transaction_no] = (
            state,
            returned_amount(sale, state),
            last[sale.transaction_no],
        )
    return result


def count_decisions(applied: AppliedReturns) -> None:
    """Count and log the decided returns; call after the transaction committed.

    Accepted returns are logged once per batch (per record would cost more than deciding
    them); each rejection gets a line of its own, because a return desk will ask about it.
    """
    counts: dict[tuple[str, str], int] = {}
    for outcome in applied.outcomes:
        fields = outcome.fields
        reason = fields["reason"]
        key = (fields["status"], reason or "none")
        counts[key] = counts.get(key, 0) + 1
        if reason is not None:
            log.info(
                "return rejected",
                transaction_no=fields["transaction_no"],
                return_event_id=fields["return_event_id"],
                return_id=fields["return_id"],
                customer_id=fields["customer_id"],
                status=fields["status"],
                reason=reason,
            )
    for (status, reason), count in counts.items():
        RETURNS_DECIDED.labels(status, reason).inc(count)
    if applied.outcomes:
        accepted = counts.get(("accepted", "none"), 0)
        log.info("returns decided", accepted=accepted, rejected=len(applied.outcomes) - accepted)


class ReturnHandler:
    """The batch handler of ``pos.returns.v1`` for the shared consumer loop."""

    name = "returns"

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        on_parked: Callable[[], None] | None = None,
    ) -> None:
        """``on_parked`` runs after a commit that left returns waiting for their receipt.

        The receipt may have committed between our check and our commit, after its NOTIFY
        was sent; waking the resolver then closes that gap.
        """
        self._settings = settings
        self._rules = settings.expiry_rules
        self._db = db
        self._on_parked = on_parked

    def decode(self, record: InboundRecord) -> ParsedReturn:
        """Validate the record's value; ``InvalidEventError`` sends it to the DLQ."""
        return decode_return(record.value)

    async def apply(self, batch: list[Decoded[ParsedReturn]]) -> list[DeadLetter]:
        """Store the batch's new returns and decide every one that can be decided now.

        Idempotent: a redelivered event id or ``return_id`` is dropped by ``return_events``'
        unique keys, so applying the same batch again changes nothing and publishes nothing.
        A ``return_id`` that stands with other content is dead-lettered as
        ``conflicting_duplicate``; the first one stands.
        """
        if not batch:
            return []
        returns = [item.event for item in batch]
        sales = {parsed.event.transaction_no for parsed in returns}
        async with self._db.transaction() as conn:
            # The sales' locks come first, so the first return sent is decided first.
            await store.lock_transactions(conn, sales)
            new = await store.record_returns(conn, returns, self._settings.return_wait_seconds)
            conflicting = await store.repeated_return_ids(
                conn, [p for p in returns if p.event.event_id not in new]
            )
            pending = await store.lock_pending_of(conn, sales)
            applied = await apply_pending(conn, pending, self._settings.topics, rules=self._rules)
        count_decisions(applied)
        if applied.still_pending and self._on_parked is not None:
            self._on_parked()
        refused = {id(parsed) for parsed in conflicting}
        return [_conflict(item.record, item.event) for item in batch if id(item.event) in refused]


def _conflict(record: InboundRecord, parsed: ParsedReturn) -> DeadLetter:
    event = parsed.event
    return refuse_conflicting(
        record,
        f"return {event.return_id} of transaction {event.transaction_no} was already "
        "received with different content; the first one stands",
        transaction_no=event.transaction_no,
        return_id=event.return_id,
    )
