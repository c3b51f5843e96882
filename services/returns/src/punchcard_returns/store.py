"""All SQL of the returns service, set-based: one statement per step for a whole batch.

The once-only rules are constraints, never a read-then-write: ``return_events`` (primary
key ``event_id``) drops redeliveries, ``transaction_returns`` (primary key
``transaction_no``) lets exactly one return per sale apply. Counters are changed only
after ``lock_customers`` and under row locks, so the values read here are the values the
events report.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
from punchcard_contract import ParsedReturn
from punchcard_platform.db import Connection, Database
from punchcard_platform.outbox import write_outbox

from punchcard_returns.decisions import CatalogCoupon, PendingReturn, ReturnPlan, StoredReceipt

__all__ = [
    "RECEIPTS_CHANNEL",
    "Listening",
    "claim_transactions",
    "listen",
    "load_balances",
    "load_catalog",
    "load_receipts",
    "load_uses_made",
    "lock_due_returns",
    "lock_pending_of",
    "lock_transactions",
    "record_returns",
    "transaction_now",
    "waiting_summary",
    "write_plan",
]

RECEIPTS_CHANNEL = "punchcard_receipts"
"""The receipt consumer notifies this channel in every transaction that stores receipts."""


async def transaction_now(conn: Connection) -> datetime:
    """The transaction's own clock, so waits and decisions agree on what "now" is."""
    now: datetime = await conn.fetchval("SELECT now()")
    return now


async def record_returns(
    conn: Connection, returns: Sequence[ParsedReturn], wait_seconds: float
) -> set[str]:
    """Store new return events as pending; return the ids that were new.

    An event id already stored is a redelivery (CONTRACT.md rule 1): the conflict drops it,
    even when the first one is still being committed by another instance.
    """
    unique: dict[str, ParsedReturn] = {}
    for parsed in returns:
        unique.setdefault(parsed.event.event_id, parsed)
    if not unique:
        return set()
    events = [p.event for p in unique.values()]
    rows = await conn.fetch(
        """
        INSERT INTO return_events (event_id, transaction_no, store_id, terminal_id,
                                   occurred_at, reason, document, wait_until, status)
        SELECT e, t, s, term, o, r, d::jsonb, now() + make_interval(secs => $8), 'pending'
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                    $6::text[], $7::text[]) WITH ORDINALITY AS x(e, t, s, term, o, r, d, n)
        ORDER BY n
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
        """,
        [e.event_id for e in events],
        [e.transaction_no for e in events],
        [e.store_id for e in events],
        [e.terminal_id for e in events],
        [e.occurred_at for e in events],
        [e.reason for e in events],
        [p.document for p in unique.values()],
        wait_seconds,
    )
    return {row["event_id"] for row in rows}


_PENDING_COLUMNS = "event_id, transaction_no, seq, wait_until"

_SALE_LOCKS = 0x52455455
"""Key space of the per-sale locks: the first key of the two-integer advisory locks.

Two-integer advisory locks never collide with the single-bigint ones of
``lock_customers`` (PostgreSQL keeps the two key spaces apart).
"""


async def lock_transactions(conn: Connection, transaction_nos: Collection[str]) -> None:
    """Serialise everything that records or decides returns of these sales, until commit.

    Whoever holds a sale's lock sees every return of it that was committed before, so the
    first return sent (lowest ``seq``) is decided before any later one, whichever batch,
    instance or resolver holds what. Taken before the returns are stored, so ``seq``
    follows this lock's order too, and before ``lock_customers``, in sorted key order:
    every decider takes sale locks, then customer locks, so none waits in a cycle.
    """
    if not transaction_nos:
        return
    await conn.execute(
        """
        SELECT pg_advisory_xact_lock($2, k)
        FROM (SELECT DISTINCT hashtext(t) AS k FROM unnest($1::text[]) AS t ORDER BY 1) AS keys
        """,
        list(set(transaction_nos)),
        _SALE_LOCKS,
    )


async def lock_pending_of(
    conn: Connection, transaction_nos: Collection[str]
) -> list[PendingReturn]:
    """Every undecided return of these sales, oldest first; the caller holds their sale locks.

    Nothing is skipped: the earliest waiting return of a sale is always among them, so the
    first return sent is the one that applies once the receipt is there.
    """
    rows = await conn.fetch(
        f"""
        SELECT {_PENDING_COLUMNS} FROM return_events
        WHERE transaction_no = ANY($1::text[]) AND status = 'pending'
        ORDER BY seq
        FOR UPDATE
        """,  # noqa: S608 (a constant column list, no input)
        list(set(transaction_nos)),
    )
    return [_pending(row) for row in rows]


