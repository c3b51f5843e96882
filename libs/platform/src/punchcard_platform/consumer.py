"""The one consumer loop every Punchcard consumer runs; a service only gives it a handler.

Per batch: ``getmany``; decode each record at the edge (what fails goes to the DLQ);
apply the rest through the handler in one database transaction; write the dead letters
and wait for their acknowledgement; then commit offsets per partition. A crash at any
point before the commit means the batch comes again, and handlers are idempotent, so
nothing is lost and nothing is doubled (DESIGN.md, "Guarantees").

While a batch's transaction waits on PostgreSQL, the next batch is fetched and decoded
(plain asyncio, in chunks that yield to the transaction: decoding is CPU that would
otherwise follow the wait instead of filling it). That next batch is only fetched and
decoded, nothing of it is written or committed before its own turn; it is dropped
uncommitted on stop or when the consumer is made anew, and dropped with the fetch
positions moved back to its first records when a rebalance happened since its fetch.

Failures while applying, by whose fault they are: the database being unreachable is
waited out; deadlocks and serialisation failures are retried. What the record causes (its
content refused by PostgreSQL: a data exception, class 22, or an integrity violation the
handler did not expect, class 23) is retried once and then the batch is split in halves
until the record that keeps failing is found and dead-lettered, and the rest is applied.
Anything else is ours, not the record's (a bug such as a ``TypeError``, in applying or
in decoding, a missing privilege, a trigger that raises, a read-only database): the loop
halts. It leaves the
group without committing, reports itself not ready, logs the error with where it stopped,
and tries again with a growing pause; the first batch that applies resumes it. Sending
the stream to the DLQ for a bug would commit past records whose effects never happened.

Failures of the broker or the group: a broker that is not there yet (at start-up too)
is waited for, with a log line saying so; every commit and send is bounded in time; and
the consumer is made anew (leaving the group, joining again from the committed offsets)
when the group threw it out because a batch outlasted the session (otherwise commits
fail forever, aiokafka issue 848), when commits keep failing, or when it stopped
receiving although records wait (aiokafka issue 1037). Records applied but not
committed come again and change nothing, so none of this loses or doubles an effect.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import Gauge
from punchcard_contract import DeadLetterReason, InvalidEventError

from punchcard_platform.db import Database, is_retryable, is_the_records_fault, is_unavailable
from punchcard_platform.dead_letters import DeadLetterWriter
from punchcard_platform.errors import KafkaUnavailableError
from punchcard_platform.kafka import ResilientProducer, broker_accepts_connections, make_consumer
from punchcard_platform.metrics import (
    BATCH_DURATION,
    BATCH_SIZE,
    CONSUMER_LAG,
    RECORDS_APPLIED,
)
from punchcard_platform.records import BatchHandler, DeadLetter, Decoded, InboundRecord
from punchcard_platform.settings import Settings

__all__ = ["CONSUMER_HALTED", "LAST_COMMIT", "ConsumerLoop", "StopRequestedError"]

T = TypeVar("T")

log = structlog.get_logger(__name__)

LAST_COMMIT = Gauge(
    "punchcard_last_commit_timestamp_seconds",
    "Unix time of the last batch whose offsets the broker accepted. time() minus this is "
    "the seconds since the last committed batch: alert when it grows while "
    "punchcard_consumer_lag is above zero (an idle topic commits nothing, and that is fine).",
    ["service"],
)

CONSUMER_HALTED = Gauge(
    "punchcard_consumer_halted",
    "1 while the consumer is halted by a fault that is not the records' (a bug, a missing "
    "privilege, a raising trigger, a read-only database): it consumes nothing and retries. "
    "Alert when it stays 1.",
    ["service"],
)

_MAX_RETRYABLE_ATTEMPTS = 20
_UNAVAILABLE_BACKOFF_MAX = 1.0
"""Seconds between retries while the database or the broker is away: back within this."""
_BROKER_PROBE_SECONDS = 2.0
_COMMIT_ATTEMPTS = 3
_STALL_SECONDS = 30.0
"""No record for this long although the broker holds records past our position: remake."""
_REFUSED_FOR_SECONDS = 30.0
"""A broker that accepts TCP but refuses the client this long is a configuration error."""
_DECODE_CHUNK = 100
"""Records decoded between two yields, so a transaction's replies are not kept waiting."""


