"""The shared consumer loop against the real broker: batches, dead letters, commits, poison."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from punchcard_contract import DeadLetterReason, InvalidEventError
from punchcard_platform.consumer import ConsumerLoop
from punchcard_platform.records import DeadLetter, Decoded, InboundRecord
from punchcard_platform.settings import Settings

from tests.helpers import consume, eventually, produce


class RecordingHandler:
    """A hand-written handler: keeps what it applied, refuses what it is told to."""

    name = "test-handler"

    def __init__(self, *, poison: frozenset[bytes] = frozenset()) -> None:
        self.applied: list[bytes] = []
        self.poison = poison

    def decode(self, record: InboundRecord) -> bytes:
        if record.value == b"not json":
            raise InvalidEventError(DeadLetterReason.INVALID_JSON, "not json at all")
        return record.value or b""

    async def apply(self, batch: list[Decoded[bytes]]) -> list[DeadLetter]:
        if any(item.event in self.poison for item in batch):
            raise ValueError("this batch holds a record the database refuses")
        self.applied.extend(item.event for item in batch)
        return []


@asynccontextmanager
async def running(loop: ConsumerLoop[bytes]) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_undecodable_and_poison_records_go_to_the_dlq_and_the_rest_is_applied(
    settings: Settings,
) -> None:
    """A bad record is dead-lettered with its reason; its neighbours are applied once."""
    topic = settings.topics.receipts
    values = [b"first", b"not json", b"poison", b"last"]
    await produce(settings, topic, [(b"k", v) for v in values], partition=0)
    handler = RecordingHandler(poison=frozenset({b"poison"}))
    loop = ConsumerLoop(
        settings, handler=handler, topic=topic, group_id=settings.consumer_group("t")
    )
    async with running(loop):
        dead = await consume(settings, settings.topics.receipts_dlq, count=2)
        await eventually(lambda: _true(handler.applied == [b"first", b"last"]), what="applied")

    by_value = {r.value: dict(r.headers) for r in dead}
    assert by_value[b"not json"]["punchcard.error.reason"] == b"invalid_json"
    assert by_value[b"poison"]["punchcard.error.reason"] == b"schema_violation"
    assert by_value[b"not json"]["punchcard.source.topic"] == topic.encode()
    assert by_value[b"not json"]["punchcard.source.partition"] == b"0"
    assert by_value[b"not json"]["punchcard.source.offset"] == b"1"
    assert all(r.key == b"k" for r in dead)


async def test_a_restarted_consumer_starts_after_the_last_committed_batch(
    settings: Settings,
) -> None:
    """Offsets are committed after a batch is applied, so a restart does not apply it again."""
    topic = settings.topics.receipts
    group = settings.consumer_group("restart")
    await produce(settings, topic, [(None, f"r{i}".encode()) for i in range(30)])
    first = RecordingHandler()
    async with running(ConsumerLoop(settings, handler=first, topic=topic, group_id=group)):
        await eventually(lambda: _true(len(first.applied) == 30), what="first pass")

    await produce(settings, topic, [(None, b"after restart")])
    second = RecordingHandler()
    async with running(ConsumerLoop(settings, handler=second, topic=topic, group_id=group)):
        await eventually(lambda: _true(second.applied == [b"after restart"]), what="second pass")
    assert sorted(first.applied) == sorted(f"r{i}".encode() for i in range(30))


class SlowHandler(RecordingHandler):
    """Applies after a short wait, as a database would, so the next batch is fetched ahead."""

    async def apply(self, batch: list[Decoded[bytes]]) -> list[DeadLetter]:
        await asyncio.sleep(0.02)  # stands for the transaction's round trips, not a wait
        return await super().apply(batch)


async def test_consumers_joining_and_leaving_while_batches_are_fetched_ahead_lose_no_record(
    settings: Settings,
) -> None:
    """A batch fetched ahead of a rebalance is dropped and fetched again, never skipped."""
    topic = settings.topics.receipts
    group = settings.consumer_group("ahead")
    small = settings.model_copy(update={"batch_max_records": 20})
    values = [f"a{i}".encode() for i in range(3000)]
    await produce(settings, topic, [(str(i).encode(), v) for i, v in enumerate(values)])
    first, second = SlowHandler(), SlowHandler()

    def applied() -> set[bytes]:
        return set(first.applied) | set(second.applied)

    async with running(ConsumerLoop(small, handler=first, topic=topic, group_id=group)):
        await eventually(lambda: _true(len(first.applied) >= 200), what="first consumer going")
        async with running(ConsumerLoop(small, handler=second, topic=topic, group_id=group)):
            await eventually(lambda: _true(len(second.applied) >= 100), what="second joined")
        await eventually(lambda: _true(applied() == set(values)), what="every record applied")


async def _true(value: bool) -> bool:
    return value
