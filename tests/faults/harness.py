"""Drive the real system through a fault: services as processes, a steady load, the checks.

A scenario owns its topics, consumer groups and ids, so scenarios share one broker and one
database and only ever meet when a fault restarts those for everyone (they run one after
the other). Everything here talks to Kafka and PostgreSQL the way an outsider would: it
publishes to the input topics, reads the output topics, and reads the tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from punchcard_contract.events import event_id_for
from punchcard_coupon_query.apikeys import create_api_key
from punchcard_devstack import DevStack, ServiceProcess
from punchcard_devstack.processes import free_port
from punchcard_platform.db import Database
from punchcard_platform.kafka import create_topics
from punchcard_platform.settings import Settings, TopicNames

from tests.faults.model import (
    EXPIRY_CAUSE,
    SALE,
    Expected,
    InputRecord,
    Outcome,
    expected_state,
    quantity,
)
from tests.faults.workload import (
    CAPPED_PER_CUSTOMER,
    CAPPED_TOTAL,
    HELD_PER_CUSTOMER,
    Planned,
    PlannedReservation,
    Workload,
)

__all__ = [
    "RECOVERY_LIMIT_SECONDS",
    "Result",
    "Scenario",
    "replication_of",
]

RECOVERY_LIMIT_SECONDS = 10.0
"""How long after the broker or the database answers again the system may take to catch up."""

SETTLE_DEADLINE_SECONDS = 150.0
"""How long after the load ends everything published must be accounted for."""

EXPIRY_CHECK_SECONDS = 1.0
"""The services' ``PUNCHCARD_POINTS_EXPIRY_CHECK_SECONDS``: how late a lot may expire."""

EXPIRY_DEADLINE_SECONDS = 60.0
"""How long after the last lot's expiry (and one check interval) every due lot must be gone."""

LIFETIME = "P1Y"
"""The services' ``PUNCHCARD_POINTS_LIFETIME``: every lot and every restore carries an
expiry, none of which comes during a run (the load's sales say they happened days ago, so
a lifetime short enough to come would expire them as they land, in whatever order the
partitions give); the load's limited-time points are the ones that expire."""

RESERVATION_DEADLINE_SECONDS = 120.0
"""How long a reservation call (or a release) is retried through a fault before it counts
as never answered."""

REFUSALS = frozenset({"exhausted", "reserved", "sold_out", "exceeds_remaining"})
"""The reasons a 409 may give for the load's reservations (their coupons are active,
unbounded in time and valid at every store)."""

log = logging.getLogger("punchcard.faults")


def say(line: str) -> None:
    """Progress on stderr, so ``-s`` shows where a long scenario is."""
    print(f"[faults {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class Result:
    """One row of the table, and what lies behind each non-zero count."""

    scenario: str
    records: int = 0
    lost: int = 0
    doubled: int = 0
    wrong: int = 0
    missing_events: int = 0
    out_of_order: int = 0
    repeated: int = 0
    recovery: list[tuple[str, float | None]] = field(default_factory=list)
    unexpected_exits: int = 0
    settle_seconds: float | None = None
    expired_lots: int = 0
    over_reserved: int = 0
    """Uses granted past a coupon's ``total_uses_permitted`` or a customer's
    ``uses_permitted`` (the capped coupon is never released nor left to lapse)."""
    reservations: str = "-"
    """Reservations granted of calls made"""
    expiry_too_soon: bool = False
    """The load was still being applied when a lot that waits for it expired: its amount
    is not checkable."""
    details: list[str] = field(default_factory=list)

    @property
    def recover_seconds(self) -> float | None:
        """The slowest recovery after a broker or database restart (``inf`` if it never did)."""
        if not self.recovery:
            return None
        return max(float("inf") if s is None else s for _, s in self.recovery)

    def note(self, what: str, items: Any, limit: int = 8) -> None:
        """Keep a few examples of a failure for the report."""
        listed = sorted(items, key=str)
        if listed:
            self.details.append(f"{what} ({len(listed)}): {listed[:limit]}")

    def failures(self) -> list[str]:
        """Why this scenario fails, empty when it passes."""
        problems = [
            f"{name}={value}"
            for name, value in (
                ("lost", self.lost),
                ("doubled", self.doubled),
                ("wrong", self.wrong),
                ("missing_events", self.missing_events),
                ("out_of_order", self.out_of_order),
                ("over_reserved", self.over_reserved),
            )
            if value
        ]
        if self.expiry_too_soon:
            problems.append("a lot that waits for the load expired before it was applied")
        slow = [
            f"{what} {'never' if s is None else f'{s:.1f}s'}"
            for what, s in self.recovery
            if s is None or s > RECOVERY_LIMIT_SECONDS
        ]
        if slow:
            problems.append(f"recovery over {RECOVERY_LIMIT_SECONDS:.0f}s: {', '.join(slow)}")
        return problems


# --- services as processes, restarted like a supervisor would --------------------------------


@dataclass(slots=True)
class Slot:
    """One instance of a service that should be running, whatever process it is now."""

    name: str
    index: int
    process: ServiceProcess | None = None
    wanted: bool = True
    generation: int = 0
    killed_by_us: bool = False


class Fleet:
    """The scenario's service processes, and a supervisor that restarts the ones that exit."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self._env = env
        self._logdir = logdir
        self.slots: list[Slot] = []
        self.unexpected_exits: list[str] = []
        self._counts: Counter[str] = Counter()

    def add(self, name: str) -> Slot:
        """Start one more instance of ``name`` (returns at once; it joins when it is up)."""
        slot = Slot(name, self._counts[name])
        self._counts[name] += 1
        self.slots.append(slot)
        self._start(slot)
        return slot

    def _start(self, slot: Slot) -> None:
        slot.generation += 1
        slot.killed_by_us = False
        log_file = self._logdir / f"{slot.name}-{slot.index}-{slot.generation}.log"
        slot.process = ServiceProcess(slot.name, env=self._env, port=free_port(), log_file=log_file)
        slot.process.start()

    def of(self, name: str) -> list[Slot]:
        """The wanted instances of one service."""
        return [s for s in self.slots if s.name == name and s.wanted]

    def kill(self, slot: Slot, *, restart: bool = True) -> None:
        """SIGKILL; the supervisor starts it again unless ``restart`` is false."""
        slot.killed_by_us = True
        slot.wanted = restart
        if slot.process is not None:
            slot.process.kill()
        if restart:
            self._start(slot)

    async def wait_healthy(self, timeout: float = 90.0) -> None:
        """Until every wanted instance answers ``/healthz``."""
        async with httpx.AsyncClient(timeout=2) as http:
            deadline = time.monotonic() + timeout
            for slot in [s for s in self.slots if s.wanted]:
                while True:
                    process = slot.process
                    if process is not None:
                        with contextlib.suppress(httpx.HTTPError):
                            if (await http.get(f"{process.url}/healthz")).status_code == 200:
                                break
                    if time.monotonic() > deadline:
                        tail = process.log_tail() if process else "(not started)"
                        raise AssertionError(f"{slot.name} not healthy:\n{tail}")
                    await asyncio.sleep(0.2)

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart any wanted instance whose process ended by itself, and count those exits."""
        while not stop.is_set():
            for slot in self.slots:
                process = slot.process
                if not slot.wanted or process is None or process.exit_code is None:
                    continue
                tail = process.log_tail(3).replace("\n", " | ")
                self.unexpected_exits.append(
                    f"{slot.name}#{slot.index} exited {process.exit_code}: {tail[-300:]}"
                )
                say(f"{slot.name}#{slot.index} exited by itself ({process.exit_code}); restarting")
                self._start(slot)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    def stop_all(self) -> None:
        """SIGTERM every process, SIGCONT first in case it is frozen."""
        for slot in self.slots:
            if slot.process is not None and slot.process.running:
                with contextlib.suppress(Exception):
                    slot.process.resume()
                slot.process.terminate(timeout=20)

    def logs_matching(self, needle: str) -> list[str]:
        """Log lines of every process of this scenario that contain ``needle``."""
        lines = []
        for path in sorted(self._logdir.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if needle in line:
                    lines.append(f"{path.name}: {line[:400]}")
        return lines


# --- the load ---------------------------------------------------------------------------------


class Publisher:
    """Sends the schedule on time, as a POS fleet would; rides out a broker restart by resending.

    A send whose outcome is unknown is sent again with the same bytes: for the contract
    that is a redelivery, and the model reads the log, so it sees exactly what happened.
    """

    def __init__(self, settings: Settings, workload: Workload) -> None:
        self._settings = settings
        self._workload = workload
        self._producer: AIOKafkaProducer | None = None
        self.sent = 0
        self.resent = 0
        self.started = 0.0
        self.started_at = datetime.now(UTC)
        self.finished = asyncio.Event()

    def _topic(self, planned: Planned) -> str:
        topics = self._settings.topics
        return topics.receipts if planned.stream == "receipts" else topics.returns

    async def run(self) -> None:
        """Publish every planned record, at its time or as soon after as the broker allows."""
        schedule = self._workload.schedule
        self.started = time.monotonic()
        self.started_at = datetime.now(UTC).replace(microsecond=0)
        i = 0
        try:
            while i < len(schedule):
                now = time.monotonic() - self.started
                j = i
                while j < len(schedule) and schedule[j].at <= now:
                    j += 1
                if j == i:
                    await asyncio.sleep(min(0.05, schedule[i].at - now))
                    continue
                await self._send_all(schedule[i:j])
                i = j
        finally:
            await self._reset()
            self.finished.set()

    async def send(self, items: list[Planned]) -> None:
        """Publish these now, resending until the broker takes them (not with ``run``)."""
        await self._send_all(items)

    async def close(self) -> None:
        """Stop the producer ``send`` started."""
        await self._reset()

    async def _send_all(self, items: list[Planned]) -> None:
        pending = items
        while pending:
            try:
                producer = await self._ensure_producer()
                futures = [
                    await asyncio.wait_for(
                        producer.send(
                            self._topic(p),
                            key=p.key.encode(),
                            value=json.dumps(self._workload.dated(p, self.started_at)).encode(),
                        ),
                        10,
                    )
                    for p in pending
                ]
                results = await asyncio.wait_for(
                    asyncio.gather(*futures, return_exceptions=True), 15
                )
            except Exception as exc:
                log.info("load: send failed (%r); resending %d", exc, len(pending))
                self.resent += len(pending)
                await self._reset()
                await asyncio.sleep(0.5)
                continue
            failed = [
                p for p, r in zip(pending, results, strict=True) if isinstance(r, BaseException)
            ]
            self.sent += len(pending) - len(failed)
            if failed:
                self.resent += len(failed)
                await self._reset()
                await asyncio.sleep(0.5)
            pending = failed

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._settings.kafka_bootstrap_servers.split(","),
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
                request_timeout_ms=10_000,
            )
            try:
                await asyncio.wait_for(producer.start(), 10)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 5)
                raise
            self._producer = producer
        return self._producer

    async def _reset(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)


