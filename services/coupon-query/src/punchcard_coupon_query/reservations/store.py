"""Every SQL statement of reservations, on the primary, parameterised.

Reservations asked for together are decided in one transaction (``batcher``) of three
statements: ``lock`` takes the advisory locks of every customer in it (the keys
``db.lock_customers`` takes, which the receipt consumer takes too before it books a sale
and consumes the reservation it names) and of every coupon in it with a campaign-wide
limit, all in one sorted order; ``read`` then sees every decision committed before;
``write`` makes the reservations and claims their ``Idempotency-Key`` rows. Every
concurrent decision about the same customer (and, for a capped coupon, about the same
coupon) waits for the one before it to commit and counts its reservation: for K uses
left, exactly K are held, whatever the number of workers and instances. A reservation
counts while ``status = 'active' AND expires_at > clock_timestamp()``, so one stops
counting at its expiry without any job having run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from punchcard_coupon_query import queries
from punchcard_coupon_query.reservations.decision import Ask, Hold, Seen

__all__ = [
    "IDEMPOTENCY_HOURS",
    "RETENTION_HOURS",
    "Read",
    "ReservationRow",
    "active_reservations",
    "delete_ended",
    "lock",
    "read",
    "release",
    "write",
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


@dataclass(frozen=True, slots=True)
class Read:
    """What ``read`` found: per ask, in order; the clock; the capped coupons among them."""

    seen: list[Seen]
    now: datetime
    capped: frozenset[str]


# The customers' keys are db.lock_customers' (seed 0), the capped coupons' another hash
# (seed 1) of their ids; taken in one ascending order by every caller, they cannot
# deadlock, and the receipt consumer, which takes only customers' keys, never waits for
# a coupon's.
_LOCK = """
    SELECT keys.coupon_id, pg_advisory_xact_lock(keys.k)
    FROM (
        SELECT hashtextextended(c, 0) AS k, NULL::text AS coupon_id FROM unnest($1::text[]) AS c
        UNION
        SELECT hashtextextended(c.coupon_id, 1), c.coupon_id
        FROM coupons AS c
        WHERE c.coupon_id = ANY($2::text[]) AND c.total_uses_permitted IS NOT NULL
        ORDER BY 1
    ) AS keys
"""

# One row per ask, in order: the coupon's row version (null if not in the catalog), the
# customer's uses and active holds of it, whether it was issued to them, a capped
# coupon's uses taken, an earlier request's fingerprint and answer for the same
# Idempotency-Key, and the clock.
_READ = f"""
    WITH clock AS MATERIALIZED (SELECT clock_timestamp() AS now)
    SELECT c.coupon_id || ' ' || c.xmin AS version,
           COALESCE(u.uses_made, 0) AS uses_made,
           NOT c.targeted OR EXISTS (
               SELECT 1 FROM coupon_targets AS t
               WHERE t.coupon_id = c.coupon_id AND t.customer_id = q.customer_id
           ) AS issued,
           (SELECT COALESCE(sum(r.uses), 0) FROM reservations AS r
            WHERE r.customer_id = q.customer_id AND r.coupon_id = q.coupon_id
              AND r.{queries.ACTIVE_RESERVATION})::int AS reserved,
           CASE WHEN c.total_uses_permitted IS NULL THEN 0
                ELSE {queries.taken("c.coupon_id")} END::bigint AS taken,
           k.fingerprint, k.response, clock.now
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
         WITH ORDINALITY AS q(customer_id, coupon_id, key_id, idempotency_key, n)
    CROSS JOIN clock
    LEFT JOIN coupons AS c ON c.coupon_id = q.coupon_id
    LEFT JOIN coupon_usage AS u ON u.customer_id = q.customer_id AND u.coupon_id = q.coupon_id
    LEFT JOIN reservation_requests AS k
           ON k.key_id = q.key_id AND k.idempotency_key = q.idempotency_key
          AND k.created_at > clock.now - interval '{IDEMPOTENCY_HOURS} hours'
    ORDER BY q.n
