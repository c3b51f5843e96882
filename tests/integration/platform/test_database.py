"""The shared pool: what every connection it hands out can be relied on for."""

from __future__ import annotations

from punchcard_devstack import Endpoints
from punchcard_platform.db import Database


async def test_pooled_connections_commit_durably_even_where_the_server_would_not(
    stack: Endpoints,
) -> None:
    """synchronous_commit=off from the server or the URL is turned back on for our sessions:
    offsets are committed after the database commit, so a lost commit is a lost record."""
    separator = "&" if "?" in stack.database_url else "?"
    db = await Database.connect(f"{stack.database_url}{separator}synchronous_commit=off")
    try:
        async with db.connection() as conn:
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await db.close()
