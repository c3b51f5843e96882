"""The outbox relay publishes committed rows in order, once each, with their event ids."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from punchcard_contract import event_id_for
from punchcard_platform.db import Database
from punchcard_platform.kafka import create_topics
from punchcard_platform.outbox import (
    FailedPublication,
    OutboxMessage,
    failed_publications,
    write_outbox,
)
from punchcard_platform.relay import OutboxRelay
from punchcard_platform.settings import Settings

from tests.helpers import consume, eventually, unique_id


async def test_outbox_rows_are_published_in_commit_order_per_key(
    settings: Settings, db: Database
) -> None:
    """Each customer's events arrive in the order their transactions committed."""
    topic = settings.topics.points
    customer = unique_id("C")
    messages = [
        OutboxMessage(topic, customer, event_id_for(customer, str(i)), b'{"n":%d}' % i)
        for i in range(10)
    ]
    for message in messages:
        async with db.transaction() as conn:
            await write_outbox(conn, [message])
    relay = OutboxRelay(settings, db)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        received = await consume(settings, topic, count=10)
        await eventually(lambda: _all_sent(db, customer), what="published rows deleted")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    assert [json.loads(r.value)["n"] for r in received] == list(range(10))
    assert [dict(r.headers)["punchcard.event_id"].decode() for r in received] == [
        str(m.event_id) for m in messages
    ]
    assert {r.key for r in received} == {customer.encode()}


async def test_writing_the_same_event_twice_queues_it_once(
    db: Database, settings: Settings
) -> None:
    """A re-applied effect cannot queue a second copy of its event."""
    key = unique_id("C")
    message = OutboxMessage(settings.topics.points, key, event_id_for(key), b'{"n":1}')
    for _ in range(2):
        async with db.transaction() as conn:
            await write_outbox(conn, [message])
    async with db.connection() as conn:
        count = await conn.fetchval("SELECT count(*) FROM outbox WHERE key = $1", key)
    assert count == 1


async def _all_sent(db: Database, key: str) -> bool:
    async with db.connection() as conn:
        return bool(await conn.fetchval("SELECT count(*) = 0 FROM outbox WHERE key = $1", key))


async def test_a_missing_topic_does_not_hold_up_the_events_of_other_topics(
    settings: Settings, db: Database
) -> None:
    """Rows for a topic that does not exist wait; rows for the others are published."""
    key = unique_id("C")
    stuck = OutboxMessage(unique_id("absent-topic"), key, event_id_for(key, "stuck"), b'{"n":0}')
    fine = OutboxMessage(settings.topics.points, key, event_id_for(key, "fine"), b'{"n":1}')
    async with db.transaction() as conn:
        await write_outbox(conn, [stuck, fine])
    stop = asyncio.Event()
    task = asyncio.create_task(OutboxRelay(settings, db).run(stop))
    try:
        received = await consume(settings, settings.topics.points, count=1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        async with db.transaction() as conn:
            # Leave nothing unpublishable behind for the relays of later tests.
            await conn.execute("DELETE FROM outbox WHERE topic = $1", stuck.topic)
    assert json.loads(received[0].value) == {"n": 1}


async def _topic_accepts(settings: Settings, topic: str, max_message_bytes: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers.split(","))
    await admin.start()
    try:
        await admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC, topic, {"max.message.bytes": str(max_message_bytes)}
                )
            ]
        )
    finally:
        await admin.close()


async def _failed(db: Database, event_id: str) -> list[FailedPublication]:
    async with db.connection() as conn:
        return [f for f in await failed_publications(conn) if f.event_id == event_id]


def _punchcard(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "punchcard", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **settings.environment()},
        check=False,
    )


