"""Receipt ingest: the set-based consumer against the broker's ceiling and a naive consumer.

The simulator's fleet publishes N receipts (zstd, keyed by customer or transaction as
the contract says) to a fresh 12-partition topic. The same records are then read three
ways, each on a fresh consumer group (and the two consumers each on a fresh database):

- raw: an aiokafka consumer that decodes nothing and commits nothing (the ceiling);
- set-based: ``ConsumerLoop`` + ``ReceiptHandler`` as the service runs them, until all
  N receipts are in the ``receipts`` table;
- naive: the same loop and handler with ``batch_max_records=1``, so one transaction and
  one offset commit per record, over the first M records (the rate is extrapolated).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from punchcard_contract import ParsedReceipt
from punchcard_platform.consumer import ConsumerLoop
from punchcard_platform.db import Database
from punchcard_platform.settings import Settings
from punchcard_receipt_consumer.handler import ReceiptHandler

from bench.common import (
    PARTITIONS,
    Context,
    TimedHandler,
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
        set_based = await _consume(settings, n, label="set-based")
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
    return {
        "receipts": n,
        "partitions": PARTITIONS,
        "produce": produced,
        "raw_consume": raw,
        "set_based": set_based,
        "naive": naive,
        "ratios": {
            "set_based_over_naive": ratio(
                set_based["receipts_per_second"], naive["receipts_per_second"]
            ),
            "set_based_over_raw": ratio(
                set_based["receipts_per_second"], raw["records_per_second"]
            ),
        },
    }


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
    settings: Settings, n: int, *, label: str, partial: bool = False
) -> dict[str, Any]:
    """Run the real loop and handler in-process until ``n`` receipts are applied."""
    say(
        f"ingest: {label} consumer (ConsumerLoop + ReceiptHandler, "
        f"batch_max_records={settings.batch_max_records}) for {n:,} receipts"
    )
    db = await Database.connect(settings.database_url, max_size=settings.database_pool_size)
    stop = asyncio.Event()
    handler: TimedHandler[ParsedReceipt] = TimedHandler(
        ReceiptHandler(db, settings.topics), target=n
    )
    loop = ConsumerLoop(
        settings,
        handler=handler,
        topic=settings.topics.receipts,
        group_id=settings.consumer_group(f"receipt-consumer-{label}"),
    )
    began = time.perf_counter()
    task = asyncio.ensure_future(loop.run(stop))
    progress = asyncio.ensure_future(_report(handler, label))
    try:
        await wait_or_fail(handler.done, 600, f"{label} ingest")
        stop.set()
        await task
        async with db.connection() as conn:
            stored = int(await conn.fetchval("SELECT count(*) FROM receipts"))
    finally:
        stop.set()
        progress.cancel()
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
        "clock": "from the loop's first decode (its first batch already fetched) to the "
        "commit that applied the last of the receipts; group join excluded",
        "timeline": handler.timeline(),
    }
    return result


async def _report(handler: TimedHandler[Any], label: str) -> None:
    while True:
        await asyncio.sleep(5)
        if handler.started is not None:
            say(
                f"ingest: {label} {handler.applied:,}/{handler.target:,} applied "
                f"({handler.rate():,.0f}/s so far)"
            )
