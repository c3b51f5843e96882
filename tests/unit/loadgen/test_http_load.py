"""Both load generators (C and Python) measure a real local HTTP server alike."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator, Callable

import pytest

from bench.http_load import LoadResult, _compiled_generator, open_loop

GENERATORS = pytest.mark.parametrize("generator", ["c", "python"])
SLOW = 0.05
BIG_BODY = b"x" * 300_000
CREATE_BODY = '{"uses":1,"ttl_seconds":900}'


class _Server(asyncio.Protocol):
    """Answers by path: /ok, /missing (404), /slow (50 ms late), /close (then closes),
    /split (the answer in three writes), /big (300 kB), /drop (closes, no answer),
    /silent (never answers), /create (201 for a POST of CREATE_BODY, else 400)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = _content_length(head)
            if len(rest) < length:
                return  # the body is still on its way
            body, self.buffer = rest[:length], rest[length:]
            method, path = head.split(b" ", 2)[:2]
            self.answer(path.decode(), method.decode(), body)

    def answer(self, path: str, method: str = "GET", body: bytes = b"") -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        if path == "/create":
            created = method == "POST" and body == CREATE_BODY.encode()
            self.write(_response(201 if created else 400, b"made"))
        elif path == "/missing":
            self.write(_response(404, b"no such thing"))
        elif path == "/slow":
            loop.call_later(SLOW, self.write, _response(200, b"late"))
        elif path == "/close":
            self.write(_response(200, b"bye", b"Connection: close\r\n"))
            self.transport.close()
        elif path == "/split":
            data = _response(200, b"in pieces")
            self.write(data[:7])
            loop.call_later(0.001, self.write, data[7:30])
            loop.call_later(0.002, self.write, data[30:])
        elif path == "/big":
            self.write(_response(200, BIG_BODY))
        elif path == "/drop":
            self.transport.close()
        elif path != "/silent":
            self.write(_response(200, b"hello"))

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _response(status: int, body: bytes, extra: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status} Whatever\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """A test server on a free loopback port."""
    server = await asyncio.get_running_loop().create_server(_Server, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def _cycle(*paths: str) -> Callable[[int], str]:
    return lambda i: paths[i % len(paths)]


async def _run(
    port: int,
    generator: str,
    path: Callable[[int], str],
    *,
    rate: float,
    seconds: float,
    warmup: float = 0.0,
    timeout: float = 10.0,
) -> LoadResult:
    assert generator in ("c", "python")
    return await open_loop(
        "127.0.0.1",
        port,
        path=path,
        headers={"Authorization": "Bearer test"},
        rate=rate,
        seconds=seconds,
        warmup_seconds=warmup,
        timeout=timeout,
        generator="c" if generator == "c" else "python",
    )


@GENERATORS
async def test_every_measured_request_is_counted_with_its_status_and_latency(
    port: int, generator: str
) -> None:
    """500/s for 1 s after a warm-up: 500 results, statuses right, delays in the latencies."""
    kinds = ["/ok", "/ok", "/missing", "/slow", "/ok", "/close", "/split", "/ok", "/big", "/ok"]
    result = await _run(port, generator, _cycle(*kinds), rate=500, seconds=1.0, warmup=0.2)

    measured = range(100, 600)
    assert result.scheduled == 500
    assert result.errors == {}
    assert result.statuses == {200: 450, 404: 50}
    assert len(result.latencies) == 450
    assert len(result.samples) == 450
    assert len(result.send_lags) == 500
    assert len(result.send_lag_at) == 500
    assert all(scheduled in result.send_lag_at for scheduled, _ in result.samples)
    assert all(latency > 0 for latency in result.latencies)
    slow = 0
    for scheduled, latency in result.samples:
        index = round((scheduled - result.first_send) * 500) + 100
        assert index in measured
        if kinds[index % len(kinds)] == "/slow":
            slow += 1
            assert latency >= SLOW
    assert slow == 50
    assert result.connections >= 60  # every /close answer took its connection with it
    assert result.first_send <= min(scheduled for scheduled, _ in result.samples)
    assert result.last_done >= max(scheduled + latency for scheduled, latency in result.samples)
    assert result.cpu_seconds >= 0


@GENERATORS
async def test_a_post_carries_its_body_and_counts_the_expected_status(
    port: int, generator: str
) -> None:
    """POST with a body, 201 expected: every answer is a 201, each with its latency."""
    result = await open_loop(
        "127.0.0.1",
        port,
        path=_cycle("/create"),
        headers={"Content-Type": "application/json"},
        rate=200,
        seconds=0.5,
        warmup_seconds=0.1,
        method="POST",
        body=CREATE_BODY,
        expected_status=201,
        generator="c" if generator == "c" else "python",
    )

    assert result.errors == {}
    assert result.statuses == {201: 100}
    assert result.ok == 100
    assert len(result.latencies) == 100


@GENERATORS
async def test_requests_a_server_never_answers_count_as_timeouts(port: int, generator: str) -> None:
    """Unanswered requests are TimeoutError once the timeout after the last send runs out."""
    result = await _run(port, generator, _cycle("/silent"), rate=100, seconds=0.2, timeout=0.3)

    assert result.errors == {"TimeoutError": 20}
    assert result.statuses == {}
    assert result.latencies == []


@GENERATORS
async def test_a_connection_closed_without_an_answer_counts_as_a_reset(
    port: int, generator: str
) -> None:
    """A request whose connection the server closes unanswered is a ConnectionResetError."""
    result = await _run(port, generator, _cycle("/ok", "/drop"), rate=200, seconds=0.5)

    assert result.errors == {"ConnectionResetError": 50}
    assert result.statuses == {200: 50}


@GENERATORS
async def test_a_port_nobody_listens_on_refuses_every_request(generator: str) -> None:
    """With no server, every measured request counts as ConnectionRefusedError."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    result = await _run(closed_port, generator, _cycle("/ok"), rate=100, seconds=0.3)

    assert result.errors == {"ConnectionRefusedError": 30}
    assert result.connections == 0


def test_the_c_generator_refuses_bad_arguments_with_a_message() -> None:
    """A rate that is not a number stops the C generator before it sends anything."""
    binary = _compiled_generator()
    assert binary is not None
    run = subprocess.run(
        [str(binary), "127.0.0.1", "80", "fast", "1", "0", "/nonexistent", "/dev/null"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert run.returncode == 2
    assert "RATE must be a number" in run.stderr
