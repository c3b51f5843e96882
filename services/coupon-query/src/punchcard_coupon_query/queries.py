"""Every SQL statement of coupon-query, parameterised and set-based.

Reads take a connection; writes take one inside a transaction (``Database.transaction``).
Documents are returned as JSON text built by PostgreSQL, so the numbers in a stored
receipt reach the client exactly as they were sent.
"""

from __future__ import annotations

import time
from collections import ChainMap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from punchcard_coupon_query.cursors import LedgerCursor, ReceiptCursor
from punchcard_coupon_query.eligibility import CouponCandidate, CouponTerms
from punchcard_coupon_query.models import (
    Coupon,
    CouponInput,
    ExpiringPoints,
    LedgerEntry,
    ReceiptSummary,
)

__all__ = [
    "ACTIVE_RESERVATION",
    "SESSION_SETTINGS",
    "ApiKeyRecord",
    "CouponCandidate",
    "deactivate_coupon",
    "fetch_api_key",
    "fetch_coupon",
    "fetch_customer_coupon",
    "fetch_customer_coupons",
    "fetch_many_customer_coupons",
    "fetch_points",
    "fetch_receipt_document",
    "fetch_receipts",
    "fetch_return_status",
    "insert_api_key",
    "list_api_keys",
    "list_coupons",
    "revoke_api_key",
    "taken",
    "terms_of_versions",
    "upsert_coupon",
]

Connection = asyncpg.Connection

SESSION_SETTINGS = {"plan_cache_mode": "force_generic_plan"}
"""What every connection of this service starts with: plan each statement once.

asyncpg prepares every statement, and PostgreSQL then chooses between planning it
afresh for each execution's values (a custom plan) and one plan for any values (the
generic plan). For _CUSTOMERS_COUPONS it never chose the generic plan: that one
assumes ten customers in the array, so it looked dearer than a custom plan for the
usual two to five, and every execution paid for planning. Measured on 100,000
customers, batches of 4: 0.149 ms of backend CPU per customer with the default
(``auto``), 0.075 ms with generic plans, against 0.105 ms for the one-customer
statement. Every statement here looks rows up by key, so one plan serves all values.
"""

# Active reservations: not ended and not past expires_at (no job needs to have run).
ACTIVE_RESERVATION = "status = 'active' AND expires_at > clock_timestamp()"

# A capped coupon's uses taken: the sum of its total's shards and of every customer's
# active reservations (an index range of reservations_active_by_coupon).
_TAKEN = f"""
    (SELECT COALESCE(sum(t.uses_made), 0) FROM coupon_totals AS t WHERE t.coupon_id = {{c}})
    + (SELECT COALESCE(sum(r.uses), 0) FROM reservations AS r
       WHERE r.coupon_id = {{c}} AND r.{ACTIVE_RESERVATION})
"""  # noqa: S608 -- composed of constants, values are parameters


def taken(coupon_id_column: str) -> str:
    """SQL for a capped coupon's uses taken (made plus held by everyone), of the coupon
    named by ``coupon_id_column`` (a column, never a value)."""
    return _TAKEN.format(c=coupon_id_column)


# One round trip for the whole list: the customer's usage joined in, and the
# targeting question answered by one primary-key probe of coupon_targets per coupon
# (never a scan of a 100,000-customer list). Inactive coupons and coupons issued to
# other customers are never listed, so they are not fetched. The coupons' terms are
# not fetched either: each row names its coupon's row version (coupon_id and xmin in
# one string, so the client decodes and hashes one value per row), whose terms the
# process already holds (_TermsCache), or fetches once with _COUPON_TERMS.
_CUSTOMER_COUPONS = f"""
    SELECT c.coupon_id || ' ' || c.xmin AS version, COALESCE(u.uses_made, 0) AS uses_made,
           a.issued, COALESCE(h.uses, 0)::int AS reserved,
           CASE WHEN c.total_uses_permitted IS NULL THEN 0
                ELSE {_TAKEN.format(c="c.coupon_id")} END::bigint AS taken
    FROM coupons AS c
    LEFT JOIN coupon_usage AS u ON u.customer_id = $1 AND u.coupon_id = c.coupon_id
    LEFT JOIN (
        SELECT coupon_id, sum(uses) AS uses FROM reservations
        WHERE customer_id = $1 AND {ACTIVE_RESERVATION} GROUP BY coupon_id
    ) AS h ON h.coupon_id = c.coupon_id
    CROSS JOIN LATERAL (
        SELECT NOT c.targeted OR EXISTS (
            SELECT 1 FROM coupon_targets AS t
            WHERE t.coupon_id = c.coupon_id AND t.customer_id = $1
        ) AS issued
    ) AS a
    WHERE c.active AND a.issued
    ORDER BY c.coupon_id
"""  # noqa: S608 -- composed of constants, values are parameters

