"""All SQL of the returns service, set-based: one statement per step for a whole batch.

The once-only rules are constraints, never a read-then-write: ``return_events`` (primary
key ``event_id``, and unique ``(transaction_no, return_id)``) drops redeliveries. What a
sale's returns took so far (``sale_returns``) is read and written only under the sale's
lock (``lock_transactions``), which every decider takes first, so returns of one sale are
decided one after another, in the order they were published. Points and coupon counts are
written by the shared ledger (``punchcard_platform.ledger``), not here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from punchcard_contract import ParsedReturn
from punchcard_platform.db import Connection, Database
from punchcard_platform.ledger import SALE

from punchcard_returns.decisions import PendingReturn, ReturnState, SaleLine, StoredSale

__all__ = [
    "RECEIPTS_CHANNEL",
    "Listening",
    "listen",
    "load_restore_flags",
    "load_sales",
    "load_states",
    "lock_due_returns",
    "lock_pending_of",
    "lock_transactions",
    "record_returns",
    "repeated_return_ids",
    "transaction_now",
    "waiting_summary",
    "write_outcomes",
    "write_states",
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

    An event id already stored is a redelivery (CONTRACT.md rule 1), and so is a
    ``return_id`` already stored for the sale (rule 2; ``repeated_return_ids`` tells a
    redelivery from a conflict): either unique index drops the row, even when the first
    one is still being committed by another instance.
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
                                   occurred_at, reason, document, wait_until, status,
                                   return_id, content_hash)
        SELECT e, t, s, term, o, r, d::jsonb, now() + make_interval(secs => $8), 'pending',
               rid, h
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                    $6::text[], $7::text[], $9::text[], $10::bytea[])
             WITH ORDINALITY AS x(e, t, s, term, o, r, d, rid, h, n)
        ORDER BY n
        ON CONFLICT DO NOTHING
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
        [e.return_id for e in events],
        [p.fingerprint for p in unique.values()],
    )
    return {row["event_id"] for row in rows}


async def repeated_return_ids(
    conn: Connection, repeats: Sequence[ParsedReturn]
) -> list[ParsedReturn]:
    """Of returns that were not new, those whose ``return_id`` stands with other content.

    A repeat of a stored event id, or of a stored return_id with the same content (the
    event id aside), is a redelivery and changes nothing; what is left is a
    ``conflicting_duplicate``, and the first one stands.
    """
    named = [p for p in repeats if p.event.return_id is not None]
    if not named:
        return []
    rows = await conn.fetch(
        """
        SELECT r.transaction_no, r.return_id, r.event_id, r.content_hash
        FROM return_events AS r
        JOIN unnest($1::text[], $2::text[]) AS x(t, rid)
          ON r.transaction_no = x.t AND r.return_id = x.rid
        """,
        [p.event.transaction_no for p in named],
        [p.event.return_id for p in named],
    )
    standing = {(row["transaction_no"], row["return_id"]): row for row in rows}
    conflicting = []
    for parsed in named:
        row = standing.get((parsed.event.transaction_no, parsed.event.return_id))
        if row is None or row["event_id"] == parsed.event.event_id:
            # Dropped for its event id (stored under another return_id, or none): rule 1.
            continue
        if bytes(row["content_hash"]) != parsed.fingerprint:
            conflicting.append(parsed)
    return conflicting


_PENDING_COLUMNS = """
    event_id, transaction_no, seq, wait_until, occurred_at, return_id,
    CASE WHEN jsonb_typeof(document -> 'lines') = 'array' THEN ARRAY(
        SELECT (l ->> 'line_no')::integer
        FROM jsonb_array_elements(document -> 'lines') WITH ORDINALITY AS x(l, n) ORDER BY n
    ) END AS line_nos,
    CASE WHEN jsonb_typeof(document -> 'lines') = 'array' THEN ARRAY(
        SELECT (l ->> 'quantity')::numeric
        FROM jsonb_array_elements(document -> 'lines') WITH ORDINALITY AS x(l, n) ORDER BY n
    ) END AS quantities
"""
"""A pending return as ``_pending`` reads it; quantities leave the document as exact numerics.

