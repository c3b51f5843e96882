"""Returns that arrive before their receipt wait for it, across restarts, and give up in time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from punchcard_platform.db import Database
from punchcard_platform.settings import Settings
from punchcard_returns.handler import ReturnHandler
from punchcard_returns.waiting import PendingReturnResolver

from tests.documents import receipt_document, return_document
from tests.helpers import eventually, unique_id
from tests.integration.returns.support import (
    outbox,
    points,
    return_states,
    send_returns,
    store_sales,
)

# Long enough that only a notification, a wake-up or an expiry can explain a prompt decision.
NO_SWEEP = 600.0


@asynccontextmanager
async def running(resolver: PendingReturnResolver) -> AsyncIterator[None]:
    """Run a resolver in the background for the block, then stop it cleanly."""
    stop = asyncio.Event()
    task = asyncio.create_task(resolver.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def statuses(db: Database, transaction_no: str) -> list[tuple[str, str | None]]:
    """(status, reason) of each return of a sale, first received first."""
    return [(status, reason) for _, status, reason in await return_states(db, transaction_no)]


async def test_a_return_before_its_receipt_waits_and_is_applied_when_the_receipt_lands(
    db: Database, settings: Settings
) -> None:
    """The receipt consumer's NOTIFY wakes the resolver, which applies the waiting return."""
    customer = unique_id("C")
    sale = receipt_document(customer, points_used=30, points_earned=4)
    tx = sale["transaction_no"]
    resolver = PendingReturnResolver(settings, db, sweep_seconds=NO_SWEEP)
    handler = ReturnHandler(settings, db, on_parked=resolver.wake)
    async with running(resolver):
        await send_returns(handler, settings, return_document(tx))
        assert await statuses(db, tx) == [("pending", None)]
        assert await outbox(db, settings.topics.return_outcomes) == []

        await store_sales(db, settings, sale)

        await eventually(
            lambda: _equals(statuses(db, tx), [("accepted", None)]), what="return applied"
        )
    balance, ledger = await points(db, customer)
    assert balance == sum(n for _, _, n in ledger) == 0


async def test_a_return_whose_receipt_never_comes_is_rejected_after_the_wait(
    db: Database, settings: Settings
) -> None:
    """After return_wait_seconds the outcome is rejected, unknown_transaction."""
    settings = settings.model_copy(update={"return_wait_seconds": 1.0})
    tx = unique_id("TX")
    resolver = PendingReturnResolver(settings, db, sweep_seconds=NO_SWEEP)
    handler = ReturnHandler(settings, db, on_parked=resolver.wake)
    async with running(resolver):
        await send_returns(handler, settings, return_document(tx))

        await eventually(
            lambda: _equals(statuses(db, tx), [("rejected", "unknown_transaction")]),
            timeout=15,
            what="return rejected",
        )
    (outcome,) = [row["payload"] for row in await outbox(db, settings.topics.return_outcomes)]
    assert (outcome["status"], outcome["reason"], outcome["customer_id"]) == (
        "rejected",
        "unknown_transaction",
        None,
    )


async def test_a_wait_of_zero_rejects_an_unknown_sale_at_once(
    db: Database, settings: Settings
) -> None:
    """With PUNCHCARD_RETURN_WAIT_SECONDS=0 the handler decides without waiting."""
    settings = settings.model_copy(update={"return_wait_seconds": 0.0})
    tx = unique_id("TX")

    await send_returns(ReturnHandler(settings, db), settings, return_document(tx))

    assert await statuses(db, tx) == [("rejected", "unknown_transaction")]


async def test_a_waiting_return_survives_a_restart(db: Database, settings: Settings) -> None:
    """Parked while no resolver runs, it is applied by the next resolver to start."""
    customer = unique_id("C")
    sale = receipt_document(customer, points_earned=9)
    tx = sale["transaction_no"]
    first = PendingReturnResolver(settings, db, sweep_seconds=NO_SWEEP)
    async with running(first):
        await send_returns(
            ReturnHandler(settings, db, on_parked=first.wake), settings, return_document(tx)
        )
    # Stored while nobody listens: the notification is lost, the row is not.
    await store_sales(db, settings, sale)
    assert await statuses(db, tx) == [("pending", None)]

    async with running(PendingReturnResolver(settings, db, sweep_seconds=NO_SWEEP)):
        await eventually(
            lambda: _equals(statuses(db, tx), [("accepted", None)]), what="return applied"
        )