# _CUSTOMER_COUPONS for several customers at once: the lists of requests that arrive
# together (hotroute.batcher.CouponListBatcher), in one round trip and one statement execution,
# in a compact form. Row 0 holds the catalog: every active coupon's row version, in
# coupon_id order, and the targeted ones among them. Row n holds the n-th customer's
# usage (coupon ids and uses, any order) and the targeted coupons issued to them: a
# range scan of coupon_usage, and primary-key probes of coupon_targets for the few
# targeted coupons. The service puts each customer's list together from these
# (fetch_many_customer_coupons), the same list _CUSTOMER_COUPONS gives. One row per
# coupon and customer, as _CUSTOMER_COUPONS answers, cost PostgreSQL 0.116 ms of CPU
# per customer in batches of 4 and 0.094 in batches of 16 (1,000,000 customers, 50
# coupons); this, 0.077 and 0.053. Both parts come from one snapshot, as one statement.
# The last two columns hold, in row 0, the capped coupons (total_uses_permitted set) and
# their uses taken by all customers; in row n, the coupons the customer holds active
# reservations of and how many uses each.
_CUSTOMERS_COUPONS = f"""
    WITH catalog AS MATERIALIZED (
        SELECT c.coupon_id, c.coupon_id || ' ' || c.xmin AS version, c.targeted,
               c.total_uses_permitted IS NOT NULL AS capped
        FROM coupons AS c
        WHERE c.active
    )
    SELECT 0 AS n, (SELECT array_agg(version ORDER BY coupon_id) FROM catalog) AS coupons,
           NULL::int[] AS uses,
           (SELECT array_agg(coupon_id) FROM catalog WHERE targeted) AS issued,
           k.held_coupons, k.held
    FROM (
        SELECT array_agg(coupon_id) AS held_coupons,
               array_agg(({_TAKEN.format(c="catalog.coupon_id")})::bigint) AS held
        FROM catalog WHERE capped
    ) AS k
    UNION ALL
    SELECT q.n, u.coupons, u.uses,
           ARRAY(
               SELECT t.coupon_id
               FROM coupon_targets AS t
               WHERE t.customer_id = q.customer_id
                 AND t.coupon_id = ANY(ARRAY(SELECT coupon_id FROM catalog WHERE targeted))
           ),
           h.held_coupons, h.held
    FROM unnest($1::text[]) WITH ORDINALITY AS q(customer_id, n)
    CROSS JOIN LATERAL (
        SELECT array_agg(coupon_id) AS coupons, array_agg(uses_made) AS uses
        FROM coupon_usage
        WHERE customer_id = q.customer_id
    ) AS u
    CROSS JOIN LATERAL (
        SELECT array_agg(coupon_id) AS held_coupons, array_agg(uses::bigint) AS held
        FROM (SELECT coupon_id, sum(uses) AS uses FROM reservations
              WHERE customer_id = q.customer_id AND {ACTIVE_RESERVATION} GROUP BY coupon_id) AS r
    ) AS h
"""  # noqa: S608 -- composed of constants, values are parameters

_COUPON_TERMS = """
    SELECT c.coupon_id, c.name, c.description, c.uses_permitted, c.valid_from, c.valid_until,
           c.active, c.targeted, c.store_ids, c.total_uses_permitted,
           c.coupon_id || ' ' || c.xmin AS version
    FROM coupons AS c
    WHERE c.coupon_id = ANY($1::text[])
"""

_CUSTOMER_COUPON = f"""
    SELECT c.coupon_id, c.name, c.description, c.uses_permitted, c.valid_from, c.valid_until,
           c.active, c.targeted, c.store_ids, c.total_uses_permitted,
           COALESCE(u.uses_made, 0) AS uses_made,
           NOT c.targeted OR EXISTS (
               SELECT 1 FROM coupon_targets AS t
               WHERE t.coupon_id = c.coupon_id AND t.customer_id = $1
           ) AS issued,
           (SELECT COALESCE(sum(r.uses), 0) FROM reservations AS r
            WHERE r.customer_id = $1 AND r.coupon_id = c.coupon_id AND r.{ACTIVE_RESERVATION})::int
               AS reserved,
           CASE WHEN c.total_uses_permitted IS NULL THEN 0
                ELSE {_TAKEN.format(c="c.coupon_id")} END::bigint AS taken
    FROM coupons AS c
    LEFT JOIN coupon_usage AS u ON u.customer_id = $1 AND u.coupon_id = c.coupon_id
    WHERE c.coupon_id = $2
"""  # noqa: S608 -- composed of constants, values are parameters


