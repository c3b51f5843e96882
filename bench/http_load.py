"""Open-loop HTTP/1.1 load: a small C generator (bench/loadgen.c), or a Python one.

Requests are scheduled at a constant rate whatever the server does, and each latency is
measured from the request's *scheduled* send time, so a server that stalls is charged
for every request that queued behind the stall (no coordinated omission). Keep-alive
connections come from a pool that grows when all are busy (up to a cap; past it,
requests wait in a queue, their clock still running). Each request's send lag (actual
send minus scheduled time) is kept, so a generator that falls behind shows in the
results instead of passing for a slow server.

The generator must cost far less CPU than the service it measures, since both share the
machine. The C generator spends 0.02-0.03 ms of CPU per request at the top rates,
mostly the kernel's sleeps and wake-ups (the Python one 0.04-0.05); it is compiled once
with the machine's ``cc`` into a cache folder keyed by the source's hash and run as a
child process, which gets the request paths in a file and writes one binary record per
measured request. Without a C compiler, the Python generator (asyncio protocols and
httptools' C parser) does the same job. Both report their own CPU time in
``LoadResult.cpu_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import ipaddress
import math
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import httptools

__all__ = ["LoadResult", "open_loop"]

_MAX_CONNECTIONS = 512
_REQUEST_TIMEOUT = 10.0
_TICK = 0.001
# The C generator gets path(i) for the first requests only and cycles through them:
# bench/query.py's paths repeat every 100,000 requests.
_PATHS = 100_000
_SOURCE = Path(__file__).with_name("loadgen.c")
# bench/loadgen.c's struct record: offset, latency, send lag (seconds), status, padding.
_RECORD = struct.Struct("=dddii")


@dataclass
class LoadResult:
    """What one open-loop run saw."""

    scheduled: int = 0
    latencies: list[float] = field(default_factory=list)
    samples: list[tuple[float, float]] = field(default_factory=list)
    send_lags: list[float] = field(default_factory=list)
    send_lag_at: dict[float, float] = field(default_factory=dict)
    """Each measured request's send lag by its scheduled time, to tell a late send (the
    generator or the machine stalled) from a slow answer (the service or PostgreSQL)."""
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    first_send: float = 0.0
    last_done: float = 0.0
    connections: int = 0
    cpu_seconds: float = 0.0
    expected_status: int = 200
    """The status of a request that did its job (201 for a POST that creates); only these
    answers' latencies are kept."""

    @property
    def ok(self) -> int:
        """Answers with the expected status."""
        return self.statuses.get(self.expected_status, 0)


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
        # A connection the server closes goes back to no pool: a queued request sent on
        # it would be lost with it.
        closing = not self._parser.should_keep_alive()
        if closing:
            self._drop()
        self._run.completed(self, request, self._parser.get_status_code(), reusable=not closing)

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
        self._maybe_open()

    def _maybe_open(self) -> None:
        """One more connection per queued request not yet provided for, up to the cap."""
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
            lag = time.perf_counter() - request.scheduled
            self.result.send_lags.append(lag)
            self.result.send_lag_at[request.scheduled] = lag
        conn.send(request)

    def completed(
        self, conn: _Connection, request: _Request, status: int, *, reusable: bool
    ) -> None:
        done = time.perf_counter()
        self._finish()
        if request.measured:
            statuses = self.result.statuses
            statuses[status] = statuses.get(status, 0) + 1
            if status == self.result.expected_status:
                latency = done - request.scheduled
                self.result.latencies.append(latency)
                self.result.samples.append((request.scheduled, latency))
            self.result.last_done = max(self.result.last_done, done)
        if reusable:
            self._ready(conn)

    def failed(self, request: _Request, reason: str) -> None:
        self._finish()
        if request.measured:
            self.result.errors[reason] = self.result.errors.get(reason, 0) + 1

    def lost(self, conn: _Connection) -> None:
        self._all.discard(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        self._maybe_open()

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


@dataclass(frozen=True)
class _Schedule:
    """What an open-loop run sends, and when: one request every ``1 / rate`` seconds."""

    path: Callable[[int], str]
    headers: dict[str, str]
    rate: float
    seconds: float
    warmup_seconds: float
    method: str = "GET"
    body: str | None = None
    """Sent with every request (with its Content-Length); what varies is the path."""
    expected_status: int = 200

    @property
    def warmup(self) -> int:
        """Requests sent before the measured ones."""
        return int(self.warmup_seconds * self.rate)

    @property
    def total(self) -> int:
        """Requests sent in all, warm-up included."""
        return self.warmup + int(self.seconds * self.rate)


async def _python_open_loop(
    host: str, port: int, schedule: _Schedule, timeout: float
) -> LoadResult:
    """The Python generator: asyncio protocols in this process's event loop."""
    cpu_before = _own_cpu_seconds()
    result = LoadResult(expected_status=schedule.expected_status)
    run = _Run(host, port, result)
    path, rate, method = schedule.path, schedule.rate, schedule.method
    head = f" HTTP/1.1\r\nHost: {host}:{port}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in schedule.headers.items()
    )
    body = schedule.body
    if body is not None:
        head += f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
    else:
        head += "\r\n"
    warmup, total = schedule.warmup, schedule.total
    interval = 1.0 / rate
    start = time.perf_counter() + 0.05
    result.first_send = start + warmup * interval
    index = 0
    try:
        while index < total:
            now = time.perf_counter()
            while index < total and start + index * interval <= now:
                data = f"{method} {path(index)}{head}".encode()
                run.submit(_Request(data, start + index * interval, index >= warmup))
                index += 1
            if index < total:
                # Never less than a tick: the loop's timers are millisecond-grained, and
                # shorter sleeps would spin a core that the service needs.
                await asyncio.sleep(max(_TICK, start + index * interval - time.perf_counter()))
        run.sending_finished = True
        if run.outstanding:
            try:
                await asyncio.wait_for(run.done.wait(), timeout)
            except TimeoutError:
                run.time_out()
    finally:
        run.close()
    result.scheduled = total - warmup
    result.cpu_seconds = _own_cpu_seconds() - cpu_before
    return result


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def open_loop(
    host: str,
    port: int,
    *,
    path: Callable[[int], str],
    headers: dict[str, str],
    rate: float,
    seconds: float,
    warmup_seconds: float,
    method: str = "GET",
    body: str | None = None,
    expected_status: int = 200,
    timeout: float = _REQUEST_TIMEOUT,
    generator: Literal["auto", "c", "python"] = "auto",
) -> LoadResult:
    """Send ``method path(i)`` at ``rate`` per second for ``warmup + seconds``; measure the latter.

    ``body``, if given, goes with every request (give its Content-Type in ``headers``);
    answers with ``expected_status`` are the ones that count as done (their latencies kept).

    Requests of the warm-up are sent on the same schedule but left out of the result.
    Requests still unanswered ``timeout`` seconds after the last send count as
    TimeoutError. The C generator asks ``path(i)`` for the first 100,000 requests only and
    cycles through them (request i gets ``path(i % 100_000)``), so ``path`` must repeat
    with that period, as bench/query.py's does. ``generator`` picks one for tests; "auto"
    takes the C one when a C compiler is there.
    """
    binary = None if generator == "python" else await asyncio.to_thread(_compiled_generator)
    if binary is None and generator == "c":
        raise RuntimeError("the C load generator needs a C compiler (cc)")
    schedule = _Schedule(
        path, headers, rate, seconds, warmup_seconds, method, body, expected_status
    )
    if binary is None:
        return await _python_open_loop(host, port, schedule, timeout)
    address = await _ipv4_address(host, port)
    warmup, total = schedule.warmup, schedule.total
    with tempfile.TemporaryDirectory(prefix="punchcard-loadgen-") as folder:
        paths = Path(folder) / "paths"
        records = Path(folder) / "records"
        paths.write_text("".join(f"{path(i)}\n" for i in range(max(1, min(total, _PATHS)))))
        argv = [str(binary), "-t", repr(float(timeout)), "-k", repr(_TICK), "-m", method]
        if body is not None:
            argv += ["-b", body]
        for name, value in headers.items():
            argv += ["-H", f"{name}: {value}"]
        argv += [address, str(port), repr(float(rate)), repr(float(seconds))]
        argv += [repr(float(warmup_seconds)), str(paths), str(records)]
        summary = await _run_generator(argv)
        data = records.read_bytes()
    if len(data) != _RECORD.size * (total - warmup):
        raise RuntimeError(
            f"punchcard-loadgen wrote {len(data)} bytes for {total - warmup} records"
        )
    return _loaded(summary, data, total - warmup, expected_status)


