"""A fault that is not the records' halts the consumer: nothing dead-lettered, nothing lost.

A bug, a missing privilege or a trigger that raises would otherwise send the whole stream
to the dead-letter topic with its offsets committed. Instead the consumer stops, says it
is not ready, retries, and applies every record once when the fault is lifted.
"""

from __future__ import annotations

import asyncio
import collections
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY
from punchcard_devstack import Endpoints
from punchcard_devstack.processes import free_port
from punchcard_platform.db import Database
from punchcard_platform.kafka import create_topics
from punchcard_platform.records import DeadLetter, Decoded, InboundRecord
from punchcard_platform.service import ConsumerWiring, serve_consumer
from punchcard_platform.settings import Settings
from punchcard_receipt_consumer.handler import ReceiptHandler

from tests.conftest import make_settings
from tests.documents import encode, receipt_document
from tests.helpers import eventually, produce, unique_id
from tests.integration.receipts.support import balance

pytestmark = pytest.mark.integration

_RECORDS = 30


class BrokenRelease:
    """A handler with a deterministic bug while ``broken`` is set, as in a bad release."""

    name = "halt-test"

    def __init__(self) -> None:
        self.broken = True
        self.applied: list[bytes] = []

    def decode(self, record: InboundRecord) -> bytes:
        return record.value or b""

    async def apply(self, batch: list[Decoded[bytes]]) -> list[DeadLetter]:
        if self.broken:
            raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")
        self.applied.extend(item.event for item in batch)
        return []


class BrokenDecoding(BrokenRelease):
    """The bug is in decoding this time: a LookupError instead of an InvalidEventError."""

    def decode(self, record: InboundRecord) -> bytes:
        if self.broken:
            raise LookupError("schema_version")
        return super().decode(record)

    async def apply(self, batch: list[Decoded[bytes]]) -> list[DeadLetter]:
        self.applied.extend(item.event for item in batch)
        return []


@asynccontextmanager
async def serving(
    settings: Settings, topic: str, wire: Callable[[Database], ConsumerWiring]
) -> AsyncIterator[str]:
    """A consumer service running in this process; yields its /readyz address."""
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve_consumer(
            settings.model_copy(update={"http_port": port}),
            name="halt-test",
            topic=topic,
            default_port=port,
            wire=wire,
            stop=stop,
        )
    )
    try:
        yield f"http://127.0.0.1:{port}/readyz"
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


async def _ready_is(url: str, expected: int) -> bool:
    return await asyncio.to_thread(_status, url) == expected


async def _halted(service: str) -> bool:
    return REGISTRY.get_sample_value("punchcard_consumer_halted", {"service": service}) == 1


async def _records_in(settings: Settings, topic: str) -> int:
    """How many records a topic holds, all partitions together."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers.split(","))
    await consumer.start()
    try:
        partitions = await eventually(
            lambda: _partitions(consumer, topic), what=f"metadata of {topic}"
        )
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


def _halting(settings: Settings) -> Settings:
    # Short pauses between tries, so a lifted fault is noticed within a second or so.
    return settings.model_copy(update={"consumer_halt_retry_max_seconds": 1.0})


@pytest.mark.parametrize("handler", [BrokenRelease(), BrokenDecoding()], ids=["apply", "decode"])
async def test_a_bug_for_every_record_halts_without_dead_letters_and_resumes_when_fixed(
    settings: Settings, handler: BrokenRelease
) -> None:
    """A bug in every batch: DLQ empty, /readyz 503; once fixed, each record applied once."""
    topic = settings.topics.receipts
    values = [f"r{i}".encode() for i in range(_RECORDS)]
    await produce(settings, topic, [(v, v) for v in values])
    wire = lambda _db: ConsumerWiring(handler)  # noqa: E731
    async with serving(_halting(settings), topic, wire) as readyz:
        await eventually(lambda: _halted(handler.name), what="the consumer halted")
        assert await _ready_is(readyz, 503)
        assert handler.applied == []

        handler.broken = False
        await eventually(
            lambda: _true(sorted(handler.applied) == sorted(values)), what="every record applied"
        )
        await eventually(lambda: _ready_is(readyz, 200), what="ready again")
        assert not await _halted(handler.name)
    assert collections.Counter(handler.applied) == collections.Counter(values)
    assert await _records_in(settings, settings.topics.receipts_dlq) == 0


async def _true(value: bool) -> bool:
    return value


async def _send_sales(settings: Settings, prefix: str, customer: str) -> list[str]:
    """Publish sales whose transaction numbers start with ``prefix``, 10 points each."""
    sales = [
        receipt_document(customer, transaction_no=f"{prefix}-{i}", points_earned=10)
        for i in range(_RECORDS)
    ]
    await produce(
        settings, settings.topics.receipts, [(customer.encode(), encode(s)) for s in sales]
    )
    return [s["transaction_no"] for s in sales]


async def _stored(db: Database, transaction_nos: list[str]) -> int:
    async with db.connection() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM receipts WHERE transaction_no = ANY($1::text[])", transaction_nos
        )
    return count


def _receipts(settings: Settings) -> Callable[[Database], ConsumerWiring]:
    return lambda db: ConsumerWiring(ReceiptHandler(db, settings.topics))


async def _halted_with_nothing_applied(
    settings: Settings, db: Database, transaction_nos: list[str], readyz: str
) -> None:
    await eventually(lambda: _halted(ReceiptHandler.name), what="the consumer halted")
    assert await _ready_is(readyz, 503)
    assert await _stored(db, transaction_nos) == 0
    assert await _records_in(settings, settings.topics.receipts_dlq) == 0


async def _all_stored(db: Database, transaction_nos: list[str]) -> bool:
    return await _stored(db, transaction_nos) == len(transaction_nos)


async def _applied_once(
    settings: Settings, db: Database, transaction_nos: list[str], customer: str
) -> None:
    await eventually(lambda: _all_stored(db, transaction_nos), what="every sale stored")
    assert await balance(db, customer) == 10 * len(transaction_nos)
    assert await _records_in(settings, settings.topics.receipts_dlq) == 0


async def test_a_trigger_raising_for_every_new_row_halts_and_dropping_it_resumes(
    settings: Settings, db: Database
) -> None:
    """RAISE EXCEPTION (P0001) in a trigger is not the records' fault: halt, then apply once."""
    prefix, customer = unique_id("HALT"), unique_id("C")
    # Names for DDL cannot be parameters; these are made here from hex digits only. The
    # trigger refuses only this test's sales, so tests sharing the table go on.
    function = f"refuse_{uuid.uuid4().hex[:12]}"
    async with db.connection() as conn:
        await conn.execute(
            f"""
            CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.transaction_no LIKE '{prefix}-%' THEN
                    RAISE EXCEPTION 'sales of this test are refused by a trigger';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER {function} BEFORE INSERT ON receipts
                FOR EACH ROW EXECUTE FUNCTION {function}();
            """
        )
    try:
        transaction_nos = await _send_sales(settings, prefix, customer)
        async with serving(_halting(settings), settings.topics.receipts, _receipts(settings)) as r:
            await _halted_with_nothing_applied(settings, db, transaction_nos, r)
            async with db.connection() as conn:
                await conn.execute(f"DROP TRIGGER {function} ON receipts")
            await _applied_once(settings, db, transaction_nos, customer)
            await eventually(lambda: _ready_is(r, 200), what="ready again")
    finally:
        async with db.connection() as conn:
            await conn.execute(f"DROP TRIGGER IF EXISTS {function} ON receipts")
            await conn.execute(f"DROP FUNCTION IF EXISTS {function}()")