def _terms(row: asyncpg.Record) -> CouponTerms:
    store_ids = row["store_ids"]
    return CouponTerms(
        coupon_id=row["coupon_id"],
        name=row["name"],
        description=row["description"],
        uses_permitted=row["uses_permitted"],
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
        active=row["active"],
        targeted=row["targeted"],
        store_ids=None if store_ids is None else frozenset(store_ids),
        total_uses_permitted=row["total_uses_permitted"],
    )


class _TermsCache:
    """Each coupon row version's ``CouponTerms``, fetched and built once per process.

    A row version is named by ``"<coupon_id> <xmin>"`` (identifiers hold no space):
    PostgreSQL gives every new version of a row (an update by the admin API) a new
    ``xmin``, so a changed coupon is never answered from here. ``xmin`` values come
    round again only after 2^32 transactions; the cache starts over every
    ``_MAX_AGE_SECONDS`` and when it grows past ``_MAX_ENTRIES``, far sooner than that.
    """

    _MAX_ENTRIES = 10_000
    _MAX_AGE_SECONDS = 600.0

    def __init__(self) -> None:
        self._terms: dict[str, CouponTerms] = {}
        self._started = time.monotonic()

    def versions(self) -> dict[str, CouponTerms]:
        """The held terms by version, to read (not to change) while a request is answered.

        Starting over swaps in a new dict, so a request still reading the old one
        (across an await) keeps every entry it counted on.
        """
        if (
            len(self._terms) >= self._MAX_ENTRIES
            or time.monotonic() - self._started > self._MAX_AGE_SECONDS
        ):
            self._terms = {}
            self._started = time.monotonic()
        return self._terms

    def put(self, version: str, terms: CouponTerms) -> None:
        self._terms[version] = terms


_terms_cache = _TermsCache()


async def fetch_customer_coupons(conn: Connection, customer_id: str) -> list[CouponCandidate]:
    """The coupons a customer could be shown: active, and issued to everyone or to them.

    Terms of coupon versions this process has not seen yet take one more query. If a
    coupon changed between the two queries, the newer terms are the ones answered:
    both are committed states, and the rule re-checks ``active`` on them.
    """
    # Positions of _CUSTOMER_COUPONS' columns: version, uses_made, issued, reserved, taken.
    rows = await conn.fetch(_CUSTOMER_COUPONS, customer_id)
    terms_of = await terms_of_versions(conn, (row[0] for row in rows))
    candidates: list[CouponCandidate] = []
    for version, uses_made, issued, reserved, taken in rows:
        terms = terms_of.get(version)
        if terms is not None:  # None only if the coupon row vanished in between
            candidates.append((terms, uses_made, issued, reserved, taken))
    return candidates


async def terms_of_versions(conn: Connection, versions: Iterable[str]) -> Mapping[str, CouponTerms]:
    """The terms of every coupon row version named, from the cache or fetched once.

    Looked up per coupon of every customer under load, so the answer is the cache's own
    dict when it holds them all (the usual case), merged with what was fetched otherwise.
    """
    known = _terms_cache.versions()
    missing = {version for version in versions if version not in known}
    if not missing:
        return known
    return ChainMap(await _fetch_terms(conn, missing), known)


async def _fetch_terms(conn: Connection, versions: set[str]) -> dict[str, CouponTerms]:
    """Fetch, hold and return the terms of these coupon row versions, by version.

    A version that is no longer the coupon's gets the current one's terms: both are
    committed states, and the rule re-checks ``active`` on them. A coupon row that
    vanished meanwhile is left out.
    """
    coupon_ids = {version.partition(" ")[0]: version for version in versions}
    fetched: dict[str, CouponTerms] = {}
    for found in await conn.fetch(_COUPON_TERMS, list(coupon_ids)):
        terms = fetched[found["version"]] = _terms(found)
        fetched[coupon_ids[found["coupon_id"]]] = terms  # for this answer only
        _terms_cache.put(found["version"], terms)
    return fetched