@dataclass(frozen=True, slots=True)
class Answer:
    """The final answer to a reservation call: its status and its JSON body."""

    status: int
    body: dict[str, Any]


class Reserver:
    """Makes the load's reservation calls as checkouts would, through the faults.

    A call that fails (connection refused, a timeout, a 5xx while the database is away)
    is made again with the same ``Idempotency-Key`` and body, so a retry never holds a
    second time: every hold in the database must be one the reserver was answered with.
    A granted reservation then meets its fate: a sale naming it is published, it is
    released (DELETE, retried the same way), or it is kept or left to lapse.
    """

    def __init__(
        self, workload: Workload, publisher: Publisher, url: Callable[[], str], key: str
    ) -> None:
        self._workload = workload
        self._publisher = publisher
        self._url = url
        self._headers = {"Authorization": f"Bearer {key}"}
        self._sending = asyncio.Lock()
        self.granted: dict[str, PlannedReservation] = {}
        """reservation_id -> the call that was granted it"""
        self.refused: dict[str, str] = {}
        """idempotency key -> the 409's reason"""
        self.unanswered: list[str] = []
        self.retried = 0

    async def run(self, started: float) -> None:
        """Each call at its time (counted from ``started``), each in a task of its own."""
        calls: list[asyncio.Future[None]] = []
        try:
            for planned in self._workload.reservations:
                delay = planned.at - (time.monotonic() - started)
                if delay > 0:
                    await asyncio.sleep(delay)  # the schedule's moment, as the publisher's
                calls.append(asyncio.ensure_future(self._one(planned)))
            await asyncio.gather(*calls)
        finally:
            await self._publisher.close()

    async def _one(self, planned: PlannedReservation) -> None:
        path = f"/v1/customers/{planned.customer_id}/coupons/{planned.coupon_id}/reservations"
        body = {"uses": 1, "ttl_seconds": planned.ttl_seconds, "store_id": "S0001"}
        answer = await self._call(
            "POST", path, json=body, headers={"Idempotency-Key": planned.idempotency_key}
        )
        if answer is None or answer.status not in (201, 409):
            self.unanswered.append(f"{planned.idempotency_key}: {answer}")
            return
        if answer.status == 409:
            self.refused[planned.idempotency_key] = str(answer.body.get("reason"))
            return
        reservation_id = str(answer.body["reservation_id"])
        self.granted[reservation_id] = planned
        if planned.fate == "consume":
            sale = self._workload.reserved_sale(planned, reservation_id)
            async with self._sending:
                await self._publisher.send([Planned(0.0, "receipts", planned.transaction_no, sale)])
        elif planned.fate == "release":
            released = await self._call("DELETE", f"/v1/reservations/{reservation_id}")
            if released is None or released.status != 204:
                self.unanswered.append(f"release of {reservation_id}: {released}")

    async def _call(self, method: str, path: str, **kwargs: Any) -> Answer | None:
        """Until an answer below 500 or the deadline; None if there never was one."""
        deadline = time.monotonic() + RESERVATION_DEADLINE_SECONDS
        async with httpx.AsyncClient(headers=self._headers, timeout=5) as http:
            while time.monotonic() < deadline:
                try:
                    # Read each time: a restarted coupon-query listens on another port.
                    response = await http.request(method, self._url() + path, **kwargs)
                except httpx.HTTPError as exc:
                    log.info("reservations: %s %s failed (%r); again", method, path, exc)
                else:
                    if response.status_code < 500:
                        body = response.json() if response.content else {}
                        return Answer(response.status_code, body)
                self.retried += 1
                await asyncio.sleep(0.5)
        return None


# --- reading topics ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    """One record read from a topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


_STALL_SECONDS = 5.0
"""A partition behind its end that long without a record means the reader went deaf."""


