"""Dead letters kept in PostgreSQL as they are published, listed and replayed by the command."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from punchcard_contract import DeadLetterReason, InvalidEventError
from punchcard_platform.consumer import ConsumerLoop
from punchcard_platform.db import Database
from punchcard_platform.dead_letters import DeadLetterFilter, StoredDeadLetter, list_dead_letters
from punchcard_platform.records import DeadLetter, Decoded, InboundRecord
from punchcard_platform.settings import Settings

from tests.helpers import consume, eventually, produce


class RefusingHandler:
    """A hand-written handler: refuses ``not json``, applies everything else."""

    name = "dead-letter-test"

    def __init__(self) -> None:
        self.applied: list[bytes] = []

    def decode(self, record: InboundRecord) -> bytes:
        if record.value == b"not json":
            raise InvalidEventError(DeadLetterReason.INVALID_JSON, "not json at all")
        return record.value or b""

    async def apply(self, batch: list[Decoded[bytes]]) -> list[DeadLetter]:
        self.applied.extend(item.event for item in batch)
        return []


@asynccontextmanager
async def consuming(settings: Settings, db: Database) -> AsyncIterator[RefusingHandler]:
    handler = RefusingHandler()
    loop = ConsumerLoop(
        settings,
        handler=handler,
        topic=settings.topics.receipts,
        group_id=settings.consumer_group("dlq"),
        db=db,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield handler
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def _letters_of(db: Database, topic: str) -> list[StoredDeadLetter]:
    async with db.connection() as conn:
        letters = await list_dead_letters(conn, DeadLetterFilter(), limit=500)
    return [letter for letter in letters if letter.topic == topic]


def _punchcard(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "punchcard", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **settings.environment(), "PUNCHCARD_LOG_LEVEL": "WARNING"},
        check=False,
    )


async def test_a_dead_letter_is_kept_in_postgresql_with_its_bytes_and_published(
    settings: Settings, db: Database
) -> None:
    """The row holds the source position, key, bytes, headers and reason the DLQ record has."""
    topic = settings.topics.receipts
    await produce(settings, topic, [(b"C1", b"fine"), (b"C2", b"not json")], partition=1)
    async with consuming(settings, db) as handler:
        published = await consume(settings, settings.topics.receipts_dlq, count=1)
        await eventually(lambda: _letters_of(db, topic), what="the dead letter's row")
        await eventually(lambda: _true(handler.applied == [b"fine"]), what="the good record")

    [letter] = await _letters_of(db, topic)
    assert (letter.partition, letter.offset) == (1, 1)
    assert (letter.key, letter.value) == (b"C2", b"not json")
    assert (letter.reason, letter.detail) == ("invalid_json", "not json at all")
    assert letter.replayed_at is None
    [record] = published
    assert (record.key, record.value) == (letter.key, letter.value)


async def test_replay_sends_the_bytes_back_once_and_a_second_failure_is_a_new_dead_letter(
    settings: Settings, db: Database
) -> None:
    """`punchcard dlq replay --id` republishes, marks the row, and does not loop."""
    topic = settings.topics.receipts
    await produce(settings, topic, [(b"C9", b"not json")], partition=0)
    async with consuming(settings, db):
        [first] = await eventually(lambda: _letters_of(db, topic), what="the first dead letter")

        listed = _punchcard(settings, "dlq", "list", "--id", str(first.id))
        assert listed.returncode == 0, listed.stderr
        assert f"{topic}[0]@{first.offset}" in listed.stdout
        assert "invalid_json" in listed.stdout

        replay = _punchcard(settings, "dlq", "replay", "--id", str(first.id))
        assert replay.returncode == 0, replay.stderr
        assert "1 dead letter(s) replayed" in replay.stdout

        # Still not JSON: it fails again, at its new offset, as a new dead letter.
        letters = await eventually(
            lambda: _two_letters_of(db, topic), what="the replayed record dead-lettered again"
        )
    again, replayed = letters
    assert replayed.id == first.id
    assert replayed.replayed_at is not None
    assert (again.partition, again.offset) != (first.partition, first.offset)
    assert (again.key, again.value, again.replayed_at) == (b"C9", b"not json", None)

    nothing = _punchcard(settings, "dlq", "replay", "--id", str(first.id))
    assert "0 dead letter(s) replayed" in nothing.stdout
    assert len(await consume(settings, topic, count=2)) == 2


async def _true(value: bool) -> bool:
    return value


async def _two_letters_of(db: Database, topic: str) -> list[StoredDeadLetter]:
    found = await _letters_of(db, topic)
    return found if len(found) == 2 else []
