"""The hot route over a real connection: pipelining, keep-alive, the headers FastAPI sends."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import pytest
from punchcard_coupon_query.app import create_app, server_config
from punchcard_coupon_query.hotroute.protocol import HotRouteProtocol
from punchcard_devstack import Endpoints
from punchcard_platform.db import Database
from punchcard_platform.settings import Settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from tests.helpers import unique_id
from tests.integration.query.support import Served, client, serve_in_loop

pytestmark = pytest.mark.integration

DURING = "2026-11-15T12:00:00Z"


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One response with a Content-Length body: status line, headers, body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    status, *lines = head[:-4].split(b"\r\n")
    headers = dict(line.split(b": ", 1) for line in lines)
    body = await reader.readexactly(int(headers[b"content-length"]))
    return status, headers, body


async def warm_key(served: Served) -> None:
    """One request with the read key, so the key is in the cache and the hot route taken."""
    async with client(served, served.read_key) as http:
        assert (await http.get("/v1/coupons")).status_code == 200


async def test_pipelined_requests_are_answered_in_order_on_one_connection(
    served: Served,
) -> None:
    """Hot-route, other-route and refused requests sent in one write come back in order."""
    url = urlsplit(served.base_url)
    me = unique_id("C")
    key = f"Authorization: Bearer {served.read_key}\r\n"
    hot = f"GET /v1/customers/{me}/coupons HTTP/1.1\r\nHost: x\r\n{key}\r\n"
    requests = [hot, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", hot.replace(key, ""), hot]
    await warm_key(served)  # so the hot requests are the protocol's own
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write("".join(requests).encode())
        answers = [await read_response(reader) for _ in requests]
    finally:
        writer.close()
    assert [status for status, _, _ in answers] == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 401 Unauthorized",
        b"HTTP/1.1 200 OK",
    ]
    assert answers[1][2] == b'{"status":"ok"}'
    assert answers[0][2].startswith(f'{{"customer_id":"{me}"'.encode())
    assert answers[0][1][b"content-type"] == b"application/json"
    assert answers[2][1][b"content-type"] == b"application/problem+json"


async def test_the_hot_route_sends_the_headers_the_asgi_path_sends(served: Served) -> None:
    """Same header names and values as FastAPI's answer (date, type, length), nothing more."""
    me = unique_id("C")
    await warm_key(served)  # so the first answer is the protocol's own
    async with client(served, served.read_key) as http:
        fast = await http.get(f"/v1/customers/{me}/coupons", params={"at": "2026-11-15T12:00:00Z"})
        # A repeated parameter is never taken by the fast path: FastAPI answers it.
        slow = await http.get(
            f"/v1/customers/{me}/coupons?at=2026-11-15T12:00:00Z&at=2026-11-15T12:00:00Z"
        )
    assert fast.status_code == slow.status_code == 200
    assert fast.content == slow.content
    assert list(fast.headers.keys()) == list(slow.headers.keys())
    assert fast.headers["content-length"] == slow.headers["content-length"]


@pytest.mark.parametrize(
    ("version", "connection"), [("HTTP/1.0", ""), ("HTTP/1.1", "Connection: close\r\n")]
)
async def test_a_request_not_kept_alive_is_answered_then_its_connection_closed(
    served: Served, version: str, connection: str
) -> None:
    """HTTP/1.0, or Connection: close: the hot route says so, answers, and closes."""
    url = urlsplit(served.base_url)
    me = unique_id("C")
    request = (
        f"GET /v1/customers/{me}/coupons {version}\r\nHost: x\r\n{connection}"
        f"Authorization: Bearer {served.read_key}\r\n\r\n"
    )
    await warm_key(served)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(request.encode())
        status, headers, body = await read_response(reader)
        rest = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"connection"] == b"close"
    assert body.startswith(f'{{"customer_id":"{me}"'.encode())
    assert rest == b""


async def test_a_client_gone_before_its_answer_leaves_the_server_serving(served: Served) -> None:
    """Requests whose connections close at once are dropped, raising nothing; others go on."""
    url = urlsplit(served.base_url)
    loop = asyncio.get_running_loop()
    raised: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: raised.append(context))
    async with client(served, served.read_key) as http:
        assert (await http.get(f"/v1/customers/{unique_id('C')}/coupons")).status_code == 200
        for _ in range(20):
            _, writer = await asyncio.open_connection(url.hostname, url.port)
            writer.write(
                f"GET /v1/customers/{unique_id('C')}/coupons HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {served.read_key}\r\n\r\n".encode()
            )
            writer.close()
        response = await http.get(f"/v1/customers/{unique_id('C')}/coupons")
    loop.set_exception_handler(None)
    assert response.status_code == 200
    assert raised == []


async def test_the_protocol_as_served_answers_the_hot_route_itself(
    stack: Endpoints, db: Database
) -> None:
    """With the service's own uvicorn settings nothing makes the protocol leave it to ASGI."""
    config = server_config(create_app(Settings(database_url=stack.database_url), db))
    config.load()
    assert config.http_protocol_class is HotRouteProtocol
    protocol = HotRouteProtocol(config=config, server_state=ServerState(), app_state={})
    assert protocol.answers_hot_route


async def test_under_another_uvicorn_the_stock_protocol_serves_the_same_answers(
    stack: Endpoints, db: Database
) -> None:
    """The fence's fallback: uvicorn's own protocol, the hot route answered through ASGI."""
    me = unique_id("C")
    async with serve_in_loop(stack.database_url, db, uvicorn_version="0.99.0") as served:
        await warm_key(served)
        async with client(served, served.read_key) as http:
            fast = await http.get(f"/v1/customers/{me}/coupons", params={"at": DURING})
            slow = await http.get(f"/v1/customers/{me}/coupons?at={DURING}&at={DURING}")
    assert fast.status_code == slow.status_code == 200
    assert fast.content == slow.content
    assert list(fast.headers.keys()) == list(slow.headers.keys())


async def test_the_stock_protocol_is_what_a_mismatched_version_configures(
    stack: Endpoints, db: Database
) -> None:
    """server_config gives uvicorn its stock httptools protocol when the version does not fit."""
    app = create_app(Settings(database_url=stack.database_url), db)
    config = server_config(app, uvicorn_version="0.55.0")
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol
