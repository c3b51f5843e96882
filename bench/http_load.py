"""An open-loop HTTP/1.1 load generator on asyncio protocols and httptools' C parser.

Requests are scheduled at a constant rate whatever the server does, and each latency is
measured from the request's *scheduled* send time, so a server that stalls is charged
for every request that queued behind the stall (no coordinated omission). Keep-alive
connections come from a pool that grows when all are busy (up to a cap; past it,
requests wait in a queue, their clock still running).

It must cost far less CPU than the service it measures, since both share the machine:
no task per request, no stream objects, no Python header parsing. The scheduler
sleeps until the next request is due (at least a millisecond) and sends everything
due; responses are parsed in C and complete in a callback. Each request's send lag
(actual send minus scheduled time) is kept, so a generator that falls behind shows
in the results instead of passing for a slow server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import httptools

_MAX_CONNECTIONS = 512
_REQUEST_TIMEOUT = 10.0
_TICK = 0.001


@dataclass
class LoadResult:
    """What one open-loop run saw."""

    scheduled: int = 0
    latencies: list[float] = field(default_factory=list)
    samples: list[tuple[float, float]] = field(default_factory=list)
    send_lags: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    first_send: float = 0.0
    last_done: float = 0.0
    connections: int = 0

    @property
    def ok(self) -> int:
        """Answers with status 200."""
        return self.statuses.get(200, 0)


class _Request:
    __slots__ = ("data", "measured", "scheduled")

    def __init__(self, data: bytes, scheduled: float, measured: bool) -> None:
        self.data = data
        self.scheduled = scheduled
        self.measured = measured


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.request: _Request | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self.transport = cast("asyncio.Transport", transport)

    def send(self, request: _Request) -> None:
        self.request = request
        assert self.transport is not None
        self.transport.write(request.data)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(type(exc).__name__)

    # No on_header callback: a Python call per response header was a tenth of the
    # generator's CPU; the parser itself says whether the server keeps the connection.
    def on_message_complete(self) -> None:
        request, self.request = self.request, None
        if request is None:
            return
        closing = not self._parser.should_keep_alive()
        self._run.completed(self, request, self._parser.get_status_code())
        if closing:
            self._drop()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("ConnectionResetError")
        self._run.lost(self)

    def _fail(self, reason: str) -> None:
        request, self.request = self.request, None
        if request is not None:
            self._run.failed(request, reason)
        self._drop()

    def _drop(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class _Run:
    """The bookkeeping of one open-loop run: pool, queue, results."""

    def __init__(self, host: str, port: int, result: LoadResult) -> None:
        self._host = host
        self._port = port
        self.result = result
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._opening = 0
        self._opening_tasks: set[asyncio.Future[None]] = set()
        self._queue: deque[_Request] = deque()
        self.outstanding = 0
        self.done = asyncio.Event()
        self.sending_finished = False

    def submit(self, request: _Request) -> None:
        self.outstanding += 1
        if self._idle:
            self._send(self._idle.pop(), request)
            return
        self._queue.append(request)
        if len(self._all) + self._opening < _MAX_CONNECTIONS and self._opening < len(self._queue):
            self._opening += 1
            task = asyncio.ensure_future(self._open())
            self._opening_tasks.add(task)
            task.add_done_callback(self._opening_tasks.discard)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(self), self._host, self._port
            )
        except OSError as exc:
            self._opening -= 1
            if self._queue:
                self.failed(self._queue.popleft(), type(exc).__name__)
            return
        self._opening -= 1
        self._all.add(conn)
        self.result.connections += 1
        self._ready(conn)

    def _ready(self, conn: _Connection) -> None:
        if self._queue:
            self._send(conn, self._queue.popleft())
        else:
            self._idle.append(conn)

    def _send(self, conn: _Connection, request: _Request) -> None:
        if request.measured:
            self.result.send_lags.append(time.perf_counter() - request.scheduled)
        conn.send(request)

    def completed(self, conn: _Connection, request: _Request, status: int) -> None:
        done = time.perf_counter()
        self._finish()
        if request.measured:
            statuses = self.result.statuses
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latency = done - request.scheduled
                self.result.latencies.append(latency)
                self.result.samples.append((request.scheduled, latency))
            self.result.last_done = max(self.result.last_done, done)
        self._ready(conn)

    def failed(self, request: _Request, reason: str) -> None:
        self._finish()
        if request.measured:
            self.result.errors[reason] = self.result.errors.get(reason, 0) + 1

    def lost(self, conn: _Connection) -> None:
        self._all.discard(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    def _finish(self) -> None:
        self.outstanding -= 1
        if self.sending_finished and self.outstanding == 0:
            self.done.set()

    def time_out(self) -> None:
        """Count what never came back as timeouts."""
        while self._queue:
            self.failed(self._queue.popleft(), "TimeoutError")
        for conn in list(self._all):
            if conn.request is not None:
                request, conn.request = conn.request, None
                self.failed(request, "TimeoutError")

    def close(self) -> None:
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.close()


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
    result = LoadResult()
    run = _Run(host, port, result)
    head = f" HTTP/1.1\r\nHost: {host}:{port}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    warmup = int(warmup_seconds * rate)
    total = warmup + int(seconds * rate)
    interval = 1.0 / rate
    start = time.perf_counter() + 0.05
    result.first_send = start + warmup * interval
    index = 0
    try:
        while index < total:
            now = time.perf_counter()
            while index < total and start + index * interval <= now:
                data = f"GET {path(index)}{head}\r\n".encode()
                run.submit(_Request(data, start + index * interval, index >= warmup))
                index += 1
            if index < total:
                # Never less than a tick: the loop's timers are millisecond-grained, and
                # shorter sleeps would spin a core that the service needs.
                await asyncio.sleep(max(_TICK, start + index * interval - time.perf_counter()))
        run.sending_finished = True
        if run.outstanding:
            try:
                await asyncio.wait_for(run.done.wait(), _REQUEST_TIMEOUT)
            except TimeoutError:
                run.time_out()
    finally:
        run.close()
    result.scheduled = total - warmup
    return result
