"""Apache Kafka's own broker in KRaft mode, from Maven Central jars: one node, or a cluster.

One node is its own controller quorum (``--standalone``). A cluster of three (``--brokers
3``) runs each node as broker and controller, with a static quorum of all three, one
cluster id, and replication factor 3 with ``min.insync.replicas=2`` for every topic it
makes by itself (offsets, transactions), as production Kafka runs.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from punchcard_devstack.processes import (
    DevStackError,
    LogFn,
    port_answers,
    repo_root,
    spawn,
    stop_process,
    wait_until,
)

__all__ = ["KafkaBroker", "ensure_kafka_jars", "new_cluster_id", "server_properties"]

_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id={node_id}
{quorum}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir}
num.partitions=1
default.replication.factor={replicas}
min.insync.replicas={min_insync}
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=10
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_insync}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_insync}
group.initial.rebalance.delay.ms=0
# Input values may be up to 1 MiB and dead letters carry them unchanged.
message.max.bytes=8388608
replica.fetch.max.bytes=8388608
auto.create.topics.enable=false
log.flush.interval.messages=9223372036854775807
"""


def server_properties(
    *,
    node_id: int,
    port: int,
    controller_port: int,
    data_dir: Path,
    voters: Sequence[tuple[int, int]] = (),
) -> str:
    """One node's ``server.properties``; ``voters``: every node's (id, controller port).

    No voters: a single node, its own quorum. Voters: a static quorum of those nodes, and
    the internal topics replicated to all of them (at most 3), two in sync.
    """
    if voters:
        quorum = "controller.quorum.voters=" + ",".join(
            f"{voter}@127.0.0.1:{voter_port}" for voter, voter_port in voters
        )
        replicas = min(len(voters), 3)
    else:
        quorum = f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}"
        replicas = 1
    return _SERVER_PROPERTIES.format(
        node_id=node_id,
        quorum=quorum,
        port=port,
        controller_port=controller_port,
        data_dir=data_dir,
        replicas=replicas,
        min_insync=max(1, min(2, replicas - 1)),
    )


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _cache_dir() -> Path:
    base = os.environ.get("PUNCHCARD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "punchcard"
    )
    return Path(base)


