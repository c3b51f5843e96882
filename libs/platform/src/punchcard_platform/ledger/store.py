"""The ledger's SQL: the only statements that write points, balances and coupon counts.

Each step is one set-based statement for a whole batch. The caller holds the customers'
locks (``db.lock_customers``), which every writer of these tables takes first, so the
state read here is the state the postings apply to; the writes are still increments in the
row, so the stored totals stay exact whatever a reader was told.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from punchcard_platform.db import Connection
from punchcard_platform.ledger.postings import LedgerState, PointsPosting, UsageKey

__all__ = ["add_balances", "add_uses", "insert_entries", "load_state"]


async def load_state(
    conn: Connection, customer_ids: Collection[str], usage_keys: Collection[UsageKey]
) -> LedgerState:
    """Balances and counts of these customers and coupons, and the coupons' limits."""
    balances: dict[str, int] = {}
    if customer_ids:
        rows = await conn.fetch(
            "SELECT customer_id, balance FROM points_balances WHERE customer_id = ANY($1::text[])",
            sorted(set(customer_ids)),
        )
        balances = {row["customer_id"]: row["balance"] for row in rows}
    uses_made: dict[UsageKey, int] = {}
    uses_permitted: dict[str, int | None] = {}
    if usage_keys:
        keys = sorted(set(usage_keys))
        rows = await conn.fetch(
            """
            SELECT x.c, x.k, u.uses_made, p.coupon_id IS NOT NULL AS listed, p.uses_permitted
            FROM unnest($1::text[], $2::text[]) AS x(c, k)
            LEFT JOIN coupon_usage AS u ON u.customer_id = x.c AND u.coupon_id = x.k
            LEFT JOIN coupons AS p ON p.coupon_id = x.k
            """,
            [customer_id for customer_id, _ in keys],
            [coupon_id for _, coupon_id in keys],
        )
        for row in rows:
            if row["uses_made"] is not None:
                uses_made[(row["c"], row["k"])] = row["uses_made"]
            if row["listed"]:
                uses_permitted[row["k"]] = row["uses_permitted"]
    return LedgerState(balances, uses_made, uses_permitted)


async def insert_entries(
    conn: Connection, entries: Sequence[PointsPosting]
) -> set[tuple[str, str, str]]:
    """Book ledger entries in the given order; return the keys of those booked now.

    ``(transaction_no, cause, kind)`` books once: an entry already there is left out, and
    the caller must not count it in the balance.
    """
    if not entries:
        return set()
    rows = await conn.fetch(
        """
        INSERT INTO points_ledger (customer_id, transaction_no, cause, kind, points, occurred_at)
        SELECT c, t, w, k, p, o
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                    $6::timestamptz[]) WITH ORDINALITY AS e(c, t, w, k, p, o, n)
        ORDER BY n
        ON CONFLICT (transaction_no, cause, kind) DO NOTHING
        RETURNING transaction_no, cause, kind
        """,
        [e.customer_id for e in entries],
        [e.transaction_no for e in entries],
        [e.cause for e in entries],
        [e.kind for e in entries],
        [e.points for e in entries],
        [e.occurred_at for e in entries],
    )
    return {(row["transaction_no"], row["cause"], row["kind"]) for row in rows}


async def add_balances(conn: Connection, deltas: Mapping[str, int]) -> None:
    """Add to each customer's balance, in customer order (the order every writer uses)."""
    if not deltas:
        return
    await conn.execute(
        """
        INSERT INTO points_balances AS b (customer_id, balance)
        SELECT c, p FROM unnest($1::text[], $2::bigint[]) AS d(c, p)
        ORDER BY c
        ON CONFLICT (customer_id) DO UPDATE SET balance = b.balance + excluded.balance
        """,
        list(deltas),
        list(deltas.values()),
    )


async def add_uses(conn: Connection, deltas: Mapping[UsageKey, int]) -> None:
    """Add (a sale) or take back (a return, negative) uses per customer and coupon, in key order.

    ``post`` already kept every count at zero or above; ``GREATEST`` only guards the
    table's check against a writer that ignored the customer locks.
    """
    added = {key: n for key, n in deltas.items() if n > 0}
    taken = {key: -n for key, n in deltas.items() if n < 0}
    if added:
        await conn.execute(
            """
            INSERT INTO coupon_usage AS u (customer_id, coupon_id, uses_made)
            SELECT c, k, n
            FROM unnest($1::text[], $2::text[], $3::integer[]) AS d(c, k, n)
            ORDER BY c, k
            ON CONFLICT (customer_id, coupon_id)
                DO UPDATE SET uses_made = u.uses_made + excluded.uses_made
            """,
            [customer_id for customer_id, _ in added],
            [coupon_id for _, coupon_id in added],
            list(added.values()),
        )
    if taken:
        await conn.execute(
            """
            UPDATE coupon_usage AS u SET uses_made = GREATEST(u.uses_made - d.n, 0)
            FROM unnest($1::text[], $2::text[], $3::integer[]) AS d(c, k, n)
            WHERE u.customer_id = d.c AND u.coupon_id = d.k
            """,
            [customer_id for customer_id, _ in taken],
            [coupon_id for _, coupon_id in taken],
            list(taken.values()),
        )
