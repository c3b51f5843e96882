"""The transactional outbox: output events are rows written with their effect.

An output event exists exactly when its effect exists, because both commit in one
transaction. The relay (``punchcard_platform.relay``) publishes the rows afterwards and
deletes them once the broker has acknowledged them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg
from punchcard_contract.outputs import OutputEvent

from punchcard_platform.settings import TopicNames

__all__ = ["OUTBOX_CHANNEL", "OutboxMessage", "outbox_messages", "write_outbox"]

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
