"""What every benchmark shares: sizes, fresh databases and topics, timing, percentiles.

Each benchmark gets a database of its own (``CREATE DATABASE`` on the stack's server,
migrated, dropped afterwards) and topics and consumer groups with a random suffix, so
one measurement never sees another's rows, outbox or offsets, and a second run on the
same broker starts from nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from punchcard_devstack import Endpoints
from punchcard_platform.db import Database
from punchcard_platform.kafka import create_topics, make_consumer
from punchcard_platform.migrations import apply_migrations
from punchcard_platform.records import BatchHandler, DeadLetter, Decoded, InboundRecord
from punchcard_platform.settings import Settings, TopicNames

T = TypeVar("T")

PARTITIONS = 12


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does; ``--quick`` picks the small set."""

    receipts: int = 50_000
    naive_receipts: int = 2_000
    preload_receipts: int = 0
    """Stored receipts to preload for a second set-based run (0: no such run)."""
    customers: int = 1_000_000
    coupons: int = 50
    usage_per_customer: int = 5
    query_rate: float = 400.0
    query_seconds: float = 20.0
    query_warmup_seconds: float = 3.0
    reservation_rate: float = 50.0
    """Where the reservation calls' sweep starts, req/s."""
    pgbench_seconds: int = 15
    returns: int = 20_000
    return_rate: float = 200.0
    return_seconds: float = 10.0
    console_receipts_per_customer: int = 10
    """Receipts per customer for the console's pages: 10,000,000 with the full customers."""
    console_samples: int = 500
    """Requests per console page timed, one at a time."""
    console_page_rate: float = 2.0
    """Customer pages a second one person opens beside the hot route's load."""
    expiry_lots: int = 1_000_000
    """Points lots due at one month's end for the expiry job."""
    expiry_lots_per_customer: int = 4
    """Due lots each customer holds (a month's weekly purchases); one more not due."""

    @classmethod
    def quick(cls) -> Sizes:
        """A few minutes' worth that still exercises every path."""
        return cls(
            receipts=5_000,
            naive_receipts=300,
            customers=20_000,
            query_rate=100.0,
            query_seconds=5.0,
            query_warmup_seconds=1.0,
            reservation_rate=50.0,
            pgbench_seconds=4,
            returns=2_000,
            return_rate=100.0,
            return_seconds=4.0,
            console_receipts_per_customer=2,
            console_samples=100,
            expiry_lots=20_000,
        )

    def as_dict(self) -> dict[str, Any]:
        """For results.json."""
        return asdict(self)


def say(line: str) -> None:
    """A progress line, flushed at once so a long phase never looks stuck."""
    print(line, flush=True)


def suffix() -> str:
    """A random tag for topics, groups and databases of one run."""
    return uuid.uuid4().hex[:10]


