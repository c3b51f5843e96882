"""The outbox relay publishes committed rows in order, once each, with their event ids."""

from __future__ import annotations

import asyncio
import json

from punchcard_contract import event_id_for
from punchcard_platform.db import Database
from punchcard_platform.outbox import OutboxMessage, write_outbox
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
