"""What a request may send, and the answer to one that sends more (CONTRACT.md section 5).

Without bounds the service would hold whatever a client sends: a 32 MB header, a
thousand headers, an endless chunked body. A request's head (request line and header
fields) may take ``MAX_HEAD_BYTES``; more is refused with 431. A body may take
``MAX_BODY_BYTES``, room for a coupon issued to 100,000 customers (about 1.5 MB); more
is refused with 413. Both answers are problem documents.

The HTTP protocol (``hotroute.protocol``) refuses an oversized head while reading it,
before it is held; ``head_bytes`` here lets the ASGI application check it again, so the
bound holds under uvicorn's stock protocol too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

import orjson

from punchcard_coupon_query.problems import problem_body

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEAD_BYTES",
    "body_too_large",
    "declared_body_bytes",
    "has_encoded_slash",
    "head_bytes",
    "head_too_large",
    "path_keeping_encoded_slashes",
]

MAX_HEAD_BYTES = 16 * 1024
"""The request line and every header field, with their separators, at most."""
MAX_BODY_BYTES = 4 * 1024 * 1024
"""A request body at most: a coupon issued to 100,000 customers is about 1.5 MB."""

_ENCODED_SLASH = re.compile(r"%2[fF]")


def head_bytes(
    method: str, raw_path: bytes, query_string: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> int:
    """The size of a request's head as sent: ``GET /path?query HTTP/1.1``, ``name: value``
    lines, each ending in CRLF, and the blank line."""
    size = len(method) + 1 + len(raw_path) + len(" HTTP/1.1\r\n") + 2
    if query_string:
        size += 1 + len(query_string)
    for name, value in headers:
        size += len(name) + len(value) + 4
    return size


def declared_body_bytes(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length a request declares, or None (no body, or a chunked one)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def head_too_large() -> bytes:
    """The problem document answering an oversized head (431)."""
    detail = f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"
    return orjson.dumps(problem_body(431, detail))


def body_too_large() -> str:
    """The detail of the problem answering an oversized body (413)."""
    return f"the request body exceeds {MAX_BODY_BYTES} bytes"


def has_encoded_slash(raw_path: bytes) -> bool:
    """Whether a path as sent has ``%2F`` in it (cheap: most paths have no ``%`` at all)."""
    return b"%" in raw_path and _ENCODED_SLASH.search(raw_path.decode("latin-1")) is not None


def path_keeping_encoded_slashes(raw_path: bytes) -> str:
    """The path percent-decoded except for ``%2F``, which stays as sent.

    uvicorn decodes ``/v1/receipts/a%2Fb`` to ``/v1/receipts/a/b``, a path with no route:
    404, where the contract says an invalid identifier is 422 (and an unknown customer
    never a 404). Kept encoded, ``a%2Fb`` reaches the route as the identifier it was sent
    as, and fails the identifier rule like any other invalid one.
    """
    parts = _ENCODED_SLASH.split(raw_path.decode("latin-1"))
    return "%2F".join(unquote(part) for part in parts)
