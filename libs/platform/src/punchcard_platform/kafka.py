"""Kafka clients built from Settings: the only place that knows about security options.

Everything Punchcard does with Kafka goes through the clients made here, so TLS and
SASL are configured once, and the checks that turn "no broker" into a clear message
live in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidTopicError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
)

from punchcard_platform.errors import KafkaUnavailableError
from punchcard_platform.settings import Settings

__all__ = [
    "MAX_MESSAGE_BYTES",
    "OutgoingRecord",
    "Refusal",
    "ResilientProducer",
    "SendFailedError",
    "broker_accepts_connections",
    "create_topics",
    "describe_refusal",
    "is_refused_for_good",
    "make_consumer",
    "make_producer",
]

log = structlog.get_logger(__name__)

OutgoingRecord = tuple[str, bytes | None, bytes | None, Sequence[tuple[str, bytes]] | None]
"""``(topic, key, value, headers)`` of one record to send."""

# Input values may be 1 MiB and still have to reach the consumer (which rejects them as
# payload_too_large), and dead letters carry them unchanged: allow headroom everywhere.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def _connection_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
        "client_id": settings.kafka_client_id,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        )
    if settings.kafka_security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value()
            if settings.kafka_sasl_password
            else None
        )
    return options


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a record will never be taken as it is, and whether it alone is to blame.

    The client refuses a record on its own before sending it (over ``max_request_size``):
    then ``before_sending`` is true and no other record was touched. The broker refuses a
    whole batch for one record in it, so its refusal blames every record of that batch.
    """

    error: KafkaError
    before_sending: bool


class SendFailedError(KafkaError):  # type: ignore[misc]
    """Some records were neither acknowledged nor refused for good: send them again.

    ``refusals`` maps the index of each record refused for good (by then) to its refusal.
    """

    def __init__(self, cause: KafkaError, refusals: Mapping[int, Refusal]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.refusals = dict(refusals)


_REFUSED_FOR_GOOD = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
)


def is_refused_for_good(exc: BaseException) -> bool:
    """The broker (or the client, by the broker's rules) will never take this record as it is.

    Too large for the topic's ``max.message.bytes`` or the producer's request size, or a
    topic name the broker calls invalid: sending it again changes nothing until someone
    changes the topic or the record. Anything else (a broker away, a leader moving, a
    missing topic) may pass on a later try.
    """
    return isinstance(exc, _REFUSED_FOR_GOOD)


