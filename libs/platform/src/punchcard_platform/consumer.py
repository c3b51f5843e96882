"""The one consumer loop every Punchcard consumer runs; a service only gives it a handler.

Per batch: ``getmany``; decode each record at the edge (what fails goes to the DLQ);
apply the rest through the handler in one database transaction; write the dead letters
and wait for their acknowledgement; then commit offsets per partition. A crash at any
point before the commit means the batch comes again, and handlers are idempotent, so
nothing is lost and nothing is doubled (DESIGN.md, "Guarantees").

Failures while applying: the database being unreachable is waited out (the records are
not at fault); deadlocks and serialisation failures are retried; anything else is
retried once and then the batch is split in halves until the record that keeps failing
is found and dead-lettered, and the rest is applied.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from punchcard_contract import DeadLetterReason, InvalidEventError

from punchcard_platform.db import is_retryable, is_unavailable
from punchcard_platform.dead_letters import DeadLetterWriter
from punchcard_platform.kafka import make_consumer, make_producer
from punchcard_platform.metrics import (
    BATCH_DURATION,
    BATCH_SIZE,
    CONSUMER_LAG,
    RECORDS_APPLIED,
)
from punchcard_platform.records import BatchHandler, DeadLetter, Decoded, InboundRecord
from punchcard_platform.settings import Settings

__all__ = ["ConsumerLoop", "StopRequestedError"]

T = TypeVar("T")

log = structlog.get_logger(__name__)

_MAX_RETRYABLE_ATTEMPTS = 20
_UNAVAILABLE_BACKOFF_MAX = 5.0


class StopRequestedError(Exception):
    """The service is stopping while a batch waits on something; abandon it uncommitted."""


class _WaitForBatchOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Lets the batch in flight finish and commit before its partitions move elsewhere."""

    def __init__(self, lock: asyncio.Lock, service: str) -> None:
        self._lock = lock
        self._service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            log.info(
                "partitions revoked", service=self._service, partitions=sorted(map(str, revoked))
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info(
            "partitions assigned", service=self._service, partitions=sorted(map(str, assigned))
        )


def to_inbound(record: ConsumerRecord[bytes, bytes]) -> InboundRecord:
    """The client library's record as our own plain value."""
    return InboundRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=tuple((k, v) for k, v in (record.headers or ())),
    )


