"""Receipt ingest: the set-based consumer against the broker's ceiling and a naive consumer.

The simulator's fleet publishes N receipts (zstd, keyed by customer or transaction as
the contract says) to a fresh 12-partition topic. The same records are then read three
ways, each on a fresh consumer group (and the two consumers each on a fresh database):

- raw: an aiokafka consumer that decodes nothing and commits nothing (the ceiling);
- set-based: ``ConsumerLoop`` + ``ReceiptHandler`` as the service runs them, until all
  N receipts are in the ``receipts`` table;
- naive: the same loop and handler with ``batch_max_records=1``, so one transaction and
  one offset commit per record, over the first M records (the rate is extrapolated);
- PostgreSQL's ceiling for our writes: the records fetched and decoded beforehand, then
  the handler's ``apply`` (the same SQL, in batches of ``batch_max_records``) straight into
  a fresh database, one batch after the other: no Kafka, no decoding;
- end to end: the set-based run with the outbox relay beside it, as the service runs,
  from the first record touched until every receipt is committed *and* every output event
  is on its topic (the outbox is empty);
- the relay's own rate: a relay draining the outbox the ceiling run left behind;
- with a lifetime: end to end and the ceiling again with ``PUNCHCARD_POINTS_LIFETIME=P1Y``
  (every earn a lot, every burn allocated from lots; issue 19), each on a fresh database,
  beside the runs without one: the before and after;
- with a campaign cap: the same records, every second sale of a known customer also using
  one coupon with ``total_uses_permitted`` set (issue 20: its campaign-wide count must not
  serialise ingest), republished to fresh topics; end to end and the ceiling again.

With ``--preload-receipts N`` the set-based run is repeated on a database already holding
N stored receipts (made in SQL by generate_series), to show the cost stays flat.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any

import asyncpg
from aiokafka import TopicPartition
from punchcard_contract import InvalidEventError, ParsedReceipt
from punchcard_platform.consumer import ConsumerLoop, to_inbound
from punchcard_platform.db import Database
from punchcard_platform.kafka import make_consumer, make_producer
from punchcard_platform.records import Decoded, InboundRecord
from punchcard_platform.relay import OutboxRelay
from punchcard_platform.settings import Settings
from punchcard_receipt_consumer.handler import ReceiptHandler

from bench.common import (
    PARTITIONS,
    Context,
    TimedHandler,
    apply_in_batches,
    create_all_topics,
    ratio,
    raw_consume,
    say,
    wait_or_fail,
)
from punchcard.simulator import SimulationOptions, simulate

# The simulator's mix, without returns: this benchmark is about receipts.
_CUSTOMERS = 100_000


async def run(ctx: Context) -> dict[str, Any]:
    """Produce, then measure raw, set-based and naive consumption of the same records."""
    n = ctx.sizes.receipts
    async with ctx.database("ingest") as url:
        settings = ctx.settings(url, "ingest")
        await create_all_topics(settings)
        produced = await _produce(settings, n)
        raw = await _raw_consume(settings, n)
        set_based = await _consume(settings, n, label="set-based", relay=True)
        records = await _fetch_all(settings, n)
        async with ctx.database("ingest_ceiling") as ceiling_url:
            ceiling_settings = settings.model_copy(update={"database_url": ceiling_url})
            ceiling = await _postgres_ceiling(ceiling_settings, records)
            relay = await _relay_rate(ceiling_settings)
        lifetime = await _with_lifetime(ctx, settings, records, set_based, ceiling)
        campaign = await _with_campaign_cap(ctx, records, set_based, ceiling)
        preloaded: dict[str, Any] | None = None
        if ctx.sizes.preload_receipts:
            async with ctx.database("ingest_preloaded") as preloaded_url:
                preloaded = await _preloaded(
                    settings.model_copy(
                        update={
                            "database_url": preloaded_url,
                            "consumer_group_prefix": f"{settings.consumer_group_prefix}-pre",
                        }
                    ),
                    n,
                    ctx.sizes.preload_receipts,
                )
        async with ctx.database("ingest_naive") as naive_url:
            naive_settings = settings.model_copy(
                update={
                    "database_url": naive_url,
                    "batch_max_records": 1,
                    "consumer_group_prefix": f"{settings.consumer_group_prefix}-naive",
                }
            )
            naive = await _consume(
                naive_settings, min(ctx.sizes.naive_receipts, n), label="naive", partial=True
            )
            naive["extrapolated"] = (
                f"measured over the first {naive['receipts']:,} of the {n:,} records only; "
                "its rate stands for the whole topic (one transaction and commit per record "
                "costs the same for every record). Per-commit cost depends on the server's "
                "fsync and synchronous_commit (run.postgres_settings): a scratch server with "
                "them off flatters the naive consumer"
            )
    end_to_end = set_based.pop("end_to_end")
    result: dict[str, Any] = {
        "receipts": n,
        "partitions": PARTITIONS,
        "produce": produced,
        "raw_consume": raw,
        "set_based": set_based,
        "naive": naive,
        "postgres_ceiling": ceiling,
        "end_to_end": end_to_end,
        "relay": relay,
        "ratios": {
            "set_based_over_naive": ratio(
                set_based["receipts_per_second"], naive["receipts_per_second"]
            ),
            "set_based_over_raw": ratio(
                set_based["receipts_per_second"], raw["records_per_second"]
            ),
            "end_to_end_rps": end_to_end["receipts_per_second"],
            "end_to_end_over_postgres_ceiling": ratio(
                end_to_end["receipts_per_second"], ceiling["receipts_per_second"]
            ),
            "set_based_over_postgres_ceiling": ratio(
                set_based["receipts_per_second"], ceiling["receipts_per_second"]
            ),
            "relay_events_over_written_events_per_second": ratio(
                relay["events_per_second"], end_to_end["output_events_per_second"]
            ),
        },
    }
    result["lifetime"] = lifetime
    result["campaign_cap"] = campaign
    result["ratios"]["campaign_cap_end_to_end_over_postgres_ceiling"] = campaign["ratios"][
        "end_to_end_over_postgres_ceiling"
    ]
    result["ratios"]["lifetime_end_to_end_over_postgres_ceiling"] = lifetime["ratios"][
        "end_to_end_over_postgres_ceiling"
    ]
    if preloaded is not None:
        result["preloaded"] = preloaded
        result["ratios"]["preloaded_over_empty"] = ratio(
            preloaded["receipts_per_second"], set_based["receipts_per_second"]
        )
    return result


async def _produce(settings: Settings, n: int) -> dict[str, Any]:
    say(f"ingest: producing {n:,} receipts with the simulator to {settings.topics.receipts}")
    options = SimulationOptions(
        receipts=n,
        rate=0,
        customers=_CUSTOMERS,
        return_share=0.0,
        seed=20261122,
    )
    summary = await simulate(settings, options)
    say(
        f"ingest: produced {summary.receipts:,} receipts in {summary.elapsed_seconds:.1f}s "
        f"({summary.receipts_per_second:,.0f}/s)"
    )
    return {
        "tool": "punchcard.simulator.simulate (librdkafka, zstd, idempotent, acks=all)",
        "customers": _CUSTOMERS,
        "anonymous_share": options.anonymous_share,
        "coupon_uses": summary.coupon_uses,
        "seconds": round(summary.elapsed_seconds, 3),
        "receipts_per_second": round(summary.receipts_per_second, 1),
    }


async def _raw_consume(settings: Settings, n: int) -> dict[str, Any]:
    """The broker's ceiling for these records."""
    say("ingest: raw consume (aiokafka, no decode, no commit)")
    result = await raw_consume(settings, settings.topics.receipts, n)
    say(
        f"ingest: raw consume {result['records']:,} records in {result['seconds']:.2f}s "
        f"({result['records_per_second']:,.0f}/s)"
    )
    return result


