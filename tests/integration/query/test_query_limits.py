"""What a request may send: oversized heads (431), oversized bodies (413), encoded slashes (422)."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

import orjson
import pytest
from punchcard_coupon_query.limits import MAX_BODY_BYTES, MAX_HEAD_BYTES
from punchcard_devstack import Endpoints
from punchcard_platform.db import Database

from tests.helpers import unique_id
from tests.integration.query.support import Served, client, serve_in_loop

pytestmark = pytest.mark.integration

PROBLEM = b"application/problem+json"


async def exchange(
    served: Served, head: bytes, rest: bytes = b""
) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """Send a raw request (``rest`` in 64 KB writes, as long as the server reads), read the answer.

    The server may answer and hang up before it has read everything: the writes then fail,
    which is the point, and the answer is read all the same.
    """
    url = urlsplit(served.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(head)
            for start in range(0, len(rest), 65536):
                writer.write(rest[start : start + 65536])
                await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    head_text, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head_text.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    return status, headers, body


def hot_head(served: Served, extra: str = "") -> str:
    """The head of a hot-route request with the read key, without its closing blank line."""
    return (
        f"GET /v1/customers/{unique_id('C')}/coupons HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {served.read_key}\r\n{extra}"
    )


async def warm_key(served: Served) -> None:
    """One request with the read key, so the protocol itself would answer the hot route."""
    async with client(served, served.read_key) as http:
        assert (await http.get("/v1/coupons")).status_code == 200


def assert_431(status: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
    """A 431 problem document, its connection closed."""
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert headers[b"content-type"] == PROBLEM
    assert headers[b"connection"] == b"close"
    assert orjson.loads(body)["status"] == 431


async def test_a_100_kb_header_is_refused_with_431(served: Served) -> None:
    """One header of 100 KB on the hot route: 431, not a list."""
    await warm_key(served)
    head = hot_head(served, f"X-Padding: {'a' * 100_000}\r\n\r\n")
    assert_431(*await exchange(served, head.encode()))


async def test_a_thousand_headers_are_refused_with_431(served: Served) -> None:
    """1,000 small headers add up past the limit: 431."""
    await warm_key(served)
    many = "".join(f"X-H{n}: value-{n}\r\n" for n in range(1000))
    assert_431(*await exchange(served, (hot_head(served, many) + "\r\n").encode()))


async def test_a_32_mb_header_is_refused_before_it_is_read(served: Served) -> None:
    """The answer comes while the header is still being sent; the server hangs up on it."""
    await warm_key(served)
    head = hot_head(served, "X-Huge: ").encode()
    status, headers, body = await exchange(served, head, b"a" * (32 * 1024 * 1024))
    assert_431(status, headers, body)


async def test_a_head_just_under_the_limit_is_served(served: Served) -> None:
    """The limit is the documented 16 KB, not less: a 15 KB header still gets its list."""
    await warm_key(served)
    padding = "a" * (MAX_HEAD_BYTES - 1024)
    head = hot_head(served, f"Connection: close\r\nX-Padding: {padding}\r\n\r\n")
    status, _, body = await exchange(served, head.encode())
    assert status == b"HTTP/1.1 200 OK"
    assert body.startswith(b'{"customer_id":')


async def test_other_routes_refuse_an_oversized_head_too(served: Served) -> None:
    """The limit is the service's, not the hot route's: /v1/coupons and /healthz as well."""
    for path in ("/v1/coupons", "/healthz"):
        head = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Padding: {'a' * 20_000}\r\n\r\n"
        assert_431(*await exchange(served, head.encode()))


async def test_a_body_over_the_limit_is_refused_with_413(served: Served) -> None:
    """A declared Content-Length over the limit is answered before the body is read."""
    coupon_id = unique_id("CP")
    body = b'{"name": "' + b"a" * MAX_BODY_BYTES + b'"}'
    async with client(served, served.admin_key) as http:
        response = await http.put(
            f"/v1/coupons/{coupon_id}", content=body, headers={"Content-Type": "application/json"}
        )
        fetched = await http.get(f"/v1/coupons/{coupon_id}")
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM.decode()
    assert response.json()["status"] == 413
    assert fetched.status_code == 404


async def test_a_chunked_body_over_the_limit_is_refused_with_413(served: Served) -> None:
    """Without a Content-Length the body is counted as it arrives, and refused past the limit."""
    coupon_id = unique_id("CP")

    async def chunks() -> object:
        yield b'{"name": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 1):
            yield b"a" * 65536
        yield b'"}'

    async with client(served, served.admin_key) as http:
        response = await http.put(
            f"/v1/coupons/{coupon_id}",
            content=chunks(),  # type: ignore[arg-type]  # an async iterator of bytes
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM.decode()


async def test_a_coupon_issued_to_100000_customers_fits(served: Served) -> None:
    """About 1.5 MB of customer ids: under the body limit, stored whole."""
    coupon_id = unique_id("CP")
    customers = [f"C{n:012d}" for n in range(100_000)]
    payload = orjson.dumps({"name": "For many", "customer_ids": customers})
    assert 1_400_000 < len(payload) < MAX_BODY_BYTES
    async with client(served, served.admin_key) as http:
        response = await http.put(
            f"/v1/coupons/{coupon_id}",
            content=payload,
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 201, response.text
    assert len(response.json()["customer_ids"]) == 100_000


@pytest.mark.parametrize(
    "path",
    [
        "/v1/customers/a%2Fb/coupons",
        "/v1/customers/a%2fb/coupons/TEA",
        "/v1/customers/a%2Fb/points",
        "/v1/receipts/a%2Fb",
        "/v1/returns/a%2Fb",
    ],
)
async def test_an_identifier_with_an_encoded_slash_is_422(served: Served, path: str) -> None:
    """``a%2Fb`` is an invalid identifier, not a path with one more segment."""
    async with client(served, served.read_key) as http:
        response = await http.get(path)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM.decode()


async def test_the_stock_protocol_refuses_an_oversized_head_as_well(
    stack: Endpoints, db: Database
) -> None:
    """Served by uvicorn's own protocol (another uvicorn), the application still answers 431."""
    async with serve_in_loop(stack.database_url, db, uvicorn_version="0.99.0") as served:
        head = hot_head(served, f"X-Padding: {'a' * 20_000}\r\n\r\n")
        assert_431(*await exchange(served, head.encode()))