async def fetch_many_customer_coupons(
    conn: Connection, customer_ids: list[str]
) -> dict[str, list[CouponCandidate]]:
    """``fetch_customer_coupons`` for several distinct customers in one query.

    Every customer asked for has a list in the answer, empty if nothing is shown to them.
    """
    # Positions of _CUSTOMERS_COUPONS' columns: row number (0 for the catalog, else the
    # customer's position in customer_ids from 1), coupons, uses, issued, held coupons, held.
    rows = await conn.fetch(_CUSTOMERS_COUPONS, customer_ids)
    by_number = {row[0]: row for row in rows}
    _, versions, _, targeted, capped, taken = by_number[0]
    taken_of = {} if capped is None else dict(zip(capped, taken, strict=True))
    terms_of = await terms_of_versions(conn, versions or [])
    # The catalog in coupon_id order (a coupon row that vanished in between is left out).
    # Targeting is read from this snapshot, as the issued coupons are, even where the
    # terms are a newer version's.
    targeted = frozenset(targeted or ())
    catalog = [
        (terms, terms.coupon_id in targeted)
        for terms in map(terms_of.get, versions or [])
        if terms is not None
    ]
    lists = {}
    for n, customer_id in enumerate(customer_ids, start=1):
        _, used, uses, issued, held_coupons, held = by_number[n]
        uses_of = {} if used is None else dict(zip(used, uses, strict=True))
        held_of = {} if held_coupons is None else dict(zip(held_coupons, held, strict=True))
        lists[customer_id] = [
            (
                terms,
                uses_of.get(terms.coupon_id, 0),
                True,
                held_of.get(terms.coupon_id, 0),
                taken_of.get(terms.coupon_id, 0),
            )
            for terms, is_targeted in catalog
            if not is_targeted or terms.coupon_id in issued
        ]
    return lists


async def fetch_customer_coupon(
    conn: Connection, customer_id: str, coupon_id: str
) -> CouponCandidate | None:
    """One catalog coupon as seen by one customer; None if it is not in the catalog."""
    row = await conn.fetchrow(_CUSTOMER_COUPON, customer_id, coupon_id)
    if row is None:
        return None
    return (_terms(row), row["uses_made"], row["issued"], row["reserved"], row["taken"])


EXPIRING_SHOWN = 50