@pytest.fixture
async def restricted_role(stack: Endpoints, db: Database) -> AsyncIterator[str]:
    """A login role without superuser rights, allowed what a service needs; yields its URL."""
    role = f"punchcard_{uuid.uuid4().hex[:12]}"
    async with db.connection() as conn:
        await conn.execute(
            f"""
            CREATE ROLE {role} LOGIN NOSUPERUSER;
            GRANT USAGE ON SCHEMA public TO {role};
            GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
            GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};
            """
        )
    scheme, _, rest = stack.database_url.partition("://")
    try:
        yield f"{scheme}://{role}@{rest.rpartition('@')[2]}"
    finally:
        async with db.connection() as conn:
            await conn.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


async def test_a_revoked_privilege_halts_and_granting_it_back_resumes(
    stack: Endpoints, db: Database, restricted_role: str
) -> None:
    """Permission denied (42501) is not the records' fault: halt, then apply once when granted."""
    settings = make_settings(stack, database_url=restricted_role)
    await create_topics(settings, settings.topics.all())
    role = restricted_role.partition("://")[2].partition("@")[0]
    async with db.connection() as conn:
        await conn.execute(f"REVOKE INSERT ON receipts FROM {role}")
    prefix, customer = unique_id("HALT"), unique_id("C")
    transaction_nos = await _send_sales(settings, prefix, customer)
    async with serving(_halting(settings), settings.topics.receipts, _receipts(settings)) as r:
        await _halted_with_nothing_applied(settings, db, transaction_nos, r)
        async with db.connection() as conn:
            await conn.execute(f"GRANT INSERT ON receipts TO {role}")
        await _applied_once(settings, db, transaction_nos, customer)
        await eventually(lambda: _ready_is(r, 200), what="ready again")


async def test_a_read_only_database_halts_instead_of_dead_lettering(
    stack: Endpoints, db: Database, restricted_role: str
) -> None:
    """A read-only transaction (25006, a failover to the wrong node) halts; writable resumes."""
    settings = make_settings(stack, database_url=restricted_role)
    await create_topics(settings, settings.topics.all())
    role = restricted_role.partition("://")[2].partition("@")[0]
    async with db.connection() as conn:
        await conn.execute(f"ALTER ROLE {role} SET default_transaction_read_only = on")
    prefix, customer = unique_id("HALT"), unique_id("C")
    transaction_nos = await _send_sales(settings, prefix, customer)
    async with serving(_halting(settings), settings.topics.receipts, _receipts(settings)) as r:
        await _halted_with_nothing_applied(settings, db, transaction_nos, r)
        async with db.connection() as conn:
            await conn.execute(f"ALTER ROLE {role} RESET default_transaction_read_only")
            # New sessions see the change; the pool's are dropped to pick it up.
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
            )
        await _applied_once(settings, db, transaction_nos, customer)
        await eventually(lambda: _ready_is(r, 200), what="ready again")
