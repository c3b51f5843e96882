"""The launcher's stack is real: Kafka round-trips records, PostgreSQL holds the schema."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from punchcard_devstack import Endpoints
from punchcard_devstack.kafka import KafkaBroker
from punchcard_devstack.processes import free_port
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


def test_the_brokers_partitions_live_in_memory_until_the_stack_removes_them(
    tmp_path: Path,
) -> None:
    """The dev broker logs to a private tmpfs folder, which remove_data deletes."""
    broker = KafkaBroker(tmp_path, port=free_port(), controller_port=free_port())
    assert broker.log_dir.parent == Path("/dev/shm")
    assert broker.log_dir.stat().st_mode & 0o777 == 0o700
    broker.remove_data()
    assert not broker.log_dir.exists()
    assert tmp_path.exists()


def test_in_memory_partitions_of_a_dead_stack_are_removed_and_a_live_ones_kept(
    tmp_path: Path,
) -> None:
    """A test run killed outright leaves its partitions in RAM; the next stack frees them."""
    ended = subprocess.Popen(["true"])  # a process that has ended
    ended.wait()
    orphan = Path("/dev/shm") / f"punchcard-kafka-{ended.pid}-test{unique_id('o')}"
    living = Path("/dev/shm") / f"punchcard-kafka-{os.getpid()}-test{unique_id('l')}"
    orphan.mkdir()
    living.mkdir()
    try:
        broker = KafkaBroker(tmp_path, port=free_port(), controller_port=free_port())
        broker.remove_data()
        assert not orphan.exists()
        assert living.exists()
    finally:
        shutil.rmtree(orphan, ignore_errors=True)
        shutil.rmtree(living, ignore_errors=True)
