"""One launcher for Kafka and PostgreSQL: what ``make run``, the tests and the benchmarks use.

When ``PUNCHCARD_KAFKA_BOOTSTRAP_SERVERS`` and ``PUNCHCARD_DATABASE_URL`` are both set,
it starts nothing and hands those back. Otherwise it starts a broker (or a cluster of
``brokers`` nodes, each with its own ports and data) and a database, and removes them on
exit: natively, on free loopback ports in a scratch directory, or as containers when a
Docker engine answers (``backend.py`` decides, ``PUNCHCARD_DEVSTACK`` overrides).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from punchcard_devstack.backend import (
    DEVSTACK_VARIABLE,
    Backend,
    choose_backend,
    docker_engine_answers,
)
from punchcard_devstack.containers import ContainerServers
from punchcard_devstack.kafka import KafkaBroker, ensure_kafka_jars, new_cluster_id
from punchcard_devstack.postgres import PostgresServer
from punchcard_devstack.processes import DevStackError, LogFn, free_port

__all__ = ["DevStack", "Endpoints", "endpoints_from_environment"]

Step = Callable[[], None]


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the broker and the database answer."""

    bootstrap_servers: str
    database_url: str

    def environment(self) -> dict[str, str]:
        """The variables a Punchcard process needs to use them."""
        return {
            "PUNCHCARD_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "PUNCHCARD_DATABASE_URL": self.database_url,
        }


def endpoints_from_environment() -> Endpoints | None:
    """Existing infrastructure named by the environment, if both halves are named."""
    servers = os.environ.get("PUNCHCARD_KAFKA_BOOTSTRAP_SERVERS")
    url = os.environ.get("PUNCHCARD_DATABASE_URL")
    return Endpoints(servers, url) if servers and url else None


class DevStack:
    """Start Kafka and PostgreSQL (or use the configured ones); stop them on exit.

    ``backend``: force ``native`` or ``containers``; by default ``choose_backend`` decides
    from ``PUNCHCARD_DEVSTACK`` and whether a Docker engine answers. Callers that kill and
    restart the servers (the fault suite) need ``native``: ``kafka`` and ``postgres`` are
    only set there.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        log: LogFn = print,
        brokers: int = 1,
        backend: Backend | None = None,
    ) -> None:
        if brokers < 1:
            raise DevStackError(f"a Kafka cluster needs at least one broker, not {brokers}")
        self._log = log
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="punchcard-stack-"))
        self.broker_count = brokers
        self.backend = backend
        self._containers: ContainerServers | None = None
        self.brokers: list[KafkaBroker] = []
        """Every node of the cluster; ``kafka`` is the first of them."""
        self.kafka: KafkaBroker | None = None
        self.postgres: PostgresServer | None = None
        self.endpoints: Endpoints | None = None
        self.startup_seconds: float = 0.0

    def start(self) -> Endpoints:
        """Bring both up and wait until they really answer; on failure, stop what started."""
        existing = endpoints_from_environment()
        if existing is not None:
            self._log("using Kafka and PostgreSQL from PUNCHCARD_* environment")
            self.endpoints = existing
            return existing
        started = time.monotonic()
        if self.backend is None:
            self.backend = choose_backend(
                os.environ.get(DEVSTACK_VARIABLE), docker_engine_answers, brokers=self.broker_count
            )
        if self.backend == "containers":
            return self._start_containers(started)
        # The database user must be able to reach its folder below ours.
        self.workdir.chmod(0o755)
        try:
            self.brokers = self._make_brokers()
            self.kafka = self.brokers[0]
            self.postgres = PostgresServer(self.workdir / "postgres", port=free_port())
            jars = ensure_kafka_jars(log=self._log)
            self._in_parallel(
                *[lambda b=broker: b.format_storage(jars) for broker in self.brokers],
                self._postgres().init_cluster,
            )
            # Servers are spawned from this thread: their parent-death signal is tied to it.
            for broker in self.brokers:
                broker.start(jars)
            self._postgres().start()
            # Together: the nodes of a cluster only start once a quorum of them is up.
            self._in_parallel(
                *[broker.wait_ready for broker in self.brokers], self._postgres().wait_ready
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        self.endpoints = Endpoints(
            ",".join(broker.bootstrap_servers for broker in self.brokers),
            self._postgres().database_url,
        )
        self._log(
            f"Kafka at {self.endpoints.bootstrap_servers}, PostgreSQL at "
            f"{self.endpoints.database_url} (started in {self.startup_seconds:.1f}s; "
            f"logs in {self.workdir})"
        )
        return self.endpoints

    def _start_containers(self, started: float) -> Endpoints:
        self._containers = ContainerServers(log=self._log)
        try:
            bootstrap_servers, database_url = self._containers.start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        self.endpoints = Endpoints(bootstrap_servers, database_url)
        self._log(
            f"Kafka at {bootstrap_servers}, PostgreSQL at {database_url} in containers "
            f"(started in {self.startup_seconds:.1f}s)"
        )
        return self.endpoints

    def stop(self) -> None:
        """Stop every server and remove the scratch directory we made."""
        if self._containers is not None:
            self._containers.stop()
            self._containers = None
        # The brokers of a cluster stop together: one by one, the last ones would wait
        # for a quorum that has already left.
        self._in_parallel(*[broker.stop for broker in self.brokers])
        if self.postgres is not None:
            self.postgres.stop()
        for broker in self.brokers:
            broker.remove_data()
        self.brokers = []
        self.kafka = self.postgres = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Endpoints:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _make_brokers(self) -> list[KafkaBroker]:
        if self.broker_count == 1:
            return [
                KafkaBroker(self.workdir / "kafka", port=free_port(), controller_port=free_port())
            ]
        nodes = [(node_id, free_port(), free_port()) for node_id in range(1, self.broker_count + 1)]
        voters = [(node_id, controller_port) for node_id, _, controller_port in nodes]
        cluster_id = new_cluster_id()
        return [
            KafkaBroker(
                self.workdir / f"kafka-{node_id}",
                port=port,
                controller_port=controller_port,
                node_id=node_id,
                voters=voters,
                cluster_id=cluster_id,
            )
            for node_id, port, controller_port in nodes
        ]

    def _postgres(self) -> PostgresServer:
        if self.postgres is None:
            raise DevStackError("PostgreSQL is not part of this stack")
        return self.postgres

    @staticmethod
    def _in_parallel(*steps: Step) -> None:
        errors: list[BaseException] = []

        def run(step: Step) -> None:
            try:
                step()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(step,)) for step in steps]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
