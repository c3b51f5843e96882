"""The expiry job: lots expired per second with a million due at one month's end.

With ``PUNCHCARD_POINTS_EXPIRE_AT=end_of_month`` every lot a month's sales earned comes
due at the same instant, so the job meets a month's lots at once (issue 19). The fixture
is made in SQL (``generate_series``), no Kafka: ``expiry_lots`` lots due at the start of
this month (last month's end, already past), held ``expiry_lots_per_customer`` to a
customer and spread over the table as a month's sales would be, plus one lot per customer
due a month later (never due here, but in the index the job reads); each lot has its
sale's ``earn`` entry in the ledger and each customer a balance that the lots explain.
Then, each on its own copy of that database:

- the job: ``ExpiryJob.expire_due`` in-process, as the receipt consumer's leader runs a
  round, from the first lot due to none left; CPU of this process (the job) and of the
  whole PostgreSQL server, per lot. The outbox is left full (the relay's rate is
  ingest's figure); its rows are counted.
- PostgreSQL's ceiling for the same SQL: the job runs again on a second copy, every
  transaction's statements noted, and each transaction is replayed at once on a third
  copy, timed: exactly the job's statements with their arguments, round trips and
  asyncpg's encoding, but none of the job's Python (deciding, building events). The
  replay also says what each statement costs.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
from punchcard_platform.db import Database
from punchcard_platform.expiry import ExpiryJob
from punchcard_platform.settings import Settings

from bench.common import Context, NotingDatabase, Statement, ratio, say, settle
from bench.cpu import postgres_server_pid, server_cpu_seconds

__all__ = ["run"]

# Rows per fixture statement: one transaction each, so progress shows and WAL stays bounded.
_LOAD_CHUNK = 250_000


async def run(ctx: Context) -> dict[str, Any]:
    """Load the due lots once, then time the job and its replayed SQL on copies."""
    n = ctx.sizes.expiry_lots
    per = ctx.sizes.expiry_lots_per_customer
    due_at = _start_of_month(datetime.now(UTC))
    async with ctx.database("expiry") as url:
        fixture = await _load(url, n, per, due_at)
        async with (
            ctx.copy_of(url, "expiry_noted") as noted_url,
            ctx.copy_of(url, "expiry_mirror") as mirror_url,
        ):
            settings = ctx.settings(url, "expiry")
            job = await _job(settings, n)
            await _check(url, n, fixture["customers"])
            ceiling = await _ceiling(
                settings.model_copy(update={"database_url": noted_url}), mirror_url, n
            )
    return {
        "lots_due": n,
        "fixture": fixture,
        "job": job,
        "postgres_ceiling": ceiling,
        "ratios": {
            "job_over_postgres_ceiling": ratio(job["lots_per_second"], ceiling["lots_per_second"]),
            "job_cpu_over_ceiling_cpu": ratio(
                job["cpu_us_per_lot"]["job_process"] + (job["cpu_us_per_lot"]["postgresql"] or 0),
                ceiling["cpu_us_per_lot"]["bench_process"]
                + (ceiling["cpu_us_per_lot"]["postgresql"] or 0),
            ),
        },
    }


def _start_of_month(now: datetime) -> datetime:
    """The end of last month (exclusive) in UTC: where end_of_month puts a month's lots."""
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def _load(url: str, n: int, per: int, due_at: datetime) -> dict[str, Any]:
    customers = max(1, n // per)
    total = n + customers
    say(f"expiry: loading {n:,} lots due at {due_at.isoformat()} for {customers:,} customers")
    began = time.perf_counter()
    # A plain connection: the pool's command timeout is for services, not for bulk loads.
    conn = await asyncpg.connect(url)
    try:
        for start in range(1, total + 1, _LOAD_CHUNK):
            end = min(start + _LOAD_CHUNK - 1, total)
            await conn.execute(_LOTS_SQL, start, end, n, customers, due_at)
            say(f"expiry: {end:,} of {total:,} lots")
        await conn.execute(_LEDGER_SQL)
        await conn.execute(_BALANCES_SQL)
    finally:
        await conn.close()
    await settle(url, "points_lots", "points_ledger", "points_balances")
    seconds = time.perf_counter() - began
    say(f"expiry: loaded in {seconds:.1f}s")
    return {
        "customers": customers,
        "lots_due": n,
        "lots_not_due": customers,
        "due_at": due_at.isoformat(),
        "load_seconds": round(seconds, 1),
        "method": "generate_series INSERTs: lot i belongs to customer i mod customers, so "
        "each job batch meets customers whose other due lots lie all over the table; every "
        "lot has its sale's earn entry in points_ledger, every customer a balance = the sum "
        "of its lots' remaining (debt 0)",
    }


# Lot i of 1..$3 is due at $5; lots $3+1.. (one per customer) are due a month later.
# Sales occurred a year before their lot's expiry, spread over that month, in 20 stores.
_LOTS_SQL = """
INSERT INTO points_lots (customer_id, transaction_no, cause, seq, points, remaining,
                         expires_at, occurred_at)
SELECT k.customer_id,
       'S' || lpad((k.i % 20 + 1)::text, 4, '0') || '-T' || lpad((k.i / 20 % 4 + 1)::text, 2, '0')
           || '-' || to_char(k.occurred_at, 'YYYYMMDD') || '-x' || lpad(k.i::text, 8, '0'),
       'sale', 0, k.points, k.points, k.expires_at, k.occurred_at
FROM (
    SELECT i, 'C' || lpad((i % $4::bigint)::text, 7, '0') AS customer_id,
           10 + i % 90 AS points, e.expires_at,
           e.expires_at - interval '1 year' - (i * 7919 % (28 * 86400)) * interval '1 second'
               AS occurred_at
    FROM generate_series($1::bigint, $2::bigint) AS i,
         LATERAL (SELECT CASE WHEN i <= $3::bigint THEN $5::timestamptz
                              ELSE $5::timestamptz + interval '1 month' END AS expires_at) AS e
) AS k
"""
_LEDGER_SQL = """
INSERT INTO points_ledger (customer_id, transaction_no, cause, kind, points, occurred_at)
SELECT customer_id, transaction_no, cause, 'earn', points, occurred_at
FROM points_lots ORDER BY id
"""
_BALANCES_SQL = """
INSERT INTO points_balances (customer_id, balance, debt)
SELECT customer_id, sum(remaining), 0 FROM points_lots GROUP BY customer_id ORDER BY customer_id
"""


async def _job(settings: Settings, n: int) -> dict[str, Any]:
    """``ExpiryJob.expire_due`` until nothing is due: the figure, with CPU per lot."""
    say(f"expiry: the job expiring {n:,} due lots (ExpiryJob.expire_due)")
    db = await Database.connect(settings.database_url, max_size=settings.database_pool_size)
    job = ExpiryJob(settings, db)
    server = await postgres_server_pid(settings.database_url)
    samples: list[tuple[float, int]] = []
    began = time.perf_counter()
    progress = asyncio.ensure_future(_progress(job, began, samples))
    cpu_began, postgres_began = time.process_time(), server_cpu_seconds(server)
    try:
        lots = await job.expire_due()
        seconds = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
        postgres = server_cpu_seconds(server) - postgres_began
    finally:
        progress.cancel()
        await db.close()
    samples.append((round(seconds, 3), lots))
    if lots != n:
        raise RuntimeError(f"the job expired {lots} lots of {n} due")
    rate = lots / seconds if seconds > 0 else 0.0
    say(f"expiry: the job expired {lots:,} lots in {seconds:.1f}s ({rate:,.0f}/s)")
    return {
        "lots": lots,
        "seconds": round(seconds, 3),
        "lots_per_second": round(rate, 1),
        "cpu_us_per_lot": {
            "job_process": round(cpu / lots * 1e6, 2),
            "postgresql": None if server is None else round(postgres / lots * 1e6, 2),
        },
        "cpu_note": "job_process: this process, which runs only the job; postgresql: every "
        "process of the server (backends, WAL writer, checkpointer, autovacuum)",
        "timeline": samples,
        "clock": "one ExpiryJob.expire_due() call: batches of the soonest due lots' "
        "customers, one transaction each, until none is due",
    }


async def _progress(job: ExpiryJob, began: float, samples: list[tuple[float, int]]) -> None:
    tick = 0
    while True:
        await asyncio.sleep(1)
        tick += 1
        samples.append((round(time.perf_counter() - began, 3), job.expired_lots))
        if tick % 10 == 0:
            say(f"expiry: {job.expired_lots:,} lots expired after {tick}s")


async def _check(url: str, n: int, customers: int) -> None:
    """Every due lot expired once, each with its ledger entry and event; the books balance."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(_CHECK_SQL)
    finally:
        await conn.close()
    assert row is not None
    expected = {"still_due": 0, "expired_lots": n, "entries": n, "lots_entered": n, "outbox": n}
    found = {name: row[name] for name in expected}
    if found != expected or row["unbalanced"]:
        raise RuntimeError(f"expiry left {dict(row)}; expected {expected} and 0 unbalanced")
    say(f"expiry: checked: {n:,} lots expired once each, {customers:,} customers' books balance")


_CHECK_SQL = """
SELECT
    (SELECT count(*) FROM points_lots
     WHERE remaining > 0 AND expires_at <= clock_timestamp()) AS still_due,
    (SELECT count(*) FROM points_lots WHERE expired > 0) AS expired_lots,
    (SELECT count(*) FROM points_ledger WHERE kind = 'expire') AS entries,
    (SELECT count(DISTINCT (transaction_no, cause)) FROM points_ledger
     WHERE kind = 'expire') AS lots_entered,
    (SELECT count(*) FROM outbox) AS outbox,
    (SELECT count(*) FROM points_balances AS b
     LEFT JOIN (SELECT customer_id, sum(remaining) AS r FROM points_lots GROUP BY 1) AS l
         USING (customer_id)
     LEFT JOIN (SELECT customer_id, sum(points) AS s FROM points_ledger GROUP BY 1) AS g
         USING (customer_id)
     WHERE b.balance <> coalesce(l.r, 0) - b.debt OR b.balance <> coalesce(g.s, 0))
        AS unbalanced
"""


async def _ceiling(settings: Settings, mirror_url: str, n: int) -> dict[str, Any]:
    """The job's statements, transaction by transaction, replayed on a copy: PostgreSQL's pace."""
    say("expiry: PostgreSQL ceiling (the job's statements replayed on a copy, no Python)")
    db = await Database.connect(settings.database_url, max_size=settings.database_pool_size)
    mirror = await Database.connect(mirror_url, max_size=2)
    server = await postgres_server_pid(mirror_url)
    replaying = _ReplayingDatabase(db.pool, mirror, server)
    try:
        # One worker: the replay notes one transaction's statements at a time.
        lots = await ExpiryJob(settings, replaying, workers=1).expire_due()
        async with mirror.connection() as conn:
            replayed = await conn.fetchval("SELECT count(*) FROM points_lots WHERE expired > 0")
    finally:
        await db.close()
        await mirror.close()
    if lots != n or replayed != n:
        raise RuntimeError(f"the ceiling's job expired {lots} lots, its replay {replayed}, of {n}")
    seconds = replaying.seconds
    rate = n / seconds if seconds > 0 else 0.0
    say(f"expiry: PostgreSQL ceiling {n:,} lots in {seconds:.1f}s ({rate:,.0f}/s)")
    by_statement = sorted(replaying.by_statement.items(), key=lambda item: -item[1][0])
    return {
        "lots": n,
        "transactions": replaying.transactions,
        "statements": sum(count for _, (_, count) in by_statement),
        "seconds": round(seconds, 3),
        "lots_per_second": round(rate, 1),
        "cpu_us_per_lot": {
            "bench_process": round(replaying.cpu / n * 1e6, 2),
            "postgresql": None if server is None else round(replaying.postgres / n * 1e6, 2),
        },
        "seconds_by_statement": {
            label: {"seconds": round(spent, 3), "count": count, "share": ratio(spent, seconds)}
            for label, (spent, count) in by_statement
        },
        "seconds_by_statement_per_fifth": _per_fifth(replaying.rounds),
        "method": "ExpiryJob.expire_due (one worker) on a copy of the fixture with every "
        "transaction's statements noted; each transaction replayed at once, timed, on another "
        "copy (same statements and arguments, one transaction at a time, in order, on one "
        "connection); only the replays timed. The job itself runs two workers.",
    }


def _per_fifth(rounds: list[dict[str, float]]) -> dict[str, list[float]]:
    """Each statement's seconds in each fifth of the transactions: does one slow down?"""
    fifths = [rounds[len(rounds) * i // 5 : len(rounds) * (i + 1) // 5] for i in range(5)]
    labels = sorted({label for spent_by in rounds for label in spent_by})
    return {
        label: [round(sum(r.get(label, 0.0) for r in fifth), 3) for fifth in fifths]
        for label in labels
    }


class _ReplayingDatabase(NotingDatabase):
    """After each transaction commits, its statements run again on ``mirror``, timed."""

    def __init__(self, pool: asyncpg.Pool, mirror: Database, server: int | None) -> None:
        super().__init__(pool)
        self._mirror = mirror
        self._server = server
        self.seconds = 0.0
        self.cpu = 0.0
        self.postgres = 0.0
        self.transactions = 0
        self.by_statement: dict[str, tuple[float, int]] = {}
        self.rounds: list[dict[str, float]] = []

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with super().transaction() as conn:
            yield conn
        await self._replay(self.statements)

    async def _replay(self, statements: list[Statement]) -> None:
        cpu_began, postgres_began = time.process_time(), server_cpu_seconds(self._server)
        began = time.perf_counter()
        in_statements = 0.0
        spent_by: dict[str, float] = {}
        async with self._mirror.transaction() as conn:
            for method, query, args, kwargs in statements:
                started = time.perf_counter()
                await getattr(conn, method)(query, *args, **kwargs)
                spent = time.perf_counter() - started
                in_statements += spent
                label = _label(query)
                spent_by[label] = spent_by.get(label, 0.0) + spent
                self._add(label, spent)
        ended = time.perf_counter()
        self._add("BEGIN, COMMIT and the pool", ended - began - in_statements)
        spent_by["all"] = ended - began
        self.rounds.append(spent_by)
        self.seconds += ended - began
        self.cpu += time.process_time() - cpu_began
        self.postgres += server_cpu_seconds(self._server) - postgres_began
        self.transactions += 1

    def _add(self, label: str, seconds: float) -> None:
        spent, count = self.by_statement.get(label, (0.0, 0))
        self.by_statement[label] = (spent + seconds, count + 1)


def _label(query: str) -> str:
    """A statement's first words and the tables it names: enough to tell them apart."""
    text = " ".join(query.split())
    head = " ".join(text.split(" ")[:3])
    tables = sorted(set(re.findall(r"\b(?:FROM|INTO|UPDATE|JOIN) ([a-z_]+)\b", text)))
    return f"{head} ... [{', '.join(tables)}]" if tables else head