async def lock_due_returns(conn: Connection, limit: int) -> list[PendingReturn]:
    """Every undecided return of up to ``limit`` sales that can be decided now, sale-locked.

    A sale is due when its receipt is stored or one of its returns waited long enough.
    Its lock is only tried: a sale another instance, batch or resolver is deciding is left
    to it (it sees all of that sale's returns), so several resolvers share the work
    without waiting on each other. The returns are read after the locks are held, so
    none decided meanwhile comes back.
    """
    rows = await conn.fetch(
        """
        WITH due AS MATERIALIZED (
            SELECT r.transaction_no FROM return_events AS r
            WHERE r.status = 'pending'
              AND (r.wait_until <= now()
                   OR EXISTS (SELECT 1 FROM receipts WHERE transaction_no = r.transaction_no))
            GROUP BY r.transaction_no
            ORDER BY min(r.seq)
            LIMIT $1
        )
        SELECT transaction_no FROM due
        WHERE pg_try_advisory_xact_lock($2, hashtext(transaction_no))
        """,
        limit,
        _SALE_LOCKS,
    )
    if not rows:
        return []
    return await lock_pending_of(conn, [row["transaction_no"] for row in rows])


async def waiting_summary(conn: Connection) -> tuple[int, float | None]:
    """How many returns wait, and how long until the earliest one still waiting gives up.

    Returns already past their wait but locked by another instance are that instance's to
    decide, so they do not count toward the next wake-up (which would otherwise spin).
    """
    row = await conn.fetchrow(
        """
        SELECT count(*) AS waiting,
               EXTRACT(EPOCH FROM min(wait_until) FILTER (WHERE wait_until > now()) - now())
                   AS seconds
        FROM return_events WHERE status = 'pending'
        """
    )
    assert row is not None  # an aggregate always returns one row
    seconds = row["seconds"]
    return row["waiting"], None if seconds is None else float(seconds)


async def load_receipts(
    conn: Connection, transaction_nos: Collection[str]
) -> dict[str, StoredReceipt]:
    """The stored receipts among these transactions (receipts never change once stored)."""
    rows = await conn.fetch(
        """
        SELECT transaction_no, customer_id, points_used, points_earned, coupons
        FROM receipts WHERE transaction_no = ANY($1::text[])
        """,
        list(set(transaction_nos)),
    )
    return {
        row["transaction_no"]: StoredReceipt(
            transaction_no=row["transaction_no"],
            customer_id=row["customer_id"],
            points_used=row["points_used"],
            points_earned=row["points_earned"],
            coupons=tuple((c["coupon_id"], int(c["uses"])) for c in row["coupons"]),
        )
        for row in rows
    }


async def claim_transactions(conn: Connection, claims: Mapping[str, str]) -> set[str]:
    """Try to record each sale as returned by the given return; return the event ids that won.

    The primary key is the arbiter: if another transaction (here or on another instance)
    inserted the sale first, this insert waits for it and then does nothing.
    """
    if not claims:
        return set()
    rows = await conn.fetch(
        """
        INSERT INTO transaction_returns (transaction_no, return_event_id)
        SELECT t, e FROM unnest($1::text[], $2::text[]) AS x(t, e)
        ORDER BY t
        ON CONFLICT (transaction_no) DO NOTHING
        RETURNING return_event_id
        """,
        list(claims),
        list(claims.values()),
    )
    return {row["return_event_id"] for row in rows}


async def load_catalog(conn: Connection, coupon_ids: Iterable[str]) -> dict[str, CatalogCoupon]:
    """Catalog flags of these coupons; a coupon not in the catalog is simply absent."""
    rows = await conn.fetch(
        """
        SELECT coupon_id, uses_permitted, restore_on_return
        FROM coupons WHERE coupon_id = ANY($1::text[])
        """,
        sorted(set(coupon_ids)),
    )
    return {
        row["coupon_id"]: CatalogCoupon(
            coupon_id=row["coupon_id"],
            uses_permitted=row["uses_permitted"],
            restore_on_return=row["restore_on_return"],
        )
        for row in rows
    }