class TopicReader:
    """Reads topics from the beginning for the whole scenario, through broker restarts.

    After a broker restart an aiokafka client can stop receiving for good and even stop
    answering cancellation (aiokafka issue 1037), so its liveness is judged from outside:
    a fresh client's end offsets against what this one has read. A deaf client is
    abandoned (cancelled, not awaited) and a new one reads every topic again from the
    beginning, so what the reader shows never depends on a position it left behind.
    """

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        self._settings = settings
        self._topics = topics
        self.records: dict[str, list[Seen]] = {t: [] for t in topics}
        self._positions: dict[TopicPartition, int] = {}
        self._progressed = time.monotonic()
        self._generation = 0
        self.restarts = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Keep reading until ``stop``; a failing or deaf client is replaced."""
        while not stop.is_set():
            self.records = {t: [] for t in self._topics}
            self._positions = {}
            self._progressed = time.monotonic()
            self._generation += 1
            client = asyncio.ensure_future(self._read_with_new_client(stop, self._generation))
            try:
                while not client.done() and not stop.is_set():
                    await asyncio.wait({client}, timeout=_STALL_SECONDS)
                    if not client.done() and await self._deaf():
                        log.info("reader: the client went deaf; replacing it")
                        break
            finally:
                if not client.done():
                    client.cancel()  # not awaited: a deaf client may never finish cancelling
            if client.done() and not client.cancelled() and client.exception() is not None:
                log.info("reader: %r; reconnecting", client.exception())
            if not stop.is_set():
                self.restarts += 1
                await asyncio.sleep(0.5)

    async def _deaf(self) -> bool:
        if time.monotonic() - self._progressed < _STALL_SECONDS:
            return False
        try:
            ends = await end_offsets(self._settings, self._topics)
        except Exception:  # the broker may be away: nothing to judge by yet
            return False
        return any(end > self._positions.get(tp, 0) for tp, end in ends.items())

    async def _read_with_new_client(self, stop: asyncio.Event, generation: int) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap_servers.split(","),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=10_000,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        try:
            await asyncio.wait_for(consumer.start(), 10)
            await self._read(consumer, stop, generation)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)

    async def _read(self, consumer: AIOKafkaConsumer, stop: asyncio.Event, generation: int) -> None:
        partitions: list[TopicPartition] = []
        for topic in self._topics:
            await asyncio.wait_for(consumer._client.force_metadata_update(), 10)
            found = consumer.partitions_for_topic(topic)
            if not found:
                raise RuntimeError(f"no metadata for {topic} yet")
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        while not stop.is_set():
            batches = await asyncio.wait_for(consumer.getmany(timeout_ms=300), 15)
            if generation != self._generation:
                return  # abandoned as deaf, and woke up: its replacement reads instead
            for tp, batch in batches.items():
                for r in batch:
                    if r.offset < self._positions.get(tp, 0):
                        continue
                    headers = dict(r.headers or ())
                    self.records[tp.topic].append(
                        Seen(r.partition, r.offset, r.key, r.value or b"", headers)
                    )
                    self._positions[tp] = r.offset + 1
                    self._progressed = time.monotonic()


async def read_to_end(settings: Settings, topic: str, timeout: float = 60.0) -> list[Seen]:
    """Every record of a topic as it is now (it has no more writers)."""
    reader = TopicReader(settings, [topic])
    stop = asyncio.Event()
    task = asyncio.ensure_future(reader.run(stop))
    try:
        deadline = time.monotonic() + timeout
        while True:
            ends = await end_offsets(settings, [topic])
            if all(reader._positions.get(tp, 0) >= end for tp, end in ends.items()):
                return reader.records[topic]
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end within {timeout}s")
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task


async def end_offsets(settings: Settings, topics: list[str]) -> dict[TopicPartition, int]:
    """The current end of every partition of these topics."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","), enable_auto_commit=False
    )
    await asyncio.wait_for(consumer.start(), 10)
    try:
        await asyncio.wait_for(consumer._client.force_metadata_update(), 10)
        partitions = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        ends: dict[TopicPartition, int] = await asyncio.wait_for(
            consumer.end_offsets(partitions), 10
        )
        return ends
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 5)


async def committed_offsets(settings: Settings, group: str) -> dict[TopicPartition, int]:
    """What a consumer group has committed."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","), request_timeout_ms=5000
    )
    await asyncio.wait_for(admin.start(), 10)
    try:
        offsets = await asyncio.wait_for(admin.list_consumer_group_offsets(group), 10)
        return {tp: meta.offset for tp, meta in offsets.items()}
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin.close(), 5)


async def _describe(settings: Settings, topics: list[str]) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","), request_timeout_ms=5000
    )
    await asyncio.wait_for(admin.start(), 10)
    try:
        described: list[dict[str, Any]] = await asyncio.wait_for(admin.describe_topics(topics), 10)
        return described
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin.close(), 5)


async def replication_of(settings: Settings, topic: str) -> tuple[set[int], str]:
    """How many replicas each partition of ``topic`` has, and its ``min.insync.replicas``."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","), request_timeout_ms=5000
    )
    await asyncio.wait_for(admin.start(), 10)
    try:
        [described] = await asyncio.wait_for(admin.describe_topics([topic]), 10)
        [configs] = await asyncio.wait_for(
            admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)]), 10
        )
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin.close(), 5)
    # A DescribeConfigs response: resources of (error, message, type, name, entries).
    entries = {entry[0]: entry[1] for entry in configs.resources[0][4]}
    replicas = {len(partition["replicas"]) for partition in described["partitions"]}
    return replicas, entries["min.insync.replicas"]


async def partition_leaders(settings: Settings, topics: list[str]) -> dict[TopicPartition, int]:
    """The node id leading each partition of these topics."""
    return {
        TopicPartition(topic["topic"], partition["partition"]): partition["leader"]
        for topic in await _describe(settings, topics)
        for partition in topic["partitions"]
    }


async def under_replicated(settings: Settings, topics: list[str]) -> list[str]:
    """The partitions of these topics whose in-sync replicas are fewer than their replicas."""
    return [
        f"{topic['topic']}-{partition['partition']}"
        for topic in await _describe(settings, topics)
        for partition in topic["partitions"]
        if set(partition["isr"]) != set(partition["replicas"]) or partition["leader"] < 0
    ]


# --- the database, read from outside ----------------------------------------------------------