async def fetch_points(
    conn: Connection, customer_id: str, after: LedgerCursor | None, limit: int
) -> tuple[int, list[ExpiringPoints], list[tuple[int, LedgerEntry]]]:
    """The balance (0 if never booked), what expires when, and up to ``limit`` ledger rows
    below the cursor.

    All come from one snapshot, so the balance matches the lots and the newest rows shown.
    ``expiring`` sums the remaining points of the lots per expiry moment, soonest first
    (lots without expiry and spent lots aside), at most ``EXPIRING_SHOWN``. Rows come
    newest first by when the customer shopped or returned (``occurred_at``), ties in
    booking order, on the keyset (occurred_at, id) of the index points_ledger_by_customer;
    each is returned with its ledger id, which the next cursor is made of with its time.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        balance = await conn.fetchval(
            "SELECT balance FROM points_balances WHERE customer_id = $1", customer_id
        )
        lots = await conn.fetch(
            """
            SELECT expires_at, sum(remaining) AS points
            FROM points_lots
            WHERE customer_id = $1 AND remaining > 0 AND expires_at IS NOT NULL
            GROUP BY expires_at ORDER BY expires_at LIMIT $2
            """,
            customer_id,
            EXPIRING_SHOWN,
        )
        rows = await conn.fetch(
            """
            SELECT id, kind, points, transaction_no, occurred_at
            FROM points_ledger
            WHERE customer_id = $1
              AND (occurred_at, id) < (COALESCE($2::timestamptz, 'infinity'), $3::bigint)
            ORDER BY occurred_at DESC, id DESC
            LIMIT $4
            """,
            customer_id,
            None if after is None else after.occurred_at,
            2**63 - 1 if after is None else after.id,
            limit,
        )
    entries = [
        (
            row["id"],
            LedgerEntry(
                kind=row["kind"],
                points=row["points"],
                transaction_no=row["transaction_no"],
                occurred_at=row["occurred_at"],
            ),
        )
        for row in rows
    ]
    expiring = [ExpiringPoints(expires_at=lot["expires_at"], points=lot["points"]) for lot in lots]
    return (0 if balance is None else int(balance)), expiring, entries


async def fetch_receipts(
    conn: Connection, customer_id: str, after: ReceiptCursor | None, limit: int
) -> list[ReceiptSummary]:
    """Up to ``limit`` of a customer's receipts after the cursor, newest first.

    The keyset (occurred_at, transaction_no) follows the index receipts_by_customer.
    ``total`` is PostgreSQL's own text of the numeric, so it is exact.
    """
    rows = await conn.fetch(
        """
        SELECT r.transaction_no, r.store_id, r.occurred_at, r.total::text AS total, r.currency,
               r.returned_at IS NOT NULL AS returned,
               COALESCE(s.returned_amount, 0)::text AS returned_amount
        FROM receipts AS r
        LEFT JOIN sale_returns AS s USING (transaction_no)
        WHERE r.customer_id = $1
          AND (r.occurred_at, r.transaction_no)
              < (COALESCE($2::timestamptz, 'infinity'), COALESCE($3::text, ''))
        ORDER BY r.occurred_at DESC, r.transaction_no DESC
        LIMIT $4
        """,
        customer_id,
        None if after is None else after.occurred_at,
        None if after is None else after.transaction_no,
        limit,
    )
    return [ReceiptSummary(**dict(row)) for row in rows]


async def fetch_receipt_document(conn: Connection, transaction_no: str) -> str | None:
    """The stored receipt with its return state added, as JSON text; None if unknown.

    ``returns`` holds every decided outcome in the order they were decided
    (``decision_seq``), ``return`` the latest of them (or null), ``lines_remaining`` each
    line with something not returned yet (numeric arithmetic, so exact), and ``returned``
    whether nothing remains.
    """
    text: str | None = await conn.fetchval(
        """
        SELECT (r.document || jsonb_build_object(
            'returned', r.returned_at IS NOT NULL,
            'return', o.outcomes -> -1,
            'returns', COALESCE(o.outcomes, '[]'::jsonb),
            'lines_remaining', COALESCE((
                SELECT jsonb_agg(jsonb_build_object('line_no', l.n, 'quantity', l.q::text)
                                 ORDER BY l.n)
                FROM (SELECT x.n,
                             (x.line ->> 'quantity')::numeric - COALESCE(s.returned[x.n], 0) AS q
                      FROM jsonb_array_elements(r.document -> 'lines')
                           WITH ORDINALITY AS x(line, n)) AS l
                WHERE l.q > 0), '[]'::jsonb)
        ))::text
        FROM receipts AS r
        LEFT JOIN sale_returns AS s USING (transaction_no)
        CROSS JOIN LATERAL (
            SELECT jsonb_agg(e.outcome ORDER BY e.decision_seq) AS outcomes
            FROM return_events AS e
            WHERE e.transaction_no = r.transaction_no AND e.decision_seq IS NOT NULL
              AND e.outcome IS NOT NULL
        ) AS o
        WHERE r.transaction_no = $1
        """,
        transaction_no,
    )
    return text


async def fetch_return_status(
    conn: Connection, transaction_no: str
) -> tuple[str, str | None] | None:
    """The latest decided outcome as JSON text, or ("pending", None); None if no return is known."""
    row = await conn.fetchrow(
        """
        SELECT status, outcome::text AS outcome
        FROM return_events
        WHERE transaction_no = $1
        ORDER BY (status <> 'pending' AND outcome IS NOT NULL) DESC,
                 decision_seq DESC NULLS LAST, seq DESC
        LIMIT 1
        """,
        transaction_no,
    )
    if row is None:
        return None
    if row["status"] == "pending" or row["outcome"] is None:
        return ("pending", None)
    return (row["status"], row["outcome"])


_COUPON = """
    SELECT c.coupon_id, c.name, c.description, c.uses_permitted, c.valid_from, c.valid_until,
           c.active, c.store_ids, c.restore_on_return, c.total_uses_permitted,
           CASE WHEN c.targeted THEN ARRAY(
               SELECT t.customer_id FROM coupon_targets AS t
               WHERE t.coupon_id = c.coupon_id ORDER BY t.customer_id
           ) END AS customer_ids
    FROM coupons AS c
