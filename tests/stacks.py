"""Starting a migrated Kafka and PostgreSQL for a test session or module, and stopping it.

The session's shared stack, the outage tests' own and the fault suite's own all start the
same way; only whether they may reuse a stack named by ``PUNCHCARD_*`` variables and how
durably the database commits differ.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from punchcard_devstack import DevStack
from punchcard_platform.db import Database
from punchcard_platform.migrations import apply_migrations

_SHARED_STACK_VARIABLES = ("PUNCHCARD_KAFKA_BOOTSTRAP_SERVERS", "PUNCHCARD_DATABASE_URL")


async def _migrate(url: str, *, durable: bool) -> None:
    db = await Database.connect(url, max_size=2)
    try:
        await apply_migrations(db)
        if durable:
            async with db.connection() as conn:
                # The devstack runs with synchronous_commit=off for speed; an immediate stop
                # then loses commits already acknowledged (and offsets committed after
                # them). A database level setting outranks the server's command line for
                # new sessions.
                name = await conn.fetchval("SELECT quote_ident(current_database())")
                await conn.execute(f"ALTER DATABASE {name} SET synchronous_commit = on")
    finally:
        await db.close()


@contextmanager
def running_stack(
    *, own: bool = False, durable: bool = False, brokers: int = 1
) -> Iterator[DevStack]:
    """A started, migrated stack, stopped on exit.

    ``own``: start servers of its own even when ``PUNCHCARD_*`` variables name a running
    stack, because the tests using it kill and restart servers, and must not do that to
    anyone else's; native servers, whatever ``PUNCHCARD_DEVSTACK`` says, since killing one
    means signalling its process. ``durable``: the database commits synchronously, for
    tests that stop PostgreSQL immediately and then count what survived. ``brokers``: Kafka
    nodes (3 for a cluster replicating every topic thrice).
    """
    saved = (
        {name: os.environ.pop(name) for name in _SHARED_STACK_VARIABLES if name in os.environ}
        if own
        else {}
    )
    devstack = DevStack(
        log=lambda line: print(line, file=sys.stderr),
        brokers=brokers,
        backend="native" if own else None,
    )
    try:
        endpoints = devstack.start()
        asyncio.run(_migrate(endpoints.database_url, durable=durable))
        yield devstack
    finally:
        devstack.stop()
        os.environ.update(saved)