async def fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """One query on a fresh connection: nothing pooled to go stale across a restart."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        rows: list[asyncpg.Record] = await asyncio.wait_for(conn.fetch(sql, *args), 30)
        return rows
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 5)


# --- one scenario -----------------------------------------------------------------------------


Fault = Callable[["Scenario"], Awaitable[None]]


class Scenario:
    """One fault under load: start, inject, settle, compare with the model."""

    def __init__(
        self,
        name: str,
        stack: DevStack,
        workload: Workload,
        logdir: Path,
        *,
        receipt_consumers: int = 1,
        returns_instances: int = 1,
        replication_factor: int = 1,
    ) -> None:
        self.name = name
        self.stack = stack
        self.workload = workload
        if stack.endpoints is None:
            raise AssertionError("the stack is not up")
        topics = TopicNames.suffixed(workload.prefix.lower())
        self.settings = Settings(
            database_url=stack.endpoints.database_url,
            kafka_bootstrap_servers=stack.endpoints.bootstrap_servers,
            topics=topics,
            topic_partitions=4,
            topic_replication_factor=replication_factor,
            consumer_group_prefix=workload.prefix.lower(),
            batch_wait_ms=100,
            log_format="json",
            log_level="INFO",
            points_lifetime=LIFETIME,
            points_expiry_check_seconds=EXPIRY_CHECK_SECONDS,
        )
        env = {**self.settings.environment(), "PUNCHCARD_LOG_FORMAT": "json"}
        self.fleet = Fleet(env, logdir)
        self._instances = {"receipt-consumer": receipt_consumers, "returns": returns_instances}
        self.result = Result(name)
        self._recoveries: list[asyncio.Task[None]] = []
        self.api: Slot | None = None
        self._reader: TopicReader | None = None
        self._superseded: dict[int, str] = {}
        self._balances: dict[str, int] = {}

    @property
    def url(self) -> str:
        """The database."""
        return self.settings.database_url

    async def run(self, fault: Fault) -> Result:
        """The whole scenario; the result is filled in even when a check will fail."""
        topics = self.settings.topics
        await create_topics(self.settings, topics.all())
        stop = asyncio.Event()
        outputs = [
            topics.coupon_usage,
            topics.points,
            topics.return_outcomes,
            topics.receipts_dlq,
            topics.returns_dlq,
        ]
        reader = TopicReader(self.settings, outputs)
        self._reader = reader
        background = [
            asyncio.ensure_future(self.fleet.supervise(stop)),
            asyncio.ensure_future(reader.run(stop)),
        ]
        try:
            for name, count in self._instances.items():
                for _ in range(count):
                    self.fleet.add(name)
            self.api = self.fleet.add("coupon-query")
            await self.fleet.wait_healthy()
            reserver = Reserver(
                self.workload,
                Publisher(self.settings, self.workload),
                self._api_url,
                await self._catalog(),
            )
            say(
                f"{self.name}: services up; load of {len(self.workload.schedule)} records and "
                f"{len(self.workload.reservations)} reservation calls"
            )
            publisher = Publisher(self.settings, self.workload)
            load = asyncio.ensure_future(publisher.run())
            reserving = asyncio.ensure_future(reserver.run(time.monotonic()))
            try:
                await fault(self)
            finally:
                await load
                await reserving
            say(
                f"{self.name}: load done ({publisher.sent} acknowledged, {publisher.resent} "
                f"resent; {len(reserver.granted)} reservations granted, "
                f"{reserver.retried} calls retried)"
            )
            if self._recoveries:
                await asyncio.gather(*self._recoveries)
            expected = expected_state(
                [
                    InputRecord(r.partition, r.offset, r.value)
                    for r in await read_to_end(self.settings, topics.receipts)
                ],
                [
                    InputRecord(r.partition, r.offset, r.value)
                    for r in await read_to_end(self.settings, topics.returns)
                ],
            )
            self.result.records = expected.input_records
            settled_at = time.monotonic()
            settled = await self._settle(expected, reader)
            self.result.settle_seconds = time.monotonic() - settled_at if settled else None
            self._check_expiry_came_after_the_load(expected)
            await self._await_expiry(expected, reader)
            await self._compare(expected, reader)
            await self._check_totals(expected)
            await self._check_reservations(expected, reserver, reader)
            await self._check_lots()
            await self._check_api(expected)
        finally:
            stop.set()
            await asyncio.gather(*background, return_exceptions=True)
            self.fleet.stop_all()
        self.result.unexpected_exits = len(self.fleet.unexpected_exits)
        self.result.note("processes that exited by themselves", self.fleet.unexpected_exits, 4)
        refused = self.fleet.logs_matching("offset commit refused")
        self.result.note("late commits refused after a rebalance", refused, 3)
        return self.result

    def _api_url(self) -> str:
        """coupon-query's address now (a restart gives it another port)."""
        if self.api is None or self.api.process is None:
            raise AssertionError("coupon-query is not running")
        return self.api.process.url

    async def _catalog(self) -> str:
        """Put the reserved coupons in the catalog (as an admin would, over HTTP); returns a
        ``checkout`` key for the reservation calls."""
        db = await Database.connect(self.url, max_size=1)
        try:
            _, admin = await create_api_key(db, "admin", "faults")
            _, checkout = await create_api_key(db, "checkout", "faults")
        finally:
            await db.close()
        terms = {
            self.workload.capped_coupon: {
                "uses_permitted": CAPPED_PER_CUSTOMER,
                "total_uses_permitted": CAPPED_TOTAL,
            },
            self.workload.held_coupon: {"uses_permitted": HELD_PER_CUSTOMER},
        }
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {admin}"}, timeout=10
        ) as http:
            for coupon_id, limits in terms.items():
                response = await http.put(
                    f"{self._api_url()}/v1/coupons/{coupon_id}",
                    json={"name": f"faults {coupon_id}", **limits},
                )
                if response.status_code != 201:
                    raise AssertionError(f"PUT {coupon_id}: {response.status_code} {response.text}")
        return checkout

    # --- faults -------------------------------------------------------------------------------

    async def restart_broker(self, down_seconds: float = 1.0) -> None:
        """SIGKILL the broker, leave it down a moment, start it on the same data and ports."""
        broker = self.stack.kafka
        if broker is None:
            raise AssertionError("the broker comes from PUNCHCARD_* settings: cannot restart it")
        say(f"{self.name}: SIGKILL the broker")
        self._supersede("broker restart")
        broker.kill()
        await asyncio.sleep(down_seconds)
        broker.start_again()
        await asyncio.to_thread(broker.wait_ready, 120)
        say(f"{self.name}: the broker answers again")
        self._measure_recovery("broker")

    async def restart_leading_broker(self, down_seconds: float = 1.0, *, spare: int = 0) -> int:
        """SIGKILL the node leading most of the scenario's partitions, then start it again.

        ``spare``: a node id not to pick (the one restarted last). Returns the id killed.
        """
        leaders = await partition_leaders(self.settings, self._topics())
        counts = Counter(leader for leader in leaders.values() if leader != spare)
        node_id = counts.most_common(1)[0][0]
        broker = next(b for b in self.stack.brokers if b.node_id == node_id)
        say(
            f"{self.name}: SIGKILL broker {node_id}, leader of {counts[node_id]} of "
            f"{len(leaders)} partitions"
        )
        self._supersede(f"broker {node_id} restart")
        broker.kill()
        await asyncio.sleep(down_seconds)
        broker.start_again()
        await asyncio.to_thread(broker.wait_ready, 120)
        say(f"{self.name}: broker {node_id} answers again")
        self._measure_recovery(f"broker-{node_id}")
        return node_id

    async def fully_replicated(self, timeout: float = 120.0) -> None:
        """Until every partition of the scenario (and the group offsets) is in sync on all nodes."""
        topics = [*self._topics(), "__consumer_offsets"]
        deadline = time.monotonic() + timeout
        behind: list[str] = []
        while time.monotonic() < deadline:
            try:
                behind = await under_replicated(self.settings, topics)
            except Exception as exc:
                log.info("replication probe: %r", exc)
            else:
                if not behind:
                    say(f"{self.name}: every partition in sync on all brokers again")
                    return
            await asyncio.sleep(0.5)
        raise AssertionError(f"still under-replicated after {timeout:.0f}s: {behind[:5]}")

    def _topics(self) -> list[str]:
        topics = self.settings.topics
        return [
            topics.receipts,
            topics.returns,
            topics.coupon_usage,
            topics.points,
            topics.return_outcomes,
        ]

    async def restart_database(self, down_seconds: float = 3.0) -> None:
        """``pg_ctl stop -m immediate``, leave it down a moment, start it on the same port."""
        database = self.stack.postgres
        if database is None:
            raise AssertionError("the database comes from PUNCHCARD_* settings: cannot restart it")
        say(f"{self.name}: stop PostgreSQL -m immediate")
        self._supersede("database restart")
        await asyncio.to_thread(database.stop_immediate)
        await asyncio.sleep(down_seconds)
        database.start()
        await asyncio.to_thread(database.wait_ready, 60)
        say(f"{self.name}: PostgreSQL answers again")
        self._measure_recovery("database")

    async def recovered(self) -> None:
        """Until every recovery being measured has ended (caught up, or given up at 90 s)."""
        await asyncio.gather(*self._recoveries)

    def _measure_recovery(self, what: str) -> None:
        index = len(self._recoveries)
        self._recoveries.append(
            asyncio.ensure_future(self._recovery(what, time.monotonic(), index))
        )

    def _supersede(self, by: str) -> None:
        """A new outage while an earlier one is still being recovered from.

        The earlier clock stops without a figure: it would time the new outage, not the
        recovery. The new outage's own measurement covers both.
        """
        for index, task in enumerate(self._recoveries):
            if not task.done():
                self._superseded[index] = by

    async def _recovery(self, what: str, answered: float, index: int) -> None:
        """Seconds from ``answered`` until the system has caught up and works end to end.

        Caught up: both consumer groups committed past the input topics' ends and no output
        event written before then is unsent. End to end: a probe sale and its return,
        published once the fault is over, are applied and their events are on the topics
        (the return may wait for its sale, so the waiting-return path is measured too).
        """
        deadline = answered + 90
        probe = f"{self.workload.prefix}-PROBE-{what}-{uuid.uuid4().hex[:6]}"
        try:
            await self._publish_probe(probe, deadline)
        except Exception as exc:
            say(f"{self.name}: could not publish the probe after the {what} answered: {exc!r}")
            self.result.recovery.append((what, None))
            return
        topics = self.settings.topics
        groups = [
            (self.settings.consumer_group("receipt-consumer"), topics.receipts),
            (self.settings.consumer_group("returns"), topics.returns),
        ]
        deadline = answered + 90
        ends: dict[TopicPartition, int] | None = None
        db_now: Any = None
        while time.monotonic() < deadline:
            if index in self._superseded:
                self.result.details.append(
                    f"{what} recovery not timed: a {self._superseded[index]} came "
                    f"{time.monotonic() - answered:.1f}s after it answered, before it caught up"
                )
                return
            try:
                if ends is None:
                    ends = await end_offsets(self.settings, [topics.receipts, topics.returns])
                if db_now is None:
                    db_now = (await fetch(self.url, "SELECT now() AS now"))[0]["now"]
                behind = 0
                for group, topic in groups:
                    committed = await committed_offsets(self.settings, group)
                    for tp, end in ends.items():
                        if tp.topic == topic and committed.get(tp, 0) < end:
                            behind += end - committed.get(tp, 0)
                unsent = await fetch(
                    self.url,
                    "SELECT count(*) AS n FROM outbox "
                    "WHERE topic = ANY($1::text[]) AND created_at <= $2",
                    [topics.coupon_usage, topics.points, topics.return_outcomes],
                    db_now,
                )
                seen = _effects(self._reader, topics, None) if self._reader else None
                probed = seen is not None and {"earn", "revoke"} <= {
                    kind for tx, kind, _ in seen.points if tx == probe
                }
                if behind == 0 and unsent[0]["n"] == 0 and probed:
                    seconds = time.monotonic() - answered
                    say(f"{self.name}: caught up {seconds:.1f}s after the {what} answered")
                    self.result.recovery.append((what, seconds))
                    return
            except Exception as exc:
                log.info("recovery probe: %r", exc)
            await asyncio.sleep(0.25)
        say(f"{self.name}: NOT caught up within 90s after the {what} answered")
        self.result.recovery.append((what, None))

    async def _publish_probe(self, tx: str, deadline: float) -> None:
        """A sale that earns one point and its return, sent until the broker takes them."""
        topics = self.settings.topics
        sale = {
            "schema_version": 1,
            "event_id": str(uuid.uuid4()),
            "transaction_no": tx,
            "store_id": "S0001",
            "terminal_id": "T01",
            "customer_id": self.workload.customers[0],
            "occurred_at": "2026-11-22T10:15:30+09:00",
            "currency": "JPY",
            "total": "100",
            "points_earned": 1,
        }
        back = {
            "schema_version": 1,
            "event_id": str(uuid.uuid4()),
            "transaction_no": tx,
            "store_id": "S0001",
            "terminal_id": "T01",
            "occurred_at": "2026-11-23T09:00:00+09:00",
        }
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap_servers.split(","),
                enable_idempotence=True,
                acks="all",
                request_timeout_ms=5000,
            )
            try:
                await asyncio.wait_for(producer.start(), 10)
                for topic, document in ((topics.receipts, sale), (topics.returns, back)):
                    await asyncio.wait_for(
                        producer.send_and_wait(
                            topic, key=tx.encode(), value=json.dumps(document).encode()
                        ),
                        10,
                    )
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 5)

    # --- settling and comparing ---------------------------------------------------------------

    async def _settle(self, expected: Expected, reader: TopicReader) -> bool:
        """Until every input is accounted for in the database and every event is on its topic."""
        topics = self.settings.topics
        deadline = time.monotonic() + SETTLE_DEADLINE_SECONDS
        prefix = self.workload.prefix + "-%"
        last = ""
        while time.monotonic() < deadline:
            try:
                stored = await fetch(
                    self.url,
                    "SELECT count(*) AS n FROM receipts WHERE transaction_no LIKE $1",
                    prefix,
                )
                decided = await fetch(
                    self.url,
                    "SELECT count(*) AS n FROM return_events "
                    "WHERE transaction_no LIKE $1 AND status <> 'pending'",
                    prefix,
                )
            except Exception as exc:
                last = repr(exc)
                await asyncio.sleep(1)
                continue
            seen = _effects(reader, topics, expected)
            # Expiry comes later, by design: the lots expire once all of this is done.
            unexpired = {k for k in expected.points_events if k[1] != "expire"}
            waiting = {
                "receipts": len(expected.receipts) - stored[0]["n"],
                "returns": len(expected.returns) - decided[0]["n"],
                "points": len(unexpired - seen.points.keys()),
                "usage": len(expected.usage_events.keys() - seen.usage.keys()),
                "outcomes": len(expected.outcome_events.keys() - seen.outcomes.keys()),
                "dead letters": len(expected.conflicts - seen.dead_letters.keys()),
                "return dead letters": len(
                    expected.return_conflicts - seen.return_dead_letters.keys()
                ),
            }
            if not any(waiting.values()):
                return True
            last = str(waiting)
            await asyncio.sleep(1)
        say(f"{self.name}: did not settle within {SETTLE_DEADLINE_SECONDS:.0f}s: {last}")
        self.result.details.append(f"not settled: {last}")
        await self._explain_stuck(reader)
        return False

    def _check_expiry_came_after_the_load(self, expected: Expected) -> None:
        """The model's expiry amounts hold only if no lot that waits for the load (its
        amount depends on when it expires) expired before the load was in."""
        moments = sorted({lot.expires_at for lot in expected.expiring.values() if lot.after_load})
        if not moments:
            return
        now = datetime.now(UTC)
        headroom = (moments[0] - now).total_seconds()
        early = sum(1 for lot in expected.expiring.values() if lot.expires_at <= now)
        say(
            f"{self.name}: settled {headroom:.0f}s before the first late lot expires "
            f"({early} lots expired during the load)"
        )
        if headroom <= 0:
            self.result.expiry_too_soon = True
            self.result.details.append(
                f"settled {-headroom:.0f}s after the first lot expired: raise the expiry margin"
            )

    async def _await_expiry(self, expected: Expected, reader: TopicReader) -> None:
        """Until the last lot is due and the job had its interval, then until no lot due
        holds points and every expiry booked is on the points topic (or the deadline)."""
        moments = sorted({lot.expires_at for lot in expected.expiring.values()})
        if not moments:
            return
        due = (moments[-1] - datetime.now(UTC)).total_seconds() + EXPIRY_CHECK_SECONDS
        if due > 0:
            say(f"{self.name}: {due:.0f}s until the last lot has expired")
            await asyncio.sleep(due)  # a moment on the clock, which no condition can announce
        deadline = time.monotonic() + EXPIRY_DEADLINE_SECONDS
        prefix = self.workload.prefix + "-%"
        last = ""
        while time.monotonic() < deadline:
            try:
                holding = await fetch(
                    self.url,
                    "SELECT count(*) AS n FROM points_lots "
                    "WHERE customer_id LIKE $1 AND remaining > 0 AND expires_at <= now()",
                    prefix,
                )
                booked = await fetch(
                    self.url,
                    "SELECT transaction_no, cause FROM points_ledger "
                    "WHERE customer_id LIKE $1 AND kind = 'expire'",
                    prefix,
                )
            except Exception as exc:
                last = repr(exc)
                await asyncio.sleep(0.5)
                continue
            seen = _effects(reader, self.settings.topics, expected).points.keys()
            unpublished = {(r["transaction_no"], "expire", r["cause"]) for r in booked} - seen
            exact = {k for k in expected.points_events if k[1] == "expire"} - seen
            if not holding[0]["n"] and not unpublished and not exact:
                self.result.expired_lots = len(booked)
                return
            last = (
                f"{holding[0]['n']} lots due with points left, {len(unpublished)} expiries "
                f"booked and not published, {len(exact)} expected expiries not seen"
            )
            await asyncio.sleep(0.5)
        say(f"{self.name}: expiry not done within {EXPIRY_DEADLINE_SECONDS:.0f}s: {last}")
        self.result.details.append(f"expiry not done: {last}")

    async def _explain_stuck(self, reader: TopicReader) -> None:
        """Where the pipeline stands when it did not settle: offsets, outbox, reader, logs."""
        topics = self.settings.topics
        lines = [
            "reader: "
            + ", ".join(f"{t}={len(rs)}" for t, rs in reader.records.items())
            + f" (reconnected {reader.restarts} times)"
        ]
        with contextlib.suppress(Exception):
            ends = await end_offsets(self.settings, [topics.receipts, topics.returns])
            for name, topic in (("receipt-consumer", topics.receipts), ("returns", topics.returns)):
                committed = await committed_offsets(
                    self.settings, self.settings.consumer_group(name)
                )
                lag = {
                    tp.partition: end - committed.get(tp, 0)
                    for tp, end in ends.items()
                    if tp.topic == topic
                }
                lines.append(f"{name} lag by partition: {lag}")
        with contextlib.suppress(Exception):
            # A fresh client's view of the output topics: tells a deaf reader from a log
            # that really ends there.
            outputs = [topics.coupon_usage, topics.points, topics.return_outcomes]
            out_ends = await end_offsets(self.settings, [*outputs, topics.receipts_dlq])
            totals: dict[str, int] = {}
            for tp, end in out_ends.items():
                totals[tp.topic] = totals.get(tp.topic, 0) + end
            lines.append(f"end offsets seen by a fresh client: {totals}")
        with contextlib.suppress(Exception):
            unsent = await fetch(
                self.url,
                "SELECT topic, count(*) AS n FROM outbox GROUP BY topic",
            )
            lines.append(f"outbox unsent: {[(r['topic'], r['n']) for r in unsent]}")
        for slot in self.fleet.slots:
            if slot.process is not None:
                tail = slot.process.log_tail(4).replace("\n", "\n      ")
                lines.append(f"{slot.name}#{slot.index} (wanted={slot.wanted}):\n      {tail}")
        self.result.details.append("\n".join(lines))

    async def _compare(self, expected: Expected, reader: TopicReader) -> None:
        r = self.result
        prefix = self.workload.prefix + "-%"
        receipts = {
            row["transaction_no"]
            for row in await fetch(
                self.url, "SELECT transaction_no FROM receipts WHERE transaction_no LIKE $1", prefix
            )
        }
        uses = {
            (row["customer_id"], row["coupon_id"]): row["uses_made"]
            for row in await fetch(
                self.url,
                "SELECT customer_id, coupon_id, uses_made FROM coupon_usage "
                "WHERE customer_id LIKE $1 AND uses_made <> 0",
                prefix,
            )
        }
        balances = {
            row["customer_id"]: int(row["balance"])
            for row in await fetch(
                self.url,
                "SELECT customer_id, balance FROM points_balances WHERE customer_id LIKE $1",
                prefix,
            )
        }
        ledger: Counter[tuple[str, str, str, str, int]] = Counter(
            (
                row["customer_id"],
                row["transaction_no"],
                row["kind"],
                row["cause"],
                int(row["points"]),
            )
            for row in await fetch(
                self.url,
                "SELECT customer_id, transaction_no, kind, cause, points FROM points_ledger "
                "WHERE customer_id LIKE $1",
                prefix,
            )
        )
        returns = {
            row["event_id"]: (row["status"], row["reason"])
            for row in await fetch(
                self.url,
                "SELECT event_id, status, outcome->>'reason' AS reason FROM return_events "
                "WHERE transaction_no LIKE $1",
                prefix,
            )
        }
        decided: dict[str, list[str]] = defaultdict(list)
        for row in await fetch(
            self.url,
            "SELECT transaction_no, event_id FROM return_events "
            "WHERE transaction_no LIKE $1 AND status <> 'pending' ORDER BY decision_seq",
            prefix,
        ):
            decided[row["transaction_no"]].append(row["event_id"])
        sale_returns = {
            row["transaction_no"]: (
                tuple(quantity(q) for q in row["returned"]),
                int(row["points_restored"]),
                int(row["points_revoked"]),
                bool(row["fully_returned"]),
            )
            for row in await fetch(
                self.url,
                "SELECT transaction_no, returned, points_restored, points_revoked, fully_returned "
                "FROM sale_returns WHERE transaction_no LIKE $1",
                prefix,
            )
        }

        refused = expected.admit_expiries(ledger)
        for entry in refused:
            del ledger[entry]
        r.note("expire entries the contract does not allow", refused)
        r.wrong += len(refused)
        self._balances = dict(expected.balances)

        lost_receipts = expected.receipts - receipts
        undecided = {
            e for e in expected.returns if returns.get(e, ("pending", None))[0] == "pending"
        }
        missing_ledger = expected.ledger - ledger
        extra_ledger = ledger - expected.ledger
        r.note("receipts not stored", lost_receipts)
        r.note("returns never decided", undecided)
        r.note("ledger entries missing", missing_ledger)
        r.note("ledger entries beyond one clean pass", extra_ledger)

        wrong_balance = {
            c
            for c in expected.balances.keys() | balances.keys()
            if balances.get(c, 0) != expected.balances.get(c, 0)
        }
        wrong_uses = {
            k
            for k in expected.uses.keys() | uses.keys()
            if uses.get(k, 0) != expected.uses.get(k, 0)
        }
        r.note(
            "balances (actual, expected)",
            {(c, balances.get(c, 0), expected.balances.get(c, 0)) for c in wrong_balance},
        )
        r.note(
            "coupon uses (actual, expected)",
            {(k, uses.get(k), expected.uses.get(k)) for k in wrong_uses},
        )

        # A sale's returns decided in another order than they were published: the statuses
        # of such a sale are counted here, not again as wrong.
        out_of_order = {
            tx
            for tx, order in expected.decided.items()
            if [e for e in decided.get(tx, []) if e in order]
            != [e for e in order if e in decided.get(tx, [])]
        }
        wrong_status = {
            e
            for e, want in expected.returns.items()
            if e not in undecided and returns.get(e) != want
        }
        # Statuses wrong because a sale's returns were decided out of order are "out of
        # order"; any other wrong status is just wrong.
        swapped = {e for e in wrong_status if _tx_of(e, expected) in out_of_order}
        r.note("returns applied out of order (transaction)", out_of_order)
        for tx in sorted(out_of_order)[:3]:
            await self._explain_return_order(tx, expected)
        r.note(
            "return statuses (event, actual, expected)",
            {(e, returns.get(e), expected.returns[e]) for e in wrong_status - swapped},
        )
        nothing_returned: tuple[tuple[Fraction, ...], int, int, bool] = ((), 0, 0, False)
        wrong_sale_returns = {
            (tx, sale_returns.get(tx), want)
            for tx, want in expected.sale_returns.items()
            if tx not in out_of_order and sale_returns.get(tx) != want
        } | {
            (tx, got, None)
            for tx, got in sale_returns.items()
            if tx not in expected.sale_returns and (any(got[0]) or got[1:] != nothing_returned[1:])
        }
        r.note("sale_returns rows (transaction, actual, expected)", wrong_sale_returns)

        seen = _effects(reader, self.settings.topics, expected)
        missing_points = expected.points_events.keys() - seen.points.keys()
        missing_usage = expected.usage_events.keys() - seen.usage.keys()
        missing_outcomes = expected.outcome_events.keys() - seen.outcomes.keys()
        r.note("points events missing", missing_points)
        r.note("coupon usage events missing", missing_usage)
        r.note("return outcomes missing", missing_outcomes)
        two_ids = (
            {("points", k) for k, ids in seen.points.items() if len(ids) > 1}
            | {("usage", k) for k, ids in seen.usage.items() if len(ids) > 1}
            | {("outcome", k) for k, ids in seen.outcomes.items() if len(ids) > 1}
        )
        r.note("effects published under more than one event_id", two_ids)
        unexpected = (
            {("points", k) for k in seen.points.keys() - expected.points_events.keys()}
            | {("usage", k) for k in seen.usage.keys() - expected.usage_events.keys()}
            | {("outcome", k) for k in seen.outcomes.keys() - expected.outcome_events.keys()}
        )
        r.note("events nobody should have published", unexpected)
        wrong_content: set[tuple[object, ...]] = set()
        for pkey, pwant in expected.points_events.items():
            pgot = seen.points_content.get(pkey)
            if pgot is not None and pgot != pwant:
                wrong_content.add(("points", pkey, pgot, pwant))
        for ukey, uwant in expected.usage_events.items():
            ugot = seen.usage_content.get(ukey)
            if ugot is not None and ugot != uwant:
                wrong_content.add(("usage", ukey, ugot, uwant))
        for event_id, owant in expected.outcome_events.items():
            ogot = seen.outcome_content.get(event_id)
            if ogot is None or ogot == owant or _tx_of(event_id, expected) in out_of_order:
                continue
            wrong_content.add(("outcome", event_id, ogot, owant))
        r.note("events with the wrong content (got, want)", wrong_content)
        unexpected_dead = {
            (p, o) for (p, o) in seen.dead_letters if (p, o) not in expected.conflicts
        }
        missing_dead = expected.conflicts - seen.dead_letters.keys()
        r.note("valid receipts dead-lettered (partition, offset)", unexpected_dead)
        r.note("conflicting duplicates not dead-lettered", missing_dead)
        unexpected_return_dead = seen.return_dead_letters.keys() - expected.return_conflicts
        missing_return_dead = expected.return_conflicts - seen.return_dead_letters.keys()
        r.note("valid returns dead-lettered (partition, offset)", unexpected_return_dead)
        r.note("conflicting return_ids not dead-lettered", missing_return_dead)

        r.lost = (
            len(lost_receipts)
            + len(undecided)
            + sum(missing_ledger.values())
            + len(unexpected_dead)
            + len(missing_dead)
            + len(unexpected_return_dead)
            + len(missing_return_dead)
        )
        r.doubled = sum(extra_ledger.values()) + len(two_ids) + len(receipts - expected.receipts)
        r.wrong += (
            len(wrong_balance)
            + len(wrong_uses)
            + len(wrong_status - swapped)
            + len(unexpected)
            + len(wrong_content)
            + len(wrong_sale_returns)
        )
        r.missing_events = len(missing_points) + len(missing_usage) + len(missing_outcomes)
        r.out_of_order = len(out_of_order)
        r.repeated = seen.repeated

    async def _explain_return_order(self, tx: str, expected: Expected) -> None:
        """What the database and the logs say about a transaction whose returns were swapped."""
        sale = await fetch(
            self.url,
            "SELECT stored_at FROM receipts WHERE transaction_no = $1",
            tx,
        )
        rows = await fetch(
            self.url,
            "SELECT event_id, seq, decision_seq, status, outcome->>'reason' AS reason, "
            "received_at, decided_at FROM return_events WHERE transaction_no = $1 ORDER BY seq",
            tx,
        )
        order = expected.decided.get(tx)
        lines = [
            f"{tx}: published {order}; receipt stored at {sale[0]['stored_at'] if sale else None}"
        ]
        lines += [
            f"  seq {row['seq']} decision {row['decision_seq']} {row['event_id']}: "
            f"{row['status']} {row['reason'] or ''} "
            f"received {row['received_at']:%H:%M:%S.%f} decided {row['decided_at']:%H:%M:%S.%f}"
            for row in rows
        ]
        lines += [f"  {line}" for line in self.fleet.logs_matching(tx)[:6]]
        self.result.details.append("\n".join(lines))

    async def _check_lots(self) -> None:
        """Per lot and per customer, what holds whatever the order of application: no lot
        due keeps points, a lot's ``expired`` is its one ``expire`` entry, and
        balance = sum of the ledger = sum of the lots' remaining - debt."""
        r = self.result
        prefix = self.workload.prefix + "-%"
        lots = await fetch(
            self.url,
            "SELECT customer_id, transaction_no, cause, seq, points, remaining, expired, "
            "expires_at IS NOT NULL AND expires_at <= now() AS due "
            "FROM points_lots WHERE customer_id LIKE $1",
            prefix,
        )
        expiries = await fetch(
            self.url,
            "SELECT transaction_no, cause, count(*) AS n, sum(points) AS points "
            "FROM points_ledger WHERE customer_id LIKE $1 AND kind = 'expire' "
            "GROUP BY transaction_no, cause",
            prefix,
        )
        accounts = await fetch(
            self.url,
            "SELECT b.customer_id, b.balance, b.debt, "
            "(SELECT coalesce(sum(points), 0) FROM points_ledger l "
            " WHERE l.customer_id = b.customer_id) AS ledger, "
            "(SELECT coalesce(sum(remaining), 0) FROM points_lots o "
            " WHERE o.customer_id = b.customer_id) AS remaining "
            "FROM points_balances b WHERE b.customer_id LIKE $1",
            prefix,
        )
        booked = {(row["transaction_no"], row["cause"]): row for row in expiries}
        twice = {key for key, row in booked.items() if row["n"] > 1}
        holding = {
            (row["transaction_no"], row["cause"], row["seq"], row["remaining"])
            for row in lots
            if row["due"] and row["remaining"] > 0
        }
        mismatched: set[tuple[object, ...]] = set()
        for row in lots:
            key = (row["transaction_no"], f"{row['cause']}#{row['seq']}")
            entry = booked.pop(key, None)
            booked_points = 0 if entry is None else -int(entry["points"])
            if booked_points != row["expired"] or row["remaining"] + row["expired"] > row["points"]:
                mismatched.add((*key, row["points"], row["remaining"], row["expired"]))
        unbalanced = {
            (row["customer_id"], row["balance"], row["ledger"], row["remaining"], row["debt"])
            for row in accounts
            if not row["balance"] == row["ledger"] == row["remaining"] - row["debt"]
            or (row["remaining"] and row["debt"])
        }
        r.note("lots expired more than once (transaction, cause)", twice)
        r.note("lots due with points left (transaction, cause, seq, remaining)", holding)
        r.note("lots whose expired is not their expire entry", mismatched)
        r.note("expire entries of no lot", set(booked))
        r.note("balance, ledger, lots and debt disagree (customer, b, l, r, d)", unbalanced)
        r.doubled += len(twice)
        r.wrong += len(holding) + len(mismatched) + len(booked) + len(unbalanced)

    async def _check_totals(self, expected: Expected) -> None:
        """Per coupon: the stored total (its shards' sum) = its uses summed over customers
        = the model's."""
        prefix = self.workload.prefix + "-%"
        stored = {
            row["coupon_id"]: int(row["n"])
            for row in await fetch(
                self.url,
                "SELECT coupon_id, sum(uses_made) AS n FROM coupon_totals "
                "WHERE coupon_id LIKE $1 GROUP BY coupon_id",
                prefix,
            )
        }
        summed = {
            row["coupon_id"]: int(row["n"])
            for row in await fetch(
                self.url,
                "SELECT coupon_id, sum(uses_made) AS n FROM coupon_usage "
                "WHERE coupon_id LIKE $1 GROUP BY coupon_id",
                prefix,
            )
        }
        wrong = {
            (coupon, stored.get(coupon, 0), summed.get(coupon, 0), expected.totals.get(coupon, 0))
            for coupon in stored.keys() | summed.keys() | expected.totals.keys()
            if not stored.get(coupon, 0) == summed.get(coupon, 0) == expected.totals.get(coupon, 0)
        }
        self.result.note("coupon totals (coupon, shards, usage rows, expected)", wrong)
        self.result.wrong += len(wrong)

    async def _check_reservations(
        self, expected: Expected, reserver: Reserver, reader: TopicReader
    ) -> None:
        """Every hold is one a call was answered with; none past a cap; each ended as its
        call's fate says (a consumed one by its own sale); usage events name them."""
        r = self.result
        workload = self.workload
        rows = {
            row["reservation_id"]: row
            for row in await fetch(
                self.url,
                "SELECT reservation_id, customer_id, coupon_id, uses, status, transaction_no, "
                "expires_at <= clock_timestamp() AS lapsed FROM reservations "
                "WHERE coupon_id = ANY($1::text[])",
                [workload.capped_coupon, workload.held_coupon],
            )
        }
        granted = reserver.granted
        r.reservations = f"{len(granted)}/{len(workload.reservations)}"
        not_granted = rows.keys() - granted.keys()
        not_stored = granted.keys() - rows.keys()
        r.note("holds no call was answered with (a retry held twice)", not_granted)
        r.note("granted reservations not stored", not_stored)
        r.note("reservation calls never answered", reserver.unanswered)
        odd = {(k, reason) for k, reason in reserver.refused.items() if reason not in REFUSALS}
        r.note("refusals for an unexpected reason (idempotency key, reason)", odd)

        capped = [row for row in rows.values() if row["coupon_id"] == workload.capped_coupon]
        held = sum(row["uses"] for row in capped)
        per_customer: Counter[str] = Counter()
        for row in capped:
            per_customer[row["customer_id"]] += row["uses"]
        over = max(0, held - CAPPED_TOTAL) + sum(
            max(0, n - CAPPED_PER_CUSTOMER) for n in per_customer.values()
        )
        if over:
            r.details.append(
                f"over-reserved: {held} of {CAPPED_TOTAL} granted, per customer "
                f"{dict(per_customer)} (at most {CAPPED_PER_CUSTOMER} each)"
            )
        # Never released nor lapsed, asked for more often than both caps allow: exactly
        # the total cap is granted, or a call was refused that should have been granted.
        under = held < CAPPED_TOTAL
        if under:
            r.details.append(f"under-reserved: {held} of {CAPPED_TOTAL} granted")

        ended_wrong: set[tuple[object, ...]] = set()
        for reservation_id, planned in granted.items():
            if reservation_id not in rows:
                continue
            row = rows[reservation_id]
            status, tx, lapsed = row["status"], row["transaction_no"], row["lapsed"]
            fine = {
                "consume": status == "consumed"
                and tx == planned.transaction_no
                and expected.named.get(reservation_id) == tx,
                "release": status == "released",
                "lapse": status == "active" and lapsed,
                "hold": status == "active" and not lapsed,
            }[planned.fate]
            if not fine:
                ended_wrong.add((reservation_id, planned.fate, status, tx, lapsed))
        r.note("reservations not ended as planned (id, fate, status, sale, lapsed)", ended_wrong)

        seen = _effects(reader, self.settings.topics, expected).usage_reservation
        misnamed = {
            (key, seen[key], want)
            for key, want in expected.usage_reservations.items()
            if key in seen and seen[key] != want
        }
        r.note("usage events naming another reservation (key, named, expected)", misnamed)

        fates = Counter(granted[k].fate for k in granted.keys() & rows.keys())
        r.details.append(
            f"reservations granted by fate {dict(sorted(fates.items()))}, refused by reason "
            f"{dict(sorted(Counter(reserver.refused.values()).items()))}, "
            f"{reserver.retried} calls retried through the fault"
        )
        r.over_reserved += over
        r.doubled += len(not_granted)
        r.lost += len(not_stored) + len(reserver.unanswered)
        r.wrong += len(odd) + int(under) + len(ended_wrong) + len(misnamed)

    async def _check_api(self, expected: Expected) -> None:
        """coupon-query answers every customer's balance as the model says, after the faults."""
        if self.api is None or self.api.process is None:
            return
        db = await Database.connect(self.url, max_size=1)
        try:
            _, key = await create_api_key(db, "read", "faults")
        finally:
            await db.close()
        wrong: set[tuple[str, object, int]] = set()
        async with httpx.AsyncClient(
            base_url=self.api.process.url, headers={"Authorization": f"Bearer {key}"}, timeout=5
        ) as http:
            deadline = time.monotonic() + 30
            for customer, balance in sorted(self._balances.items()):
                got: object = None
                while True:
                    try:
                        response = await http.get(
                            f"/v1/customers/{customer}/points", params={"limit": 1}
                        )
                        got = (
                            response.json().get("balance")
                            if response.status_code == 200
                            else response.status_code
                        )
                    except httpx.HTTPError as exc:
                        got = repr(exc)
                    if got == balance or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.5)
                if got != balance:
                    wrong.add((customer, got, balance))
        self.result.note("coupon-query balances (customer, answered, expected)", wrong)
        self.result.wrong += len(wrong)


