"""Returns: applied per second, and the time from publishing a return to its outcome.

Receipts are stored first through the receipt consumer's own handler (no Kafka), so
every return finds its sale. Every run's returns are half partial (one or two lines of
the sale, one unit of each, under a ``return_id``) and half whole, alternating, as
returns desks send them (issue 18). Then:

- throughput: K returns are published to a fresh topic, and the returns handler runs
  in-process in ``ConsumerLoop`` with the ``OutboxRelay`` and the waiting-return
  resolver, as ``punchcard serve returns`` composes them. Anchor: a raw consume of the
  same return records.
- latency: ``punchcard serve returns`` runs as a process; returns are published at a
  steady rate and the outcomes topic is read here, timing each outcome from its
  return's scheduled send. Anchor: the same records read raw from the returns topic
  (the broker's own publish-to-consume time under the same load).
- PostgreSQL's ceiling for the returns' writes: K more returns, decoded beforehand, fed
  to ``ReturnHandler.apply`` in batches of ``batch_max_records`` one after the other
  (no Kafka, no decoding, no relay).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from random import Random
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from punchcard_contract import ParsedReceipt, ParsedReturn
from punchcard_devstack import ServiceProcess
from punchcard_devstack.processes import free_port
from punchcard_platform.consumer import ConsumerLoop
from punchcard_platform.db import Database
from punchcard_platform.kafka import create_topics, make_consumer, make_producer
from punchcard_platform.records import Decoded, InboundRecord
from punchcard_platform.relay import OutboxRelay
from punchcard_platform.settings import Settings, TopicNames
from punchcard_receipt_consumer.handler import ReceiptHandler
from punchcard_returns.handler import ReturnHandler
from punchcard_returns.waiting import PendingReturnResolver

from bench.common import (
    PARTITIONS,
    Context,
    NotingDatabase,
    TimedHandler,
    apply_in_batches,
    create_all_topics,
    latency_summary,
    ratio,
    raw_consume,
    say,
    settle,
    suffix,
    wait_or_fail,
)
from bench.cpu import postgres_server_pid, server_cpu_seconds, service_cpu_seconds
from punchcard.simulator import FleetModel, SimulationOptions

_STORE_BATCH = 1000
_WARMUP_SECONDS = 2.0
"""Returns sent at the measured rate, untimed, before the timed ones: the broker's JIT, the
new topics and the service's first batches settle before anything is measured."""


_PARTIAL_EVERY = 2
"""Every second return names lines: a 50% partial mix."""


class _Sale:
    __slots__ = ("line_count", "occurred_at", "store_id", "transaction_no")

    def __init__(self, document: dict[str, Any]) -> None:
        self.transaction_no: str = document["transaction_no"]
        self.store_id: str = document["store_id"]
        self.occurred_at = datetime.fromisoformat(document["occurred_at"])
        self.line_count = len(document["lines"])


