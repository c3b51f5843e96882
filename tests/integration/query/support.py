"""Serving coupon-query over a real socket, and writing test rows with plain SQL.

The receipt-consumer and returns services write these tables in production; here the
tests write the rows they need directly, so coupon-query is tested on its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import uvicorn
from punchcard_coupon_query.apikeys import ApiKeyCache, create_api_key
from punchcard_coupon_query.app import create_app, server_config
from punchcard_platform import ledger
from punchcard_platform.db import Database, lock_customers
from punchcard_platform.migrations import apply_migrations
from punchcard_platform.settings import Settings

from tests.helpers import eventually


@dataclass(frozen=True)
class Served:
    """A coupon-query listening on a real port, with one key of each scope."""

    base_url: str
    read_key: str
    admin_key: str

    def headers(self, key: str | None) -> dict[str, str]:
        """Authorization headers for a key (none for None)."""
        return {} if key is None else {"Authorization": f"Bearer {key}"}


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _server(
    settings: Settings,
    db: Database,
    *,
    reads: Database | None = None,
    keys: ApiKeyCache | None = None,
    uvicorn_version: str = uvicorn.__version__,
) -> uvicorn.Server:
    app = create_app(settings, db, reads=reads, keys=keys)
    return uvicorn.Server(server_config(app, uvicorn_version=uvicorn_version))


@asynccontextmanager
async def serve_in_loop(
    database_url: str,
    db: Database,
    *,
    reads: Database | None = None,
    keys: ApiKeyCache | None = None,
    uvicorn_version: str = uvicorn.__version__,
) -> AsyncIterator[Served]:
    """Serve the app on this event loop (the test's), over a real TCP socket.

    ``reads`` is a replica's pool for the read endpoints; ``keys`` a key cache to use;
    ``uvicorn_version`` the version the protocol fence is told uvicorn has.
    """
    sock = _listening_socket()
    port = sock.getsockname()[1]
    settings = Settings(database_url=database_url)
    server = _server(settings, db, reads=reads, keys=keys, uvicorn_version=uvicorn_version)
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        if task.done():
            task.result()
        return server.started

    try:
        await eventually(started, timeout=10, what="coupon-query listening")
        _, read_key = await create_api_key(db, "read", "integration test")
        _, admin_key = await create_api_key(db, "admin", "integration test")
        yield Served(f"http://127.0.0.1:{port}", read_key, admin_key)
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextmanager
def serve_in_thread(database_url: str) -> Iterator[Served]:
    """Serve the app from its own thread and event loop, for synchronous clients."""
    sock = _listening_socket()
    port = sock.getsockname()[1]
    holder: dict[str, Any] = {}

    async def run() -> None:
        db = await Database.connect(database_url, max_size=5)
        try:
            keys = (
                (await create_api_key(db, "read", "schemathesis"))[1],
                (await create_api_key(db, "admin", "schemathesis"))[1],
            )
            server = _server(Settings(database_url=database_url), db)
            holder["keys"], holder["server"] = keys, server
            await server.serve(sockets=[sock])
        finally:
            await db.close()

    def main() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # reported to the test thread below
            holder["error"] = exc

    def started() -> bool:
        server = holder.get("server")
        return "error" in holder or (server is not None and server.started)

    thread = threading.Thread(target=main, name="coupon-query", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not started() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not started() or "error" in holder:
            raise RuntimeError(f"coupon-query did not start: {holder.get('error')!r}")
        read_key, admin_key = holder["keys"]
        yield Served(f"http://127.0.0.1:{port}", read_key, admin_key)
    finally:
        if "server" in holder:
            holder["server"].should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def scratch_database(database_url: str) -> Iterator[str]:
    """A freshly migrated database of its own on the same server, dropped afterwards.

    For schemathesis, whose random coupons must not land in the catalog other tests read.
    """
    name = f"punchcard_scratch_{uuid.uuid4().hex[:12]}"
    scratch_url = urlsplit(database_url)._replace(path=f"/{name}").geturl()

    async def create() -> None:
        admin = await Database.connect(database_url, max_size=1)
        try:
            async with admin.connection() as conn:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        scratch = await Database.connect(scratch_url, max_size=1)
        try:
            await apply_migrations(scratch)
        finally:
            await scratch.close()

    async def drop() -> None:
        admin = await Database.connect(database_url, max_size=1)
        try:
            async with admin.connection() as conn:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(create())
    try:
        yield scratch_url
    finally:
        asyncio.run(drop())


def client(served: Served, key: str | None) -> httpx.AsyncClient:
    """An HTTP client of the served app, authenticated with ``key`` (or not)."""
    return httpx.AsyncClient(base_url=served.base_url, headers=served.headers(key), timeout=60)


async def insert_receipt(
    db: Database,
    *,
    transaction_no: str,
    customer_id: str | None,
    occurred_at: datetime,
    total: str = "1980",
    store_id: str = "S0042",
    document: str | None = None,
) -> None:
    """Store a receipt row as receipt-consumer would; ``document`` is the JSON text as sent."""
    text = (
        document
        or orjson.dumps(
            {
                "schema_version": 1,
                "event_id": str(uuid.uuid4()),
                "transaction_no": transaction_no,
                "store_id": store_id,
                "terminal_id": "T01",
                "customer_id": customer_id,
                "occurred_at": occurred_at.isoformat(),
                "currency": "JPY",
                "total": total,
            }
        ).decode()
    )
    async with db.connection() as conn:
        await conn.execute(
            """
            INSERT INTO receipts (transaction_no, customer_id, store_id, terminal_id, occurred_at,
                                  currency, total, points_used, points_earned, coupons, document,
                                  content_hash, event_id)
            VALUES ($1, $2, $3, 'T01', $4, 'JPY', $5::numeric, 0, 0, '[]'::jsonb,
                    CAST($6::text AS jsonb), $7, $8)
            """,
            transaction_no,
            customer_id,
            store_id,
            occurred_at,
            total,
            text,
            hashlib.sha256(text.encode()).digest(),
            str(uuid.uuid4()),
        )


async def insert_ledger(
    db: Database, *, customer_id: str, entries: list[tuple[str, str, int, datetime]]
) -> None:
    """Book ``(transaction_no, kind, points, occurred_at)`` through the ledger, in order."""
    postings = [
        ledger.PointsPosting(customer_id, tx, ledger.SALE, kind, points, at)  # type: ignore[arg-type]
        for tx, kind, points, at in entries
    ]
    async with db.transaction() as conn:
        await lock_customers(conn, [customer_id])
        await ledger.book(conn, postings, [], committed_at=datetime.now().astimezone())


async def insert_usage(db: Database, *, customer_id: str, coupon_id: str, uses_made: int) -> None:
    """Record that a customer has used a coupon ``uses_made`` times."""
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO coupon_usage (customer_id, coupon_id, uses_made) VALUES ($1, $2, $3)",
            customer_id,
            coupon_id,
            uses_made,
        )


def outcome(
    transaction_no: str,
    return_event_id: str,
    *,
    status: str,
    reason: str | None = None,
    customer_id: str | None = None,
) -> dict[str, Any]:
    """A ReturnOutcomeEvent as the returns service records it."""
    return {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-11-23T00:00:01+00:00",
        "transaction_no": transaction_no,
        "return_event_id": return_event_id,
        "customer_id": customer_id,
        "status": status,
        "reason": reason,
        "points_restored": 100 if status == "accepted" else 0,
        "points_revoked": 19 if status == "accepted" else 0,
        "coupons_restored": [{"coupon_id": "TEA-10OFF", "uses": 1}] if status == "accepted" else [],
    }


async def insert_return(
    db: Database,
    *,
    transaction_no: str,
    status: str,
    decided_at: datetime | None,
    result: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> str:
    """Record a return event (pending, or decided with its outcome); returns its event_id."""
    event_id = event_id or str(uuid.uuid4())
    async with db.connection() as conn:
        await conn.execute(
            """
            INSERT INTO return_events (event_id, transaction_no, store_id, terminal_id, occurred_at,
                                       reason, document, wait_until, status, outcome, decided_at,
                                       decision_seq)
            VALUES ($1, $2, 'S0042', 'T01', now(), 'changed mind', $3, $4, $5, $6, $7,
                    CASE WHEN $5 <> 'pending' THEN nextval('return_decisions') END)
            """,
            event_id,
            transaction_no,
            {"event_id": event_id, "transaction_no": transaction_no},
            (decided_at or datetime.now().astimezone()) + timedelta(minutes=10),
            status,
            result,
            decided_at,
        )
    return event_id


async def mark_returned(db: Database, *, transaction_no: str, return_event_id: str) -> None:
    """Mark a receipt returned by the given return event, as the returns service does."""
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE receipts SET returned_at = now(), return_event_id = $2 "
            "WHERE transaction_no = $1",
            transaction_no,
            return_event_id,
        )