def describe_refusal(exc: BaseException) -> str:
    """The broker's error as an operator reads it: its name, code and what it means."""
    description = getattr(exc, "description", "")
    text = str(exc) or type(exc).__name__
    return f"{text}: {description}" if description else text


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer with acks=all: no record lost or doubled by its own retries."""
    options: dict[str, Any] = {
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 0,
        "max_request_size": MAX_MESSAGE_BYTES,
        # A request to a broker that went away fails after this, not 40 s later.
        "request_timeout_ms": int(settings.kafka_request_timeout_seconds * 1000),
        **overrides,
    }
    return AIOKafkaProducer(**_connection_options(settings), **options)


class ResilientProducer:
    """An idempotent producer whose every send is bounded in time and which heals itself.

    aiokafka's own producer can wait forever for an acknowledgement while the broker is
    away (aiokafka issue 1101) and can stay stuck on ``OutOfOrderSequenceNumber`` or a
    fenced producer id after a broker bounce (issue 1017; the advice there is to make a
    new producer). So: every wait here is bounded by ``kafka_send_timeout_seconds``; any
    failure raises a ``KafkaError`` (the caller retries, and outputs carry stable ids, so
    a repeat is harmless) and drops the producer, and the next send starts a fresh one
    with a new producer id. Starting is lazy, so a broker that is down at start-up is
    waited for by the caller's retries instead of ending the process.
    """

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self._settings = settings
        self._overrides = overrides
        self._timeout = settings.kafka_send_timeout_seconds
        self._producer: AIOKafkaProducer | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.recreated = 0

    async def start(self) -> None:
        """Start now if the broker answers; otherwise the first send tries again."""
        with contextlib.suppress(KafkaError):
            await self._ready()

    async def stop(self) -> None:
        """Flush and close (bounded): what is not acknowledged by then is sent again later."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await _close_quietly(producer, self._timeout)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def wait_all(self, futures: Iterable[asyncio.Future[Any]]) -> None:
        """Wait for every acknowledgement, at most the send timeout; raise if any is missing."""
        pending = list(futures)
        if not pending:
            return
        producer = self._producer
        try:
            await asyncio.wait_for(asyncio.gather(*pending), self._timeout)
        except (TimeoutError, KafkaError) as exc:
            for future in pending:
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # retrieved, so asyncio does not log it again
            if producer is not None:
                self._discard(producer, exc)
            raise _as_kafka_error(exc, "waiting for acknowledgements") from exc

    async def queue_all(self, records: Sequence[OutgoingRecord]) -> list[asyncio.Future[Any]]:
        """Queue ``(topic, key, value, headers)`` records at once; their futures (``wait_all``).

        All are queued before the producer's sender runs again, so with ``linger_ms=0``
        they leave in as few requests as the batch size allows, instead of the first one
        going alone and the rest trickling after it. Bounded in time; a failure drops the
        producer, as everywhere here.
        """
        producer = await self._ready()

        async def queue() -> list[asyncio.Future[Any]]:
            return [
                await producer.send(topic, key=key, value=value, headers=list(headers or ()))
                for topic, key, value, headers in records
            ]

        try:
            return await asyncio.wait_for(queue(), self._timeout)
        except (TimeoutError, KafkaError) as exc:
            self._discard(producer, exc)
            raise _as_kafka_error(exc, "queueing records") from exc

    async def send_all(self, records: Sequence[OutgoingRecord]) -> None:
        """Send ``(topic, key, value, headers)`` records and wait until all are acknowledged."""
        await self.wait_all(await self.queue_all(records))

    async def send_each(self, records: Sequence[OutgoingRecord]) -> list[Refusal | None]:
        """Send records; per record None once acknowledged, or its ``Refusal`` for good.

        A record the broker refuses for good (``is_refused_for_good``) must not hold back
        the others, so its error is returned in its place. Any other failure drops the
        producer, as ``send_all`` does, and raises ``SendFailedError`` carrying the
        refusals met by then, so the caller can set those aside before it tries the rest
        again. (With idempotence, the batches after a refused one on its partition fail
        out of sequence: the fresh producer of the next try sends them.)
        """
        producer = await self._ready()
        outcomes: list[Refusal | None] = [None] * len(records)
        futures: dict[int, asyncio.Future[Any]] = {}

        async def queue() -> None:
            for index, (topic, key, value, headers) in enumerate(records):
                try:
                    futures[index] = await producer.send(
                        topic, key=key, value=value, headers=list(headers or ())
                    )
                except KafkaError as exc:
                    if not is_refused_for_good(exc):
                        raise
                    outcomes[index] = Refusal(exc, before_sending=True)

        failure: BaseException | None = None
        try:
            await asyncio.wait_for(queue(), self._timeout)
            results = await asyncio.wait_for(
                asyncio.gather(*futures.values(), return_exceptions=True), self._timeout
            )
        except (TimeoutError, KafkaError) as exc:
            for future in futures.values():
                future.cancel()
            failure = exc
        else:
            refused_by_broker: KafkaError | None = None
            for index, result in zip(futures, results, strict=True):
                if isinstance(result, KafkaError) and is_refused_for_good(result):
                    outcomes[index] = Refusal(result, before_sending=False)
                    refused_by_broker = result
                elif isinstance(result, BaseException) and failure is None:
                    failure = result
            if failure is None and refused_by_broker is not None:
                # The refused batch used up its sequence numbers on that partition: this
                # producer's next batch there would be refused as out of sequence.
                self._discard(producer, refused_by_broker)
        if failure is not None:
            self._discard(producer, failure)
            refusals = {i: e for i, e in enumerate(outcomes) if e is not None}
            raise SendFailedError(
                _as_kafka_error(failure, "sending records"), refusals
            ) from failure
        return outcomes

    async def partitions_for(self, topic: str) -> set[int]:
        """The topic's partitions (asks the broker for metadata if it has to), bounded.

        Raises ``ConnectionError`` (not a ``KafkaError``) when no broker answers at all:
        an absent broker says nothing about the topic, and must not be taken for a
        missing one.
        """
        try:
            producer = await self._ready()
        except KafkaError as exc:
            raise ConnectionError(f"no Kafka broker answers: {exc}") from exc
        try:
            partitions: set[int] = await asyncio.wait_for(
                producer.partitions_for(topic), self._timeout
            )
        except TimeoutError as exc:
            raise KafkaTimeoutError(f"no metadata for {topic} in {self._timeout}s") from exc
        return partitions

    async def _ready(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        producer = make_producer(self._settings, **self._overrides)
        try:
            await asyncio.wait_for(producer.start(), self._timeout)
        except (TimeoutError, KafkaError, OSError) as exc:
            self._close_later(producer)
            raise _as_kafka_error(exc, "starting the producer") from exc
        self._producer = producer
        return producer

    def _discard(self, producer: AIOKafkaProducer, exc: BaseException) -> None:
        if self._producer is not producer:
            return
        self._producer = None
        self.recreated += 1
        log.warning("dropping the Kafka producer; the next send starts a new one", error=repr(exc))
        self._close_later(producer)

    def _close_later(self, producer: AIOKafkaProducer) -> None:
        # Its pending records are abandoned (their senders retry); closing must not block them.
        task = asyncio.ensure_future(_close_quietly(producer, self._timeout))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


async def _close_quietly(producer: AIOKafkaProducer, timeout: float) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), timeout)


