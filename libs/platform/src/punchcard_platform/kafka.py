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
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from punchcard_platform.errors import KafkaUnavailableError
from punchcard_platform.settings import Settings

__all__ = [
    "MAX_MESSAGE_BYTES",
    "create_topics",
    "make_consumer",
    "make_producer",
]

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


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer with acks=all: no record lost or doubled by its own retries."""
    return AIOKafkaProducer(
        **_connection_options(settings),
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_request_size=MAX_MESSAGE_BYTES,
        **overrides,
    )


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
        **overrides,
    )


async def create_topics(
    settings: Settings, names: list[str], *, partitions: int | None = None, timeout: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; return those created now."""
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
                topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)},
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
