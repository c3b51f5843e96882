"""Dead letters: a record that cannot be applied goes to ``<topic>.dlq`` unchanged, and a row.

CONTRACT.md section 4: original key and bytes, and headers saying why and from where.
The same step also keeps the dead letter in PostgreSQL (table ``dead_letters``), so that
the console can show it and ``punchcard dlq replay`` can send it back to its topic. The
row is written first and the record published second, and the consumer loop retries the
whole step until both are done before its offset moves on: a dead letter is never in one
place and not the other. Writing the row again is harmless (its source topic, partition
and offset are unique); publishing again is what a dead-letter topic's readers expect of
an at-least-once system.

A replayed record is a new record at a new offset of its topic: if it fails again it
becomes a new dead letter, never the old one come back in a loop.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import structlog
from punchcard_contract import truncate_detail

from punchcard_platform.db import Database
from punchcard_platform.kafka import ResilientProducer
from punchcard_platform.metrics import RECORDS_DEAD_LETTERED
from punchcard_platform.records import DeadLetter
from punchcard_platform.settings import TopicNames

__all__ = [
    "DeadLetterFilter",
    "DeadLetterWriter",
    "StoredDeadLetter",
    "dead_letter_headers",
    "fetch_dead_letter",
    "list_dead_letters",
    "mark_replayed",
    "record_dead_letters",
    "replay_dead_letters",
]

log = structlog.get_logger(__name__)


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The headers CONTRACT.md section 4 requires, detail cut to at most 4 KiB."""
    record = letter.record
    return [
        ("punchcard.error.reason", str(letter.reason).encode()),
        ("punchcard.error.detail", truncate_detail(letter.detail).encode("utf-8")),
        ("punchcard.source.topic", record.topic.encode()),
        ("punchcard.source.partition", str(record.partition).encode()),
        ("punchcard.source.offset", str(record.offset).encode()),
    ]


