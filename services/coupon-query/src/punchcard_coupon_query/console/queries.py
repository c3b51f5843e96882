"""The console's own SQL: what no API route asks. Everything else goes through ``queries``.

Parameterised statements only; reads take a connection, writes one inside a transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

__all__ = [
    "CouponRow",
    "CouponUse",
    "ReturnRow",
    "coupon_exists",
    "coupon_use",
    "dead_letter_reasons",
    "fetch_coupon_row",
    "list_coupon_rows",
    "returns_of_customer",
    "returns_of_receipt",
]

Connection = asyncpg.Connection


@dataclass(frozen=True, slots=True)
class CouponRow:
    """A coupon as the catalog list shows it: its terms and how many it is issued to."""

    coupon_id: str
    name: str
    description: str
    uses_permitted: int | None
    total_uses_permitted: int | None
    valid_from: datetime | None
    valid_until: datetime | None
    active: bool
    targeted: bool
    targets: int | None
    """Customers a targeted coupon is issued to (0 for everyone); None when not counted."""
    store_ids: list[str] | None
    restore_on_return: bool


_COUPON_COLUMNS = """
    c.coupon_id, c.name, c.description, c.uses_permitted, c.total_uses_permitted,
    c.valid_from, c.valid_until,
    c.active, c.targeted, c.store_ids, c.restore_on_return
"""


async def fetch_coupon_row(conn: Connection, coupon_id: str) -> CouponRow | None:
    """One coupon with the number of customers it is issued to; None if unknown.

    Counted, never fetched: a coupon may be issued to 100,000 customers.
    """
    row = await conn.fetchrow(
        f"""
        SELECT {_COUPON_COLUMNS},
               CASE WHEN c.targeted THEN (
                   SELECT count(*) FROM coupon_targets AS t WHERE t.coupon_id = c.coupon_id
               ) ELSE 0 END AS targets
        FROM coupons AS c
        WHERE c.coupon_id = $1
        """,  # noqa: S608 -- constant columns
        coupon_id,
    )
    return None if row is None else CouponRow(**dict(row))


async def list_coupon_rows(
    conn: Connection,
    *,
    active: bool | None,
    targeted: bool | None,
    validity: str | None,
    at: datetime,
    limit: int,
) -> list[CouponRow]:
    """Catalog coupons by the list's filters, ordered by coupon_id.

    ``validity``: ``current`` (started, not ended at ``at``), ``upcoming``, ``ended``, or
    None for any. Targets are not counted here: a list of a few 100,000-customer campaigns
    took 0.1 s to count (each coupon's page counts its own).
    """
    rows = await conn.fetch(
        f"""
        SELECT {_COUPON_COLUMNS}, NULL::bigint AS targets
        FROM coupons AS c
        WHERE ($1::boolean IS NULL OR c.active = $1)
          AND ($2::boolean IS NULL OR c.targeted = $2)
          AND CASE $3::text
                WHEN 'current' THEN (c.valid_from IS NULL OR c.valid_from <= $4)
                                AND (c.valid_until IS NULL OR $4 < c.valid_until)
                WHEN 'upcoming' THEN c.valid_from > $4
                WHEN 'ended' THEN c.valid_until <= $4
                ELSE true
              END
        ORDER BY c.coupon_id
        LIMIT $5
        """,  # noqa: S608 -- constant columns
        active,
        targeted,
        validity,
        at,
        limit,
    )
    return [CouponRow(**dict(row)) for row in rows]


async def coupon_exists(conn: Connection, coupon_id: str) -> bool:
    """Whether the catalog has this coupon, active or not."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM coupons WHERE coupon_id = $1)", coupon_id
    )
    return found


@dataclass(frozen=True, slots=True)
class CouponUse:
    """How much a coupon was used so far, and by how many customers."""

    uses_made: int
    customers: int


async def coupon_use(conn: Connection, coupon_id: str) -> CouponUse:
    """Uses made across customers and how many customers used it (one row per customer
    who did: slow for a big campaign, see ``console.counts``)."""
    row = await conn.fetchrow(
        """
        SELECT COALESCE(sum(uses_made), 0) AS uses_made,
               count(*) FILTER (WHERE uses_made > 0) AS customers
        FROM coupon_usage
        WHERE coupon_id = $1
        """,
        coupon_id,
    )
    assert row is not None
    return CouponUse(int(row["uses_made"]), int(row["customers"]))


@dataclass(frozen=True, slots=True)
class ReturnRow:
    """A return of a transaction: its state, its outcome's reason, its points."""

    transaction_no: str
    event_id: str
    status: str
    reason: str | None
    return_reason: str | None
    """What the return desk wrote on the ReturnEvent ("changed mind")."""
    received_at: datetime
    decided_at: datetime | None
    points_restored: int | None
    points_revoked: int | None


_RETURN_COLUMNS = """
    e.transaction_no, e.event_id, e.status, e.outcome->>'reason' AS reason,
    e.reason AS return_reason, e.received_at, e.decided_at,
    (e.outcome->>'points_restored')::bigint AS points_restored,
    (e.outcome->>'points_revoked')::bigint AS points_revoked
"""


async def returns_of_customer(conn: Connection, customer_id: str, limit: int) -> list[ReturnRow]:
    """The latest returns of a customer's transactions, newest first."""
    rows = await conn.fetch(
        f"""
        SELECT {_RETURN_COLUMNS}
        FROM receipts AS r
        JOIN return_events AS e ON e.transaction_no = r.transaction_no
        WHERE r.customer_id = $1
        ORDER BY e.seq DESC
        LIMIT $2
        """,  # noqa: S608 -- constant columns
        customer_id,
        limit,
    )
    return [ReturnRow(**dict(row)) for row in rows]


async def returns_of_receipt(conn: Connection, transaction_no: str) -> list[ReturnRow]:
    """Every return event of one transaction, in the order they arrived."""
    rows = await conn.fetch(
        f"""
        SELECT {_RETURN_COLUMNS}
        FROM return_events AS e
        WHERE e.transaction_no = $1
        ORDER BY e.seq
        """,  # noqa: S608 -- constant columns
        transaction_no,
    )
    return [ReturnRow(**dict(row)) for row in rows]


async def dead_letter_reasons(conn: Connection) -> list[tuple[str, int, int, datetime]]:
    """Per reason: dead letters, those not replayed yet, and the latest one's time."""
    rows = await conn.fetch(
        """
        SELECT reason, count(*) AS letters, count(*) FILTER (WHERE replayed_at IS NULL) AS open,
               max(dead_lettered_at) AS latest
        FROM dead_letters
        GROUP BY reason
        ORDER BY latest DESC
        """
    )
    return [(r["reason"], r["letters"], r["open"], r["latest"]) for r in rows]
