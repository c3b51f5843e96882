"""CPU seconds used by the processes of a run, read from Linux's /proc.

Benchmarks report CPU per request or per return beside their latencies: on a shared
2-core machine, CPU spent is steadier from run to run than throughput.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

__all__ = [
    "backends_cpu",
    "backends_cpu_after",
    "children",
    "cpu_seconds",
    "postgres_server_pid",
    "server_cpu_seconds",
    "service_cpu_seconds",
]


def cpu_seconds(pid: int | None) -> float:
    """User and system CPU seconds a process has used so far (Linux /proc)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The running child processes of ``pid`` (coupon-query's workers)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def service_cpu_seconds(pid: int | None) -> float:
    """CPU seconds of the service: the supervisor and every worker process."""
    if pid is None:
        return 0.0
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in children(pid))


async def backends_cpu(url: str) -> dict[int, float] | None:
    """CPU seconds so far of each PostgreSQL backend serving the database, but this one.

    Read right before and after each measured run: the service's pools are open
    throughout, so the backends present at both readings are its connections, and
    their CPU is what PostgreSQL spends on it. None when PostgreSQL runs elsewhere
    (its process ids mean nothing here).
    """
    if urlsplit(url).hostname not in (None, "", "localhost", "127.0.0.1", "::1"):
        return None
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    seconds: dict[int, float] = {}
    for row in rows:
        with contextlib.suppress(OSError):  # a backend that has just ended
            seconds[int(row["pid"])] = cpu_seconds(int(row["pid"]))
    return seconds


def backends_cpu_after(before: dict[int, float] | None) -> float | None:
    """CPU seconds the backends read in ``before`` have used since (ended ones left out)."""
    if before is None:
        return None
    used = 0.0
    for pid, seconds in before.items():
        with contextlib.suppress(OSError):
            used += cpu_seconds(pid) - seconds
    return used


async def postgres_server_pid(url: str) -> int | None:
    """The process id of a local PostgreSQL server's postmaster; None when it runs elsewhere."""
    if urlsplit(url).hostname not in (None, "", "localhost", "127.0.0.1", "::1"):
        return None
    conn = await asyncpg.connect(url)
    try:
        data_directory = await conn.fetchval("SHOW data_directory")
    finally:
        await conn.close()
    return int((Path(data_directory) / "postmaster.pid").read_text().split()[0])


def server_cpu_seconds(postmaster: int | None) -> float:
    """CPU seconds so far of a PostgreSQL server: its postmaster and every child.

    Backends, WAL writer and checkpointer: what the server spends, its background writes
    included. Read before and after a run whose pools stay open, so no backend that
    worked in it has ended meanwhile. 0 for None (a server elsewhere).
    """
    if postmaster is None:
        return 0.0
    used = cpu_seconds(postmaster)
    for child in children(postmaster):
        with contextlib.suppress(OSError):  # a backend that has just ended
            used += cpu_seconds(child)
    return used
