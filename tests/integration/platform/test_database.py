"""The shared pool: what every connection it hands out can be relied on for."""

from __future__ import annotations

from punchcard_coupon_query import queries
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
        # Twice: the pool resets a session's settings when a connection comes back to it.
        for _ in range(2):
            async with db.connection() as conn:
                assert await conn.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await db.close()


async def test_a_pools_session_settings_hold_beside_durable_commits(stack: Endpoints) -> None:
    """coupon-query's sessions plan statements once (generic plans), and still commit
    durably on a server whose default is synchronous_commit=off."""
    separator = "&" if "?" in stack.database_url else "?"
    db = await Database.connect(
        f"{stack.database_url}{separator}synchronous_commit=off",
        server_settings=queries.SESSION_SETTINGS,
    )
    try:
        for _ in range(2):
            async with db.connection() as conn:
                assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
                assert await conn.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await db.close()
