"""The launcher's stack is real: Kafka round-trips records, PostgreSQL holds the schema."""

from __future__ import annotations

import pytest
from punchcard_devstack import Endpoints
from punchcard_platform.db import Database
from punchcard_platform.migrations import apply_migrations
from punchcard_platform.settings import Settings

from tests.helpers import consume, produce, unique_id


@pytest.mark.parametrize("compression", [None, "gzip", "snappy", "lz4", "zstd"])
async def test_records_in_every_compression_come_back_unchanged(
    settings: Settings, compression: str | None
) -> None:
    """A POS may compress with any codec Kafka supports; every one must be readable."""
    topic = settings.topics.receipts
    sent = [(unique_id("k").encode(), f'{{"n": {i}}}'.encode()) for i in range(20)]
    await produce(settings, topic, sent, compression_type=compression)
    received = await consume(settings, topic, count=len(sent))
    assert sorted((r.key, r.value) for r in received) == sorted(sent)


async def test_migrating_twice_changes_nothing(db: Database) -> None:
    """The second run finds every migration applied."""
    assert await apply_migrations(db) == []
    async with db.connection() as conn:
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'outbox'"
        )
    assert tables == 1


async def test_database_answers(stack: Endpoints) -> None:
    """The database URL handed out reaches a server that answers."""
    database = await Database.connect(stack.database_url)
    try:
        assert await database.is_ready()
    finally:
        await database.close()
