"""Fixtures shared by every tier: one real Kafka broker and one PostgreSQL per session.

The stack starts only when a test asks for it, so unit tests never wait for it. A test
that needs it and cannot have it fails: starting the stack raises, it never skips.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from punchcard_devstack import Endpoints
from punchcard_platform.db import Database
from punchcard_platform.kafka import create_topics
from punchcard_platform.settings import Settings, TopicNames

from tests.helpers import unique_id
from tests.stacks import running_stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Endpoints]:
    """The session's Kafka and PostgreSQL (started here, or taken from PUNCHCARD_* variables)."""
    with running_stack() as devstack:
        assert devstack.endpoints is not None
        yield devstack.endpoints


def make_settings(stack: Endpoints, **overrides: object) -> Settings:
    """Settings for one test: the shared stack, its own topics and consumer groups."""
    suffix = unique_id("t")
    topics = TopicNames.suffixed(suffix)
    values: dict[str, object] = {
        "database_url": stack.database_url,
        "kafka_bootstrap_servers": stack.bootstrap_servers,
        "topics": topics,
        "topic_partitions": 3,
        "consumer_group_prefix": suffix,
        "batch_wait_ms": 50,
        "log_format": "console",
        "log_level": "INFO",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def settings(stack: Endpoints) -> Settings:
    """Settings with topics of this test's own, already created."""
    result = make_settings(stack)
    await create_topics(result, result.topics.all())
    return result


@pytest.fixture
async def db(stack: Endpoints) -> AsyncIterator[Database]:
    """A pool on the session's (migrated) database."""
    database = await Database.connect(stack.database_url, max_size=10)
    try:
        yield database
    finally:
        await database.close()
