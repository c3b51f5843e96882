"""The punchcard command: migrations run twice and concurrently; bad configuration reads clearly."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import asyncpg
from punchcard_devstack import Endpoints
from punchcard_platform.db import Database
from punchcard_platform.migrations import apply_migrations, available_migrations

from tests.helpers import unique_id


def _punchcard(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "punchcard", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )


async def _fresh_database(stack: Endpoints) -> str:
    name = unique_id("db").replace("-", "_")
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return stack.database_url.rsplit("/", 1)[0] + f"/{name}"


async def test_two_migrations_at_once_leave_one_correct_schema(stack: Endpoints) -> None:
    """Two processes migrating one empty database at the same moment take turns."""
    url = await _fresh_database(stack)
    runs = await asyncio.gather(
        asyncio.to_thread(_punchcard, "migrate", PUNCHCARD_DATABASE_URL=url),
        asyncio.to_thread(_punchcard, "migrate", PUNCHCARD_DATABASE_URL=url),
    )
    assert [run.returncode for run in runs] == [0, 0], [run.stderr for run in runs]
    assert sorted(run.stdout.strip() for run in runs) == [
        "applied " + ", ".join(m.version for m in available_migrations()),
        "schema is up to date",
    ]
    db = await Database.connect(url)
    try:
        assert await apply_migrations(db) == []
        async with db.connection() as conn:
            versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
        assert [r["version"] for r in versions] == [m.version for m in available_migrations()]
    finally:
        await db.close()


def test_a_wrong_database_url_ends_in_one_line_naming_the_variable() -> None:
    """An unreachable database is reported with what to fix, not a stack trace."""
    run = _punchcard("migrate", PUNCHCARD_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    assert run.returncode == 2
    assert "PUNCHCARD_DATABASE_URL" in run.stderr
    assert "Traceback" not in run.stderr


def test_an_unreachable_broker_ends_topic_creation_in_one_line_naming_the_variable() -> None:
    """No broker at the configured address is one clear line for a one-off command.

    A service waits for it instead (tests/integration/platform/test_outages.py).
    """
    run = _punchcard("topics", "create", PUNCHCARD_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1, run.stderr
    assert "PUNCHCARD_KAFKA_BOOTSTRAP_SERVERS" in run.stderr


def test_database_settings_that_can_never_work_end_a_service_in_one_line(
    stack: Endpoints,
) -> None:
    """A malformed URL or a missing database is not waited for: one line, exit 2."""
    base = stack.database_url.rsplit("/", 1)[0]
    for url in (f"{base}/{unique_id('missing').replace('-', '_')}", "postgresql://u@host:port/x"):
        run = _punchcard(
            "serve",
            "receipt-consumer",
            PUNCHCARD_DATABASE_URL=url,
            PUNCHCARD_KAFKA_BOOTSTRAP_SERVERS=stack.bootstrap_servers,
            PUNCHCARD_HTTP_PORT="0",
            PUNCHCARD_LOG_LEVEL="CRITICAL",
        )
        assert run.returncode == 2, run.stderr
        assert run.stderr.count("\n") == 1, run.stderr
        assert "PUNCHCARD_DATABASE_URL" in run.stderr


def test_an_invalid_setting_names_its_variable() -> None:
    """A malformed value is refused before anything starts."""
    run = _punchcard("migrate", PUNCHCARD_LOG_FORMAT="xml", PUNCHCARD_HTTP_PORT="-3")
    assert run.returncode == 2
    assert "PUNCHCARD_LOG_FORMAT" in run.stderr
    assert "PUNCHCARD_HTTP_PORT" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_taken_http_port_ends_in_one_line_naming_the_variable(stack: Endpoints) -> None:
    """A service that cannot bind its port says which setting to change."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _punchcard(
            "serve",
            "coupon-query",
            PUNCHCARD_DATABASE_URL=stack.database_url,
            PUNCHCARD_HTTP_PORT=str(port),
            PUNCHCARD_LOG_LEVEL="CRITICAL",
        )
    assert run.returncode == 2
    assert "PUNCHCARD_HTTP_PORT" in run.stderr
    assert "Traceback" not in run.stderr
