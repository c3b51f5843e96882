"""The request limits' arithmetic and the encoded-slash path, as plain functions."""

from __future__ import annotations

import orjson
import pytest
from punchcard_coupon_query.limits import (
    MAX_HEAD_BYTES,
    declared_body_bytes,
    has_encoded_slash,
    head_bytes,
    head_too_large,
    path_keeping_encoded_slashes,
)


def test_a_head_is_measured_as_sent() -> None:
    """Request line and ``name: value`` lines with their separators."""
    headers = [(b"host", b"x"), (b"authorization", b"Bearer k")]
    sent = b"GET /p?q=1 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\n\r\n"
    assert head_bytes("GET", b"/p", b"q=1", headers) == len(sent)
    assert head_bytes("GET", b"/p", b"", headers) == len(sent) - len(b"?q=1")


def test_the_declared_body_is_read_from_content_length_only_when_it_is_a_number() -> None:
    """A chunked body (no Content-Length) or a malformed one declares nothing."""
    assert declared_body_bytes([(b"content-length", b"1500000")]) == 1_500_000
    assert declared_body_bytes([(b"transfer-encoding", b"chunked")]) is None
    assert declared_body_bytes([(b"content-length", b"-1")]) is None


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b"/v1/receipts/a%2Fb", "/v1/receipts/a%2Fb"),
        (b"/v1/customers/a%2fb/coupons", "/v1/customers/a%2Fb/coupons"),
        (b"/v1/receipts/%41%2F%42", "/v1/receipts/A%2FB"),
    ],
)
def test_an_encoded_slash_stays_encoded_and_the_rest_is_decoded(raw: bytes, path: str) -> None:
    """The identifier reaches its route as one segment, which then fails the identifier rule."""
    assert has_encoded_slash(raw)
    assert path_keeping_encoded_slashes(raw) == path


def test_paths_without_an_encoded_slash_are_left_to_uvicorn() -> None:
    """Other escapes are uvicorn's usual decoding."""
    assert not has_encoded_slash(b"/v1/receipts/a%20b")
    assert not has_encoded_slash(b"/v1/receipts/plain")


def test_the_431_answer_is_a_problem_document_naming_the_limit() -> None:
    """RFC 9457 fields, and the limit in bytes in its detail."""
    body = orjson.loads(head_too_large())
    assert body["status"] == 431
    assert body["title"] == "Request Header Fields Too Large"
    assert str(MAX_HEAD_BYTES) in body["detail"]