def ensure_kafka_jars(*, log: LogFn = print) -> Path:
    """The folder of broker jars, fetched once with Maven and cached by the pom's hash."""
    pom = repo_root() / "deploy" / "kafka" / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    target = _cache_dir() / f"kafka-jars-{digest}"
    if (target / ".complete").exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevStackError(
            "Maven (mvn) is needed once to fetch the Kafka jars: apt-get install maven"
        )
    log(f"fetching the Kafka broker jars from Maven Central into {target} (once)")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run(  # noqa: S603 - fixed argv
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DevStackError(f"mvn could not fetch the Kafka jars:\n{result.stdout}{result.stderr}")
    (partial / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home, "bin", "java") if java_home else None
    java = str(candidate) if candidate and candidate.exists() else shutil.which("java")
    if java is None:
        raise DevStackError(
            "Java 17 or newer is needed to run the Kafka broker and none was found: "
            "apt-get install openjdk-17-jre-headless (or set JAVA_HOME)"
        )
    return java


# A private folder is made in it with mkdtemp, as in /tmp.
_MEMORY_FS = Path("/dev/shm")  # noqa: S108
_MEMORY_PREFIX = "punchcard-kafka-"


def _log_dir_for(workdir: Path) -> Path:
    """Where the broker keeps its partitions: in memory (tmpfs) when the machine has it.

    On a disk, the broker's writes wait for the filesystem now and then. Measured on this
    project's 2-core VMs (ext4): a produce request every second or so took 45-50 ms of the
    broker's own time, in the first write to a page of a partition's memory-mapped index,
    which waited for the filesystem journal; that alone made a return's outcome p99 60 ms
    instead of 24. The dev stack is a scratch cluster (PostgreSQL runs with fsync=off for
    the same reason), so its partitions live in /dev/shm, and only what outlives a crash
    of the broker process matters: tmpfs keeps that, as a disk would.
    """
    if not (_MEMORY_FS.is_dir() and os.access(_MEMORY_FS, os.W_OK)):
        return workdir / "data"
    _remove_orphans()
    return Path(tempfile.mkdtemp(prefix=f"{_MEMORY_PREFIX}{os.getpid()}-", dir=_MEMORY_FS))


def _remove_orphans() -> None:
    """Remove the in-memory logs of stacks whose process died without stopping them."""
    for path in _MEMORY_FS.glob(f"{_MEMORY_PREFIX}*"):
        pid = path.name.removeprefix(_MEMORY_PREFIX).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class KafkaBroker:
    """One broker+controller on loopback ports; config and logs in ``workdir``.

    The partitions themselves live in ``log_dir``: in memory when the machine has a
    tmpfs (see ``_log_dir_for``), else below ``workdir``. ``remove_data`` deletes them.
    In a cluster, ``node_id`` is this node's id and ``voters`` every node's (id, controller
    port), this one's included; all nodes are formatted with one ``cluster_id``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int,
        controller_port: int,
        node_id: int = 1,
        voters: Sequence[tuple[int, int]] = (),
        cluster_id: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.log_dir = _log_dir_for(workdir)
        self.port = port
        self.controller_port = controller_port
        self.node_id = node_id
        self.voters = tuple(voters)
        self.cluster_id = cluster_id or new_cluster_id()
        self._java = _java()
        self._proc: subprocess.Popen[bytes] | None = None
        self._jars: Path | None = None
        # Where this start's lines begin in server.log: log4j2 appends across restarts.
        self._log_offset = 0

    @property
    def bootstrap_servers(self) -> str:
        """What clients connect to."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        """The broker's own log (log4j2 writes it)."""
        return self.workdir / "server.log"

    def _classpath(self, jars: Path) -> list[str]:
        config = repo_root() / "deploy" / "kafka" / "log4j2.xml"
        return [
            "-cp",
            f"{jars}/*",
            f"-Dlog4j2.configurationFile={config}",
            f"-Dkafka.logs.dir={self.workdir}",
        ]

    def format_storage(self, jars: Path) -> None:
        """Write the config and format the KRaft storage (``StorageTool format --standalone``)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "server.properties"
        config.write_text(
            server_properties(
                node_id=self.node_id,
                port=self.port,
                controller_port=self.controller_port,
                data_dir=self.log_dir,
                voters=self.voters,
            )
        )
        # A static quorum (voters) is formatted as it is; a single node stands alone.
        standalone = [] if self.voters else ["--standalone"]
        result = subprocess.run(  # noqa: S603 - fixed argv
            [
                self._java,
                *self._classpath(jars),
                "kafka.tools.StorageTool",
                "format",
                *standalone,
                # One argument, not two: a base64 id may start with "-".
                f"--cluster-id={self.cluster_id}",
                "-c",
                str(config),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise DevStackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def start(self, jars: Path) -> None:
        """Start ``kafka.Kafka`` with a small heap; returns at once (see ``wait_ready``)."""
        self._jars = jars
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        self._proc = spawn(
            [
                self._java,
                "-Xms256m",
                "-Xmx768m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
                *self._classpath(jars),
                "kafka.Kafka",
                str(self.workdir / "server.properties"),
            ],
            log_file=self.workdir / "stdout.log",
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the broker has started and accepts connections."""

        def started() -> bool:
            return (
                self.log_file.exists()
                and "Kafka Server started" in self._log_since_start()
                and port_answers(self.port)
            )

        def failed() -> str | None:
            if self._proc is not None and self._proc.poll() is not None:
                return f"the broker exited with {self._proc.returncode}; see {self.log_file}"
            return None

        wait_until(started, timeout=timeout, what="starting Kafka", failed=failed)

    def _log_since_start(self) -> str:
        with self.log_file.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def kill(self) -> None:
        """SIGKILL the broker: the crash a fault test injects; data and ports stay as they are."""
        if self._proc is not None:
            stop_process(self._proc, sig=signal.SIGKILL, timeout=10)
            self._proc = None

    def start_again(self) -> None:
        """Start on the same data directory and ports as before; returns at once.

        Call it from the thread that started the stack: the broker's parent-death signal
        is tied to the spawning thread. ``wait_ready`` may then run in any thread.
        """
        if self._jars is None:
            raise DevStackError("the broker was never started, so there is nothing to restart")
        if self.pid is not None:
            raise DevStackError("the broker is still running; kill it first")
        self.start(self._jars)

    def restart(self, timeout: float = 60.0) -> None:
        """Start again on the same data directory and ports, and wait until it is ready.

        Kills a broker that still runs first, so this is also "crash and come back".
        """
        self.kill()
        self.start_again()
        self.wait_ready(timeout)

    def stop(self) -> None:
        """Stop the broker (controlled shutdown on SIGTERM)."""
        if self._proc is not None:
            stop_process(self._proc, timeout=30)
            self._proc = None

    def remove_data(self) -> None:
        """Delete in-memory partitions (call after ``stop``): they outlive ``workdir``."""
        if not self.log_dir.is_relative_to(self.workdir):
            shutil.rmtree(self.log_dir, ignore_errors=True)
