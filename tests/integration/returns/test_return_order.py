"""The first return sent applies, whichever batch or resolver holds what; the latest outcome shows.

Each test holds one side of a race open at the exact instant the fault run caught it
(a resolver mid-sweep with the first return locked) and lets the other side run into it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from punchcard_coupon_query.queries import fetch_return_status
from punchcard_platform.db import Connection, Database
from punchcard_platform.settings import Settings
from punchcard_returns import store
from punchcard_returns.handler import ReturnHandler, apply_pending
from punchcard_returns.waiting import PendingReturnResolver

from tests.documents import receipt_document, return_document
from tests.helpers import eventually, unique_id
from tests.integration.returns.support import (
    receipt_return,
    return_states,
    returns_batch,
    send_returns,
    store_sales,
)


async def _finished_or_blocked_by(task: asyncio.Task[None], db: Database, holder: int) -> bool:
    """Whether ``task`` ended, or some session waits for a lock the ``holder`` backend holds."""
    if task.done():
        return True
    async with db.connection() as conn:
        waiting: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", holder
        )
    return waiting > 0


async def _assert_first_accepted_second_rejected(
    db: Database, tx: str, first: dict[str, Any], second: dict[str, Any]
) -> None:
    assert await return_states(db, tx) == [
        (first["event_id"], "accepted", None),
        (second["event_id"], "rejected", "already_returned"),
    ]


def _pid(conn: Connection) -> int:
    return conn.get_server_pid()


async def test_a_second_return_arriving_while_a_resolver_holds_the_first_does_not_overtake_it(
    db: Database, settings: Settings
) -> None:
    """A batch bringing the second return while a sweep holds the first: the first applies."""
    sale = receipt_document(unique_id("C"), points_used=30, points_earned=4)
    tx = sale["transaction_no"]
    first, second = return_document(tx), return_document(tx)
    handler = ReturnHandler(settings, db)
    await send_returns(handler, settings, first)
    await store_sales(db, settings, sale)

    async with db.transaction() as resolver:
        # A resolver's sweep, caught between locking the waiting return and deciding it.
        due = await store.lock_due_returns(resolver, 500)
        assert first["event_id"] in {p.event_id for p in due}
        batch = asyncio.ensure_future(send_returns(handler, settings, second))
        await eventually(
            lambda: _finished_or_blocked_by(batch, db, _pid(resolver)),
            what="the second return's batch finished or waiting for the sweep",
        )
        await apply_pending(resolver, [p for p in due if p.transaction_no == tx], settings.topics)
    await asyncio.wait_for(batch, 60)

    await _assert_first_accepted_second_rejected(db, tx, first, second)
    assert await receipt_return(db, tx) == first["event_id"]


async def test_two_resolvers_sweeping_at_once_apply_the_first_return_of_a_sale(
    db: Database, settings: Settings
) -> None:
    """A second resolver never claims a sale for a later return while another holds the first."""
    sale = receipt_document(unique_id("C"), points_used=7)
    tx = sale["transaction_no"]
    first, second = return_document(tx), return_document(tx)
    handler = ReturnHandler(settings, db)
    await send_returns(handler, settings, first)
    await send_returns(handler, settings, second)
    # Nothing else due in the shared database, so the sweep below takes this sale's work.
    await PendingReturnResolver(settings, db).resolve_due()
    await store_sales(db, settings, sale)

    async with db.transaction() as sweeping:
        # The first resolver's sweep has taken one item of work and not decided it yet.
        held = await store.lock_due_returns(sweeping, 1)
        assert held[0].event_id == first["event_id"]
        other = PendingReturnResolver(settings, db, batch_size=500)
        await asyncio.wait_for(other.resolve_due(), 60)
        await apply_pending(sweeping, held, settings.topics)
    await PendingReturnResolver(settings, db).resolve_due()

    await _assert_first_accepted_second_rejected(db, tx, first, second)


async def test_a_rejection_decided_after_the_acceptance_is_the_latest_outcome(
    db: Database, settings: Settings
) -> None:
    """A decider whose transaction began before another one committed still reads as later."""
    sale = receipt_document(unique_id("C"), points_earned=12)
    tx = sale["transaction_no"]
    first, second = return_document(tx), return_document(tx)
    handler = ReturnHandler(settings, db)
    await store_sales(db, settings, sale)

    async with db.transaction() as slow:
        # This batch's transaction started first; the other batch overtakes and commits.
        await slow.execute("SELECT 1")
        await send_returns(handler, settings, first)
        (item,) = returns_batch(handler, settings.topics.returns, second)
        await store.record_returns(slow, [item.event], settings.return_wait_seconds)
        pending = await store.lock_pending_of(slow, {tx})
        await apply_pending(slow, pending, settings.topics)

    async with db.connection() as conn:
        found = await fetch_return_status(conn, tx)
    assert found is not None
    status, outcome = found
    assert outcome is not None
    assert (status, json.loads(outcome)["return_event_id"]) == ("rejected", second["event_id"])
