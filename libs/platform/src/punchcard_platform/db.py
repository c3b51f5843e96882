"""PostgreSQL access shared by every service: the pool, transactions, locks, error kinds.

Services keep their SQL in one module of their own and reach the database only through
what this module hands them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import cast

import asyncpg
import orjson

from punchcard_platform.errors import DatabaseUnavailableError

__all__ = [
    "Connection",
    "Database",
    "is_retryable",
    "is_unavailable",
    "lock_customers",
]

Connection = asyncpg.Connection


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as Python objects; orjson is exact for ints and keeps it fast.
    # Decimals are written by callers as strings inside the JSON, never as floats.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset round trip (RESET ALL, UNLISTEN *, CLOSE ALL, ...).

    asyncpg still rolls back an open transaction before calling this; the rest of the
    reset only matters to code that changes session state, which the callers asking
    for this promise not to do.
    """


class Database:
    """An asyncpg pool with the codecs and error handling Punchcard relies on."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        max_size: int = 10,
        timeout: float = 10.0,
        min_size: int = 1,
        reset_sessions: bool = True,
    ) -> Database:
        """Open a pool, or raise ``DatabaseUnavailableError`` saying what to fix.

        ``reset_sessions=False`` skips the reset query on every release: for callers
        that never SET, LISTEN, take session advisory locks or leave cursors open.
        """
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=min(min_size, max_size),
                max_size=max_size,
                init=_init_connection,
                timeout=timeout,
                command_timeout=60,
                reset=None if reset_sessions else _keep_session,
            )
        except (TimeoutError, OSError, asyncpg.PostgresError, ValueError) as exc:
            raise DatabaseUnavailableError(
                f"cannot connect to PostgreSQL at {_redact(url)}: {exc}. "
                "Check PUNCHCARD_DATABASE_URL (postgresql://user:password@host:port/database)."
            ) from exc
        return cls(pool)

    @property
    def pool(self) -> asyncpg.Pool:
        """The underlying pool, for the few places that need it directly."""
        return self._pool

    async def close(self) -> None:
        """Close every connection; waits for those in use to be released."""
        await self._pool.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside a transaction that commits on success and rolls back otherwise."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield _as_connection(conn)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection outside any transaction, for reads."""
        async with self._pool.acquire() as conn:
            yield _as_connection(conn)

    async def is_ready(self) -> bool:
        """Whether the database answers now: what /readyz reports."""
        try:
            async with self._pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1", timeout=2)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return True


def _as_connection(proxy: object) -> asyncpg.Connection:
    # A pooled connection is a proxy that behaves as a Connection; the stubs type it apart.
    return cast("asyncpg.Connection", proxy)


async def lock_customers(conn: asyncpg.Connection, customer_ids: Iterable[str | None]) -> None:
    """Serialise writers per customer for the rest of the transaction.

    Every writer takes these locks first and in one order (sorted hashes), so two
    transactions touching the same customers cannot deadlock on the rows that follow,
    and one customer's outbox rows get ids in commit order, which the relay relies on
    to publish per customer in commit order.
    """
    ids = sorted({c for c in customer_ids if c is not None})
    if not ids:
        return
    await conn.execute(
        """
        SELECT pg_advisory_xact_lock(k)
        FROM (SELECT DISTINCT hashtextextended(c, 0) AS k FROM unnest($1::text[]) AS c
              ORDER BY 1) AS keys
        """,
        ids,
    )


_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def is_retryable(exc: BaseException) -> bool:
    """A failure that the same work may not meet again: deadlock, serialisation, lock timeout."""
    return isinstance(exc, asyncpg.PostgresError) and exc.sqlstate in _RETRYABLE_SQLSTATES


def is_unavailable(exc: BaseException) -> bool:
    """The database is down or unreachable: wait for it, never blame the records."""
    if isinstance(exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        # 08: connection exception, 57P: operator intervention (shutdown), 53: resources.
        return state.startswith(("08", "57P", "53"))
    return False


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in creds else f"{scheme}{sep}{user}@{host}"
