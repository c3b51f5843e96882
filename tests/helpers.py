"""Helpers every test tier shares: random ids, waiting for conditions, Kafka I/O."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from punchcard_platform.settings import Settings

T = TypeVar("T")

__all__ = ["consume", "eventually", "produce", "unique_id"]


def unique_id(prefix: str = "id") -> str:
    """A fresh contract identifier, so tests sharing one broker and database never meet."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Await ``probe`` until it returns something truthy; fail with its last value on timeout."""
    deadline = time.monotonic() + timeout
    last: T = await probe()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s; last value: {last!r}")
        await asyncio.sleep(interval)
        last = await probe()
    return last


def _bootstrap(settings: Settings) -> list[str]:
    return settings.kafka_bootstrap_servers.split(",")


async def produce(
    settings: Settings,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None]],
    *,
    compression_type: str | None = None,
    partition: int | None = None,
) -> None:
    """Publish ``(key, value)`` pairs as a POS would, waiting for every acknowledgement."""
    producer = AIOKafkaProducer(
        bootstrap_servers=_bootstrap(settings),
        compression_type=compression_type,
        max_request_size=8 * 1024 * 1024,
        linger_ms=5,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key, partition=partition)
            for key, value in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume(
    settings: Settings, topic: str, *, count: int, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``count`` records of a topic from the beginning, without a consumer group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=_bootstrap(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = await eventually(
            lambda: _partitions(consumer, topic), timeout=timeout, what=f"metadata of {topic}"
        )
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        got: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                got.extend(batch)
        if len(got) < count:
            raise AssertionError(f"only {len(got)} of {count} records arrived on {topic}")
        return got
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


def json_bytes(document: dict[str, Any]) -> bytes:
    """Encode a test document as a POS would."""
    return json.dumps(document).encode()