def _tx_of(return_event_id: str, expected: Expected) -> str | None:
    return expected.tx_of_return.get(return_event_id)


@dataclass(slots=True)
class _Effects:
    points: dict[tuple[str, str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    usage: dict[tuple[str, str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    outcomes: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    points_content: dict[tuple[str, str, str], tuple[str, int]] = field(default_factory=dict)
    usage_content: dict[tuple[str, str, str], tuple[str, int]] = field(default_factory=dict)
    usage_reservation: dict[tuple[str, str, str], str | None] = field(default_factory=dict)
    outcome_content: dict[str, Outcome] = field(default_factory=dict)
    dead_letters: Counter[tuple[int, int]] = field(default_factory=Counter)
    return_dead_letters: Counter[tuple[int, int]] = field(default_factory=Counter)
    repeated: int = 0


_POINTS_KINDS = ("earn", "burn", "restore", "revoke")
_LOT_PARTS = 4
"""A return's restore makes a lot per expiry it gives back; more than this in a run is news."""


def _points_causes(expected: Expected) -> dict[str, str]:
    """Points event id -> its cause, for every cause the model knows of each sale.

    A PointsEvent does not name the return that caused it; its id does (derived from the
    sale, the kind and, for a return's points, the return's event id), so a points event
    of any known cause is found as that cause's, and one of no known cause stays unexplained.
    """
    causes: dict[str, str] = {}
    by_sale: dict[str, list[str]] = defaultdict(list)
    for event_id, tx in expected.tx_of_return.items():
        by_sale[tx].append(event_id)
    for tx in expected.receipts:
        for kind in _POINTS_KINDS:
            causes[str(event_id_for(tx, "points", kind))] = SALE
            for event_id in by_sale.get(tx, []):
                causes[str(event_id_for(tx, "points", kind, event_id))] = event_id
        # A lot's expiry names the lot: the sale's own, or a part a return restored.
        causes[str(event_id_for(tx, "points", "expire", EXPIRY_CAUSE))] = EXPIRY_CAUSE
        for event_id in by_sale.get(tx, []):
            for seq in range(_LOT_PARTS):
                cause = f"{event_id}#{seq}"
                causes[str(event_id_for(tx, "points", "expire", cause))] = cause
    return causes


def _outcome(e: dict[str, Any]) -> Outcome:
    lines = tuple(sorted((int(x["line_no"]), quantity(x["quantity"])) for x in e["lines"]))
    return Outcome(
        e["status"],
        e.get("reason"),
        int(e["points_restored"]),
        int(e["points_revoked"]),
        e.get("return_id"),
        lines,
        bool(e["fully_returned"]),
    )


def _effects(reader: TopicReader, topics: TopicNames, expected: Expected | None) -> _Effects:
    """The output topics grouped by effect: which event ids each effect was published under.

    Without ``expected`` (a recovery probe) no points event's cause is known.
    """
    seen = _Effects()
    ids: Counter[str] = Counter()
    causes = _points_causes(expected) if expected is not None else {}
    for record in reader.records[topics.points]:
        e = json.loads(record.value)
        cause = causes.get(e["event_id"], f"unknown cause, event {e['event_id']}")
        key = (e["transaction_no"], e["kind"], cause)
        seen.points[key].add(e["event_id"])
        seen.points_content.setdefault(key, (e["customer_id"], int(e["points"])))
        ids[e["event_id"]] += 1
    for record in reader.records[topics.coupon_usage]:
        e = json.loads(record.value)
        key3 = (e["transaction_no"], e["coupon_id"], e["source"])
        seen.usage[key3].add(e["event_id"])
        seen.usage_content.setdefault(key3, (e["customer_id"], int(e["delta"])))
        seen.usage_reservation.setdefault(key3, e.get("reservation_id"))
        ids[e["event_id"]] += 1
    for record in reader.records[topics.return_outcomes]:
        e = json.loads(record.value)
        seen.outcomes[e["return_event_id"]].add(e["event_id"])
        seen.outcome_content.setdefault(e["return_event_id"], _outcome(e))
        ids[e["event_id"]] += 1
    for record in reader.records[topics.receipts_dlq]:
        where = (
            int(record.headers.get("punchcard.source.partition", b"-1")),
            int(record.headers.get("punchcard.source.offset", b"-1")),
        )
        seen.dead_letters[where] += 1
    for record in reader.records[topics.returns_dlq]:
        where = (
            int(record.headers.get("punchcard.source.partition", b"-1")),
            int(record.headers.get("punchcard.source.offset", b"-1")),
        )
        seen.return_dead_letters[where] += 1
    seen.repeated = (
        sum(n - 1 for n in ids.values())
        + sum(n - 1 for n in seen.dead_letters.values())
        + sum(n - 1 for n in seen.return_dead_letters.values())
    )
    return seen
