"""The ledger's SQL for a coupon's uses across all customers (campaign-wide limits).

A total is kept as shard rows of ``coupon_totals`` summed on read. Every sale of a hot
coupon changes its total, and one row per coupon would make every ingest transaction
touching that coupon wait for the one before it to commit; instead each transaction adds
its batch's delta to the shard of its own backend, so transactions of different
connections (instances, consumers) rarely meet on a row. The sum moves in the same
transaction as ``coupon_usage`` and by the same amounts, so it is exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping

from punchcard_platform.db import Connection
from punchcard_platform.ledger.postings import LedgerState

__all__ = ["SHARDS", "add_totals", "with_totals"]

SHARDS = 16
"""Shard rows per coupon; more than the connections that write at once in practice."""


async def with_totals(
    conn: Connection, state: LedgerState, coupon_ids: Collection[str]
) -> LedgerState:
    """``state`` with these coupons' totals and campaign-wide limits added.

    The totals are those committed when this statement runs, plus this transaction's own:
    a batch of another connection committing meanwhile is in its own events' totals, not
    in these (the stored sum stays exact either way).
    """
    if not coupon_ids:
        return state
    rows = await conn.fetch(
        """
        SELECT k.coupon_id, p.coupon_id IS NOT NULL AS listed, p.total_uses_permitted,
               (SELECT COALESCE(sum(t.uses_made), 0) FROM coupon_totals AS t
                WHERE t.coupon_id = k.coupon_id)::bigint AS total
        FROM unnest($1::text[]) AS k(coupon_id)
        LEFT JOIN coupons AS p ON p.coupon_id = k.coupon_id
        """,
        sorted(set(coupon_ids)),
    )
    total_uses_made = {row["coupon_id"]: int(row["total"]) for row in rows}
    total_uses_permitted = {
        row["coupon_id"]: row["total_uses_permitted"] for row in rows if row["listed"]
    }
    return dataclasses.replace(
        state, total_uses_made=total_uses_made, total_uses_permitted=total_uses_permitted
    )


async def add_totals(conn: Connection, deltas: Mapping[str, int]) -> None:
    """Add each coupon's delta (negative for a return) to this backend's shard, in coupon order."""
    moved = {coupon_id: n for coupon_id, n in deltas.items() if n}
    if not moved:
        return
    await conn.execute(
        """
        INSERT INTO coupon_totals AS t (coupon_id, shard, uses_made)
        SELECT k, (pg_backend_pid() % $3)::smallint, n
        FROM unnest($1::text[], $2::bigint[]) AS d(k, n)
        ORDER BY k
        ON CONFLICT (coupon_id, shard) DO UPDATE SET uses_made = t.uses_made + excluded.uses_made
        """,
        sorted(moved),
        [moved[k] for k in sorted(moved)],
        SHARDS,
    )
