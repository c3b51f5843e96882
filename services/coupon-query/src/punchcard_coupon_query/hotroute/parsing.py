"""Which requests are ordinary: a plainly valid path, parameters and key.

Two calls are answered without FastAPI when ordinary: the coupon list (the hot route)
and a reservation. Only those are answered there. A request this module is unsure of (a repeated
parameter, an odd boolean spelling, no bearer key) is left to FastAPI, which validates
it and answers exactly as the OpenAPI document says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter
from urllib.parse import parse_qsl

from punchcard_coupon_query.api import parse_at
from punchcard_coupon_query.models import IDENTIFIER_PATTERN, RFC3339_PATTERN

__all__ = ["COUPONS_ROUTE", "ListRequest", "ReservationHead", "list_request", "reservation_head"]

COUPONS_ROUTE = "/v1/customers/{customer_id}/coupons"
"""The hot route's template, as FastAPI names it in the metrics."""

_COUPONS_PATH = re.compile(r"/v1/customers/([A-Za-z0-9._:-]{1,64})/coupons")
_RESERVATIONS_PATH = re.compile(
    r"/v1/customers/([A-Za-z0-9._:-]{1,64})/coupons/([A-Za-z0-9._:-]{1,64})/reservations"
)
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_RFC3339 = re.compile(RFC3339_PATTERN)
# The spellings of a boolean this path takes; pydantic's other ones go to FastAPI.
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}
_PARAMETERS = frozenset({"store_id", "at", "include_ineligible"})


class _NotOrdinaryError(Exception):
    """This request is left to FastAPI."""


@dataclass(frozen=True, slots=True)
class ListRequest:
    """An ordinary request for the hot route: its parameters plainly valid, its key read."""

    customer_id: str
    path: str
    key: str
    store_id: str | None
    at: datetime
    """The moment asked about; now (when the request was read) if none was given."""
    include_ineligible: bool
    started: float
    """``perf_counter()`` when it was read, for the request-duration histogram."""


@dataclass(frozen=True, slots=True)
class ReservationHead:
    """The head of an ordinary reservation call: its path, key and Idempotency-Key read.

    Its body is still to be read and validated (``ReservationInput``).
    """

    customer_id: str
    coupon_id: str
    path: str
    key: str
    idempotency_key: str | None
    started: float
    """``perf_counter()`` when it was read, for the request-duration histogram."""


def reservation_head(
    method: str, path: str, headers: Iterable[tuple[bytes, bytes]]
) -> ReservationHead | None:
    """The call if it is an ordinary reservation call, else None (for FastAPI).

    Ordinary: a bearer key, at most one plainly valid ``Idempotency-Key``, and a JSON
    body of a declared length or none (``Content-Type: application/json``, or no body
    and no content type).
    """
    if method != "POST":
        return None
    match = _RESERVATIONS_PATH.fullmatch(path)
    if match is None:
        return None
    started = perf_counter()
    try:
        key = _bearer_key(headers)
        idempotency_key = _ordinary_reservation_headers(headers)
    except _NotOrdinaryError:
        return None
    return ReservationHead(match.group(1), match.group(2), path, key, idempotency_key, started)


def _ordinary_reservation_headers(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The Idempotency-Key, if the headers are plainly those of a JSON call."""
    idempotency_key: str | None = None
    seen_key = typed = False
    body = False
    for name, value in headers:
        if name == b"idempotency-key":
            text = value.decode("latin-1")
            if seen_key or _IDEMPOTENCY_KEY.fullmatch(text) is None:
                raise _NotOrdinaryError
            seen_key, idempotency_key = True, text
        elif name == b"content-type":
            media_type = value.partition(b";")[0].strip().lower()
            if typed or media_type != b"application/json":
                raise _NotOrdinaryError
            typed = True
        elif name == b"transfer-encoding":
            raise _NotOrdinaryError  # a chunked body: FastAPI counts it as it comes
        elif name == b"content-length" and value != b"0":
            body = True
    if body and not typed:
        raise _NotOrdinaryError
    return idempotency_key


def list_request(
    method: str,
    path: str,
    query_string: bytes,
    headers: Iterable[tuple[bytes, bytes]],
) -> ListRequest | None:
    """The request if it is an ordinary one for the hot route, else None (for FastAPI).

    ``path`` is percent-decoded and ``headers`` have lower-case names, as in an ASGI scope.
    """
    if method != "GET":
        return None
    match = _COUPONS_PATH.fullmatch(path)
    if match is None:
        return None
    started = perf_counter()
    try:
        store_id, at, include_ineligible = _ordinary_parameters(query_string)
        key = _bearer_key(headers)
    except _NotOrdinaryError:
        return None
    moment = datetime.now(UTC) if at is None else at
    return ListRequest(match.group(1), path, key, store_id, moment, include_ineligible, started)


def _ordinary_parameters(query_string: bytes) -> tuple[str | None, datetime | None, bool]:
    """``store_id``, ``at`` and ``include_ineligible`` when each is plainly valid.

    Decoded as Starlette decodes them; unknown parameters are ignored, as FastAPI
    ignores them. A repeated or doubtful parameter raises ``_NotOrdinaryError``.
    """
    if not query_string:
        return None, None, False
    seen: dict[str, str] = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in _PARAMETERS:
            if name in seen:
                raise _NotOrdinaryError
            seen[name] = value
    store_id = seen.get("store_id")
    if store_id is not None and _IDENTIFIER.fullmatch(store_id) is None:
        raise _NotOrdinaryError
    text = seen.get("at")
    at = None
    if text is not None:
        if not text.isascii() or _RFC3339.fullmatch(text) is None:
            raise _NotOrdinaryError
        try:
            at = parse_at(text)
        except ValueError:
            raise _NotOrdinaryError from None
    flag = seen.get("include_ineligible")
    include_ineligible = False
    if flag is not None:
        if flag not in _BOOLEANS:
            raise _NotOrdinaryError
        include_ineligible = _BOOLEANS[flag]
    return store_id, at, include_ineligible


def _bearer_key(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The key of the first Authorization header if it reads ``Bearer <key>``."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not key:
                raise _NotOrdinaryError
            return key
    raise _NotOrdinaryError
