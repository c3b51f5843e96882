"""The hot route when its database stalls or restarts: 503 within the deadline, then back at once.

These tests stop and restart a PostgreSQL of their own, so the session's is never touched.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from punchcard_coupon_query.hotroute.batcher import CouponListBatcher
from punchcard_devstack.postgres import PostgresServer
from punchcard_devstack.processes import free_port
from punchcard_platform.db import Database
from punchcard_platform.migrations import apply_migrations

from tests.helpers import unique_id
from tests.integration.query.support import Served, client, serve_in_loop

pytestmark = pytest.mark.integration

MAX_WAIT = CouponListBatcher.MAX_WAIT
SLACK = 0.75
"""What the test allows past the deadline for the answer to travel on a shared machine."""


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this module's own, to stop and restart."""
    with tempfile.TemporaryDirectory(prefix="punchcard-stall-") as folder:
        Path(folder).chmod(0o755)  # PostgreSQL may run as its own user (see DevStack)
        server = PostgresServer(Path(folder) / "pg", port=free_port())
        server.init_cluster()
        server.start()
        try:
            server.wait_ready()

            async def migrate() -> None:
                db = await Database.connect(server.database_url, max_size=1)
                try:
                    await apply_migrations(db)
                finally:
                    await db.close()

            asyncio.run(migrate())
            yield server
        finally:
            server.stop()


@pytest.fixture
async def served_alone(own_postgres: PostgresServer) -> AsyncIterator[Served]:
    """coupon-query over the module's own PostgreSQL, its read key known to the process."""
    db = await Database.connect(own_postgres.database_url, max_size=4)
    try:
        async with serve_in_loop(own_postgres.database_url, db) as served:
            async with client(served, served.read_key) as http:
                assert (await http.get("/v1/coupons")).status_code == 200
            yield served
    finally:
        await db.close()


def server_processes(postmaster: int) -> list[int]:
    """The postmaster and every process it started (its backends and helpers)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The fields after the command name (which may hold spaces) start with state, ppid.
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


@contextmanager
def stopped(server: PostgresServer) -> Iterator[None]:
    """Every process of the server stopped (SIGSTOP) inside the block, continued after."""
    assert server.pid is not None
    processes = server_processes(server.pid)
    for pid in processes:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in processes:
            os.kill(pid, signal.SIGCONT)


async def timed_get(http: httpx.AsyncClient, path: str) -> tuple[httpx.Response, float]:
    """The response and the seconds it took."""
    started = time.monotonic()
    response = await http.get(path)
    return response, time.monotonic() - started


async def seconds_until_served(http: httpx.AsyncClient, *, limit: float) -> float:
    """How long until a hot-route request is answered 200 again, asking every 20 ms."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if (await http.get(f"/v1/customers/{unique_id('C')}/coupons")).status_code == 200:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"the hot route did not serve again within {limit} s")


async def test_a_stalled_database_is_answered_503_within_the_deadline_and_serves_on_release(
    served_alone: Served, own_postgres: PostgresServer
) -> None:
    """Twenty list requests to a stopped PostgreSQL: each 503 + Retry-After in ~2 s, not queued."""
    async with client(served_alone, served_alone.read_key) as http:
        with stopped(own_postgres):
            answers = await asyncio.gather(
                *(timed_get(http, f"/v1/customers/{unique_id('C')}/coupons") for _ in range(20))
            )
            for response, seconds in answers:
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "1"
                assert response.headers["content-type"] == "application/problem+json"
                assert response.json()["status"] == 503
                assert seconds < MAX_WAIT + SLACK
        assert await seconds_until_served(http, limit=1.0) < 1.0


async def test_a_list_request_answered_by_fastapi_keeps_the_same_deadline(
    served_alone: Served, own_postgres: PostgresServer
) -> None:
    """A request the hot route leaves to FastAPI (a repeated parameter) is 503 in ~2 s too."""
    at = "2026-11-15T12:00:00Z"
    path = f"/v1/customers/{unique_id('C')}/coupons?at={at}&at={at}"
    async with client(served_alone, served_alone.read_key) as http:
        with stopped(own_postgres):
            response, seconds = await timed_get(http, path)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/problem+json"
        assert seconds < MAX_WAIT + SLACK
        assert (await http.get(path)).status_code == 200


async def test_requests_arriving_during_a_stall_are_each_answered_within_the_deadline(
    served_alone: Served, own_postgres: PostgresServer
) -> None:
    """Requests sent one after another through a 4 s stall: none waits past its own deadline."""
    async with client(served_alone, served_alone.read_key) as http:
        with stopped(own_postgres):
            started = time.monotonic()
            waits = []
            while time.monotonic() - started < 2 * MAX_WAIT:
                response, seconds = await timed_get(http, f"/v1/customers/{unique_id('C')}/coupons")
                assert response.status_code == 503
                waits.append(seconds)
        assert max(waits) < MAX_WAIT + SLACK
        assert await seconds_until_served(http, limit=1.0) < 1.0


async def test_the_hot_route_serves_within_a_second_of_a_restarted_database_answering(
    served_alone: Served, own_postgres: PostgresServer
) -> None:
    """After a crash and restart, the pool's dead connections are not met one by one."""
    async with client(served_alone, served_alone.read_key) as http:
        own_postgres.stop_immediate()
        response, seconds = await timed_get(http, f"/v1/customers/{unique_id('C')}/coupons")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert seconds < MAX_WAIT + SLACK
        own_postgres.start()
        await asyncio.to_thread(own_postgres.wait_ready)
        assert await seconds_until_served(http, limit=1.0) < 1.0