async def _consume(
    settings: Settings, n: int, *, label: str, partial: bool = False, relay: bool = False
) -> dict[str, Any]:
    """Run the real loop and handler in-process until ``n`` receipts are applied.

    With ``relay`` the outbox relay runs beside them, as in the service, and the run also
    reports end to end: until the outbox is empty, every output event on its topic.
    """
    say(
        f"ingest: {label} consumer (ConsumerLoop + ReceiptHandler, "
        f"batch_max_records={settings.batch_max_records}) for {n:,} receipts"
    )
    db = await Database.connect(settings.database_url, max_size=settings.database_pool_size)
    stop = asyncio.Event()
    handler: TimedHandler[ParsedReceipt] = TimedHandler(
        ReceiptHandler(db, settings.topics, rules=settings.expiry_rules), target=n
    )
    loop = ConsumerLoop(
        settings,
        handler=handler,
        topic=settings.topics.receipts,
        group_id=settings.consumer_group(f"receipt-consumer-{label}"),
    )
    began = time.perf_counter()
    cpu_began = time.process_time()
    tasks = [asyncio.ensure_future(loop.run(stop))]
    if relay:
        tasks.append(asyncio.ensure_future(OutboxRelay(settings, db).run(stop)))
    progress = asyncio.ensure_future(_report(handler, label))
    end_to_end: dict[str, Any] = {}
    try:
        await wait_or_fail(handler.done, 600, f"{label} ingest")
        cpu_applied = time.process_time() - cpu_began
        if relay:
            drained = await _outbox_drained(db, 600)
            cpu_all = time.process_time() - cpu_began
            assert handler.started is not None
            seconds = drained - handler.started
            async with db.connection() as conn:
                events = int(await conn.fetchval("SELECT count(*) FROM points_ledger"))
                events += int(
                    await conn.fetchval(
                        "SELECT coalesce(sum(jsonb_array_length(coupons)), 0) FROM receipts "
                        "WHERE customer_id IS NOT NULL"
                    )
                )
            end_to_end = {
                "receipts": n,
                "output_events": events,
                "seconds": round(seconds, 4),
                "receipts_per_second": round(n / seconds, 1) if seconds > 0 else 0.0,
                "output_events_per_second": round(events / seconds, 1) if seconds > 0 else 0.0,
                "cpu_us_per_receipt_consumer_and_relay": round(cpu_all / n * 1e6, 1),
                "clock": "from the loop's first decode until every receipt is committed and "
                "the outbox is empty (every output event acknowledged on its topic)",
            }
        stop.set()
        await asyncio.gather(*tasks)
        async with db.connection() as conn:
            stored = int(await conn.fetchval("SELECT count(*) FROM receipts"))
    finally:
        stop.set()
        progress.cancel()
        for task in tasks:
            if not task.done():
                task.cancel()
        await db.close()
    wall = time.perf_counter() - began
    rate = handler.target / handler.seconds if handler.seconds > 0 else 0.0
    say(
        f"ingest: {label} applied {handler.target:,} receipts in {handler.seconds:.2f}s "
        f"({rate:,.0f}/s, {handler.batches:,} transactions; {stored:,} rows in receipts)"
    )
    if not partial and stored < n:
        raise RuntimeError(f"{label}: only {stored} of {n} receipts stored")
    result: dict[str, Any] = {
        "receipts": handler.target,
        "applied_by_stop": handler.applied,
        "rows_in_receipts_table": stored,
        "transactions": handler.batches,
        "batch_max_records": settings.batch_max_records,
        "batch_wait_ms": settings.batch_wait_ms,
        "seconds": round(handler.seconds, 4),
        "wall_seconds_including_group_join": round(wall, 3),
        "receipts_per_second": round(rate, 1),
        "cpu_us_per_receipt": round(cpu_applied / handler.target * 1e6, 1),
        "cpu_note": "CPU time of this whole process (loop, handler"
        + (", relay" if relay else "")
        + ") per receipt: what the consumer costs, whatever else shares the cores",
        "clock": "from the loop's first decode (its first batch already fetched) to the "
        "commit that applied the last of the receipts; group join excluded",
        "timeline": handler.timeline(),
    }
    if relay:
        result["end_to_end"] = end_to_end
    return result