"""  # noqa: S608 -- composed of constants, values are parameters

# The keys first (in one order), then the reservations whose key was claimed here (or
# that came without one). A key another transaction claimed meanwhile is not claimed,
# its reservation not made, and the count says so. A key past its 24 hours is taken over.
_WRITE = f"""
    WITH asked AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[],
                             $6::text[], $7::timestamptz[], $8::text[], $9::text[],
                             $10::bytea[], $11::text[])
            AS a(reservation_id, customer_id, coupon_id, uses, store_id, terminal_id,
                 expires_at, key_id, idempotency_key, fingerprint, response)
    ), claimed AS (
        INSERT INTO reservation_requests AS r (key_id, idempotency_key, fingerprint, response)
        SELECT key_id, idempotency_key, fingerprint, response FROM asked
        WHERE idempotency_key IS NOT NULL
        ORDER BY key_id, idempotency_key
        ON CONFLICT (key_id, idempotency_key) DO UPDATE
            SET fingerprint = EXCLUDED.fingerprint, response = EXCLUDED.response,
                created_at = now()
            WHERE r.created_at <= clock_timestamp() - interval '{IDEMPOTENCY_HOURS} hours'
        RETURNING key_id, idempotency_key
    ), made AS (
        INSERT INTO reservations (reservation_id, customer_id, coupon_id, uses, store_id,
                                  terminal_id, expires_at)
        SELECT a.reservation_id, a.customer_id, a.coupon_id, a.uses, a.store_id,
               a.terminal_id, a.expires_at
        FROM asked AS a
        WHERE a.idempotency_key IS NULL
           OR (a.key_id, a.idempotency_key) IN (SELECT key_id, idempotency_key FROM claimed)
        RETURNING 1
    )
    SELECT count(*) FROM made
"""  # noqa: S608 -- composed of constants, values are parameters


async def lock(conn: Connection, asks: Sequence[Ask]) -> frozenset[str]:
    """Lock the asks' customers and capped coupons; the capped coupons locked."""
    rows = await conn.fetch(
        _LOCK,
        sorted({ask.customer_id for ask in asks}),
        sorted({ask.coupon_id for ask in asks}),
    )
    return frozenset(row[0] for row in rows if row[0] is not None)


async def read(conn: Connection, asks: Sequence[Ask]) -> Read:
    """What each ask (at least one) is decided on: read after ``lock`` in the batch's
    transaction; or, without locks, what a customer's holds are shown with."""
    rows = await conn.fetch(
        _READ,
        [ask.customer_id for ask in asks],
        [ask.coupon_id for ask in asks],
        [ask.key_id for ask in asks],
        [ask.idempotency_key for ask in asks],
    )
    terms_of = await queries.terms_of_versions(conn, {row[0] for row in rows if row[0] is not None})
    seen: list[Seen] = []
    capped: set[str] = set()
    for (version, uses_made, issued, reserved, taken, fingerprint, response, _), ask in zip(
        rows, asks, strict=True
    ):
        terms = None if version is None else terms_of.get(version)
        first = None if fingerprint is None else (bytes(fingerprint), response)
        if terms is None:
            seen.append(Seen(None, first))
            continue
        if terms.total_uses_permitted is not None:
            capped.add(ask.coupon_id)
        seen.append(Seen((terms, uses_made, issued, reserved, taken), first))
    now: datetime = rows[0][-1]
    return Read(seen, now, frozenset(capped))


async def write(conn: Connection, holds: Sequence[Hold]) -> int:
    """Make the reservations and claim their keys; how many were made.

    Fewer than ``holds`` when another transaction claimed one of the keys meanwhile.
    """
    asks = [hold.ask for hold in holds]
    made: int = await conn.fetchval(
        _WRITE,
        [hold.reservation_id for hold in holds],
        [ask.customer_id for ask in asks],
        [ask.coupon_id for ask in asks],
        [ask.uses for ask in asks],
        [ask.store_id for ask in asks],
        [ask.terminal_id for ask in asks],
        [hold.expires_at for hold in holds],
        [ask.key_id for ask in asks],
        [ask.idempotency_key for ask in asks],
        [None if ask.idempotency_key is None else ask.fingerprint for ask in asks],
        [hold.answer for hold in holds],
    )
    return made


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
