"""The shared consumer loop against the real broker: batches, dead letters, commits, poison."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
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
            # A data exception is the record's fault: the loop dead-letters it, not halts.
            raise asyncpg.NumericValueOutOfRangeError("this batch holds a value out of range")
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
    produced: list[bytes] = []
    enough = asyncio.Event()

    async def keep_producing() -> None:
        # Records keep arriving on every partition, so whichever partitions the second
        # consumer is given, it has records to apply (the first may have drained some).
        while not enough.is_set():
            chunk = [f"a{len(produced) + i}".encode() for i in range(30)]
            await produce(settings, topic, [(v, v) for v in chunk])
            produced.extend(chunk)

    first, second = SlowHandler(), SlowHandler()

    def applied() -> set[bytes]:
        return set(first.applied) | set(second.applied)

    producing = asyncio.create_task(keep_producing())
    try:
        async with running(ConsumerLoop(small, handler=first, topic=topic, group_id=group)):
            await eventually(lambda: _true(len(first.applied) >= 200), what="first consumer going")
            async with running(ConsumerLoop(small, handler=second, topic=topic, group_id=group)):
                await eventually(lambda: _true(len(second.applied) >= 100), what="second joined")
            enough.set()
            await producing
            await eventually(lambda: _true(applied() == set(produced)), what="every record applied")
    finally:
        enough.set()
        await asyncio.gather(producing, return_exceptions=True)


class GatedHandler(RecordingHandler):
    """Holds its first batch until told to go on, so a rebalance begins meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = asyncio.Event()
        self.go_on = asyncio.Event()

    async def apply(self, batch: list[Decoded[bytes]]) -> list[DeadLetter]:
        if not self.holding.is_set():
            self.holding.set()
            await self.go_on.wait()
        return await super().apply(batch)


class _RevocationSeen(logging.Handler):
    """Sets ``seen`` when aiokafka is about to call on_partitions_revoked for owned partitions.

    aiokafka logs this line after it began the reassignment (from then on its getmany waits
    for the new assignment) and right before it calls the listener.
    """

    def __init__(self, group: str) -> None:
        super().__init__(logging.INFO)
        self.group = group
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.getMessage().startswith("Revoking") and len(args) == 2:
            revoked, group = args
            if revoked and group == self.group:
                self.seen.set()


async def test_a_rebalance_that_begins_while_the_next_batch_is_fetched_does_not_stall_the_group(
    settings: Settings,
) -> None:
    """The fetch ahead is not awaited under the lock the revocation listener waits for."""
    topic = settings.topics.receipts
    group = settings.consumer_group("stall")
    # A long fetch wait: the fetch ahead is still waiting for records when the rebalance begins.
    patient = settings.model_copy(update={"batch_wait_ms": 20_000, "batch_max_records": 20})
    await produce(settings, topic, [(None, b"before")], partition=0)
    first, second = GatedHandler(), RecordingHandler()
    coordinator_log = logging.getLogger("aiokafka.consumer.group_coordinator")
    revocation = _RevocationSeen(group)
    level = coordinator_log.level
    coordinator_log.setLevel(logging.INFO)
    coordinator_log.addHandler(revocation)
    try:
        async with running(ConsumerLoop(patient, handler=first, topic=topic, group_id=group)):
            await asyncio.wait_for(first.holding.wait(), 30)
            async with running(ConsumerLoop(patient, handler=second, topic=topic, group_id=group)):
                await asyncio.wait_for(revocation.seen.wait(), 30)
                # Records reach the fetch ahead while the reassignment is under way.
                after = [f"after-{p}".encode() for p in range(3)]
                for p, value in enumerate(after):
                    await produce(settings, topic, [(None, value)], partition=p)
                first.go_on.set()
                await eventually(
                    lambda: _true({*first.applied, *second.applied} >= {b"before", *after}),
                    what="every record applied",
                )
                more = [f"more-{p}".encode() for p in range(3)]
                for p, value in enumerate(more):
                    await produce(settings, topic, [(None, value)], partition=p)
                # Both consumers own partitions again and apply what arrives on them.
                await eventually(
                    lambda: _true(
                        bool(set(first.applied) & set(more))
                        and bool(set(second.applied) & set(more))
                    ),
                    what="both consumers applying after the rebalance",
                )
    finally:
        coordinator_log.removeHandler(revocation)
        coordinator_log.setLevel(level)


async def _true(value: bool) -> bool:
    return value