async def _ipv4_address(host: str, port: int) -> str:
    """The C generator connects to an IPv4 address; bench/query.py passes 127.0.0.1."""
    with contextlib.suppress(ValueError):
        return str(ipaddress.IPv4Address(host))
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, family=socket.AF_INET, type=socket.SOCK_STREAM
    )
    return str(infos[0][4][0])


async def _run_generator(argv: list[str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await process.communicate()
    except BaseException:
        # Cancelled: the child must not go on loading the machine.
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(
            f"punchcard-loadgen exited with {process.returncode}: {stderr.decode().strip()}"
        )
    return stdout.decode()


def _loaded(summary: str, data: bytes, measured: int, expected_status: int = 200) -> LoadResult:
    """The LoadResult of the C generator's summary lines and records."""
    result = LoadResult(scheduled=measured, expected_status=expected_status)
    values: dict[str, str] = {}
    for line in summary.splitlines():
        key, _, value = line.partition(" ")
        if key == "error":
            reason, count = value.split()
            result.errors[reason] = int(count)
        else:
            values[key] = value
    # CLOCK_MONOTONIC, which time.perf_counter reads on Linux.
    start = float(values["start"])
    result.connections = int(values["connections"])
    result.cpu_seconds = float(values["cpu"])
    statuses = result.statuses
    # The first measured send as start + offset, the sum every request's time is taken
    # as: the generator's own first_send line, read as a float, can differ from that sum
    # in the last bit and land after the first request's time.
    first_send = float(values["first_send"]) if not data else math.inf
    last_done = 0.0
    for offset, latency, send_lag, status, _ in _RECORD.iter_unpack(data):
        scheduled = start + offset
        first_send = min(first_send, scheduled)
        if not math.isnan(send_lag):
            result.send_lags.append(send_lag)
            result.send_lag_at[scheduled] = send_lag
        if not status:
            continue
        statuses[status] = statuses.get(status, 0) + 1
        last_done = max(last_done, scheduled + latency)
        if status == result.expected_status:
            result.latencies.append(latency)
            result.samples.append((scheduled, latency))
    result.first_send = first_send
    result.last_done = last_done
    return result


def _cache_dir() -> Path:
    base = os.environ.get("PUNCHCARD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "punchcard"
    )
    return Path(base)


@functools.cache
def _compiled_generator() -> Path | None:
    """The C generator, compiled once per source version; None without a C compiler."""
    compiler = shutil.which("cc")
    if compiler is None:
        print(
            "bench: no C compiler (cc), so the load generator is the Python one, which costs "
            "several times the CPU per request",
            file=sys.stderr,
        )
        return None
    source = _SOURCE.read_bytes()
    target = _cache_dir() / f"punchcard-loadgen-{hashlib.sha256(source).hexdigest()[:16]}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built under a name of its own and renamed, so concurrent runs never see half a binary.
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    build = subprocess.run(
        [compiler, "-O2", "-Wall", "-Wextra", "-o", str(partial), str(_SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if build.returncode != 0:
        raise RuntimeError(f"cannot compile {_SOURCE}: {build.stderr.strip()}")
    partial.replace(target)
    return target
