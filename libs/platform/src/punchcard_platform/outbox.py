"""The transactional outbox: output events are rows written with their effect.

An output event exists exactly when its effect exists, because both commit in one
transaction. The relay (``punchcard_platform.relay``) publishes the rows afterwards and
deletes them once the broker has acknowledged them. A row the broker refuses for good
(too large for its topic, say) is moved to ``outbox_failed`` with the broker's error, so
it does not hold back the rows behind it; ``punchcard outbox retry`` queues it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
from punchcard_contract.outputs import OutputEvent

from punchcard_platform.settings import TopicNames

__all__ = [
    "OUTBOX_CHANNEL",
    "FailedPublication",
    "OutboxMessage",
    "count_failed_publications",
    "failed_publications",
    "outbox_messages",
    "retry_failed_publications",
    "set_aside",
    "write_outbox",
]

# NOTIFY channel that wakes the relay when a transaction with outbox rows commits.
OUTBOX_CHANNEL = "punchcard_outbox"


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One output event to publish: where, under which key, with which stable id.

    ``payload`` is the event's JSON, encoded once by its writer; the relay publishes these
    very bytes, so the key order the writer chose (the contract's) is what readers see.
    """

    topic: str
    key: str
    event_id: UUID | str
    payload: bytes


def outbox_messages(events: Iterable[OutputEvent], topics: TopicNames) -> list[OutboxMessage]:
    """The outbox rows of built output events, each on its kind's topic."""
    topic_of = {
        "coupon_usage": topics.coupon_usage,
        "points": topics.points,
        "return_outcome": topics.return_outcomes,
    }
    return [OutboxMessage(topic_of[e.kind], e.key, e.event_id, e.payload) for e in events]


async def write_outbox(conn: asyncpg.Connection, messages: Sequence[OutboxMessage]) -> None:
    """Add output events to the outbox inside the caller's transaction.

    Rows are inserted in the given order, so ids follow it; a repeated event id is
    ignored, which keeps a re-applied effect from queueing its events twice. Event ids
    travel as text and are cast in SQL, which costs less than encoding UUID objects.
    """
    if not messages:
        return
    await conn.execute(
        """
        INSERT INTO outbox (topic, key, event_id, payload)
        SELECT t, k, e::uuid, p
        FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[])
             WITH ORDINALITY AS m(t, k, e, p, n)
        ORDER BY n
        ON CONFLICT (event_id) DO NOTHING
        """,
        [m.topic for m in messages],
        [m.key for m in messages],
        [str(m.event_id) for m in messages],
        [m.payload for m in messages],
    )
    await conn.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)


@dataclass(frozen=True, slots=True)
class FailedPublication:
    """An output event the broker refused for good, and what it said."""

    outbox_id: int
    topic: str
    key: str
    event_id: str
    size: int
    failed_at: datetime
    error: str


async def set_aside(conn: asyncpg.Connection, errors: Mapping[int, str]) -> int:
    """Move outbox rows (by id) to ``outbox_failed`` with the broker's error; how many moved.

    One statement, so a row is in exactly one of the two tables. An event set aside before
    (retried and refused again) keeps one row with the latest error.
    """
    if not errors:
        return 0
    moved: int = await conn.fetchval(
        """
        WITH failed AS (
            SELECT * FROM unnest($1::bigint[], $2::text[]) AS f(id, error)
        ), moved AS (
            DELETE FROM outbox o USING failed f WHERE o.id = f.id
            RETURNING o.id, o.topic, o.key, o.event_id, o.payload, o.created_at, f.error
        ), kept AS (
            INSERT INTO outbox_failed (id, topic, key, event_id, payload, created_at, error)
            SELECT id, topic, key, event_id, payload, created_at, error FROM moved
            ON CONFLICT (event_id) DO UPDATE
                SET error = EXCLUDED.error, failed_at = now(), payload = EXCLUDED.payload
            RETURNING 1
        )
        SELECT count(*) FROM kept
        """,
        list(errors),
        list(errors.values()),
    )
    return moved


async def failed_publications(conn: asyncpg.Connection) -> list[FailedPublication]:
    """Every event set aside, oldest first: what ``punchcard outbox failed`` lists."""
    rows = await conn.fetch(
        """
        SELECT id, topic, key, event_id::text AS event_id, octet_length(payload) AS size,
               failed_at, error
        FROM outbox_failed ORDER BY id
        """
    )
    return [FailedPublication(*row) for row in rows]


async def count_failed_publications(conn: asyncpg.Connection) -> int:
    """How many events are set aside: the relay's gauge."""
    count: int = await conn.fetchval("SELECT count(*) FROM outbox_failed")
    return count


async def retry_failed_publications(conn: asyncpg.Connection, event_ids: Sequence[str] = ()) -> int:
    """Queue events set aside again (those of ``event_ids``, or all); how many were queued.

    They go to the end of the outbox in their original order, in one statement with
    their removal from ``outbox_failed``; the relay is woken. A row the broker still
    refuses is set aside again, with the new error.
    """
    queued: int = await conn.fetchval(
        """
        WITH taken AS (
            DELETE FROM outbox_failed
            WHERE cardinality($1::uuid[]) = 0 OR event_id = ANY($1::uuid[])
            RETURNING id, topic, key, event_id, payload, created_at
        ), queued AS (
            INSERT INTO outbox (topic, key, event_id, payload, created_at)
            SELECT topic, key, event_id, payload, created_at FROM taken ORDER BY id
            ON CONFLICT (event_id) DO NOTHING
            RETURNING 1
        )
        SELECT count(*) FROM queued
        """,
        list(event_ids),
    )
    await conn.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
    return queued