class DeadLetterWriter:
    """Records dead letters in PostgreSQL and publishes them, awaiting the broker's ack.

    Without ``db`` (tests and benchmarks that run the loop bare) nothing is recorded; every
    service built by ``serve_consumer`` passes its database.
    """

    def __init__(
        self,
        producer: ResilientProducer,
        topics: TopicNames,
        service: str,
        db: Database | None = None,
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._service = service
        self._db = db

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        """Record and send all ``letters``; ``KafkaError`` or a database error if one fails.

        Both halves may be repeated by the caller's retry and change nothing the second time.
        """
        if not letters:
            return
        for letter in letters:
            record = letter.record
            log.warning(
                "dead-lettering record",
                reason=str(letter.reason),
                detail=letter.detail[:500],
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
        if self._db is not None:
            async with self._db.transaction() as conn:
                await record_dead_letters(conn, letters)
        # Bounded: a broker that is away raises here (and the loop retries) instead of
        # leaving the batch waiting for acknowledgements forever.
        await self._producer.send_all(
            [
                (
                    self._topics.dead_letter_topic(letter.record.topic),
                    letter.record.key,
                    letter.record.value,
                    dead_letter_headers(letter),
                )
                for letter in letters
            ]
        )
        for letter in letters:
            RECORDS_DEAD_LETTERED.labels(
                self._service, letter.record.topic, str(letter.reason)
            ).inc()


def _encode_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    # Header values are bytes of any kind; base64 keeps them exact inside JSON.
    return orjson.dumps(
        [[name, base64.b64encode(value or b"").decode()] for name, value in headers]
    ).decode()


def _decode_headers(stored: Any) -> tuple[tuple[str, bytes], ...]:
    return tuple((str(name), base64.b64decode(value)) for name, value in stored or ())


async def record_dead_letters(conn: asyncpg.Connection, letters: Sequence[DeadLetter]) -> None:
    """Keep ``letters`` in ``dead_letters``; one already kept (same source position) is left."""
    await conn.execute(
        """
        INSERT INTO dead_letters (topic, "partition", "offset", key, reason, detail, value,
                                  headers)
        SELECT t, p, o, k, r, d, v, h::jsonb
        FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bytea[], $5::text[], $6::text[],
                    $7::bytea[], $8::text[]) AS l(t, p, o, k, r, d, v, h)
        ON CONFLICT (topic, "partition", "offset") DO NOTHING
        """,
        [letter.record.topic for letter in letters],
        [letter.record.partition for letter in letters],
        [letter.record.offset for letter in letters],
        [letter.record.key for letter in letters],
        [str(letter.reason) for letter in letters],
        [truncate_detail(letter.detail) for letter in letters],
        [letter.record.value for letter in letters],
        [_encode_headers(letter.record.headers) for letter in letters],
    )


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """One row of ``dead_letters``: the record as it arrived, why it failed, and when."""

    id: int
    topic: str
    partition: int
    offset: int
    key: bytes | None
    reason: str
    detail: str
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    dead_lettered_at: datetime
    replayed_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters to list or replay; every field None means all of them."""

    reason: str | None = None
    since: datetime | None = None
    id: int | None = None
    replayed: bool | None = None
    """True: only replayed ones; False: only those not replayed yet."""


_COLUMNS = """id, topic, "partition", "offset", key, reason, detail, value, headers,
              dead_lettered_at, replayed_at"""

_WHERE = """
    ($1::text IS NULL OR reason = $1)
    AND ($2::timestamptz IS NULL OR dead_lettered_at >= $2)
    AND ($3::bigint IS NULL OR id = $3)
    AND ($4::boolean IS NULL OR (replayed_at IS NOT NULL) = $4)
"""


def _stored(row: asyncpg.Record) -> StoredDeadLetter:
    return StoredDeadLetter(**{**dict(row), "headers": _decode_headers(row["headers"])})


def _filter_arguments(which: DeadLetterFilter) -> tuple[Any, ...]:
    return (which.reason, which.since, which.id, which.replayed)


async def list_dead_letters(
    conn: asyncpg.Connection,
    which: DeadLetterFilter,
    *,
    limit: int,
    before_id: int | None = None,
) -> list[StoredDeadLetter]:
    """Up to ``limit`` dead letters matching ``which``, newest first, below ``before_id``."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM dead_letters
        WHERE {_WHERE} AND ($5::bigint IS NULL OR id < $5)
        ORDER BY id DESC
        LIMIT $6
        """,  # noqa: S608 -- constant text; every value is a parameter
        *_filter_arguments(which),
        before_id,
        limit,
    )
    return [_stored(row) for row in rows]


async def fetch_dead_letter(conn: asyncpg.Connection, letter_id: int) -> StoredDeadLetter | None:
    """One dead letter by its id; None if there is none."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM dead_letters WHERE id = $1",  # noqa: S608 -- constant columns
        letter_id,
    )
    return None if row is None else _stored(row)


async def mark_replayed(conn: asyncpg.Connection, ids: Sequence[int]) -> None:
    """Note that these dead letters were published back to their topics."""
    await conn.execute(
        "UPDATE dead_letters SET replayed_at = now() WHERE id = ANY($1::bigint[])", list(ids)
    )


async def replay_dead_letters(
    db: Database, producer: ResilientProducer, which: DeadLetterFilter
) -> list[StoredDeadLetter]:
    """Publish the matching dead letters not replayed yet back to their source topics.

    Each goes with its original key, bytes and headers; the rows are marked replayed once
    the broker has acknowledged every one. Rows are locked while this runs, so two
    replays at once do not both publish the same record. Returns what was replayed.
    """
    pending = DeadLetterFilter(which.reason, which.since, which.id, replayed=False)
    async with db.transaction() as conn:
        rows = await conn.fetch(
            f"""
            SELECT {_COLUMNS} FROM dead_letters
            WHERE {_WHERE}
            ORDER BY id
            FOR UPDATE SKIP LOCKED
            """,  # noqa: S608 -- constant text; every value is a parameter
            *_filter_arguments(pending),
        )
        letters = [_stored(row) for row in rows]
        if not letters:
            return []
        await producer.send_all(
            [(letter.topic, letter.key, letter.value, list(letter.headers)) for letter in letters]
        )
        await mark_replayed(conn, [letter.id for letter in letters])
    for letter in letters:
        log.info(
            "dead letter replayed",
            id=letter.id,
            topic=letter.topic,
            partition=letter.partition,
            offset=letter.offset,
            reason=letter.reason,
        )
    return letters
