"""Every SQL statement of the receipt consumer.

Each step is one set-based statement for the whole batch (arrays in, ``unnest`` and
``ON CONFLICT`` inside), so a batch of a thousand receipts costs a handful of round trips,
not thousands. Rows are written in a sorted order so that two transactions touching the
same keys take their row locks in the same order and cannot deadlock on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import msgspec
from punchcard_contract import ParsedReceipt
from punchcard_platform.db import Connection

from punchcard_receipt_consumer.booking import PointsEntry, UsageKey

__all__ = [
    "RECEIPTS_CHANNEL",
    "add_coupon_usage",
    "add_points",
    "clock",
    "insert_points_entries",
    "insert_receipts",
    "notify_receipts_stored",
    "stored_fingerprints",
    "uses_permitted",
]

RECEIPTS_CHANNEL = "punchcard_receipts"
"""NOTIFY channel: the returns service listens to apply returns waiting for their receipt."""


async def insert_receipts(conn: Connection, receipts: Sequence[ParsedReceipt]) -> set[str]:
    """Store receipts not stored yet; return the transaction numbers this call stored.

    The primary key on ``transaction_no`` is the once-only rule: a receipt whose
    transaction is already stored (or being stored by a concurrent transaction, which
    this statement waits for) is left alone. ``document`` travels as text and is cast in
    SQL, so its numbers reach jsonb exactly as sent, never through a float; ``total``
    travels as the Decimal's exact text for the same reason and because PostgreSQL reads
    text cheaper than asyncpg encodes a numeric. ``coupons`` travels as text too: asyncpg
    would read a list of lists as a two-dimensional array.
    """
    if not receipts:
        return set()
    events = [receipt.event for receipt in receipts]
    rows = await conn.fetch(
        """
        INSERT INTO receipts (transaction_no, customer_id, store_id, terminal_id, occurred_at,
                              currency, total, points_used, points_earned, coupons, document,
                              content_hash, event_id)
        SELECT t, c, s, term, o, cur, tot::numeric, pu, pe, cp::jsonb, d::jsonb, h, e
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                    $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::text[],
                    $11::text[], $12::bytea[], $13::text[])
             WITH ORDINALITY AS r(t, c, s, term, o, cur, tot, pu, pe, cp, d, h, e, n)
        ORDER BY n
        ON CONFLICT (transaction_no) DO NOTHING
        RETURNING transaction_no
        """,
        [event.transaction_no for event in events],
        [event.customer_id for event in events],
        [event.store_id for event in events],
        [event.terminal_id for event in events],
        [event.occurred_at for event in events],
        [event.currency for event in events],
        [str(event.total) for event in events],
        [event.points_used for event in events],
        [event.points_earned for event in events],
        [_coupons_json(event.coupon_uses()) for event in events],
        [receipt.document for receipt in receipts],
        [receipt.fingerprint for receipt in receipts],
        [event.event_id for event in events],
    )
    return {row["transaction_no"] for row in rows}


def _coupons_json(uses: Mapping[str, int]) -> str:
    if not uses:
        return "[]"
    return msgspec.json.encode(
        [{"coupon_id": coupon_id, "uses": n} for coupon_id, n in uses.items()]
    ).decode()


async def stored_fingerprints(conn: Connection, transaction_nos: Iterable[str]) -> dict[str, bytes]:
    """The content fingerprint of each stored receipt among ``transaction_nos``."""
    wanted = sorted(set(transaction_nos))
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT transaction_no, content_hash FROM receipts WHERE transaction_no = ANY($1::text[])",
        wanted,
    )
    return {row["transaction_no"]: bytes(row["content_hash"]) for row in rows}


async def add_coupon_usage(conn: Connection, deltas: Mapping[UsageKey, int]) -> dict[UsageKey, int]:
    """Add uses per (customer, coupon) atomically; return each count after the addition.

    The increment happens in the row (``uses_made + excluded.uses_made``), so concurrent
    writers of the same counter serialise on its row lock and none is lost.
    """
    if not deltas:
        return {}
    keys = sorted(deltas)
    rows = await conn.fetch(
        """
        INSERT INTO coupon_usage AS u (customer_id, coupon_id, uses_made)
        SELECT c, k, n
        FROM unnest($1::text[], $2::text[], $3::integer[]) AS d(c, k, n)
        ORDER BY c, k
        ON CONFLICT (customer_id, coupon_id)
            DO UPDATE SET uses_made = u.uses_made + excluded.uses_made
        RETURNING customer_id, coupon_id, uses_made
        """,
        [customer_id for customer_id, _ in keys],
        [coupon_id for _, coupon_id in keys],
        [deltas[key] for key in keys],
    )
    return {(row["customer_id"], row["coupon_id"]): row["uses_made"] for row in rows}


async def uses_permitted(conn: Connection, coupon_ids: Iterable[str]) -> dict[str, int | None]:
    """The limit of each catalog coupon among ``coupon_ids``; unknown coupons are absent."""
    wanted = sorted(set(coupon_ids))
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT coupon_id, uses_permitted FROM coupons WHERE coupon_id = ANY($1::text[])",
        wanted,
    )
    return {row["coupon_id"]: row["uses_permitted"] for row in rows}


async def insert_points_entries(
    conn: Connection, entries: Sequence[PointsEntry]
) -> set[tuple[str, str]]:
    """Book ledger entries in the given order; return the (transaction_no, kind) booked.

    Each kind books once per transaction (a unique constraint), so an entry already in
    the ledger is left out and the caller must not count it in the balance.
    """
    if not entries:
        return set()
    rows = await conn.fetch(
        """
        INSERT INTO points_ledger (customer_id, transaction_no, kind, points, occurred_at)
        SELECT c, t, k, p, o
        FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[])
             WITH ORDINALITY AS e(c, t, k, p, o, n)
        ORDER BY n
        ON CONFLICT (transaction_no, kind) DO NOTHING
        RETURNING transaction_no, kind
        """,
        [entry.customer_id for entry in entries],
        [entry.transaction_no for entry in entries],
        [entry.kind for entry in entries],
        [entry.points for entry in entries],
        [entry.occurred_at for entry in entries],
    )
    return {(row["transaction_no"], row["kind"]) for row in rows}


async def add_points(conn: Connection, deltas: Mapping[str, int]) -> dict[str, int]:
    """Add to each customer's balance atomically; return each balance after the addition."""
    if not deltas:
        return {}
    customers = sorted(deltas)
    rows = await conn.fetch(
        """
        INSERT INTO points_balances AS b (customer_id, balance)
        SELECT c, p FROM unnest($1::text[], $2::bigint[]) AS d(c, p)
        ORDER BY c
        ON CONFLICT (customer_id) DO UPDATE SET balance = b.balance + excluded.balance
        RETURNING customer_id, balance
        """,
        customers,
        [deltas[customer] for customer in customers],
    )
    return {row["customer_id"]: row["balance"] for row in rows}


async def clock(conn: Connection) -> datetime:
    """The database's time now: when this batch's effects are committed, near enough.

    One clock for every service, instead of each host's own.
    """
    now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return now


async def notify_receipts_stored(conn: Connection) -> None:
    """Wake the returns waiting for their receipt; delivered only if this transaction commits."""
    await conn.execute("SELECT pg_notify($1, '')", RECEIPTS_CHANNEL)