async def load_uses_made(
    conn: Connection, pairs: Collection[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """Current uses per (customer, coupon), row-locked until commit."""
    if not pairs:
        return {}
    ordered = sorted(pairs)
    rows = await conn.fetch(
        """
        SELECT u.customer_id, u.coupon_id, u.uses_made
        FROM coupon_usage AS u
        JOIN unnest($1::text[], $2::text[]) AS x(c, k) ON u.customer_id = x.c AND u.coupon_id = x.k
        ORDER BY u.customer_id, u.coupon_id
        FOR UPDATE OF u
        """,
        [c for c, _ in ordered],
        [k for _, k in ordered],
    )
    return {(row["customer_id"], row["coupon_id"]): row["uses_made"] for row in rows}


async def load_balances(conn: Connection, customer_ids: Iterable[str]) -> dict[str, int]:
    """Current points balances, row-locked until commit."""
    rows = await conn.fetch(
        """
        SELECT customer_id, balance FROM points_balances
        WHERE customer_id = ANY($1::text[])
        ORDER BY customer_id
        FOR UPDATE
        """,
        sorted(set(customer_ids)),
    )
    return {row["customer_id"]: row["balance"] for row in rows}


async def write_plan(conn: Connection, plan: ReturnPlan, now: datetime) -> None:
    """Write every change of ``plan`` in the caller's transaction."""
    if plan.ledger:
        # The balance moves by what the ledger really took, so balance == sum(ledger) holds
        # even if a row were somehow there already.
        await conn.execute(
            """
            WITH entries AS (
                SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
                    WITH ORDINALITY AS e(customer_id, transaction_no, kind, points, n)
            ), booked AS (
                INSERT INTO points_ledger (customer_id, transaction_no, kind, points, occurred_at)
                SELECT customer_id, transaction_no, kind, points, $5 FROM entries ORDER BY n
                ON CONFLICT (transaction_no, kind) DO NOTHING
                RETURNING customer_id, points
            )
            INSERT INTO points_balances (customer_id, balance)
            SELECT customer_id, sum(points)::bigint FROM booked GROUP BY customer_id
            ON CONFLICT (customer_id)
            DO UPDATE SET balance = points_balances.balance + EXCLUDED.balance
            """,
            [e.customer_id for e in plan.ledger],
            [e.transaction_no for e in plan.ledger],
            [e.kind for e in plan.ledger],
            [e.points for e in plan.ledger],
            now,
        )
    if plan.uses_given_back:
        await conn.execute(
            """
            UPDATE coupon_usage AS u SET uses_made = GREATEST(u.uses_made - g.uses, 0)
            FROM (SELECT c, k, sum(n)::integer AS uses
                  FROM unnest($1::text[], $2::text[], $3::integer[]) AS x(c, k, n)
                  GROUP BY c, k) AS g
            WHERE u.customer_id = g.c AND u.coupon_id = g.k
            """,
            [g.customer_id for g in plan.uses_given_back],
            [g.coupon_id for g in plan.uses_given_back],
            [g.uses for g in plan.uses_given_back],
        )
    if plan.returned:
        await conn.execute(
            """
            UPDATE receipts AS r SET returned_at = $3, return_event_id = x.e
            FROM unnest($1::text[], $2::text[]) AS x(t, e)
            WHERE r.transaction_no = x.t AND r.returned_at IS NULL
            """,
            [t for t, _ in plan.returned],
            [e for _, e in plan.returned],
            now,
        )
    if plan.decisions:
        # decided_at orders a sale's outcomes (GET /v1/returns/{tx} shows the latest), so it
        # is stamped now, under the sale's lock, after whoever decided before us committed;
        # the transaction's start (now()) may precede that commit.
        await conn.execute(
            """
            UPDATE return_events AS r
            SET status = x.s, outcome = x.o::jsonb, decided_at = clock_timestamp()
            FROM unnest($1::text[], $2::text[], $3::text[]) AS x(e, s, o)
            WHERE r.event_id = x.e AND r.status = 'pending'
            """,
            [d.event_id for d in plan.decisions],
            [d.status for d in plan.decisions],
            [d.encoded.decode() for d in plan.decisions],
        )
    await write_outbox(conn, plan.messages)


class Listening:
    """A live LISTEN, watched: ``alive`` turns false when its connection is known lost.

    A LISTEN connection can die without a word (asyncpg issue 519: nothing is read from
    it, so nothing notices); ``check`` asks it a question now and then, and the
    termination listener catches the cases asyncpg does see.
    """

    def __init__(self, conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> None:
        self._conn = conn
        self._lost = False

    @property
    def alive(self) -> bool:
        """Whether notifications can still arrive; if not, listen again."""
        return not self._lost and not self._conn.is_closed()

    def lose(self) -> None:
        """Mark the connection lost (its termination listener calls this)."""
        self._lost = True

    async def check(self, timeout: float) -> None:
        """Raise unless the connection answers within ``timeout`` seconds."""
        await self._conn.fetchval("SELECT 1", timeout=timeout)


@asynccontextmanager
async def listen(
    db: Database, channel: str, on_notify: Callable[[], None]
) -> AsyncIterator[Listening]:
    """Call ``on_notify`` for every NOTIFY on ``channel`` while the context is open.

    The connection is held for as long as we listen: a pooled connection handed back
    would stop hearing the channel. If the connection ends, ``on_notify`` is called too,
    so the caller wakes, sees ``alive`` false, and listens again.
    """

    def callback(_conn: Any, _pid: int, _channel: str, _payload: object) -> None:
        on_notify()

    async with db.pool.acquire() as conn:
        listening = Listening(conn)

        def terminated(_conn: Any) -> None:
            listening.lose()
            on_notify()

        conn.add_termination_listener(terminated)
        await conn.add_listener(channel, callback)
        try:
            yield listening
        finally:
            conn.remove_termination_listener(terminated)
            if not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.remove_listener(channel, callback)


def _pending(row: asyncpg.Record) -> PendingReturn:
    return PendingReturn(
        event_id=row["event_id"],
        transaction_no=row["transaction_no"],
        seq=row["seq"],
        wait_until=row["wait_until"],
    )