async def _outbox_drained(db: Database, timeout: float) -> float:
    """When the outbox was first seen empty: the relay has published everything."""
    deadline = time.monotonic() + timeout
    async with db.connection() as conn:
        while await conn.fetchval("SELECT EXISTS (SELECT 1 FROM outbox)"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the outbox was not drained within {timeout:.0f}s")
            await asyncio.sleep(0.01)
    return time.perf_counter()


async def _fetch_all(settings: Settings, n: int) -> list[InboundRecord]:
    """Every record of the receipts topic, as the loop would hand them over."""
    consumer = make_consumer(settings, group_id=f"{settings.consumer_group_prefix}.fetch-all")
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.topics.receipts, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[InboundRecord] = []
        deadline = time.monotonic() + 300
        while len(records) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fetched only {len(records)} of {n} receipts")
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(to_inbound(r) for r in batch)
        return records
    finally:
        await consumer.stop()


async def _postgres_ceiling(settings: Settings, records: list[InboundRecord]) -> dict[str, Any]:
    """The handler's SQL fed from decoded batches, one after the other: PostgreSQL's pace."""
    say("ingest: PostgreSQL ceiling (decoded beforehand, handler.apply batches, no Kafka)")
    db = await Database.connect(settings.database_url, max_size=settings.database_pool_size)
    handler = ReceiptHandler(db, settings.topics, rules=settings.expiry_rules)
    decoded: list[Decoded[ParsedReceipt]] = []
    for record in records:
        try:
            decoded.append(Decoded(record, handler.decode(record)))
        except InvalidEventError:
            continue
    size = settings.batch_max_records
    try:
        seconds, cpu, batches = await apply_in_batches(handler.apply, decoded, size)
    finally:
        await db.close()
    rate = len(decoded) / seconds if seconds > 0 else 0.0
    say(f"ingest: PostgreSQL ceiling {len(decoded):,} receipts in {seconds:.2f}s ({rate:,.0f}/s)")
    return {
        "receipts": len(decoded),
        "batches": batches,
        "batch_size": size,
        "seconds": round(seconds, 4),
        "receipts_per_second": round(rate, 1),
        "python_cpu_share": round(cpu / seconds, 3) if seconds > 0 else None,
        "method": "records fetched and decoded before the clock; then ReceiptHandler.apply "
        "per batch (the same statements, one transaction each) into a fresh database, "
        "sequentially as one consumer does; the handler's own Python (booking, argument "
        "encoding) is inside the clock, so this ceiling is slightly conservative",
    }


async def _with_lifetime(
    ctx: Context,
    settings: Settings,
    records: list[InboundRecord],
    before: dict[str, Any],
    before_ceiling: dict[str, Any],
) -> dict[str, Any]:
    """End to end and the PostgreSQL ceiling again, with points that expire.

    ``PUNCHCARD_POINTS_LIFETIME=P1Y``: every earn makes a lot and every burn allocates
    from the customer's lots (issue 19). Run right after the same measurements without a
    lifetime, on the same records, each on a fresh database: the before and after.
    """
    lifetime = settings.model_copy(
        update={
            "points_lifetime": _LIFETIME,
            "consumer_group_prefix": f"{settings.consumer_group_prefix}-lifetime",
        }
    )
    n = before["receipts"]
    async with ctx.database("ingest_lifetime") as url:
        set_based = await _consume(
            lifetime.model_copy(update={"database_url": url}),
            n,
            label=f"set-based, lifetime {_LIFETIME}",
            relay=True,
        )
        conn = await asyncpg.connect(url)
        try:
            lots = int(await conn.fetchval("SELECT count(*) FROM points_lots"))
            allocations = int(await conn.fetchval("SELECT count(*) FROM points_allocations"))
        finally:
            await conn.close()
    async with ctx.database("ingest_lifetime_ceiling") as url:
        ceiling = await _postgres_ceiling(
            lifetime.model_copy(update={"database_url": url}), records
        )
    end_to_end = set_based.pop("end_to_end")
    say(f"ingest: with a lifetime, {lots:,} lots and {allocations:,} allocations stored")
    return {
        "points_lifetime": _LIFETIME,
        "lots_stored": lots,
        "allocations_stored": allocations,
        "set_based": set_based,
        "end_to_end": end_to_end,
        "postgres_ceiling": ceiling,
        "ratios": {
            **_variant_ratios(
                set_based, end_to_end, ceiling, before, before_ceiling, variant="lifetime"
            ),
            "set_based_over_set_based_without_lifetime": ratio(
                set_based["receipts_per_second"], before["receipts_per_second"]
            ),
            "cpu_per_receipt_over_without_lifetime": ratio(
                set_based["cpu_us_per_receipt"], before["cpu_us_per_receipt"]
            ),
        },
    }


def _variant_ratios(
    set_based: dict[str, Any],
    end_to_end: dict[str, Any],
    ceiling: dict[str, Any],
    before: dict[str, Any],
    before_ceiling: dict[str, Any],
    *,
    variant: str,
) -> dict[str, float | None]:
    """A variant's run against its own ceiling, and against the plain run of the same records."""
    return {
        "end_to_end_over_postgres_ceiling": ratio(
            end_to_end["receipts_per_second"], ceiling["receipts_per_second"]
        ),
        "set_based_over_postgres_ceiling": ratio(
            set_based["receipts_per_second"], ceiling["receipts_per_second"]
        ),
        f"end_to_end_over_end_to_end_without_{variant}": ratio(
            end_to_end["receipts_per_second"], before["end_to_end"]["receipts_per_second"]
        ),
        f"ceiling_over_ceiling_without_{variant}": ratio(
            ceiling["receipts_per_second"], before_ceiling["receipts_per_second"]
        ),
    }


_LIFETIME = "P1Y"

_CAPPED_COUPON = "BENCH-CAMPAIGN"


def _with_capped_coupon(records: list[InboundRecord]) -> tuple[list[InboundRecord], int]:
    """The records with every second sale of a known customer using the capped coupon once.

    Anonymous sales are left as they are: their coupons count toward no customer, nor the
    campaign. Returns the records and how many now name the coupon.
    """
    rewritten: list[InboundRecord] = []
    known = 0
    for record in records:
        document = json.loads(record.value) if record.value else None
        if isinstance(document, dict) and document.get("customer_id"):
            known += 1
            if known % 2 == 1:
                coupons = list(document.get("coupons") or [])
                coupons.append({"coupon_id": _CAPPED_COUPON, "uses": 1})
                document["coupons"] = coupons
                value = json.dumps(document, separators=(",", ":")).encode()
                record = replace(record, value=value)  # noqa: PLW2901 -- the rewritten one
        rewritten.append(record)
    return rewritten, (known + 1) // 2


async def _publish(settings: Settings, records: list[InboundRecord]) -> None:
    """The records to this settings' receipts topic, each to its own partition, zstd."""
    producer = make_producer(settings, compression_type="zstd", linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(
                settings.topics.receipts,
                record.value,
                key=record.key,
                partition=record.partition,
                headers=list(record.headers),
            )
            for record in records
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _create_capped_coupon(url: str, cap: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO coupons (coupon_id, name, description, uses_permitted, valid_from, "
            "active, targeted, restore_on_return, total_uses_permitted) "
            "VALUES ($1, 'Bench campaign', 'generated by the benchmark', NULL, "
            "now() - interval '1 day', true, false, true, $2)",
            _CAPPED_COUPON,
            cap,
        )
    finally:
        await conn.close()


async def _with_campaign_cap(
    ctx: Context,
    records: list[InboundRecord],
    before: dict[str, Any],
    before_ceiling: dict[str, Any],
) -> dict[str, Any]:
    """End to end and the PostgreSQL ceiling again, a campaign-capped coupon on half the sales.

    The coupon's cap is the number of receipts, above the uses it gets: every use is
    counted in the campaign total, none is over the limit.
    """
    capped, uses = _with_capped_coupon(records)
    n = before["receipts"]
    say(f"ingest: with a campaign cap, {uses:,} of {len(capped):,} sales use {_CAPPED_COUPON}")
    async with ctx.database("ingest_campaign") as url:
        settings = ctx.settings(url, "ingest-campaign")
        await create_all_topics(settings)
        await _publish(settings, capped)
        await _create_capped_coupon(url, n)
        set_based = await _consume(settings, n, label="set-based, campaign cap", relay=True)
        conn = await asyncpg.connect(url)
        try:
            total = await conn.fetchval(
                "SELECT COALESCE(sum(uses_made), 0) FROM coupon_totals WHERE coupon_id = $1",
                _CAPPED_COUPON,
            )
        finally:
            await conn.close()
    async with ctx.database("ingest_campaign_ceiling") as url:
        await _create_capped_coupon(url, n)
        ceiling = await _postgres_ceiling(settings.model_copy(update={"database_url": url}), capped)
    end_to_end = set_based.pop("end_to_end")
    say(f"ingest: with a campaign cap, the coupon's total uses made: {total:,}")
    return {
        "coupon_id": _CAPPED_COUPON,
        "total_uses_permitted": n,
        "sales_using_it": uses,
        "total_uses_made": int(total),
        "set_based": set_based,
        "end_to_end": end_to_end,
        "postgres_ceiling": ceiling,
        "ratios": _variant_ratios(
            set_based, end_to_end, ceiling, before, before_ceiling, variant="cap"
        ),
    }


async def _relay_rate(settings: Settings) -> dict[str, Any]:
    """A relay draining the outbox the ceiling run left: its own rate, nothing else running."""
    db = await Database.connect(settings.database_url, max_size=2)
    try:
        async with db.connection() as conn:
            rows = int(await conn.fetchval("SELECT count(*) FROM outbox"))
        say(f"ingest: relay draining {rows:,} outbox rows")
        relay = OutboxRelay(settings, db)
        stop = asyncio.Event()
        cpu_began = time.process_time()
        began = time.perf_counter()
        task = asyncio.ensure_future(relay.run(stop))
        try:
            drained = await _outbox_drained(db, 600)
        finally:
            stop.set()
            await task
        cpu = time.process_time() - cpu_began
    finally:
        await db.close()
    seconds = drained - began
    rate = rows / seconds if seconds > 0 else 0.0
    say(f"ingest: relay published {rows:,} events in {seconds:.2f}s ({rate:,.0f}/s)")
    return {
        "events": rows,
        "seconds": round(seconds, 4),
        "events_per_second": round(rate, 1),
        "cpu_us_per_event": round(cpu / rows * 1e6, 1) if rows else None,
        "method": "one OutboxRelay (idempotent producer, acks=all) draining a full outbox; "
        "the clock includes its start and leader election",
    }


async def _preloaded(settings: Settings, n: int, preload: int) -> dict[str, Any]:
    """The set-based run again, on a receipts table that already holds ``preload`` rows."""
    say(f"ingest: preloading {preload:,} stored receipts (generate_series)")
    began = time.perf_counter()
    # A plain connection: the pool's command timeout is for services, not for bulk loads.
    conn = await asyncpg.connect(settings.database_url)
    try:
        for start in range(0, preload, _PRELOAD_CHUNK):
            await conn.execute(
                _PRELOAD_SQL, start + 1, min(start + _PRELOAD_CHUNK, preload), _CUSTOMERS
            )
            say(f"ingest: preloaded {min(start + _PRELOAD_CHUNK, preload):,} receipts")
        await conn.execute("VACUUM ANALYZE receipts")
    finally:
        await conn.close()
    load_seconds = time.perf_counter() - began
    say(f"ingest: preloaded {preload:,} receipts in {load_seconds:.1f}s")
    # With the relay beside it, exactly as the empty-table run it is compared with.
    result = await _consume(settings, n, label="set-based, preloaded", relay=True)
    result["preloaded_receipts"] = preload
    result["preload_seconds"] = round(load_seconds, 1)
    return result


# Stored receipts like the simulator's, made in SQL, with keys among those the run writes:
# the same customers ("C" and six digits, _CUSTOMERS of them), so each new receipt lands
# inside a customer's existing range of receipts_by_customer, and transaction numbers of
# the same stores and terminals on earlier days, so the primary key grows where it will
# in production. Keys of their own range (an earlier version used "PRE-..." and "PC...")
# leave the preloaded part of every index untouched and show no growth cost at all.
_PRELOAD_SQL = """
INSERT INTO receipts (transaction_no, customer_id, store_id, terminal_id, occurred_at,
                      currency, total, points_used, points_earned, coupons, document,
                      content_hash, event_id)
SELECT k.transaction_no, k.customer_id, k.store_id, k.terminal_id, k.occurred_at,
       'JPY', 1980, 0, CASE WHEN k.customer_id IS NULL THEN 0 ELSE 19 END, '[]'::jsonb,
       jsonb_build_object('schema_version', 1, 'event_id', 'pre-' || k.i,
                          'transaction_no', k.transaction_no,
                          'store_id', k.store_id, 'terminal_id', k.terminal_id,
                          'currency', 'JPY', 'total', '1980',
                          'lines', jsonb_build_array(jsonb_build_object(
                              'sku', '4901234567890', 'description', 'Green tea 500ml',
                              'quantity', 2, 'unit_price', '150', 'amount', '300'))),
       sha256(k.i::text::bytea), 'pre-' || k.i
FROM (
    SELECT i, s.store_id, s.terminal_id, s.occurred_at,
           s.store_id || '-' || s.terminal_id || '-'
               || to_char(s.occurred_at AT TIME ZONE 'Asia/Tokyo', 'YYYYMMDD')
               || '-pre-' || lpad(i::text, 8, '0') AS transaction_no,
           CASE WHEN i % 10 = 0 THEN NULL
                ELSE 'C' || lpad((i % $3::bigint)::text, 6, '0') END AS customer_id
    FROM generate_series($1::bigint, $2::bigint) AS i,
         LATERAL (SELECT 'S' || lpad((i % 20 + 1)::text, 4, '0') AS store_id,
                         'T' || lpad((i / 20 % 4 + 1)::text, 2, '0') AS terminal_id,
                         timestamptz '2025-01-01 00:00:00+00' + i * interval '5 seconds'
                             AS occurred_at) AS s
) AS k
"""
_PRELOAD_CHUNK = 1_000_000


async def _report(handler: TimedHandler[Any], label: str) -> None:
    while True:
        await asyncio.sleep(5)
        if handler.started is not None:
            say(
                f"ingest: {label} {handler.applied:,}/{handler.target:,} applied "
                f"({handler.rate():,.0f}/s so far)"
            )