@dataclass
class Context:
    """The run: where the stack is, where results go, the sizes, a tag of its own."""

    endpoints: Endpoints
    out: Path
    sizes: Sizes
    tag: str = field(default_factory=suffix)

    def settings(self, database_url: str, name: str, **overrides: Any) -> Settings:
        """Settings with topics and consumer groups nobody else uses (as tests' make_settings)."""
        tail = f"bench-{self.tag}-{name}-{suffix()[:6]}"
        topics = TopicNames.suffixed(tail)
        values: dict[str, Any] = {
            "database_url": database_url,
            "kafka_bootstrap_servers": self.endpoints.bootstrap_servers,
            "topics": topics,
            "topic_partitions": PARTITIONS,
            "consumer_group_prefix": tail,
            "log_format": "console",
            "log_level": "WARNING",
            **overrides,
        }
        return Settings(**values)

    @asynccontextmanager
    async def database(self, name: str) -> AsyncIterator[str]:
        """A fresh, migrated database for one benchmark; dropped when it is done."""
        database = f"bench_{self.tag}_{name}"
        admin = await asyncpg.connect(self.endpoints.database_url)
        try:
            await admin.execute(f'CREATE DATABASE "{database}"')
        except asyncpg.InsufficientPrivilegeError as exc:
            raise SystemExit(
                "the benchmarks need CREATEDB on the PostgreSQL of PUNCHCARD_DATABASE_URL "
                "(each benchmark measures on a database of its own)"
            ) from exc
        finally:
            await admin.close()
        url = with_database(self.endpoints.database_url, database)
        db = await Database.connect(url, max_size=2)
        try:
            await apply_migrations(db)
        finally:
            await db.close()
        try:
            yield url
        finally:
            admin = await asyncpg.connect(self.endpoints.database_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await admin.close()

    @asynccontextmanager
    async def copy_of(self, url: str, name: str) -> AsyncIterator[str]:
        """A new database copied from the one at ``url`` (nobody may be connected to it).

        ``FILE_COPY`` copies the files after a checkpoint: for a database of a million
        rows, seconds instead of the minutes a load and its VACUUM take again.
        """
        database = f"bench_{self.tag}_{name}"
        source = urlsplit(url).path.lstrip("/")
        admin = await asyncpg.connect(self.endpoints.database_url)
        try:
            await admin.execute(
                f'CREATE DATABASE "{database}" TEMPLATE "{source}" STRATEGY FILE_COPY'
            )
        finally:
            await admin.close()
        try:
            yield with_database(self.endpoints.database_url, database)
        finally:
            admin = await asyncpg.connect(self.endpoints.database_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await admin.close()


async def create_all_topics(settings: Settings) -> None:
    """Every topic of these settings, with the benchmark's partition count, ready to read."""
    names = settings.topics.all()
    await create_topics(settings, names, partitions=PARTITIONS)
    consumer = make_consumer(settings, group_id=f"{settings.consumer_group_prefix}.probe")
    # A new topic's leaders take a moment to answer offset requests; aiokafka logs every
    # retry of those as an error. Wait here, quietly, so the measurements never meet it.
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    await consumer.start()
    try:
        partitions = [TopicPartition(name, p) for name in names for p in range(PARTITIONS)]
        deadline = time.monotonic() + 60
        while True:
            try:
                await consumer.end_offsets(partitions)
                # Also makes the broker create its group-offsets topic on first use.
                await consumer.committed(partitions[0])
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
            else:
                return
    finally:
        await consumer.stop()
        quiet.setLevel(level)


async def raw_consume(settings: Settings, topic: str, n: int) -> dict[str, Any]:
    """The broker's ceiling for a topic's records: fetch and count, decode and commit nothing.

    Partitions are assigned paused and their start offsets resolved first; the clock
    starts when they are resumed, so it covers every fetch and nothing before.
    """
    consumer = make_consumer(settings, group_id=f"{settings.consumer_group_prefix}.raw.{suffix()}")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        consumer.pause(*partitions)
        for tp in partitions:
            await consumer.position(tp)
        count = 0
        payload = 0
        began = time.perf_counter()
        consumer.resume(*partitions)
        deadline = time.monotonic() + 300
        while count < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"raw consume saw only {count} of {n} records of {topic}")
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                count += len(records)
                payload += sum(len(r.value or b"") for r in records)
        seconds = time.perf_counter() - began
    finally:
        await consumer.stop()
    rate = count / seconds if seconds > 0 else 0.0
    return {
        "records": count,
        "value_bytes": payload,
        "seconds": round(seconds, 4),
        "records_per_second": round(rate, 1),
        "method": "aiokafka, assigned paused, offsets resolved, clock from resume to last record",
    }


def with_database(url: str, database: str) -> str:
    """The same server URL, pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


class TimedHandler(Generic[T]):
    """Wraps a service's handler to record when records were first touched and applied.

    The clock starts at the first ``decode`` (the first record in the loop's hands) and
    each successful ``apply`` adds a progress sample, so the rate is measured from the
    first record applied to the last, without the consumer group's join time.
    """

    def __init__(self, inner: BatchHandler[T], *, target: int) -> None:
        self._inner = inner
        self.name = inner.name
        self.target = target
        self.started: float | None = None
        self.finished: float | None = None
        self.applied = 0
        self.batches = 0
        self.samples: list[tuple[float, int]] = []
        self.done = asyncio.Event()

    def decode(self, record: InboundRecord) -> T:
        """The wrapped decode, starting the clock on the first record."""
        if self.started is None:
            self.started = time.perf_counter()
            self.samples.append((self.started, 0))
        return self._inner.decode(record)

    async def apply(self, batch: list[Decoded[T]]) -> list[DeadLetter]:
        """The wrapped apply, counting what it applied once it has committed."""
        refused = await self._inner.apply(batch)
        now = time.perf_counter()
        self.applied += len(batch) - len(refused)
        self.batches += 1
        self.samples.append((now, self.applied))
        if self.applied >= self.target and self.finished is None:
            self.finished = now
            self.done.set()
        return refused

    @property
    def seconds(self) -> float:
        """From the first record touched to the target reached (or the last apply so far)."""
        if self.started is None:
            return 0.0
        end = self.finished or (self.samples[-1][0] if self.samples else self.started)
        return end - self.started

    def rate(self) -> float:
        """Records applied per second over ``seconds``."""
        return self.applied / self.seconds if self.seconds > 0 else 0.0

    def timeline(self) -> list[tuple[float, int]]:
        """Progress samples as (seconds since start, records applied)."""
        if self.started is None:
            return []
        return [(round(t - self.started, 4), n) for t, n in self.samples]


async def apply_in_batches(
    apply: Callable[[list[T]], Awaitable[object]], items: list[T], size: int
) -> tuple[float, float, int]:
    """``apply`` batches of ``size`` one after the other: (seconds, process CPU seconds, batches).

    How the PostgreSQL ceilings are timed: the handler's own SQL fed from records decoded
    before the clock starts, with no Kafka in the way.
    """
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    began, cpu_began = time.perf_counter(), time.process_time()
    for batch in batches:
        await apply(batch)
    return time.perf_counter() - began, time.process_time() - cpu_began, len(batches)


async def settle(url: str, *tables: str) -> None:
    """VACUUM ANALYZE (``tables``, or the whole database), CHECKPOINT and sync.

    What an earlier phase wrote is then on disk and its statistics are fresh, so no
    checkpoint, autovacuum or kernel writeback of it lands in the window measured next.
    """
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    await asyncio.to_thread(os.sync)


async def wait_or_fail(event: asyncio.Event, timeout: float, what: str) -> None:
    """Wait for a phase to finish, or fail the benchmark saying which one hung."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError as exc:
        raise RuntimeError(f"{what} did not finish within {timeout:.0f}s") from exc


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int]:
    """Percentiles in milliseconds, the shape every latency in results.json has."""
    values = sorted(seconds)
    summary: dict[str, float | int] = {"count": len(values)}
    for name, q in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9)):
        summary[f"{name}_ms"] = round(percentile(values, q) * 1000, 3)
    summary["max_ms"] = round(values[-1] * 1000, 3) if values else float("nan")
    summary["mean_ms"] = round(sum(values) / len(values) * 1000, 3) if values else float("nan")
    return summary


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, rounded; None when the anchor is zero."""
    return round(numerator / denominator, 4) if denominator else None


def machine() -> dict[str, Any]:
    """What the figures were measured on; ratios only compare within this machine."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


_STATEMENT_METHODS = frozenset({"execute", "executemany", "fetch", "fetchrow", "fetchval"})

Statement = tuple[str, str, tuple[Any, ...], dict[str, Any]]
"""A statement as run: the connection method, the SQL, its arguments."""


class NotingConnection:
    """A connection that runs every statement and notes it with its arguments."""

    def __init__(self, conn: asyncpg.Connection, noted: list[Statement]) -> None:
        self._conn = conn
        self._noted = noted

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._conn, name)
        if name not in _STATEMENT_METHODS:
            return attribute

        async def noting(query: str, *args: Any, **kwargs: Any) -> Any:
            self._noted.append((name, query, args, kwargs))
            return await attribute(query, *args, **kwargs)

        return noting


class NotingDatabase(Database):
    """Every transaction's statements are noted, in ``statements``, as they run.

    How the PostgreSQL-only ceilings are made: the service's code runs on one database
    and its statements are replayed, without its Python, on a copy.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.statements: list[Statement] = []

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        self.statements = []
        async with super().transaction() as conn:
            # The callers only call statement methods on it; asyncpg's type is kept.
            yield cast(asyncpg.Connection, NotingConnection(conn, self.statements))