async def test_a_row_the_broker_refuses_for_good_is_set_aside_and_does_not_hold_back_the_next(
    settings: Settings, db: Database
) -> None:
    """An event over the topic's max.message.bytes waits in outbox_failed; the rest go, in order."""
    topic = unique_id("small-messages")
    await create_topics(settings, [topic], partitions=1, configs={"max.message.bytes": "1024"})
    key = unique_id("C")
    too_large = OutboxMessage(
        topic, key, event_id_for(key, "big"), b'{"n":0,"pad":"%s"}' % (b"x" * 4000)
    )
    after = [
        OutboxMessage(topic, key, event_id_for(key, str(i)), b'{"n":%d}' % i) for i in range(1, 4)
    ]
    async with db.transaction() as conn:
        await write_outbox(conn, [too_large, *after])
    stop = asyncio.Event()
    task = asyncio.create_task(OutboxRelay(settings, db).run(stop))
    try:
        received = await consume(settings, topic, count=3)
        assert [json.loads(r.value)["n"] for r in received] == [1, 2, 3]
        await eventually(lambda: _all_sent(db, key), what="the outbox emptied")
        [failed] = await _failed(db, str(too_large.event_id))
        assert "MessageSizeTooLarge" in failed.error
        assert failed.size == len(too_large.payload)

        await _topic_accepts(settings, topic, 1024 * 1024)
        listed = await asyncio.to_thread(_punchcard, settings, "outbox", "failed")
        assert str(too_large.event_id) in listed.stdout, listed.stderr
        retried = await asyncio.to_thread(
            _punchcard, settings, "outbox", "retry", str(too_large.event_id)
        )
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout.strip() == "queued 1 output events again"
        received = await consume(settings, topic, count=4)
        assert [json.loads(r.value)["n"] for r in received] == [1, 2, 3, 0]
        await eventually(lambda: _all_sent(db, key), what="the retried row published")
        assert await _failed(db, str(too_large.event_id)) == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_topic_deleted_after_it_was_known_is_checked_again_and_holds_up_nothing(
    settings: Settings, db: Database
) -> None:
    """After a failed send the relay checks its topics again, so a deleted one waits alone."""
    quick = settings.model_copy(update={"kafka_send_timeout_seconds": 2.0})
    gone = unique_id("deleted-topic")
    await create_topics(settings, [gone], partitions=1)
    key = unique_id("C")
    stop = asyncio.Event()
    task = asyncio.create_task(OutboxRelay(quick, db).run(stop))
    try:
        async with db.transaction() as conn:
            await write_outbox(conn, [OutboxMessage(gone, key, event_id_for(key, "a"), b"{}")])
        await consume(settings, gone, count=1)
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers.split(","))
        await admin.start()
        try:
            await admin.delete_topics([gone])
        finally:
            await admin.close()
        waiting = OutboxMessage(gone, key, event_id_for(key, "b"), b"{}")
        fine = OutboxMessage(settings.topics.points, key, event_id_for(key, "c"), b'{"n":1}')
        async with db.transaction() as conn:
            await write_outbox(conn, [waiting, fine])
        received = await consume(settings, settings.topics.points, count=1)
        assert json.loads(received[0].value) == {"n": 1}
        # Published and done with, not sent again round after round behind the deleted topic.
        await eventually(
            lambda: _queued(db, [str(fine.event_id)], want=0), what="the other row deleted"
        )
        assert await _queued(db, [str(waiting.event_id)], want=1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        async with db.transaction() as conn:
            await conn.execute("DELETE FROM outbox WHERE topic = $1", gone)


async def _queued(db: Database, event_ids: list[str], *, want: int) -> bool:
    async with db.connection() as conn:
        count = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE event_id = ANY($1::uuid[])", event_ids
        )
    return bool(count == want)


async def test_a_row_over_the_producers_request_size_is_set_aside_before_it_is_sent(
    settings: Settings, db: Database
) -> None:
    """Refused by the client itself (over 8 MiB): set aside with that reason, the next one goes."""
    key = unique_id("C")
    topic = settings.topics.points
    huge = OutboxMessage(topic, key, event_id_for(key, "huge"), b"x" * (9 * 1024 * 1024))
    fine = OutboxMessage(topic, key, event_id_for(key, "fine"), b'{"n":1}')
    async with db.transaction() as conn:
        await write_outbox(conn, [huge, fine])
    stop = asyncio.Event()
    task = asyncio.create_task(OutboxRelay(settings, db).run(stop))
    try:
        received = await consume(settings, topic, count=1)
        await eventually(lambda: _all_sent(db, key), what="the outbox emptied")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert [json.loads(r.value) for r in received] == [{"n": 1}]
    [failed] = await _failed(db, str(huge.event_id))
    assert "max_request_size" in failed.error
    async with db.transaction() as conn:
        await conn.execute("DELETE FROM outbox_failed WHERE event_id = $1::uuid", failed.event_id)
