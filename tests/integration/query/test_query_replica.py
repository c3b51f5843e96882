"""Reads from a real streaming replica (pg_basebackup -R), writes to the primary."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from punchcard_devstack import Endpoints
from punchcard_devstack.postgres import ReplicaServer
from punchcard_devstack.processes import free_port
from punchcard_platform.db import Database

from tests.helpers import eventually, unique_id
from tests.integration.query.support import Served, client, insert_usage, serve_in_loop

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def replica_url(stack: Endpoints) -> Iterator[str]:
    """A streaming replica of the session's PostgreSQL, on a port of its own."""
    primary = urlsplit(stack.database_url)
    assert primary.port is not None
    with tempfile.TemporaryDirectory(prefix="punchcard-replica-") as folder:
        Path(folder).chmod(0o755)  # PostgreSQL may run as its own user (see DevStack)
        replica = ReplicaServer(
            Path(folder) / "replica",
            port=free_port(),
            primary_port=primary.port,
            primary_host=primary.hostname or "127.0.0.1",
            primary_user=primary.username or "postgres",
        )
        replica.init_cluster()
        replica.start()
        try:
            replica.wait_ready()
            yield primary._replace(netloc=f"postgres@127.0.0.1:{replica.port}").geturl()
        finally:
            replica.stop()


@pytest.fixture
async def reads(replica_url: str) -> AsyncIterator[Database]:
    """A pool on the replica."""
    database = await Database.connect(replica_url, max_size=4)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def served_with_replica(
    stack: Endpoints, db: Database, reads: Database
) -> AsyncIterator[Served]:
    """coupon-query with the replica for reads and the primary for writes."""
    async with serve_in_loop(stack.database_url, db, reads=reads) as running:
        yield running


COUPON = {"name": "Replica tea", "uses_permitted": 3}


async def test_the_replica_is_a_read_only_standby(reads: Database) -> None:
    """What the read pool reaches is in recovery: a real standby, not the primary again."""
    async with reads.connection() as conn:
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is True


async def test_writes_go_to_the_primary_and_reads_come_from_the_replica(
    served_with_replica: Served, db: Database, reads: Database
) -> None:
    """A coupon put through the API shows in reads once the replica has replayed it; while
    replay is paused, reads stay at the replica's state although the primary moved on."""
    served = served_with_replica
    coupon_id, me = unique_id("REPL"), unique_id("C")
    async with client(served, served.admin_key) as admin, client(served, served.read_key) as http:
        created = await admin.put(f"/v1/coupons/{coupon_id}", json=COUPON)
        assert created.status_code == 201, created.text

        async def replicated() -> bool:
            return (await http.get(f"/v1/coupons/{coupon_id}")).status_code == 200

        await eventually(replicated, timeout=30, what="coupon replayed on the replica")

        async def uses_made() -> Any:
            listed = (await http.get(f"/v1/customers/{me}/coupons")).json()["coupons"]
            single = (await http.get(f"/v1/customers/{me}/coupons/{coupon_id}")).json()
            mine = [c["uses_made"] for c in listed if c["coupon_id"] == coupon_id]
            return mine, single["uses_made"]

        assert await uses_made() == ([0], 0)
        async with reads.connection() as conn:
            await conn.execute("SELECT pg_wal_replay_pause()")
        try:
            await insert_usage(db, customer_id=me, coupon_id=coupon_id, uses_made=2)
            renamed = await admin.put(
                f"/v1/coupons/{coupon_id}", json={**COUPON, "name": "Renamed on the primary"}
            )
            # The write and the answer it gives are the primary's ...
            assert renamed.status_code == 200
            assert renamed.json()["name"] == "Renamed on the primary"
            # ... while reads still show the paused replica's state.
            assert await uses_made() == ([0], 0)
            stale = (await http.get(f"/v1/coupons/{coupon_id}")).json()
            assert stale["name"] == COUPON["name"]
        finally:
            async with reads.connection() as conn:
                await conn.execute("SELECT pg_wal_replay_resume()")

        async def caught_up() -> bool:
            return bool(await uses_made() == ([2], 2))

        await eventually(caught_up, timeout=30, what="replica caught up")
        current = (await http.get(f"/v1/coupons/{coupon_id}")).json()
        assert current["name"] == "Renamed on the primary"


async def test_readiness_needs_the_replica_too(served_with_replica: Served) -> None:
    """/readyz answers 200 only when both the primary and the replica answer."""
    async with client(served_with_replica, None) as http:
        response = await http.get("/readyz")
    assert response.status_code == 200
