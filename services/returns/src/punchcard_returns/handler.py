"""Where return records come in: decode at the edge, apply a whole batch in one transaction.

``apply_pending`` is the one piece of code that decides and writes returns; the batch
handler and the waiting-return resolver (``waiting.py``) both call it, so a return applied
late follows exactly the rules of one applied on arrival.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog
from prometheus_client import Counter
from punchcard_contract import ParsedReturn, decode_return
from punchcard_platform.db import Connection, Database, lock_customers
from punchcard_platform.records import DeadLetter, Decoded, InboundRecord
from punchcard_platform.settings import Settings, TopicNames

from punchcard_returns import store
from punchcard_returns.decisions import (
    PendingReturn,
    ReturnPlan,
    claims,
    coupons_to_count,
    decide_returns,
)

__all__ = ["RETURNS_DECIDED", "ReturnHandler", "apply_pending"]

log = structlog.get_logger(__name__)

RETURNS_DECIDED = Counter(
    "punchcard_returns_decided",
    "Returns decided, by status and reason (none, already_returned, unknown_transaction).",
    ["status", "reason"],
)


async def apply_pending(
    conn: Connection, pending: Sequence[PendingReturn], topics: TopicNames
) -> ReturnPlan:
    """Decide and write these locked, undecided returns inside the caller's transaction.

    Returns whose receipt is not stored yet (and whose wait is not over) stay pending and
    come back in ``plan.still_pending``.
    """
    if not pending:
        return ReturnPlan()
    now = await store.transaction_now(conn)
    receipts = await store.load_receipts(conn, {p.transaction_no for p in pending})
    # Customer locks first and in one order, as every writer of counts does (db.lock_customers).
    await lock_customers(conn, (r.customer_id for r in receipts.values()))
    claimed = await store.claim_transactions(conn, claims(pending, receipts))
    accepted = [receipts[p.transaction_no] for p in pending if p.event_id in claimed]
    customers = {r.customer_id for r in accepted if r.customer_id is not None}
    pairs = coupons_to_count(accepted)
    plan = decide_returns(
        pending,
        receipts=receipts,
        claimed=claimed,
        catalog=await store.load_catalog(conn, (coupon for _, coupon in pairs)),
        uses_made=await store.load_uses_made(conn, pairs),
        balances=await store.load_balances(conn, customers),
        now=now,
        topics=topics,
    )
    await store.write_plan(conn, plan, now)
    return plan


def count_decisions(plan: ReturnPlan) -> None:
    """Count and log the decided returns; call after the transaction committed.

    Accepted returns are logged once per batch (per record would cost more than deciding
    them); each rejection gets a line of its own, because a return desk will ask about it.
    """
    counts: dict[tuple[str, str], int] = {}
    for decision in plan.decisions:
        reason = decision.outcome["reason"]
        key = (decision.status, reason or "none")
        counts[key] = counts.get(key, 0) + 1
        if reason is not None:
            log.info(
                "return rejected",
                transaction_no=decision.transaction_no,
                return_event_id=decision.event_id,
                customer_id=decision.outcome["customer_id"],
                status=decision.status,
                reason=reason,
            )
    for (status, reason), count in counts.items():
        RETURNS_DECIDED.labels(status, reason).inc(count)
    if plan.decisions:
        log.info(
            "returns decided",
            accepted=counts.get(("accepted", "none"), 0),
            rejected=len(plan.decisions) - counts.get(("accepted", "none"), 0),
        )


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
        self._db = db
        self._on_parked = on_parked

    def decode(self, record: InboundRecord) -> ParsedReturn:
        """Validate the record's value; ``InvalidEventError`` sends it to the DLQ."""
        return decode_return(record.value)

    async def apply(self, batch: list[Decoded[ParsedReturn]]) -> list[DeadLetter]:
        """Store the batch's new returns and decide every one that can be decided now.

        Idempotent: a redelivered event id is dropped by ``return_events``' primary key, so
        applying the same batch again changes nothing and publishes nothing.
        """
        if not batch:
            return []
        async with self._db.transaction() as conn:
            # The sales' locks come first, so the first return sent is decided first.
            await store.lock_transactions(conn, {item.event.event.transaction_no for item in batch})
            await store.record_returns(
                conn, [item.event for item in batch], self._settings.return_wait_seconds
            )
            pending = await store.lock_pending_of(
                conn, {item.event.event.transaction_no for item in batch}
            )
            plan = await apply_pending(conn, pending, self._settings.topics)
        count_decisions(plan)
        if plan.still_pending and self._on_parked is not None:
            self._on_parked()
        # Nothing in a return batch is refused: a second return of a sale is an outcome.
        return []