class StopRequestedError(Exception):
    """The service is stopping while a batch waits on something; abandon it uncommitted."""


class _RejoinError(Exception):
    """The consumer must be made anew: it left the group, or it stopped receiving."""


class _HaltError(Exception):
    """A batch failed for a reason that is not its records': stop consuming, retry later."""

    def __init__(self, cause: BaseException, records: Sequence[InboundRecord]) -> None:
        super().__init__(repr(cause))
        self.cause = cause
        self.records = records


class _WaitForBatchOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Lets the batch in flight finish and commit before its partitions move elsewhere.

    ``rebalances`` counts revocations and assignments, so that a batch fetched before
    one of them is recognised and not applied after it.
    """

    def __init__(self, lock: asyncio.Lock, service: str) -> None:
        self._lock = lock
        self._service = service
        self.rebalances = 0

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            self.rebalances += 1
            log.info(
                "partitions revoked", service=self._service, partitions=sorted(map(str, revoked))
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.rebalances += 1
        log.info(
            "partitions assigned", service=self._service, partitions=sorted(map(str, assigned))
        )


@dataclass(frozen=True, slots=True)
class _Batch(Generic[T]):
    """One ``getmany`` worth of records, decoded, not yet applied."""

    batches: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    records: list[InboundRecord]
    decoded: list[Decoded[T]]
    rejected: list[DeadLetter]
    rebalances: int
    """The listener's count when the fetch began: another count means a rebalance since."""


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
        db: Database | None = None,
    ) -> None:
        self._settings = settings
        self._db = db
        """Where dead letters are recorded as they are published (``dead_letters``)."""
        self._handler = handler
        self._topic = topic
        self._group_id = group_id
        self._service = handler.name
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._last_records = time.monotonic()
        self._rejoin_reason: str | None = None
        self.batches_applied = 0
        self.rejoins = 0
        self.broker_reachable = False
        """Whether the broker answered the last probe: part of what /readyz says."""
        self.halted = False
        """Whether a fault that is not the records' stopped consuming: /readyz says not ready."""
        self.halts = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; the batch in flight is finished or abandoned uncommitted."""
        self._stop = stop
        producer = ResilientProducer(self._settings)
        dead_letters = DeadLetterWriter(producer, self._settings.topics, self._service, db=self._db)
        try:
            while not stop.is_set():
                consumer = await self._start_consumer()
                if consumer is None:
                    return
                try:
                    await self._consume(consumer, dead_letters)
                except _RejoinError as exc:
                    log.warning(
                        "leaving the group to join again from the committed offsets",
                        service=self._service,
                        reason=str(exc),
                    )
                    self.rejoins += 1
                except _HaltError as exc:
                    self._halt(exc)
                except StopRequestedError:
                    return
                finally:
                    self.broker_reachable = False
                    await self._stop_consumer(consumer)
                if self.halted:
                    try:
                        await self._sleep_unless_stopped(self._halt_pause())
                    except StopRequestedError:
                        return
        finally:
            await producer.stop()
            log.info("consumer stopped", service=self._service)

    async def _start_consumer(self) -> AIOKafkaConsumer | None:
        """A started consumer, waiting (with backoff, saying so) while no broker answers."""
        attempts = 0
        refused_since: float | None = None
        while not self._stop.is_set():
            consumer = make_consumer(
                self._settings,
                group_id=self._group_id,
                max_poll_records=self._settings.batch_max_records,
            )
            try:
                await asyncio.wait_for(
                    consumer.start(), self._settings.kafka_request_timeout_seconds * 2
                )
            except (KafkaError, OSError, TimeoutError) as exc:
                await self._stop_consumer(consumer)
                attempts += 1
                if await broker_accepts_connections(self._settings):
                    # Something listens there but will not talk to us: give it a little time
                    # (it may be starting), then call it what it most likely is.
                    refused_since = refused_since or time.monotonic()
                    if time.monotonic() - refused_since > _REFUSED_FOR_SECONDS:
                        raise KafkaUnavailableError(
                            f"the Kafka broker at {self._settings.kafka_bootstrap_servers} "
                            f"accepts connections but not this client ({exc}). Check "
                            "PUNCHCARD_KAFKA_SECURITY_PROTOCOL, PUNCHCARD_KAFKA_SASL_* and "
                            "PUNCHCARD_KAFKA_SSL_CAFILE."
                        ) from exc
                else:
                    refused_since = None
                if attempts == 1 or attempts % 30 == 0:
                    log.warning(
                        "Kafka is not reachable yet; waiting for it",
                        service=self._service,
                        bootstrap_servers=self._settings.kafka_bootstrap_servers,
                        error=str(exc) or type(exc).__name__,
                        attempts=attempts,
                    )
                try:
                    await self._sleep_unless_stopped(min(_UNAVAILABLE_BACKOFF_MAX, 0.1 * attempts))
                except StopRequestedError:
                    return None
                continue
            if attempts:
                log.info("Kafka answers; starting to consume", service=self._service)
            self.broker_reachable = True
            return consumer
        return None

    def _halt(self, exc: _HaltError) -> None:
        """Say where and why consumption stopped; the caller leaves the group uncommitted.

        Leaving (rather than holding the partitions while retrying) lets a rebalance go
        through at once and lets a healthy instance of the group take the partitions over.
        """
        first = exc.records[0] if exc.records else None
        self.halts += 1
        if not self.halted or self.halts % 10 == 0:
            # A traceback the first time: a bug is found from it. Later tries only count.
            log.error(
                "consumer halted: cannot apply a batch, and not because of its records",
                service=self._service,
                error=repr(exc.cause),
                topic=first.topic if first else self._topic,
                partition=first.partition if first else None,
                offset=first.offset if first else None,
                records=len(exc.records),
                attempts=self.halts,
                exc_info=exc.cause if not self.halted else None,
            )
        self.halted = True
        CONSUMER_HALTED.labels(self._service).set(1)

    def _halt_pause(self) -> float:
        return min(self._settings.consumer_halt_retry_max_seconds, 0.5 * (1 << min(self.halts, 16)))

    def _resume(self) -> None:
        if not self.halted:
            return
        log.info("consumer resumed after a halt", service=self._service, attempts=self.halts)
        self.halted = False
        self.halts = 0
        CONSUMER_HALTED.labels(self._service).set(0)

    async def _stop_consumer(self, consumer: AIOKafkaConsumer) -> None:
        # Leaving the group is polite, not required: if the broker does not answer, the
        # group notices by the session timeout.
        try:
            await asyncio.wait_for(consumer.stop(), self._settings.kafka_request_timeout_seconds)
        except Exception as exc:  # whatever happened, this consumer is done
            log.warning("consumer did not stop cleanly", service=self._service, error=repr(exc))

    async def _consume(self, consumer: AIOKafkaConsumer, dead_letters: DeadLetterWriter) -> None:
        await self._wait_for_topic(consumer)
        listener = _WaitForBatchOnRevoke(self._lock, self._service)
        consumer.subscribe([self._topic], listener=listener)
        log.info("consuming", service=self._service, topic=self._topic, group=self._group_id)
        self._last_records = time.monotonic()
        self._rejoin_reason = None
        watchdog = asyncio.ensure_future(self._watch(consumer))
        batch: _Batch[T] | None = None  # fetched and decoded while the previous one applied
        try:
            while not self._stop.is_set():
                if self._rejoin_reason is not None:
                    raise _RejoinError(self._rejoin_reason)
                if batch is None:
                    batch = await self._fetch(consumer, listener)
                    if batch is None:
                        continue
                async with self._lock:
                    if batch.rebalances != listener.rebalances:
                        self._rewind(consumer, batch)
                        batch = None
                        continue
                    following = asyncio.ensure_future(self._fetch(consumer, listener))
                    try:
                        await self._process(consumer, dead_letters, batch)
                    except BaseException as exc:
                        following.cancel()
                        await asyncio.gather(following, return_exceptions=True)
                        if isinstance(exc, StopRequestedError):
                            log.info(
                                "stopping with a batch abandoned uncommitted",
                                service=self._service,
                            )
                        raise
                # Awaited only once the lock is released: from the moment a rebalance begins,
                # aiokafka's getmany waits for the new assignment (whatever its timeout), the
                # new assignment waits for on_partitions_revoked, and that waits for this lock.
                # Awaited under the lock, the fetch ahead held the group's rebalance until its
                # timeout, and this member stayed stuck after the group evicted it.
                batch = await following
        finally:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)

    async def _watch(self, consumer: AIOKafkaConsumer) -> None:
        """Keep ``broker_reachable`` true to the broker; notice a consumer that went deaf."""
        while True:
            await asyncio.sleep(_BROKER_PROBE_SECONDS)
            try:
                await asyncio.wait_for(consumer.topics(), _BROKER_PROBE_SECONDS * 1.5)
            except (KafkaError, OSError, TimeoutError):
                if self.broker_reachable:
                    log.warning("the Kafka broker does not answer", service=self._service)
                self.broker_reachable = False
                continue
            if not self.broker_reachable:
                log.info("the Kafka broker answers again", service=self._service)
            self.broker_reachable = True
            quiet = time.monotonic() - self._last_records
            if quiet > _STALL_SECONDS and await self._behind(consumer):
                self._rejoin_reason = f"no records for {quiet:.0f}s although some wait"
                return

    async def _behind(self, consumer: AIOKafkaConsumer) -> bool:
        assigned = list(consumer.assignment())
        if not assigned:
            return False
        try:
            ends = await asyncio.wait_for(
                consumer.end_offsets(assigned), self._settings.kafka_request_timeout_seconds
            )
            for tp in assigned:
                position = await asyncio.wait_for(consumer.position(tp), _BROKER_PROBE_SECONDS)
                if ends.get(tp, 0) > position:
                    return True
        except (KafkaError, TimeoutError, AssertionError):
            # The assignment changed under us or the broker went away: not a stall of ours.
            return False
        return False

    async def _wait_for_topic(self, consumer: AIOKafkaConsumer) -> None:
        """Subscribe only once the broker knows the topic.

        Joining the group before the topic's metadata reached the broker assigns no
        partitions, and nothing corrects that until the next metadata refresh.
        """
        waited = 0
        while self._topic not in await self._topics(consumer):
            if waited % 50 == 0:
                log.warning(
                    "waiting for the topic to exist", service=self._service, topic=self._topic
                )
            waited += 1
            await self._sleep_unless_stopped(0.1)

    async def _topics(self, consumer: AIOKafkaConsumer) -> set[str]:
        try:
            topics: set[str] = await asyncio.wait_for(
                consumer.topics(), self._settings.kafka_request_timeout_seconds
            )
        except (KafkaError, OSError, TimeoutError):
            return set()
        return topics

    async def _next_batches(
        self, consumer: AIOKafkaConsumer
    ) -> Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        fetch = asyncio.ensure_future(
            consumer.getmany(
                timeout_ms=max(self._settings.batch_wait_ms, 1),
                max_records=self._settings.batch_max_records,
            )
        )
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also when cancelled: no getmany may go on moving positions behind our back.
            stopping.cancel()
            fetch.cancel()
        if fetch not in done:
            return {}
        result: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = fetch.result()
        return result

    async def _fetch(
        self, consumer: AIOKafkaConsumer, listener: _WaitForBatchOnRevoke
    ) -> _Batch[T] | None:
        """The next records, decoded in chunks that let a transaction in flight go on."""
        rebalances = listener.rebalances
        batches = await self._next_batches(consumer)
        if not batches:
            return None
        self._last_records = time.monotonic()
        records = [to_inbound(r) for batch in batches.values() for r in batch]
        decoded: list[Decoded[T]] = []
        rejected: list[DeadLetter] = []
        for start in range(0, len(records), _DECODE_CHUNK):
            if start:
                await asyncio.sleep(0)
            self._decode(records[start : start + _DECODE_CHUNK], decoded, rejected)
        return _Batch(batches, records, decoded, rejected, rebalances)

    def _rewind(self, consumer: AIOKafkaConsumer, batch: _Batch[T]) -> None:
        """Drop a batch fetched before a rebalance, and fetch its records again if still ours.

        A rebalance makes aiokafka (0.14) start every assigned partition afresh from the
        committed offset, but the fetch may have run after the new assignment and moved its
        positions past these records: seek back to the first of them. That is the committed
        offset (every earlier batch committed, or the consumer was made anew), or if the
        partition was someone else's meanwhile, at worst records come again and change nothing.
        """
        log.info("dropping a batch fetched before a rebalance", service=self._service)
        assigned = consumer.assignment()
        for tp, records in batch.batches.items():
            if records and tp in assigned:
                try:
                    consumer.seek(tp, records[0].offset)
                except IllegalStateError:  # revoked meanwhile: its next owner starts anew
                    continue

    async def _process(
        self, consumer: AIOKafkaConsumer, dead_letters: DeadLetterWriter, batch: _Batch[T]
    ) -> None:
        """Apply ``batch``, write its dead letters, commit its offsets."""
        started = time.perf_counter()
        rejected = batch.rejected + await self._apply(batch.decoded)
        await self._retry_until_done("write dead letters", lambda: dead_letters.write(rejected))
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.batches.items() if records}
        await self._commit(consumer, offsets)
        self._resume()
        self.batches_applied += 1
        self._observe(
            consumer, batch.records, len(rejected), offsets, time.perf_counter() - started
        )

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """Commit, each attempt bounded in time; never leave a batch silently uncommitted.

        Refused because the group moved on without us (we stalled past the session or were
        frozen): leave and join again, or every later commit fails too (aiokafka issue
        848). Failing for other reasons (the coordinator is away or moving): try again a
        few times, then join again, which starts from the committed offsets; the records
        since come again and change nothing (the handler is idempotent).
        """
        for attempt in range(1, _COMMIT_ATTEMPTS + 1):
            try:
                await asyncio.wait_for(
                    consumer.commit(offsets), self._settings.kafka_request_timeout_seconds
                )
            except CommitFailedError as exc:
                log.warning("offset commit refused after a rebalance", service=self._service)
                raise _RejoinError("the group moved on while a batch was applied") from exc
            except (KafkaError, TimeoutError) as exc:
                log.warning(
                    "offset commit failed; retrying",
                    service=self._service,
                    error=repr(exc),
                    attempt=attempt,
                )
                if attempt == _COMMIT_ATTEMPTS:
                    raise _RejoinError(f"{attempt} commits failed in a row") from exc
                await self._sleep_unless_stopped(min(_UNAVAILABLE_BACKOFF_MAX, 0.2 * attempt))
            else:
                LAST_COMMIT.labels(self._service).set_to_current_time()
                return

    def _decode(
        self,
        records: Sequence[InboundRecord],
        decoded: list[Decoded[T]],
        rejected: list[DeadLetter],
    ) -> None:
        for record in records:
            try:
                decoded.append(Decoded(record, self._handler.decode(record)))
            except InvalidEventError as exc:
                rejected.append(DeadLetter(record, exc.reason, exc.detail))
            except Exception as exc:
                # Decoding says what is wrong with a record by InvalidEventError; anything
                # else it raises is a bug of ours, and the record waits for the fix.
                raise _HaltError(exc, [record]) from exc

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
            except InvalidEventError as exc:
                # The handler judged a record's content only once it saw the database.
                if len(items) == 1:
                    return [DeadLetter(items[0].record, exc.reason, exc.detail)]
                middle = len(items) // 2
                return await self._apply(items[:middle]) + await self._apply(items[middle:])
            except Exception as exc:
                if is_unavailable(exc):
                    unavailable += 1
                    delay = min(_UNAVAILABLE_BACKOFF_MAX, 0.1 * 2**unavailable)
                    if unavailable == 1 or unavailable % 30 == 0:
                        log.warning(
                            "database unavailable; retrying batch",
                            service=self._service,
                            error=str(exc) or type(exc).__name__,
                            attempts=unavailable,
                        )
                    await self._sleep_unless_stopped(delay)
                    continue
                if is_retryable(exc) and retryable < _MAX_RETRYABLE_ATTEMPTS:
                    retryable += 1
                    await asyncio.sleep(random.uniform(0.01, 0.05) * retryable)  # noqa: S311
                    continue
                if not is_the_records_fault(exc):
                    raise _HaltError(exc, [item.record for item in items]) from exc
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
            except Exception as exc:
                # A dead letter is recorded in the database too: its outage is waited out
                # like the broker's, never a reason to move past the records.
                if not (isinstance(exc, KafkaError) or is_unavailable(exc)):
                    raise
                attempt += 1
                if self._stop.is_set():
                    raise StopRequestedError from exc
                log.warning(f"could not {what}; retrying", service=self._service, error=repr(exc))
                await self._sleep_unless_stopped(min(_UNAVAILABLE_BACKOFF_MAX, 0.1 * 2**attempt))
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
        consumer: AIOKafkaConsumer,
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