def _as_kafka_error(exc: BaseException, what: str) -> KafkaError:
    if isinstance(exc, KafkaError):
        return exc
    return KafkaTimeoutError(f"{what}: no answer from the broker ({exc!r})")


async def broker_accepts_connections(settings: Settings, timeout: float = 2.0) -> bool:
    """Whether any bootstrap address accepts a TCP connection (not whether we may use it).

    Tells "the broker is not there yet" (wait for it) from "it is there and refuses us"
    (wrong security settings: say so and stop).
    """
    for address in settings.kafka_bootstrap_servers.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]") or "localhost", int(port)), timeout
            )
        except (OSError, TimeoutError, ValueError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


def make_consumer(
    settings: Settings, *topics: str, group_id: str, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer that commits only by hand, after the effects of a batch are committed."""
    return AIOKafkaConsumer(
        *topics,
        **_connection_options(settings),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
        fetch_max_bytes=4 * MAX_MESSAGE_BYTES,
        # New partitions and topics are noticed within this, not the default five minutes.
        metadata_max_age_ms=30_000,
        # A request to a broker that went away fails after this, not 40 s later.
        request_timeout_ms=int(settings.kafka_request_timeout_seconds * 1000),
        # A member that stopped heartbeating (SIGSTOP, a dead host) loses its partitions
        # after this; the others take them over.
        session_timeout_ms=int(settings.kafka_session_timeout_seconds * 1000),
        heartbeat_interval_ms=max(int(settings.kafka_session_timeout_seconds * 1000) // 5, 100),
        **overrides,
    )


async def create_topics(
    settings: Settings,
    names: list[str],
    *,
    partitions: int | None = None,
    timeout: float = 30.0,
    configs: Mapping[str, str] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; return those created now.

    Each is replicated ``topic_replication_factor`` times with ``min.insync.replicas`` from
    the settings, so an ``acks=all`` send (every producer of Punchcard) is acknowledged
    only once that many brokers have it. ``configs`` adds topic settings (a benchmark
    asks for broker append timestamps).
    """
    admin = AIOKafkaAdminClient(
        **_connection_options(settings), request_timeout_ms=int(timeout * 1000)
    )
    # aiokafka logs every failed bootstrap attempt itself; the error raised below says it once.
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        await asyncio.wait_for(admin.start(), timeout)
    except (TimeoutError, KafkaConnectionError, OSError) as exc:
        await admin.close()
        raise KafkaUnavailableError(
            f"no Kafka broker answers at {settings.kafka_bootstrap_servers}: "
            f"{exc or type(exc).__name__}. "
            "Check PUNCHCARD_KAFKA_BOOTSTRAP_SERVERS and the PUNCHCARD_KAFKA_* security settings."
        ) from exc
    finally:
        aiokafka_log.setLevel(level)
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n not in existing]
        if not wanted:
            return []
        count = partitions or settings.topic_partitions
        new = [
            NewTopic(
                name,
                num_partitions=count,
                replication_factor=settings.topic_replication_factor,
                topic_configs={
                    "max.message.bytes": str(MAX_MESSAGE_BYTES),
                    "min.insync.replicas": str(settings.min_insync_replicas),
                    **(configs or {}),
                },
            )
            for name in wanted
        ]
        # Another process may make them between our list and create: the same result.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(new)
        return wanted
    finally:
        await admin.close()


async def check_kafka(settings: Settings, timeout: float = 15.0) -> None:
    """Fail fast with a clear message when no broker answers."""
    await create_topics(settings, [], timeout=timeout)
