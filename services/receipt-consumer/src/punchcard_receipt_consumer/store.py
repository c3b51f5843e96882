"""Every SQL statement of the receipt consumer (points and counts are the ledger's).

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
from punchcard_platform.ledger import UsePosting

__all__ = [
    "RECEIPTS_CHANNEL",
    "clock",
    "consume_reservations",
    "insert_receipts",
    "notify_receipts_stored",
    "stored_fingerprints",
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


async def consume_reservations(conn: Connection, uses: Sequence[UsePosting]) -> None:
    """End the reservations these sales named: their uses now count as made.

    Only an active reservation of the same customer and coupon that has not reached
    ``expires_at`` is consumed; any other named one is left as it is (the uses are recorded
    all the same). A reservation that expires at this very moment is then either consumed
    or expired, never both, and stops counting as held either way: the use counts once.
    """
    named = sorted(
        (u.reservation_id, u.customer_id, u.coupon_id, u.transaction_no)
        for u in uses
        if u.reservation_id is not None
    )
    if not named:
        return
    await conn.execute(
        """
        UPDATE reservations AS r
        SET status = 'consumed', ended_at = clock_timestamp(), transaction_no = n.t
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS n(id, c, k, t)
        WHERE r.reservation_id = n.id AND r.customer_id = n.c AND r.coupon_id = n.k
          AND r.status = 'active' AND r.expires_at > clock_timestamp()
        """,
        [n[0] for n in named],
        [n[1] for n in named],
        [n[2] for n in named],
        [n[3] for n in named],
    )


async def clock(conn: Connection) -> datetime:
    """The database's time now: when this batch's effects are committed, near enough.

    One clock for every service, instead of each host's own.
    """
    now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return now


async def notify_receipts_stored(conn: Connection) -> None:
    """Wake the returns waiting for their receipt; delivered only if this transaction commits."""
    await conn.execute("SELECT pg_notify($1, '')", RECEIPTS_CHANNEL)
