"""The ledger's SQL: the only statements that write points, balances and coupon counts.

Each step is one set-based statement for a whole batch. The caller holds the customers'
locks (``db.lock_customers``), which every writer of these tables takes first, so the
state read here is the state the postings apply to; the writes are still increments in the
row, so the stored totals stay exact whatever a reader was told.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

import asyncpg

from punchcard_platform.db import Connection
from punchcard_platform.ledger.postings import (
    SALE,
    Allocation,
    LedgerState,
    Lot,
    PointsPosting,
    UsageKey,
)

__all__ = [
    "add_balances",
    "add_uses",
    "customers_with_lots_due",
    "insert_entries",
    "insert_expiries",
    "load_state",
    "write_allocations",
    "write_lots",
]

_LOT = """id, customer_id, transaction_no, cause, seq, points, remaining, expired, expires_at,
          occurred_at"""


async def load_state(
    conn: Connection,
    customer_ids: Collection[str],
    usage_keys: Collection[UsageKey],
    *,
    now: datetime,
    demands: Mapping[str, int] | None = None,
    own_lots_of: Collection[str] = (),
    allocations_of: Collection[str] = (),
) -> LedgerState:
    """What ``post`` needs of these customers, coupons and sales, read in a few statements.

    Balances and debts; every lot of these customers due at ``now``; in spending order, the
    lots that cover each customer's ``demands`` (the points a burn or revoke of the batch
    takes); the own lots of the sales in ``own_lots_of`` (a revoke takes from them first);
    the allocations of the burns of ``allocations_of`` (a restore gives them back); counts
    and limits of the coupons.
    """
    balances: dict[str, int] = {}
    debts: dict[str, int] = {}
    customers = sorted(set(customer_ids))
    if customers:
        rows = await conn.fetch(
            """
            SELECT customer_id, balance, debt FROM points_balances
            WHERE customer_id = ANY($1::text[])
            """,
            customers,
        )
        balances = {row["customer_id"]: row["balance"] for row in rows}
        debts = {row["customer_id"]: row["debt"] for row in rows if row["debt"]}
    lots = await _load_lots(conn, customers, now, demands or {}, sorted(set(own_lots_of)))
    allocations = await _load_allocations(conn, sorted(set(allocations_of)))
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
    return LedgerState(balances, uses_made, uses_permitted, debts, lots, allocations)


async def _load_lots(
    conn: Connection,
    customers: Sequence[str],
    now: datetime,
    demands: Mapping[str, int],
    own_lots_of: Sequence[str],
) -> list[Lot]:
    if not customers and not own_lots_of:
        return []
    wanting = {c: n for c, n in sorted(demands.items()) if n > 0}
    rows = await conn.fetch(
        f"""
        SELECT {_LOT} FROM points_lots
        WHERE customer_id = ANY($1::text[]) AND remaining > 0 AND expires_at <= $2
        UNION
        SELECT {_LOT} FROM (
            SELECT l.*, d.demand,
                   coalesce(sum(l.remaining) OVER (
                       PARTITION BY l.customer_id ORDER BY l.expires_at, l.occurred_at, l.id
                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
            FROM unnest($3::text[], $4::bigint[]) AS d(c, demand)
            JOIN points_lots AS l ON l.customer_id = d.c AND l.remaining > 0
                                 AND (l.expires_at IS NULL OR l.expires_at > $2)
        ) AS spendable
        WHERE before < demand
        UNION
        SELECT {_LOT} FROM points_lots
        WHERE transaction_no = ANY($5::text[]) AND cause = $6 AND seq = 0
        """,  # noqa: S608 - only the column list is formatted in, never a value
        list(customers),
        now,
        list(wanting),
        list(wanting.values()),
        list(own_lots_of),
        SALE,
    )
    return [_lot(row) for row in rows]


def _lot(row: asyncpg.Record) -> Lot:
    return Lot(
        (row["transaction_no"], row["cause"], row["seq"]),
        row["customer_id"],
        row["points"],
        row["remaining"],
        row["expires_at"],
        row["occurred_at"],
        expired=row["expired"],
        lot_id=row["id"],
    )


async def _load_allocations(
    conn: Connection, transactions: Sequence[str]
) -> dict[str, list[Allocation]]:
    if not transactions:
        return {}
    rows = await conn.fetch(
        """
        SELECT a.transaction_no, a.seq, a.points, a.restored, a.expires_at,
               l.transaction_no AS lot_tx, l.cause AS lot_cause, l.seq AS lot_seq,
               a.lot_id IS NOT NULL AS from_a_lot
        FROM points_allocations AS a LEFT JOIN points_lots AS l ON l.id = a.lot_id
        WHERE a.transaction_no = ANY($1::text[])
        ORDER BY a.transaction_no, a.seq
        """,
        list(transactions),
    )
    allocations: dict[str, list[Allocation]] = {}
    for row in rows:
        lot = (row["lot_tx"], row["lot_cause"], row["lot_seq"]) if row["from_a_lot"] else None
        allocations.setdefault(row["transaction_no"], []).append(
            Allocation(
                row["transaction_no"],
                row["seq"],
                lot,
                row["points"],
                row["expires_at"],
                restored=row["restored"],
            )
        )
    return allocations


async def customers_with_lots_due(
    conn: Connection, now: datetime, limit: int, *, shard: tuple[int, int] = (0, 1)
) -> list[str]:
    """Customers holding the soonest lots due at ``now`` (up to ``limit`` lots), in lock order.

    ``shard`` ``(k, n)`` keeps the customers whose hash is ``k`` modulo ``n``, so ``n``
    workers can expire at once without meeting on a customer.
    """
    k, n = shard
    rows = await conn.fetch(
        """
        SELECT DISTINCT customer_id FROM (
            SELECT customer_id FROM points_lots
            WHERE remaining > 0 AND expires_at <= $1
              AND (hashtext(customer_id) & 2147483647) % $4 = $3
            ORDER BY expires_at LIMIT $2
        ) AS due
        ORDER BY customer_id
        """,
        now,
        limit,
        k,
        n,
    )
    return [row["customer_id"] for row in rows]


async def write_lots(conn: Connection, lots: Sequence[Lot]) -> None:
    """Store lots made by ``post`` and the new remaining and expired of those it changed."""
    new = [lot for lot in lots if lot.lot_id is None]
    changed = [lot for lot in lots if lot.lot_id is not None]
    if new:
        await conn.execute(
            """
            INSERT INTO points_lots (customer_id, transaction_no, cause, seq, points, remaining,
                                     expired, expires_at, occurred_at)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[],
                                 $5::bigint[], $6::bigint[], $7::bigint[], $8::timestamptz[],
                                 $9::timestamptz[])
            """,
            [lot.customer_id for lot in new],
            [lot.key[0] for lot in new],
            [lot.key[1] for lot in new],
            [lot.key[2] for lot in new],
            [lot.points for lot in new],
            [lot.remaining for lot in new],
            [lot.expired for lot in new],
            [lot.expires_at for lot in new],
            [lot.occurred_at for lot in new],
        )
    if changed:
        await conn.execute(
            """
            UPDATE points_lots AS l SET remaining = c.remaining, expired = c.expired
            FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS c(id, remaining, expired)
            WHERE l.id = c.id
            """,
            [lot.lot_id for lot in changed],
            [lot.remaining for lot in changed],
            [lot.expired for lot in changed],
        )


async def write_allocations(conn: Connection, allocations: Sequence[Allocation]) -> None:
    """Store what burns took from which lot, and what returns gave back of it since.

    Written after ``write_lots``, so a lot made in the same batch is found by its key.
    """
    if not allocations:
        return
    await conn.execute(
        """
        INSERT INTO points_allocations AS a (transaction_no, seq, lot_id, points, restored,
                                             expires_at)
        SELECT x.t, x.s, l.id, x.p, x.r, x.e
        FROM unnest($1::text[], $2::integer[], $3::text[], $4::text[], $5::integer[],
                    $6::bigint[], $7::bigint[], $8::timestamptz[])
             AS x(t, s, lt, lc, ls, p, r, e)
        LEFT JOIN points_lots AS l ON (l.transaction_no, l.cause, l.seq) = (x.lt, x.lc, x.ls)
        ON CONFLICT (transaction_no, seq) DO UPDATE SET restored = excluded.restored
        """,
        [a.transaction_no for a in allocations],
        [a.seq for a in allocations],
        [None if a.lot is None else a.lot[0] for a in allocations],
        [None if a.lot is None else a.lot[1] for a in allocations],
        [None if a.lot is None else a.lot[2] for a in allocations],
        [a.points for a in allocations],
        [a.restored for a in allocations],
        [a.expires_at for a in allocations],
    )


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


async def insert_expiries(conn: Connection, entries: Sequence[PointsPosting]) -> None:
    """Book the ``expire`` entries ``post`` made: a plain insert, no conflict to look for.

    Each is for a lot with points left, read under its customer's lock and emptied in the
    same transaction, so it cannot be booked already; if one were, the unique key would
    fail the batch loudly rather than book it twice.
    """
    if not entries:
        return
    await conn.execute(
        """
        INSERT INTO points_ledger (customer_id, transaction_no, cause, kind, points, occurred_at)
        SELECT c, t, w, 'expire', p, o
        FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[])
             AS e(c, t, w, p, o)
        """,
        [e.customer_id for e in entries],
        [e.transaction_no for e in entries],
        [e.cause for e in entries],
        [e.points for e in entries],
        [e.occurred_at for e in entries],
    )


async def add_balances(
    conn: Connection, deltas: Mapping[str, int], debt_deltas: Mapping[str, int]
) -> None:
    """Add to each customer's balance and debt, in customer order (every writer's order)."""
    customers = sorted(set(deltas) | set(debt_deltas))
    if not customers:
        return
    await conn.execute(
        """
        INSERT INTO points_balances AS b (customer_id, balance, debt)
        SELECT c, p, t FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS x(c, p, t)
        ORDER BY c
        ON CONFLICT (customer_id) DO UPDATE
            SET balance = b.balance + excluded.balance, debt = b.debt + excluded.debt
        """,
        customers,
        [deltas.get(c, 0) for c in customers],
        [debt_deltas.get(c, 0) for c in customers],
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
