"""An open-loop HTTP/1.1 load generator on bare asyncio streams.

Requests are scheduled at a constant rate whatever the server does, and each latency is
measured from the request's *scheduled* send time, so a server that stalls is charged
for every request that queued behind the stall (no coordinated omission). Keep-alive
connections come from a pool that grows when all are busy. Bare streams cost far less
CPU than an HTTP client library, which matters when the generator shares two cores with
the service it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_MAX_CONNECTIONS = 256
_REQUEST_TIMEOUT = 10.0


@dataclass
class LoadResult:
    """What one open-loop run saw."""

    scheduled: int = 0
    latencies: list[float] = field(default_factory=list)
    samples: list[tuple[float, float]] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    first_send: float = 0.0
    last_done: float = 0.0
    connections: int = 0

    @property
    def ok(self) -> int:
        """Answers with status 200."""
        return self.statuses.get(200, 0)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def get(self, request: bytes) -> int:
        self.writer.write(request)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        closing = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            header = name.strip().lower()
            if header == b"content-length":
                length = int(value.strip())
            elif header == b"transfer-encoding":
                raise ValueError("chunked responses are not supported by this load generator")
            elif header == b"connection" and value.strip().lower() == b"close":
                closing = True
        if length:
            await self.reader.readexactly(length)
        if closing:
            raise ConnectionResetError("server asked to close the connection")
        return status

    def close(self) -> None:
        self.writer.close()


class _Pool:
    """Idle keep-alive connections; a new one is opened while all are busy, up to a cap."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._idle: asyncio.Queue[_Connection] = asyncio.Queue()
        self._all: list[_Connection] = []
        self.opened = 0

    async def acquire(self) -> _Connection:
        with contextlib.suppress(asyncio.QueueEmpty):
            return self._idle.get_nowait()
        if self.opened >= _MAX_CONNECTIONS:
            return await self._idle.get()
        self.opened += 1
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        except BaseException:
            self.opened -= 1
            raise
        conn = _Connection(reader, writer)
        self._all.append(conn)
        return conn

    def release(self, conn: _Connection) -> None:
        self._idle.put_nowait(conn)

    def discard(self, conn: _Connection) -> None:
        conn.close()
        self.opened -= 1

    def close(self) -> None:
        for conn in self._all:
            with contextlib.suppress(Exception):
                conn.close()


async def open_loop(
    host: str,
    port: int,
    *,
    path: Callable[[int], str],
    headers: dict[str, str],
    rate: float,
    seconds: float,
    warmup_seconds: float,
) -> LoadResult:
    """Send GET ``path(i)`` at ``rate`` per second for ``warmup + seconds``; measure the latter.

    Requests of the warm-up are sent on the same schedule but left out of the result.
    """
    pool = _Pool(host, port)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    result = LoadResult()
    warmup = int(warmup_seconds * rate)
    total = warmup + int(seconds * rate)
    tasks: list[asyncio.Task[None]] = []

    async def one(index: int, scheduled: float) -> None:
        request = f"GET {path(index)} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
        measured = index >= warmup
        conn: _Connection | None = None
        try:
            conn = await pool.acquire()
            status = await asyncio.wait_for(conn.get(request), _REQUEST_TIMEOUT)
        except Exception as exc:
            if conn is not None:
                pool.discard(conn)
            if measured:
                name = type(exc).__name__
                result.errors[name] = result.errors.get(name, 0) + 1
            return
        pool.release(conn)
        done = time.perf_counter()
        if measured:
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == 200:
                result.latencies.append(done - scheduled)
                result.samples.append((scheduled, done - scheduled))
            result.last_done = max(result.last_done, done)

    start = time.perf_counter() + 0.05
    for index in range(total):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if index == warmup:
            result.first_send = scheduled
        tasks.append(asyncio.ensure_future(one(index, scheduled)))
    await asyncio.gather(*tasks)
    result.scheduled = total - warmup
    result.connections = pool.opened
    pool.close()
    return result
