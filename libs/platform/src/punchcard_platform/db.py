"""PostgreSQL access shared by every service: the pool, transactions, locks, error kinds.

Services keep their SQL in one module of their own and reach the database only through
what this module hands them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import cast

import asyncpg
import orjson
import structlog

from punchcard_platform.errors import DatabaseUnavailableError
from punchcard_platform.settings import Settings

__all__ = [
    "Connection",
    "Database",
    "is_retryable",
    "is_the_records_fault",
    "is_unavailable",
    "is_unreachable",
    "lock_customers",
]

Connection = asyncpg.Connection

log = structlog.get_logger(__name__)

_RECONNECT_BACKOFF_MAX = 1.0
"""Seconds between attempts to reach a database that is away: it is back within this."""


async def _make_commits_durable(
    pool: asyncpg.Pool, url: str, command_timeout: float, server_settings: Mapping[str, str]
) -> None:
    """Exactly-once needs durable commits; turn ``synchronous_commit=off`` back on.

    Kafka offsets are committed after the database commit, so a commit acknowledged before
    its WAL is written and then lost in a server crash loses records that are never
    delivered again. Set as a connection parameter (a session SET would be undone by the
    pool's RESET ALL on release); a stronger setting (local, remote_write, on,
    remote_apply) is kept as it is.
    """
    async with pool.acquire() as conn:
        setting = await conn.fetchval("SHOW synchronous_commit")
    if setting == "off":
        pool.set_connect_args(
            url,
            command_timeout=command_timeout,
            server_settings={**server_settings, "synchronous_commit": "on"},
        )
        await pool.expire_connections()


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
    """An asyncpg pool with the codecs, time bounds and error handling Punchcard relies on.

    Every statement is bounded (``command_timeout``) and so is every wait for a pooled
    connection (``acquire_timeout``), so a silent network fails fast instead of hanging.
    When a connection turns out to be unusable (the server restarted, the network broke),
    every idle connection of the pool is dropped too, so the retry runs on a fresh one
    instead of meeting the next stale connection.
    """

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float = 10.0) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        max_size: int = 10,
        timeout: float = 10.0,
        min_size: int = 1,
        reset_sessions: bool = True,
        command_timeout: float = 30.0,
        acquire_timeout: float = 10.0,
        server_settings: Mapping[str, str] | None = None,
    ) -> Database:
        """Open a pool, or raise ``DatabaseUnavailableError`` saying what to fix.

        ``reset_sessions=False`` skips the reset query on every release: for callers
        that never SET, LISTEN, take session advisory locks or leave cursors open.
        ``server_settings`` are session settings every connection starts with.
        """
        settings = dict(server_settings or {})
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=min(min_size, max_size),
                max_size=max_size,
                init=_init_connection,
                timeout=timeout,
                command_timeout=command_timeout,
                reset=None if reset_sessions else _keep_session,
                server_settings=settings,
            )
            await _make_commits_durable(pool, url, command_timeout, settings)
        except (TimeoutError, OSError, asyncpg.PostgresError, ValueError) as exc:
            raise DatabaseUnavailableError(
                f"cannot connect to PostgreSQL at {_redact(url)}: {exc}. "
                "Check PUNCHCARD_DATABASE_URL (postgresql://user:password@host:port/database)."
            ) from exc
        return cls(pool, acquire_timeout=acquire_timeout)

    @classmethod
    async def connect_when_reachable(
        cls, settings: Settings, stop: asyncio.Event, *, max_size: int | None = None
    ) -> Database | None:
        """Open the pool, waiting (with backoff, saying so) while PostgreSQL is not reachable.

        A server that is down, restarting or not yet resolvable is waited for: under a
        supervisor, exiting would only restart us into the same wait. A configuration that
        can never work (a malformed URL, a wrong password, a missing database) raises
        ``DatabaseUnavailableError`` at once. Returns None if ``stop`` is set meanwhile.
        """
        delay = 0.1
        attempts = 0
        while not stop.is_set():
            try:
                return await cls.connect(
                    settings.database_url,
                    max_size=max_size or settings.database_pool_size,
                    timeout=settings.database_acquire_timeout_seconds,
                    command_timeout=settings.database_command_timeout_seconds,
                    acquire_timeout=settings.database_acquire_timeout_seconds,
                )
            except DatabaseUnavailableError as exc:
                if not is_unreachable(exc.__cause__):
                    raise
                attempts += 1
                if attempts == 1 or attempts % 20 == 0:
                    log.warning(
                        "PostgreSQL is not reachable yet; waiting for it",
                        url=_redact(settings.database_url),
                        error=str(exc.__cause__),
                        attempts=attempts,
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, _RECONNECT_BACKOFF_MAX)
        return None

    @property
    def pool(self) -> asyncpg.Pool:
        """The underlying pool, for the few places that need it directly."""
        return self._pool

    async def close(self) -> None:
        """Close every connection; waits (bounded) for those in use to be released."""
        try:
            await asyncio.wait_for(self._pool.close(), self._acquire_timeout)
        except TimeoutError:
            self._pool.terminate()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside a transaction that commits on success and rolls back otherwise."""
        try:
            async with (
                self._pool.acquire(timeout=self._acquire_timeout) as conn,
                conn.transaction(),
            ):
                yield _as_connection(conn)
        except Exception as exc:
            await self._drop_stale_connections(exc)
            raise

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection outside any transaction, for reads."""
        try:
            async with self._pool.acquire(timeout=self._acquire_timeout) as conn:
                yield _as_connection(conn)
        except Exception as exc:
            await self._drop_stale_connections(exc)
            raise

    async def is_ready(self) -> bool:
        """Whether the database answers now: what /readyz reports."""
        try:
            async with self._pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1", timeout=2)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self._drop_stale_connections(exc)
            return False
        return True

    async def _drop_stale_connections(self, exc: BaseException) -> None:
        if is_unavailable(exc):
            # Idle connections opened before an outage are as dead as the one that failed.
            with contextlib.suppress(Exception):
                await self._pool.expire_connections()


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


def is_the_records_fault(exc: BaseException) -> bool:
    """The database refused the record's content: dead-letter the record, not halt.

    Class 22 (data exception: a value out of range, an invalid text representation) and
    class 23 (an integrity violation the handler did not expect and so did not turn into
    a dead letter itself) come from what the record says. Anything else (a missing
    privilege 42501, a trigger's RAISE P0001, a read-only transaction 25006, a bug in our
    code) is ours or the environment's: the same record applies once that is fixed.
    """
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "").startswith(("22", "23"))
    return False


def is_unavailable(exc: BaseException) -> bool:
    """The database is down or unreachable: wait for it, never blame the records."""
    if isinstance(exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        # 08: connection exception, 57P: operator intervention (shutdown), 53: resources.
        return state.startswith(("08", "57P", "53"))
    return False


def is_unreachable(exc: BaseException | None) -> bool:
    """Connecting failed because the server is not there yet, not because we are refused.

    Refused, timed out, unresolvable, starting up, shutting down, too many clients: all of
    these pass. A malformed URL, a wrong password or a missing database never do.
    """
    if isinstance(exc, ValueError):
        return False
    if isinstance(exc, OSError | asyncio.TimeoutError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "").startswith(("08", "57P", "53"))
    return False


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in creds else f"{scheme}{sep}{user}@{host}"