async def test_a_parked_batch_wakes_the_resolver_even_without_a_notification(
    db: Database, settings: Settings
) -> None:
    """A receipt that committed without its NOTIFY reaching us is found after the next parking."""
    customer = unique_id("C")
    sale = receipt_document(customer)
    tx = sale["transaction_no"]
    resolver = PendingReturnResolver(settings, db, sweep_seconds=NO_SWEEP)
    handler = ReturnHandler(settings, db, on_parked=resolver.wake)
    await send_returns(handler, settings, return_document(tx))
    await store_sales(db, settings, sale)  # before the resolver listens: its NOTIFY is lost
    async with running(resolver):
        await eventually(
            lambda: _equals(statuses(db, tx), [("accepted", None)]), what="first sweep"
        )
        # Now stored again behind the listener's back, then a parking batch must wake it.
        later = receipt_document(customer)
        await send_returns(handler, settings, return_document(later["transaction_no"]))
        await _store_silently(db, settings, later)
        await send_returns(handler, settings, return_document(unique_id("TX")))

        await eventually(
            lambda: _equals(statuses(db, later["transaction_no"]), [("accepted", None)]),
            what="woken by parking",
        )


async def test_the_first_waiting_return_wins_over_a_later_one(
    db: Database, settings: Settings
) -> None:
    """A return sent before the receipt landed applies; one sent after it is already_returned."""
    sale = receipt_document(unique_id("C"), points_used=3)
    tx = sale["transaction_no"]
    handler = ReturnHandler(settings, db)
    await send_returns(handler, settings, return_document(tx))
    await store_sales(db, settings, sale)

    await send_returns(handler, settings, return_document(tx))

    assert await statuses(db, tx) == [("accepted", None), ("rejected", "already_returned")]


async def test_two_resolvers_share_waiting_returns_and_decide_each_once(
    db: Database, settings: Settings
) -> None:
    """SKIP LOCKED lets instances cooperate: every return decided, none twice."""
    customer = unique_id("C")
    sales = [receipt_document(customer, points_earned=1) for _ in range(20)]
    handler = ReturnHandler(settings, db)
    await send_returns(handler, settings, *(return_document(s["transaction_no"]) for s in sales))
    resolvers = [PendingReturnResolver(settings, db, sweep_seconds=NO_SWEEP) for _ in range(2)]
    async with running(resolvers[0]), running(resolvers[1]):
        await store_sales(db, settings, *sales)

        async def all_accepted() -> bool:
            states = [await statuses(db, s["transaction_no"]) for s in sales]
            return all(state == [("accepted", None)] for state in states)

        await eventually(all_accepted, what="every return applied")
    outcomes = await outbox(db, settings.topics.return_outcomes)
    assert len(outcomes) == len(sales)
    balance, ledger = await points(db, customer)
    assert balance == sum(n for _, _, n in ledger) == 0


async def _equals(probe: object, expected: object) -> bool:
    assert asyncio.iscoroutine(probe)
    return bool(await probe == expected)


async def _store_silently(db: Database, settings: Settings, sale: dict[str, object]) -> None:
    """Store a receipt row without any NOTIFY, as if the notification had been lost."""
    async with db.transaction() as conn:
        await conn.execute(
            """
            INSERT INTO receipts (transaction_no, customer_id, store_id, terminal_id, occurred_at,
                                  currency, total, points_used, points_earned, coupons, document,
                                  content_hash, event_id)
            VALUES ($1, $2, 'S1', 'T1', now(), 'JPY', 0, 0, 0, '[]', '{}', '\\x00', $3)
            """,
            sale["transaction_no"],
            sale["customer_id"],
            sale["event_id"],
        )
