"""Every SQL statement of reservations, on the primary, parameterised.

A reservation decision runs in one transaction that first takes the customer's lock
(``db.lock_customers``, which the receipt consumer takes too before it books a sale and
consumes the reservation it names) and, for a coupon with a campaign-wide limit, the
coupon row's lock. Every concurrent decision about the same customer (and, for a capped
coupon, about the same coupon) then waits for the one before it to commit, and counts
its reservation: for K uses left, exactly K are held, whatever the number of workers and
instances. A reservation counts while ``status = 'active' AND expires_at >
clock_timestamp()``, so one stops counting at its expiry without any job having run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
from punchcard_platform.db import lock_customers

from punchcard_coupon_query import queries

__all__ = [
    "IDEMPOTENCY_HOURS",
    "RETENTION_HOURS",
    "ReservationRow",
    "active_reservations",
    "claim_idempotency_key",
    "clock",
    "delete_ended",
    "insert_reservation",
    "lock_for_decision",
    "release",
    "store_response",
]

Connection = asyncpg.Connection

IDEMPOTENCY_HOURS = 24
"""How long an ``Idempotency-Key`` answers with its first answer."""
RETENTION_HOURS = 24
"""How long a released, consumed or expired reservation is kept (then DELETE says 404)."""


@dataclass(frozen=True, slots=True)
class ReservationRow:
    """A reservation as stored."""

    reservation_id: str
    customer_id: str
    coupon_id: str
    uses: int
    expires_at: datetime


async def claim_idempotency_key(
    conn: Connection, key_id: str, idempotency_key: str, fingerprint: bytes
) -> tuple[bytes, str] | None:
    """Claim the key for this request; None if claimed now, else the first request's
    fingerprint and answer.

    The primary key is the arbiter: a concurrent request with the same key waits here
    until the first one's transaction ends, then sees its answer (or, if it was refused
    and rolled back, claims the key itself). A key older than a day is free again.
    """
    await conn.execute(
        f"""
        DELETE FROM reservation_requests
        WHERE key_id = $1 AND idempotency_key = $2
          AND created_at <= clock_timestamp() - interval '{IDEMPOTENCY_HOURS} hours'
        """,  # noqa: S608 -- a constant
        key_id,
        idempotency_key,
    )
    claimed = await conn.fetchval(
        """
        INSERT INTO reservation_requests (key_id, idempotency_key, fingerprint, response)
        VALUES ($1, $2, $3, '')
        ON CONFLICT (key_id, idempotency_key) DO NOTHING
        RETURNING true
        """,
        key_id,
        idempotency_key,
        fingerprint,
    )
    if claimed:
        return None
    row = await conn.fetchrow(
        "SELECT fingerprint, response FROM reservation_requests "
        "WHERE key_id = $1 AND idempotency_key = $2",
        key_id,
        idempotency_key,
    )
    if row is None:  # deleted by the cleanup in between: a new request after all
        return await claim_idempotency_key(conn, key_id, idempotency_key, fingerprint)
    return bytes(row["fingerprint"]), row["response"]


async def store_response(
    conn: Connection, key_id: str, idempotency_key: str, response: str
) -> None:
    """Keep the 201 answer a claimed key is to give again."""
    await conn.execute(
        "UPDATE reservation_requests SET response = $3 WHERE key_id = $1 AND idempotency_key = $2",
        key_id,
        idempotency_key,
        response,
    )


async def lock_for_decision(
    conn: Connection, customer_id: str, coupon_id: str
) -> queries.CouponCandidate | None:
    """Lock what a reservation of this coupon for this customer depends on, then read it.

    The customer's lock first (the order every writer uses), then, for a coupon with a
    campaign-wide limit, its row (``FOR NO KEY UPDATE``: readers and the receipt consumer
    never wait for it). Read after the locks, each statement sees every decision
    committed before. None if the coupon is not in the catalog.
    """
    await lock_customers(conn, [customer_id])
    await conn.execute(
        "SELECT 1 FROM coupons WHERE coupon_id = $1 AND total_uses_permitted IS NOT NULL "
        "FOR NO KEY UPDATE",
        coupon_id,
    )
    return await queries.fetch_customer_coupon(conn, customer_id, coupon_id)


async def clock(conn: Connection) -> datetime:
    """The database's time now: the one clock expiry is judged by."""
    now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return now


async def insert_reservation(
    conn: Connection,
    *,
    reservation_id: str,
    customer_id: str,
    coupon_id: str,
    uses: int,
    ttl_seconds: int,
    store_id: str | None,
    terminal_id: str | None,
) -> ReservationRow:
    """Hold ``uses`` for ``ttl_seconds`` from now."""
    row = await conn.fetchrow(
        """
        INSERT INTO reservations (reservation_id, customer_id, coupon_id, uses, store_id,
                                  terminal_id, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp() + make_interval(secs => $7))
        RETURNING reservation_id, customer_id, coupon_id, uses, expires_at
        """,
        reservation_id,
        customer_id,
        coupon_id,
        uses,
        store_id,
        terminal_id,
        ttl_seconds,
    )
    assert row is not None
    return ReservationRow(**dict(row))


async def release(conn: Connection, reservation_id: str) -> bool:
    """End an active reservation; False if it was never made (or is long forgotten).

    Releasing one already released, consumed or expired changes nothing.
    """
    status: str | None = await conn.fetchval(
        """
        WITH released AS (
            UPDATE reservations SET status = 'released', ended_at = clock_timestamp()
            WHERE reservation_id = $1 AND status = 'active' AND expires_at > clock_timestamp()
            RETURNING status
        )
        SELECT status FROM released
        UNION ALL
        SELECT status FROM reservations WHERE reservation_id = $1
        LIMIT 1
        """,
        reservation_id,
    )
    return status is not None


async def active_reservations(conn: Connection, customer_id: str) -> list[ReservationRow]:
    """The customer's reservations that still hold uses, soonest to expire first."""
    rows = await conn.fetch(
        """
        SELECT reservation_id, customer_id, coupon_id, uses, expires_at
        FROM reservations
        WHERE customer_id = $1 AND status = 'active' AND expires_at > clock_timestamp()
        ORDER BY expires_at, reservation_id
        """,
        customer_id,
    )
    return [ReservationRow(**dict(row)) for row in rows]


async def delete_ended(conn: Connection, *, limit: int = 10_000) -> tuple[int, int]:
    """Delete up to ``limit`` reservations ended a day ago and idempotency keys past a day.

    Only keeps the tables small: an expired reservation already stopped counting at its
    ``expires_at``. Returns how many of each were deleted.
    """
    reservations = await conn.fetchval(
        f"""
        WITH gone AS (
            DELETE FROM reservations WHERE reservation_id IN (
                SELECT reservation_id FROM reservations
                WHERE COALESCE(ended_at, expires_at)
                      < clock_timestamp() - interval '{RETENTION_HOURS} hours'
                LIMIT $1
            )
            RETURNING 1
        )
        SELECT count(*) FROM gone
        """,  # noqa: S608 -- a constant
        limit,
    )
    keys = await conn.fetchval(
        f"""
        WITH gone AS (
            DELETE FROM reservation_requests
            WHERE created_at < clock_timestamp() - interval '{IDEMPOTENCY_HOURS} hours'
            RETURNING 1
        )
        SELECT count(*) FROM gone
        """,  # noqa: S608 -- a constant
    )
    return int(reservations), int(keys)