def _return_document(sale: _Sale, index: int) -> dict[str, Any]:
    """The ``index``-th return of a run: whole, or of one or two lines (one unit each).

    Lines are picked from the transaction number's hash, so the three runs (throughput,
    ceiling, latency) get the same mix without sharing a random generator.
    """
    document: dict[str, Any] = {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "transaction_no": sale.transaction_no,
        "store_id": sale.store_id,
        "terminal_id": "T01",
        "occurred_at": (sale.occurred_at + timedelta(hours=2)).isoformat(timespec="seconds"),
        "reason": "changed mind",
    }
    if index % _PARTIAL_EVERY == 0 and sale.line_count > 0:
        picker = Random(sale.transaction_no)
        named = picker.sample(
            range(1, sale.line_count + 1), min(sale.line_count, 1 + index % 4 // 2)
        )
        document["return_id"] = f"R{index:07d}"
        document["lines"] = [{"line_no": n, "quantity": "1"} for n in sorted(named)]
    return document


def _return_documents(sales: list[_Sale]) -> list[dict[str, Any]]:
    return [_return_document(sale, index) for index, sale in enumerate(sales)]


async def run(ctx: Context) -> dict[str, Any]:
    """Store the sales, then measure throughput in-process and latency against a process."""
    k = ctx.sizes.returns
    steady = int(ctx.sizes.return_rate * ctx.sizes.return_seconds)
    warmup = int(ctx.sizes.return_rate * _WARMUP_SECONDS)
    async with ctx.database("returns") as url, ctx.database("returns_mirror") as mirror_url:
        settings = ctx.settings(url, "returns")
        await create_all_topics(settings)
        sales, stored = await _store_receipts(settings, mirror_url, 3 * k + warmup + steady)
        throughput = await _throughput(settings, sales[:k])
        await settle(mirror_url)
        ceiling = await _postgres_ceiling(settings, mirror_url, sales[k : 2 * k])
        sequential = await _handler_sequential(settings, sales[2 * k : 3 * k])
        await settle(url)  # the throughput runs' writes stay out of the latency window
        latency = await _latency(ctx, settings, sales[3 * k :], warmup)
    return {
        "returns": k,
        "mix": "every second return partial (one or two lines, one unit each, with a "
        "return_id), the others whole",
        "receipts_stored_first": stored,
        "throughput": throughput,
        "postgres_ceiling": ceiling,
        "handler_sequential": sequential,
        "latency": latency,
        "outcome_latency": latency["outcome_latency"],
        "ratios": {
            "applied_over_raw_consume": ratio(
                throughput["returns_per_second"], throughput["raw_consume"]["records_per_second"]
            ),
            "applied_over_postgres_ceiling": ratio(
                throughput["returns_per_second"], ceiling["returns_per_second"]
            ),
            "applied_over_handler_sequential": ratio(
                throughput["returns_per_second"], sequential["returns_per_second"]
            ),
            "outcome_p50_over_broker_p50": ratio(
                latency["outcome_latency"]["p50_ms"], latency["broker_latency"]["p50_ms"]
            ),
            "outcome_p99_over_broker_p99": ratio(
                latency["outcome_latency"]["p99_ms"], latency["broker_latency"]["p99_ms"]
            ),
        },
    }


async def _store_receipts(
    settings: Settings, mirror_url: str, count: int
) -> tuple[list[_Sale], dict[str, Any]]:
    """Store ``count`` receipts in the benchmark's database and, the same ones, its mirror."""
    say(f"returns: storing {count:,} receipts through ReceiptHandler.apply (no Kafka), twice")
    model = FleetModel(
        SimulationOptions(receipts=count, customers=100_000, return_share=0.0),
        Random(20261123),
        datetime.now(UTC) - timedelta(days=1),
        f"R{suffix()[:8]}",
    )
    db = await Database.connect(settings.database_url, max_size=4)
    mirror = await Database.connect(mirror_url, max_size=4)
    handler = ReceiptHandler(db, settings.topics)
    mirror_handler = ReceiptHandler(mirror, settings.topics)
    sales: list[_Sale] = []
    began = time.perf_counter()
    try:
        batch: list[Decoded[ParsedReceipt]] = []
        offset = 0
        while len(sales) < count:
            for event in model.next_receipt():
                if event.kind != "receipt":
                    continue
                record = InboundRecord(
                    topic=settings.topics.receipts,
                    partition=0,
                    offset=offset,
                    key=event.key.encode(),
                    value=event.value(),
                )
                offset += 1
                batch.append(Decoded(record, handler.decode(record)))
                sales.append(_Sale(event.document))
            if len(batch) >= _STORE_BATCH or len(sales) >= count:
                refused = await handler.apply(batch) + await mirror_handler.apply(batch)
                if refused:
                    raise RuntimeError(f"{len(refused)} receipts refused while storing")
                batch = []
        # Their coupon-usage and points events are not what this benchmark relays.
        for database in (db, mirror):
            async with database.connection() as conn:
                await conn.execute("DELETE FROM outbox")
    finally:
        await db.close()
        await mirror.close()
    seconds = time.perf_counter() - began
    say(f"returns: stored {len(sales):,} receipts in {seconds:.1f}s")
    return sales, {
        "receipts": len(sales),
        "seconds": round(seconds, 2),
        "note": "their outbox rows are marked sent, so the relay carries only return "
        "outputs; stored in the benchmark's database and in the ceiling's mirror",
    }


async def _publish(settings: Settings, topic: str, documents: list[dict[str, Any]]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, key=d["transaction_no"].encode(), value=orjson.dumps(d))
            for d in documents
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _throughput(settings: Settings, sales: list[_Sale]) -> dict[str, Any]:
    k = len(sales)
    topic = settings.topics.returns
    say(f"returns: publishing {k:,} returns to {topic}")
    await _publish(settings, topic, _return_documents(sales))
    raw = await raw_consume(settings, topic, k)
    say(f"returns: raw consume {k:,} records at {raw['records_per_second']:,.0f}/s")

    say("returns: ConsumerLoop + ReturnHandler + OutboxRelay + resolver (in-process)")
    db = await Database.connect(settings.database_url, max_size=settings.database_pool_size)
    stop = asyncio.Event()
    resolver = PendingReturnResolver(settings, db)
    handler: TimedHandler[ParsedReturn] = TimedHandler(
        ReturnHandler(settings, db, on_parked=resolver.wake), target=k
    )
    loop = ConsumerLoop(
        settings, handler=handler, topic=topic, group_id=settings.consumer_group("returns")
    )
    relay = OutboxRelay(settings, db)
    cpu = await _CpuWindow.start(settings.database_url)
    tasks = [asyncio.ensure_future(part(stop)) for part in (loop.run, relay.run, resolver.run)]
    try:
        await wait_or_fail(handler.done, 600, "returns throughput")
        applied_seconds = handler.seconds
        cpu_used = cpu.per_return_ms(k, service="bench_process")
        say(
            f"returns: applied {k:,} returns in {applied_seconds:.2f}s "
            f"({k / applied_seconds:,.0f}/s, {handler.batches} transactions); waiting for the relay"
        )
        deadline = time.monotonic() + 300
        async with db.connection() as conn:
            while await conn.fetchval("SELECT EXISTS (SELECT 1 FROM outbox)"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the outbox relay did not drain within 300s")
                await asyncio.sleep(0.05)
        relayed_at = time.perf_counter()
        async with db.connection() as conn:
            rows = await conn.fetch("SELECT status, count(*) FROM return_events GROUP BY status")
            decided: dict[str, int] = {row[0]: int(row[1]) for row in rows}
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await db.close()
    relayed_seconds = relayed_at - (handler.started or relayed_at)
    say(
        f"returns: every output published {relayed_seconds:.2f}s after the first return "
        f"({relay.published:,} outbox rows); statuses {decided}"
    )
    if decided.get("accepted", 0) != k:
        raise RuntimeError(f"expected {k} accepted returns, got {decided}")
    rate = k / applied_seconds if applied_seconds > 0 else 0.0
    return {
        "returns": k,
        "statuses": decided,
        "seconds": round(applied_seconds, 4),
        "returns_per_second": round(rate, 1),
        "transactions": handler.batches,
        "all_outputs_published_seconds": round(relayed_seconds, 4),
        "outputs_per_second_end_to_end": round(k / relayed_seconds, 1) if relayed_seconds else 0,
        "outbox_rows_published": relay.published,
        "cpu_ms_per_return": cpu_used,
        "raw_consume": raw,
        "timeline": handler.timeline(),
    }


async def _postgres_ceiling(
    settings: Settings, mirror_url: str, sales: list[_Sale]
) -> dict[str, Any]:
    """The service's own statements replayed batch by batch, with no Python decision work.

    Each batch is applied by ``ReturnHandler.apply`` on the benchmark's database, noting
    every statement with its arguments; the noted statements are then run again, timed,
    in one transaction per batch on the mirror database, which holds the same receipts.
    Only the replays are timed: what PostgreSQL needs for exactly the service's
    statements, with the round trips and asyncpg's encoding but none of the decoding,
    deciding or building of events. (A replay in the same database after a rolled-back
    recording would find the rolled-back rows' dead index entries and be slower.)
    """
    say(f"returns: PostgreSQL ceiling ({len(sales):,} returns, the service's statements replayed)")
    db = await Database.connect(settings.database_url, max_size=settings.database_pool_size)
    mirror = await Database.connect(mirror_url, max_size=settings.database_pool_size)
    recording = NotingDatabase(db.pool)
    handler = ReturnHandler(settings, recording)
    decoded = _decoded(handler, settings, sales)
    size = settings.batch_max_records
    batches = [decoded[i : i + size] for i in range(0, len(decoded), size)]
    seconds = cpu_seconds = postgres_seconds = 0.0
    statements = 0
    server = await postgres_server_pid(mirror_url)
    try:
        for batch in batches:
            await handler.apply(batch)
            noted = recording.statements
            statements += len(noted)
            process_before, postgres_before = _own_cpu_seconds(), server_cpu_seconds(server)
            began = time.perf_counter()
            async with mirror.transaction() as conn:
                for method, query, args, kwargs in noted:
                    await getattr(conn, method)(query, *args, **kwargs)
            seconds += time.perf_counter() - began
            cpu_seconds += _own_cpu_seconds() - process_before
            postgres_seconds += server_cpu_seconds(server) - postgres_before
        async with mirror.connection() as conn:
            accepted = await conn.fetchval(
                "SELECT count(*) FROM return_events WHERE status = 'accepted' "
                "AND event_id = ANY($1::text[])",
                [item.event.event.event_id for item in decoded],
            )
    finally:
        await db.close()
        await mirror.close()
    if accepted != len(decoded):
        raise RuntimeError(f"the replayed ceiling accepted {accepted} of {len(decoded)} returns")
    rate = len(decoded) / seconds if seconds > 0 else 0.0
    say(f"returns: PostgreSQL ceiling {len(decoded):,} returns in {seconds:.2f}s ({rate:,.0f}/s)")
    return {
        "returns": len(decoded),
        "batch_size": size,
        "statements": statements,
        "seconds": round(seconds, 4),
        "returns_per_second": round(rate, 1),
        "cpu_ms_per_return": {
            "bench_process": round(cpu_seconds / len(decoded) * 1000, 3),
            "postgresql": None
            if server is None
            else round(postgres_seconds / len(decoded) * 1000, 3),
        },
        "method": "each batch's statements, as ReturnHandler.apply ran them on the "
        "benchmark's database, replayed on a mirror database holding the same receipts, in "
        "one transaction per batch, sequentially; only the replays timed: no Kafka, no "
        "relay, no decoding or deciding",
    }


async def _handler_sequential(settings: Settings, sales: list[_Sale]) -> dict[str, Any]:
    """``ReturnHandler.apply`` on decoded batches, one after the other: the old ceiling.

    Until issue 18 this was the PostgreSQL ceiling; kept so runs before and after it
    compare like for like. It includes the handler's Python work.
    """
    say(f"returns: handler in sequence ({len(sales):,} returns decoded beforehand, no Kafka)")
    db = await Database.connect(settings.database_url, max_size=settings.database_pool_size)
    handler = ReturnHandler(settings, db)
    decoded = _decoded(handler, settings, sales)
    size = settings.batch_max_records
    try:
        cpu = await _CpuWindow.start(settings.database_url)
        seconds, _, _ = await apply_in_batches(handler.apply, decoded, size)
        cpu_used = cpu.per_return_ms(len(decoded), service="bench_process")
    finally:
        await db.close()
    rate = len(decoded) / seconds if seconds > 0 else 0.0
    say(f"returns: handler in sequence {len(decoded):,} returns in {seconds:.2f}s ({rate:,.0f}/s)")
    return {
        "returns": len(decoded),
        "batch_size": size,
        "seconds": round(seconds, 4),
        "returns_per_second": round(rate, 1),
        "cpu_ms_per_return": cpu_used,
        "method": "decoded before the clock; ReturnHandler.apply per batch (one transaction "
        "each) sequentially, no Kafka and no relay: the ceiling as measured before issue 18",
    }


def _decoded(
    handler: ReturnHandler, settings: Settings, sales: list[_Sale]
) -> list[Decoded[ParsedReturn]]:
    records = [
        InboundRecord(settings.topics.returns, 0, offset, None, orjson.dumps(document))
        for offset, document in enumerate(_return_documents(sales))
    ]
    return [Decoded(record, handler.decode(record)) for record in records]


async def _latency(
    ctx: Context, settings: Settings, sales: list[_Sale], warmup_count: int
) -> dict[str, Any]:
    sizes = ctx.sizes
    tail = f"{settings.consumer_group_prefix}-latency"
    topics = TopicNames(
        receipts=settings.topics.receipts,
        returns=f"pos.returns.v1.{tail}",
        coupon_usage=f"punchcard.coupon-usage.v1.{tail}",
        points=f"punchcard.points.v1.{tail}",
        return_outcomes=f"punchcard.return-outcomes.v1.{tail}",
    )
    live = settings.model_copy(update={"topics": topics, "consumer_group_prefix": tail})
    # The broker stamps each return as it appends it (LogAppendTime): that splits the
    # producer's side of the delay from the consumers'. Outcomes keep CreateTime, the
    # moment the relay handed each one to its producer.
    await create_topics(
        live,
        [topics.returns],
        partitions=PARTITIONS,
        configs={"message.timestamp.type": "LogAppendTime"},
    )
    await create_all_topics(live)
    env = {**live.environment(), "PUNCHCARD_LOG_FORMAT": "json", "PUNCHCARD_LOG_LEVEL": "INFO"}
    service = ServiceProcess("returns", env=env, port=free_port(), log_file=ctx.out / "returns.log")
    # perf_counter + this = wall clock, the clock of Kafka's timestamps and PostgreSQL's.
    wall_offset = time.time() - time.perf_counter()
    service.start()
    sent: dict[str, float] = {}
    called: dict[str, float] = {}
    acked: dict[str, float] = {}
    outcome_at: dict[str, float] = {}
    hop_at: dict[str, float] = {}
    # Kafka timestamps (wall clock, ms) of each record as read: the return's broker append
    # time, the outcome's relay send time.
    appended: dict[str, float] = {}
    relayed: dict[str, float] = {}
    stop = asyncio.Event()
    readers = [
        asyncio.ensure_future(
            _read(
                live,
                topics.return_outcomes,
                "return_event_id",
                outcome_at,
                stamps=relayed,
                stop=stop,
            )
        ),
        asyncio.ensure_future(
            _read(live, topics.returns, "event_id", hop_at, stamps=appended, stop=stop)
        ),
    ]
    producer = make_producer(live)
    await producer.start()
    try:
        await asyncio.to_thread(service.wait_healthy, 60.0)
        documents = _return_documents(sales)
        warmup, steady = documents[:warmup_count], documents[warmup_count:]
        say(
            f"returns: returns service (process) up; warming up with {len(warmup)} returns "
            f"at {sizes.return_rate:g}/s"
        )
        await asyncio.gather(*await _paced(producer, topics.returns, warmup, sizes.return_rate))
        await _until(
            lambda: all(d["event_id"] in outcome_at for d in warmup), 90, "warm-up outcomes"
        )
        say(
            f"returns: publishing {len(steady):,} returns at {sizes.return_rate:g}/s "
            "and timing their outcomes"
        )

        def timed(event_id: str, scheduled: float, future: asyncio.Future[Any]) -> None:
            sent[event_id] = scheduled
            called[event_id] = time.perf_counter()
            future.add_done_callback(partial(_note_time, acked, event_id))

        cpu = await _CpuWindow.start(live.database_url, service.pid)
        futures = await _paced(producer, topics.returns, steady, sizes.return_rate, timed)
        await asyncio.gather(*futures)
        await _until(lambda: all(e in outcome_at for e in sent), 120, "every outcome")
        cpu_used = cpu.per_return_ms(len(steady), service="service_process")
        await _until(lambda: all(e in hop_at for e in sent), 30, "every raw read")
    finally:
        stop.set()
        await producer.stop()
        await asyncio.gather(*readers, return_exceptions=True)
        code = await asyncio.to_thread(service.terminate)
    outcome = latency_summary([outcome_at[e] - t for e, t in sent.items()])
    broker = latency_summary([hop_at[e] - t for e, t in sent.items()])
    marks = {
        "scheduled": sent,
        "send_called": called,
        "acked": acked,
        "return_appended": {e: t - wall_offset for e, t in appended.items()},
        "return_read_raw": hop_at,
        "outcome_relayed": {e: t - wall_offset for e, t in relayed.items()},
        "outcome_read": outcome_at,
        **await _service_marks(live, list(sent), wall_offset),
    }
    stages = _stages(marks, list(sent))
    _write_marks(ctx.out / "returns-latency-marks.csv", marks, list(sent))
    say(
        f"returns: outcome latency p50 {outcome['p50_ms']:.1f} ms, p99 {outcome['p99_ms']:.1f} ms; "
        f"broker hop p50 {broker['p50_ms']:.1f} ms, p99 {broker['p99_ms']:.1f} ms"
    )
    for name, _, _ in _STAGES:
        stage = stages[name]
        say(
            f"returns:   {name:22s} p50 {stage['p50_ms']:7.1f}  p99 {stage['p99_ms']:7.1f}  "
            f"slowest 1% mean {stage['slowest_1pct_mean_ms']:7.1f} ms"
        )
    return {
        "rate_per_second": sizes.return_rate,
        "seconds": sizes.return_seconds,
        "returns": len(sent),
        "outcome_latency": outcome,
        "broker_latency": broker,
        "stages": stages,
        "cpu_ms_per_return": cpu_used,
        "definition": "from each return's scheduled send (aiokafka producer with Punchcard's "
        "settings: acks=all, idempotent, linger 0 ms) to the moment its record was fetched "
        "here: the ReturnOutcomeEvent on the outcomes topic (outcome), or the return itself "
        "on the returns topic (broker)",
        "service": "punchcard serve returns (process: loop + relay + resolver)",
        "exit_code": code,
        "log": str(ctx.out / "returns.log"),
    }


_STAGES = (
    ("send_late", "scheduled", "send_called"),
    ("producer_to_append", "send_called", "return_appended"),
    ("append_to_ack", "return_appended", "acked"),
    ("append_to_raw_read", "return_appended", "return_read_raw"),
    ("append_to_transaction", "return_appended", "transaction_began"),
    ("transaction", "transaction_began", "decided"),
    ("decided_to_relayed", "decided", "outcome_relayed"),
    ("relayed_to_read", "outcome_relayed", "outcome_read"),
)


def _stages(marks: dict[str, dict[str, float]], events: list[str]) -> dict[str, Any]:
    """Each stage's delay over every return, and its mean over the slowest 1% of outcomes.

    Marks come from three clocks on one machine (perf_counter, Kafka's millisecond
    timestamps, PostgreSQL's now() and clock_timestamp()), so a stage can be off by a
    millisecond or two; the slowest outcomes' means show where their time went.
    """
    complete = [e for e in events if all(e in m for m in marks.values())]
    slowest = sorted(complete, key=lambda e: marks["outcome_read"][e] - marks["scheduled"][e])
    tail = slowest[-max(1, len(slowest) // 100) :]
    result: dict[str, Any] = {"events_with_every_mark": len(complete)}
    for name, start, end in _STAGES:
        delays = [marks[end][e] - marks[start][e] for e in complete]
        tail_delays = [marks[end][e] - marks[start][e] for e in tail]
        result[name] = {
            **latency_summary(delays),
            "slowest_1pct_mean_ms": round(sum(tail_delays) / len(tail_delays) * 1000, 3),
        }
    return result


def _write_marks(path: Path, marks: dict[str, dict[str, float]], events: list[str]) -> None:
    """Every return's marks, in ms after the first scheduled send, to look at a tail closely."""
    origin = min(marks["scheduled"].values())
    names = list(marks)
    lines = [",".join(["event_id", *names])]
    for event in events:
        cells = [
            f"{(marks[n][event] - origin) * 1000:.2f}" if event in marks[n] else "" for n in names
        ]
        lines.append(",".join([event, *cells]))
    path.write_text("\n".join(lines) + "\n")


async def _service_marks(
    settings: Settings, events: list[str], wall_offset: float
) -> dict[str, dict[str, float]]:
    """When the service's transaction for each return began, and when it decided it."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT event_id, extract(epoch FROM received_at)::float8, "
            "extract(epoch FROM decided_at)::float8 FROM return_events "
            "WHERE event_id = ANY($1::text[])",
            events,
        )
    finally:
        await conn.close()
    return {
        "transaction_began": {r[0]: r[1] - wall_offset for r in rows},
        "decided": {r[0]: r[2] - wall_offset for r in rows if r[2] is not None},
    }


class _CpuWindow:
    """CPU used from ``start`` on: one process's (the service's, or this one) and PostgreSQL's."""

    def __init__(self, server: int | None, pid: int | None) -> None:
        self._server, self._pid = server, pid
        self._process = _process_cpu_seconds(pid)
        self._postgres = server_cpu_seconds(server)

    @classmethod
    async def start(cls, url: str, pid: int | None = None) -> _CpuWindow:
        return cls(await postgres_server_pid(url), pid)

    def per_return_ms(self, returns: int, *, service: str) -> dict[str, float | None]:
        """Milliseconds of CPU per return since ``start``, by party."""
        process = _process_cpu_seconds(self._pid) - self._process
        postgres = server_cpu_seconds(self._server) - self._postgres
        return {
            service: round(process / returns * 1000, 3),
            "postgresql": None if self._server is None else round(postgres / returns * 1000, 3),
        }


def _process_cpu_seconds(pid: int | None) -> float:
    """The service's CPU (with its children) if ``pid`` is given, else this process's."""
    return _own_cpu_seconds() if pid is None else service_cpu_seconds(pid)


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _note_time(times: dict[str, float], key: str, _: object) -> None:
    times[key] = time.perf_counter()


async def _paced(
    producer: AIOKafkaProducer,
    topic: str,
    documents: list[dict[str, Any]],
    rate: float,
    on_send: Callable[[str, float, asyncio.Future[Any]], None] | None = None,
) -> list[asyncio.Future[Any]]:
    """Send ``documents`` open loop at ``rate``; each one's future of its acknowledgement."""
    start = time.perf_counter() + 0.05
    futures: list[asyncio.Future[Any]] = []
    for index, d in enumerate(documents):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        future = await producer.send(topic, key=d["transaction_no"].encode(), value=orjson.dumps(d))
        if on_send is not None:
            on_send(d["event_id"], scheduled, future)
        futures.append(future)
    return futures


async def _read(
    settings: Settings,
    topic: str,
    field: str,
    seen: dict[str, float],
    *,
    stamps: dict[str, float],
    stop: asyncio.Event,
) -> None:
    """Note when each record (by a JSON field) arrives on ``topic``, until ``stop``.

    ``stamps`` gets each record's Kafka timestamp, in wall-clock seconds.
    """
    consumer = make_consumer(
        settings, group_id=f"{settings.consumer_group_prefix}.reader.{suffix()}"
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    key = orjson.loads(record.value)[field]
                    seen.setdefault(key, now)
                    stamps.setdefault(key, record.timestamp / 1000)
    finally:
        await consumer.stop()


async def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not seen within {timeout:.0f}s")
        await asyncio.sleep(0.02)
