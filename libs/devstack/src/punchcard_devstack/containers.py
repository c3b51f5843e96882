"""Kafka and PostgreSQL in containers (testcontainers), for machines with a Docker engine.

The images are the official ones, at the versions the native path runs: ``apache/kafka``
(the same release as ``deploy/kafka/pom.xml``) as one KRaft node, and ``postgres`` 15
with the same scratch settings as the native cluster. testcontainers removes them when
they stop, and its reaper removes them if this process dies first.

Kafka must advertise the address clients reach it at, which is only known once a port
is mapped; so the broker's port is bound to a free host port chosen before it starts.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from punchcard_devstack.processes import DevStackError, LogFn, free_port, wait_until

__all__ = ["KAFKA_IMAGE", "POSTGRES_IMAGE", "ContainerServers"]

KAFKA_IMAGE = "apache/kafka:4.3.1"
POSTGRES_IMAGE = "postgres:15"

_KAFKA_PORT = 9092
_POSTGRES_PORT = 5432
_POSTGRES_COMMAND = (
    "postgres -c max_connections=300 -c shared_buffers=256MB "
    "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
)


def _kafka_environment(host: str, host_port: int) -> dict[str, str]:
    """The settings the native broker has (``kafka.py``), as the image's variables."""
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENERS": f"PLAINTEXT://:{_KAFKA_PORT},CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{host_port}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "10",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_MESSAGE_MAX_BYTES": "8388608",
        "KAFKA_REPLICA_FETCH_MAX_BYTES": "8388608",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_HEAP_OPTS": "-Xms256m -Xmx768m",
    }


class ContainerServers:
    """One Kafka and one PostgreSQL container; ``start`` returns where they answer."""

    def __init__(self, *, log: LogFn = print) -> None:
        self._log = log
        self._kafka: Any = None
        self._postgres: Any = None

    def start(self, timeout: float = 180.0) -> tuple[str, str]:
        """Start both (pulling the images the first time); ``(bootstrap_servers, database_url)``."""
        try:
            from testcontainers.core.container import (  # noqa: PLC0415 - Docker machines only
                DockerContainer,
            )
        except ImportError as exc:
            raise DevStackError(
                "the containers path needs testcontainers (uv sync installs it), or set "
                "PUNCHCARD_DEVSTACK=native"
            ) from exc
        self._log(f"starting {KAFKA_IMAGE} and {POSTGRES_IMAGE} with testcontainers")
        kafka_port = free_port()
        kafka = DockerContainer(KAFKA_IMAGE)
        host: str = kafka.get_container_host_ip()
        for name, value in _kafka_environment(host, kafka_port).items():
            kafka.with_env(name, value)
        kafka.with_bind_ports(_KAFKA_PORT, kafka_port)
        postgres = DockerContainer(POSTGRES_IMAGE)
        postgres.with_env("POSTGRES_USER", "punchcard")
        postgres.with_env("POSTGRES_PASSWORD", "punchcard")
        postgres.with_env("POSTGRES_DB", "punchcard")
        postgres.with_exposed_ports(_POSTGRES_PORT)
        postgres.with_command(_POSTGRES_COMMAND)
        try:
            self._kafka = kafka.start()
            self._postgres = postgres.start()
            database_url = (
                f"postgresql://punchcard:punchcard@{postgres.get_container_host_ip()}:"
                f"{postgres.get_exposed_port(_POSTGRES_PORT)}/punchcard"
            )
            deadline = time.monotonic() + timeout
            wait_until(
                lambda: b"Kafka Server started" in b"".join(kafka.get_logs()),
                timeout=max(deadline - time.monotonic(), 1.0),
                what=f"starting {KAFKA_IMAGE}",
            )
            wait_until(
                lambda: _database_answers(database_url),
                timeout=max(deadline - time.monotonic(), 1.0),
                what=f"starting {POSTGRES_IMAGE}",
            )
        except BaseException:
            self.stop()
            raise
        return f"{host}:{kafka_port}", database_url

    def stop(self) -> None:
        """Stop and remove both containers."""
        for container in (self._kafka, self._postgres):
            if container is not None:
                try:
                    container.stop()
                except Exception as exc:  # the reaper removes what is left
                    self._log(f"could not stop a container: {exc!r}")
        self._kafka = self._postgres = None


def _database_answers(url: str) -> bool:
    # The image's entrypoint starts a temporary server to initialise the database and
    # then restarts it: only a query that succeeds means the real one is up.
    import asyncpg  # noqa: PLC0415 - keeps this module's import free of the driver

    async def ask() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=2)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        try:
            return bool(await conn.fetchval("SELECT 1"))
        finally:
            await conn.close()

    return asyncio.run(ask())