"""


def _coupon(row: asyncpg.Record) -> Coupon:
    return Coupon(**dict(row))


async def fetch_coupon(conn: Connection, coupon_id: str) -> Coupon | None:
    """One catalog coupon, with the customers it was issued to; None if unknown."""
    row = await conn.fetchrow(_COUPON + " WHERE c.coupon_id = $1", coupon_id)
    return None if row is None else _coupon(row)


async def list_coupons(conn: Connection) -> list[Coupon]:
    """The whole catalog, ordered by coupon_id."""
    rows = await conn.fetch(_COUPON + " ORDER BY c.coupon_id")
    return [_coupon(row) for row in rows]


async def upsert_coupon(conn: Connection, coupon_id: str, coupon: CouponInput) -> bool:
    """Create or replace a coupon and its customer list; True if it was created.

    Call inside a transaction: the coupon row's lock serialises concurrent replacements,
    and its target list is swapped in the same transaction, so readers never see a
    coupon with half a list. COPY keeps a 100,000-customer list fast.
    """
    created: bool = await conn.fetchval(
        """
        INSERT INTO coupons (coupon_id, name, description, uses_permitted, valid_from,
                             valid_until, active, targeted, store_ids, restore_on_return,
                             total_uses_permitted)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT (coupon_id) DO UPDATE SET
            name = EXCLUDED.name,
            description = EXCLUDED.description,
            uses_permitted = EXCLUDED.uses_permitted,
            valid_from = EXCLUDED.valid_from,
            valid_until = EXCLUDED.valid_until,
            active = EXCLUDED.active,
            targeted = EXCLUDED.targeted,
            store_ids = EXCLUDED.store_ids,
            restore_on_return = EXCLUDED.restore_on_return,
            total_uses_permitted = EXCLUDED.total_uses_permitted,
            updated_at = now()
        RETURNING xmax = 0
        """,
        coupon_id,
        coupon.name,
        coupon.description,
        coupon.uses_permitted,
        coupon.valid_from,
        coupon.valid_until,
        coupon.active,
        coupon.customer_ids is not None,
        None if coupon.store_ids is None else list(dict.fromkeys(coupon.store_ids)),
        coupon.restore_on_return,
        coupon.total_uses_permitted,
    )
    if not created:
        await conn.execute("DELETE FROM coupon_targets WHERE coupon_id = $1", coupon_id)
    if coupon.customer_ids:
        await conn.copy_records_to_table(
            "coupon_targets",
            records=[(coupon_id, customer) for customer in dict.fromkeys(coupon.customer_ids)],
            columns=["coupon_id", "customer_id"],
        )
    return created


async def deactivate_coupon(conn: Connection, coupon_id: str) -> Coupon | None:
    """Mark a coupon inactive (its usage history stays); None if it is not in the catalog."""
    found = await conn.fetchval(
        "UPDATE coupons SET active = false, updated_at = now() WHERE coupon_id = $1 "
        "RETURNING coupon_id",
        coupon_id,
    )
    if found is None:
        return None
    return await fetch_coupon(conn, coupon_id)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key as stored: never the key itself, only its SHA-256."""

    key_id: str
    name: str
    scope: str
    key_hash: bytes
    created_at: datetime
    revoked_at: datetime | None


def _api_key(row: asyncpg.Record) -> ApiKeyRecord:
    return ApiKeyRecord(**dict(row))


_API_KEY_COLUMNS = "key_id, name, scope, key_hash, created_at, revoked_at"


async def insert_api_key(
    conn: Connection, key_id: str, name: str, scope: str, key_hash: bytes
) -> None:
    """Store a new key's hash."""
    await conn.execute(
        "INSERT INTO api_keys (key_id, name, scope, key_hash) VALUES ($1, $2, $3, $4)",
        key_id,
        name,
        scope,
        key_hash,
    )


async def fetch_api_key(conn: Connection, key_id: str) -> ApiKeyRecord | None:
    """The stored key with this id, revoked or not; None if there is none."""
    row = await conn.fetchrow(
        f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE key_id = $1",  # noqa: S608 -- constant columns
        key_id,
    )
    return None if row is None else _api_key(row)


async def list_api_keys(conn: Connection) -> list[ApiKeyRecord]:
    """Every key ever made, oldest first."""
    rows = await conn.fetch(
        f"SELECT {_API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, key_id"  # noqa: S608 -- constant columns
    )
    return [_api_key(row) for row in rows]


async def revoke_api_key(conn: Connection, key_id: str) -> bool:
    """Revoke a key from now on; False if there is no such key or it was already revoked."""
    status: str = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL",
        key_id,
    )
    return status == "UPDATE 1"