Absent or null ``lines`` is a return of everything that remains (line_nos null).
"""

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


async def load_sales(conn: Connection, transaction_nos: Collection[str]) -> dict[str, StoredSale]:
    """The stored sales among these transactions (receipts never change once stored).

    Line quantities and amounts leave the stored document as exact numerics, never
    through a JSON float.
    """
    rows = await conn.fetch(
        """
        SELECT transaction_no, customer_id, points_used, points_earned, coupons,
               ARRAY(SELECT (l ->> 'quantity')::numeric
                     FROM jsonb_array_elements(document -> 'lines') WITH ORDINALITY AS x(l, n)
                     ORDER BY n) AS quantities,
               ARRAY(SELECT (l ->> 'amount')::numeric
                     FROM jsonb_array_elements(document -> 'lines') WITH ORDINALITY AS x(l, n)
                     ORDER BY n) AS amounts
        FROM receipts WHERE transaction_no = ANY($1::text[])
        """,
        list(set(transaction_nos)),
    )
    return {
        row["transaction_no"]: StoredSale(
            transaction_no=row["transaction_no"],
            customer_id=row["customer_id"],
            points_used=row["points_used"],
            points_earned=row["points_earned"],
            lines=tuple(
                SaleLine(quantity, amount)
                for quantity, amount in zip(row["quantities"], row["amounts"], strict=True)
            ),
            coupons=tuple((c["coupon_id"], int(c["uses"])) for c in row["coupons"]),
        )
        for row in rows
    }


async def load_expired(
    conn: Connection, transaction_nos: Collection[str], now: datetime
) -> dict[str, int]:
    """Per sale, what of its earned points has expired by ``now`` (due counts as expired).

    Read under the customers' locks, so the expiry job cannot change it before we commit.
    """
    rows = await conn.fetch(
        """
        SELECT transaction_no,
               expired + CASE WHEN expires_at <= $2 THEN remaining ELSE 0 END AS expired
        FROM points_lots
        WHERE transaction_no = ANY($1::text[]) AND cause = $3 AND seq = 0
        """,
        list(set(transaction_nos)),
        now,
        SALE,
    )
    return {row["transaction_no"]: row["expired"] for row in rows if row["expired"]}


async def load_states(conn: Connection, transaction_nos: Collection[str]) -> dict[str, ReturnState]:
    """What earlier returns took of these sales; a sale no return touched is absent.

    Read under the sales' locks, so no other decider changes them until we commit.
    """
    rows = await conn.fetch(
        """
        SELECT transaction_no, returned, points_restored, points_revoked, fully_returned
        FROM sale_returns WHERE transaction_no = ANY($1::text[])
        """,
        list(set(transaction_nos)),
    )
    return {
        row["transaction_no"]: ReturnState(
            returned=tuple(row["returned"]),
            points_restored=row["points_restored"],
            points_revoked=row["points_revoked"],
            fully_returned=row["fully_returned"],
        )
        for row in rows
    }


async def load_restore_flags(conn: Connection, coupon_ids: Iterable[str]) -> dict[str, bool]:
    """``restore_on_return`` of these coupons; a coupon not in the catalog is absent."""
    wanted = sorted(set(coupon_ids))
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT coupon_id, restore_on_return FROM coupons WHERE coupon_id = ANY($1::text[])",
        wanted,
    )
    return {row["coupon_id"]: row["restore_on_return"] for row in rows}


async def write_states(
    conn: Connection, states: Mapping[str, tuple[ReturnState, Decimal, str]], now: datetime
) -> None:
    """Store each sale's state after the batch; mark the sales nothing remains of returned.

    ``states`` maps a sale to its state, its returned amount (R) and the event id of the
    return that took the last of it (for a sale not fully returned, unused).
    """
    if not states:
        return
    sales = sorted(states)
    await conn.execute(
        """
        INSERT INTO sale_returns AS s (transaction_no, returned, points_restored, points_revoked,
                                       returned_amount, fully_returned, updated_at)
        SELECT t, ARRAY(SELECT jsonb_array_elements_text(r::jsonb)::numeric), pr, pv, a::numeric,
               f, $7
        FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[],
                    $6::boolean[]) AS x(t, r, pr, pv, a, f)
        ON CONFLICT (transaction_no) DO UPDATE SET
            returned = excluded.returned,
            points_restored = excluded.points_restored,
            points_revoked = excluded.points_revoked,
            returned_amount = excluded.returned_amount,
            fully_returned = excluded.fully_returned,
            updated_at = excluded.updated_at
        """,
        sales,
        [_numeric_array(states[t][0].returned) for t in sales],
        [states[t][0].points_restored for t in sales],
        [states[t][0].points_revoked for t in sales],
        [str(states[t][1]) for t in sales],
        [states[t][0].fully_returned for t in sales],
        now,
    )
    done = [t for t in sales if states[t][0].fully_returned]
    if done:
        await conn.execute(
            """
            UPDATE receipts AS r SET returned_at = $3, return_event_id = x.e
            FROM unnest($1::text[], $2::text[]) AS x(t, e)
            WHERE r.transaction_no = x.t AND r.returned_at IS NULL
            """,
            done,
            [states[t][2] for t in done],
            now,
        )


def _numeric_array(values: Sequence[Decimal]) -> str:
    # Exact decimal text in a JSON array: asyncpg would need a numeric[] of Decimals, which
    # costs more to encode than PostgreSQL takes to read text.
    return "[" + ",".join(format(v, "f") for v in values) + "]"


async def write_outcomes(conn: Connection, outcomes: Sequence[tuple[str, str, bytes]]) -> None:
    """Mark returns decided: ``(event_id, status, outcome JSON)`` in decision order.

    Each takes the next number of ``return_decisions`` in the order given, so a sale's
    latest outcome is the one decided last even when one statement decides several of
    its returns (timestamps stamped by one statement follow row order, not decisions).
    """
    if not outcomes:
        return
    numbers = sorted(
        await conn.fetchval(
            "SELECT array_agg(nextval('return_decisions')) FROM generate_series(1, $1)",
            len(outcomes),
        )
    )
    await conn.execute(
        """
        UPDATE return_events AS r
        SET status = x.s, outcome = x.o::jsonb, decided_at = clock_timestamp(), decision_seq = x.q
        FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS x(e, s, o, q)
        WHERE r.event_id = x.e AND r.status = 'pending'
        """,
        [event_id for event_id, _, _ in outcomes],
        [status for _, status, _ in outcomes],
        [encoded.decode() for _, _, encoded in outcomes],
        numbers,
    )


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
    line_nos, quantities = row["line_nos"], row["quantities"]
    return PendingReturn(
        event_id=row["event_id"],
        transaction_no=row["transaction_no"],
        seq=row["seq"],
        wait_until=row["wait_until"],
        occurred_at=row["occurred_at"],
        return_id=row["return_id"],
        lines=None if line_nos is None else tuple(zip(line_nos, quantities, strict=True)),
    )