class ConsumerLoop(Generic[T]):
    """Consume ``topic`` in group ``group_id`` and apply it through ``handler``."""

    def __init__(
        self,
        settings: Settings,
        *,
        handler: BatchHandler[T],
        topic: str,
        group_id: str,
    ) -> None:
        self._settings = settings
        self._handler = handler
        self._topic = topic
        self._group_id = group_id
        self._service = handler.name
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self.batches_applied = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; the batch in flight is finished or abandoned uncommitted."""
        self._stop = stop
        consumer = make_consumer(
            self._settings,
            group_id=self._group_id,
            max_poll_records=self._settings.batch_max_records,
        )
        producer = make_producer(self._settings)
        await consumer.start()
        try:
            await producer.start()
            try:
                try:
                    await self._wait_for_topic(consumer)
                except StopRequestedError:
                    return
                consumer.subscribe(
                    [self._topic], listener=_WaitForBatchOnRevoke(self._lock, self._service)
                )
                dead_letters = DeadLetterWriter(producer, self._settings.topics, self._service)
                log.info(
                    "consuming", service=self._service, topic=self._topic, group=self._group_id
                )
                while not stop.is_set():
                    batches = await self._next_batches(consumer)
                    if not batches:
                        continue
                    async with self._lock:
                        try:
                            await self._process(consumer, dead_letters, batches)
                        except StopRequestedError:
                            log.info(
                                "stopping with a batch abandoned uncommitted", service=self._service
                            )
                            break
            finally:
                await producer.stop()
        finally:
            await consumer.stop()
            log.info("consumer stopped", service=self._service)

    async def _wait_for_topic(self, consumer: Any) -> None:
        """Subscribe only once the broker knows the topic.

        Joining the group before the topic's metadata reached the broker assigns no
        partitions, and nothing corrects that until the next metadata refresh.
        """
        waited = 0
        while self._topic not in await consumer.topics():
            if waited % 50 == 0:
                log.warning(
                    "waiting for the topic to exist", service=self._service, topic=self._topic
                )
            waited += 1
            await self._sleep_unless_stopped(0.1)

    async def _next_batches(
        self, consumer: Any
    ) -> Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        fetch = asyncio.ensure_future(
            consumer.getmany(
                timeout_ms=max(self._settings.batch_wait_ms, 1),
                max_records=self._settings.batch_max_records,
            )
        )
        stopping = asyncio.ensure_future(self._stop.wait())
        done, _ = await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if fetch not in done:
            fetch.cancel()
            return {}
        result: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = fetch.result()
        return result

    async def _process(
        self,
        consumer: Any,
        dead_letters: DeadLetterWriter,
        batches: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    ) -> None:
        started = time.perf_counter()
        records = [to_inbound(r) for batch in batches.values() for r in batch]
        decoded, rejected = self._decode(records)
        rejected += await self._apply(decoded)
        await self._retry_until_done("write dead letters", lambda: dead_letters.write(rejected))
        offsets = {tp: batch[-1].offset + 1 for tp, batch in batches.items() if batch}
        try:
            await consumer.commit(offsets)
        except CommitFailedError:
            # The group moved on while we applied; the new owner gets these records again
            # and the handler's idempotence makes that harmless.
            log.warning("offset commit refused after a rebalance", service=self._service)
        self.batches_applied += 1
        self._observe(consumer, records, len(rejected), offsets, time.perf_counter() - started)

    def _decode(
        self, records: Sequence[InboundRecord]
    ) -> tuple[list[Decoded[T]], list[DeadLetter]]:
        decoded: list[Decoded[T]] = []
        rejected: list[DeadLetter] = []
        for record in records:
            try:
                decoded.append(Decoded(record, self._handler.decode(record)))
            except InvalidEventError as exc:
                rejected.append(DeadLetter(record, exc.reason, exc.detail))
        return decoded, rejected

    async def _apply(self, items: list[Decoded[T]]) -> list[DeadLetter]:
        """Apply with retries; isolate and dead-letter a record that keeps failing."""
        if not items:
            return []
        failures = 0
        retryable = 0
        unavailable = 0
        while True:
            if self._stop.is_set() and unavailable:
                raise StopRequestedError
            try:
                return await self._handler.apply(items)
            except Exception as exc:
                if is_unavailable(exc):
                    unavailable += 1
                    delay = min(_UNAVAILABLE_BACKOFF_MAX, 0.2 * 2**unavailable)
                    log.warning(
                        "database unavailable; retrying batch",
                        service=self._service,
                        error=str(exc),
                        retry_in=delay,
                    )
                    await self._sleep_unless_stopped(delay)
                    continue
                if is_retryable(exc) and retryable < _MAX_RETRYABLE_ATTEMPTS:
                    retryable += 1
                    await asyncio.sleep(random.uniform(0.01, 0.05) * retryable)  # noqa: S311
                    continue
                failures += 1
                if failures == 1:
                    log.warning(
                        "batch failed; retrying once",
                        service=self._service,
                        error=repr(exc),
                        size=len(items),
                    )
                    continue
                if len(items) == 1:
                    record = items[0].record
                    log.exception(
                        "record cannot be applied",
                        service=self._service,
                        error=repr(exc),
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                    )
                    return [
                        DeadLetter(
                            record, DeadLetterReason.SCHEMA_VIOLATION, f"cannot be applied: {exc!r}"
                        )
                    ]
                middle = len(items) // 2
                return await self._apply(items[:middle]) + await self._apply(items[middle:])

    async def _retry_until_done(self, what: str, action: Any) -> None:
        attempt = 0
        while True:
            try:
                await action()
            except KafkaError as exc:
                attempt += 1
                if self._stop.is_set():
                    raise StopRequestedError from exc
                log.warning(f"could not {what}; retrying", service=self._service, error=repr(exc))
                await self._sleep_unless_stopped(min(_UNAVAILABLE_BACKOFF_MAX, 0.2 * 2**attempt))
            else:
                return

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return
        raise StopRequestedError

    def _observe(
        self,
        consumer: Any,
        records: Sequence[InboundRecord],
        rejected: int,
        offsets: dict[TopicPartition, int],
        seconds: float,
    ) -> None:
        BATCH_SIZE.labels(self._service).observe(len(records))
        BATCH_DURATION.labels(self._service).observe(seconds)
        RECORDS_APPLIED.labels(self._service, self._topic).inc(len(records) - rejected)
        for tp, committed in offsets.items():
            end = consumer.highwater(tp)
            if end is not None:
                CONSUMER_LAG.labels(self._service, tp.topic, str(tp.partition)).set(end - committed)
        log.debug(
            "batch applied",
            service=self._service,
            records=len(records),
            dead_lettered=rejected,
            seconds=round(seconds, 4),
        )
