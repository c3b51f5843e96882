"""The hot route answered in plain ASGI, in front of FastAPI.

``GET /v1/customers/{customer_id}/coupons`` is what every app start calls. FastAPI's
routing, dependency injection, parameter validation and response models cost more CPU
than the query and the eligibility rule together, so ``CouponQueryApp`` answers that
call itself when the request is an ordinary one: a known key, parameters that are
plainly valid. Anything else (no key, a bad key, an odd or invalid parameter, another
route) is handed to the FastAPI application untouched, which answers it exactly as
documented in the OpenAPI document. The fast answer is the same bytes FastAPI would
send (the integration tests compare both).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from time import perf_counter
from typing import Any, cast
from urllib.parse import parse_qsl

import orjson
import structlog
from fastapi import FastAPI
from punchcard_platform.db import Database, is_unavailable
from starlette.types import Receive, Scope, Send

from punchcard_coupon_query import queries
from punchcard_coupon_query.api import PROBLEM_MEDIA_TYPE, parse_at, problem_body
from punchcard_coupon_query.apikeys import ApiKeyCache
from punchcard_coupon_query.eligibility import list_eligibility
from punchcard_coupon_query.metrics import (
    REQUEST_SECONDS,
    REQUESTS,
    RequestMetricsMiddleware,
)
from punchcard_coupon_query.models import (
    IDENTIFIER_PATTERN,
    RFC3339_PATTERN,
    customer_coupons_json,
)

__all__ = ["Answer", "CouponListBatcher", "CouponQueryApp"]

log = structlog.get_logger(__name__)

_COUPONS_PATH = re.compile(r"/v1/customers/([A-Za-z0-9._:-]{1,64})/coupons")
_COUPONS_ROUTE = "/v1/customers/{customer_id}/coupons"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_RFC3339 = re.compile(RFC3339_PATTERN)
# The spellings of a boolean this path takes; pydantic's other ones go to FastAPI.
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}
_PARAMETERS = frozenset({"store_id", "at", "include_ineligible"})
_JSON = b"application/json"
_PROBLEM = PROBLEM_MEDIA_TYPE.encode()
_OK_REQUESTS = REQUESTS.labels("GET", _COUPONS_ROUTE, "200")
_OK_SECONDS = REQUEST_SECONDS.labels("GET", _COUPONS_ROUTE, "200")


Answer = tuple[int, bytes, bytes]
"""A whole response: status, content type, body."""


class _NotOrdinaryError(Exception):
    """This request is left to FastAPI."""


class CouponListBatcher:
    """Coupon lists asked for while the process is busy share one query.

    Each query costs the process a round trip's socket writes, reads and wake-ups, and
    PostgreSQL a statement execution and a backend wake-up, whatever the number of
    customers in it. While no list query runs, a list is fetched at once with the
    one-customer query, as if there were no batcher. While one runs, lists wait for it
    to end and then go together, up to ``MAX_CUSTOMERS`` a query: the busier the
    process, the fuller its queries, so it spends less per request instead of queueing
    without end. One query in flight per process also keeps PostgreSQL's work on few,
    busy backends: measured with pgbench at 3,000 transactions/s, the same statement
    costs PostgreSQL 0.12 ms of CPU on 4 connections, 0.16 ms spread over 20, and
    0.077 ms on 4 saturated ones. (With up to four queries in flight per process before
    batching, PostgreSQL spent 0.15 ms per request at 3,500 requests/s; with one, 0.095
    ms at 6,000.)
    """

    MAX_QUERIES = 1
    MAX_CUSTOMERS = 64

    def __init__(self, reads: Database) -> None:
        self._reads = reads
        self._waiting: dict[str, list[asyncio.Future[list[queries.CouponCandidate]]]] = {}
        self._queries = 0
        self._batches: set[asyncio.Task[None]] = set()

    async def fetch(self, customer_id: str) -> list[queries.CouponCandidate]:
        """The customer's candidate coupons, as ``queries.fetch_customer_coupons`` gives them."""
        if self._queries >= self.MAX_QUERIES or self._waiting:
            answer: asyncio.Future[list[queries.CouponCandidate]]
            answer = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(customer_id, []).append(answer)
            return await answer
        self._queries += 1
        try:
            # The pool's own context manager: Database.connection() wraps it in a
            # generator-based one, which costs more than it is worth on this path.
            async with self._reads.pool.acquire() as conn:
                return await queries.fetch_customer_coupons(
                    cast("queries.Connection", conn), customer_id
                )
        finally:
            self._queries -= 1
            self._start_batch()

    def _start_batch(self) -> None:
        while self._waiting and self._queries < self.MAX_QUERIES:
            self._queries += 1
            batch: dict[str, list[asyncio.Future[list[queries.CouponCandidate]]]] = {}
            for customer_id in list(self._waiting)[: self.MAX_CUSTOMERS]:
                batch[customer_id] = self._waiting.pop(customer_id)
            task = asyncio.get_running_loop().create_task(self._fetch_batch(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _fetch_batch(
        self, batch: dict[str, list[asyncio.Future[list[queries.CouponCandidate]]]]
    ) -> None:
        try:
            async with self._reads.pool.acquire() as conn:
                connection = cast("queries.Connection", conn)
                if len(batch) == 1:  # the one-customer statement costs PostgreSQL less
                    (customer_id,) = batch
                    lists = {
                        customer_id: await queries.fetch_customer_coupons(connection, customer_id)
                    }
                else:
                    lists = await queries.fetch_many_customer_coupons(connection, list(batch))
        except Exception as exc:
            for answers in batch.values():
                for answer in answers:
                    if not answer.done():
                        answer.set_exception(exc)
        else:
            for customer_id, answers in batch.items():
                for answer in answers:
                    if not answer.done():
                        answer.set_result(lists[customer_id])
        finally:
            self._queries -= 1
            self._start_batch()


class CouponQueryApp:
    """The ASGI application served: the hot route here, everything else by FastAPI."""

    def __init__(self, api: FastAPI, *, reads: Database, keys: ApiKeyCache) -> None:
        self.api = api
        self._reads = reads
        self._keys = keys
        self._everything_else = RequestMetricsMiddleware(api)
        self._lists = CouponListBatcher(reads)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document (FastAPI's, which documents the hot route too)."""
        return self.api.openapi()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the hot route if the request is ordinary, else hand it to FastAPI."""
        if scope["type"] == "http":
            customer_id = self.hot_customer_id(scope["method"], scope["path"])
            if customer_id is not None:
                answer = await self.customer_coupons(
                    customer_id, scope["path"], scope["query_string"], scope["headers"]
                )
                if answer is not None:
                    status, content_type, body = answer
                    await send(
                        {
                            "type": "http.response.start",
                            "status": status,
                            "headers": [  # in the order Starlette's responses send them
                                (b"content-length", str(len(body)).encode()),
                                (b"content-type", content_type),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
        await self._everything_else(scope, receive, send)

    def hot_customer_id(self, method: str, path: str) -> str | None:
        """The customer of a request for the hot route, None for any other request."""
        if method != "GET":
            return None
        match = _COUPONS_PATH.fullmatch(path)
        return None if match is None else match.group(1)

    async def customer_coupons(
        self,
        customer_id: str,
        path: str,
        query_string: bytes,
        headers: Iterable[tuple[bytes, bytes]],
    ) -> Answer | None:
        """The whole answer to an ordinary coupon list request, or None to leave it to FastAPI.

        Counted and timed here, once built.
        """
        started = perf_counter()
        try:
            store_id, at, include_ineligible = _ordinary_parameters(query_string)
            key = _bearer_key(headers)
        except _NotOrdinaryError:
            return None
        known, caller = self._keys.lookup(key)
        if not known:
            try:
                caller = await self._keys.authenticate(key)
            except Exception:
                return None  # FastAPI asks again and answers as documented (503 or 500)
        if caller is None:
            return None  # FastAPI answers 401 (from the cache, without a query)
        moment = datetime.now(UTC) if at is None else at
        try:
            candidates = await self._lists.fetch(customer_id)
        except Exception as exc:
            return _failed(exc, path, started)
        listed = list_eligibility(
            candidates, store_id=store_id, at=moment, include_ineligible=include_ineligible
        )
        body = customer_coupons_json(customer_id, moment, listed)
        _OK_REQUESTS.inc()
        _OK_SECONDS.observe(perf_counter() - started)
        return 200, _JSON, body


def _failed(exc: Exception, path: str, started: float) -> Answer:
    """Answer as FastAPI's error handlers would: 503 if the database is away, else 500."""
    if is_unavailable(exc):
        log.warning("database_unavailable", path=path, error=str(exc))
        status, detail = 503, "the database does not answer; try again"
    else:
        log.error("request_failed", path=path, exc_info=exc)
        status, detail = 500, "an unexpected error; it has been logged"
    body = orjson.dumps(problem_body(status, detail))
    labels = ("GET", _COUPONS_ROUTE, str(status))
    REQUESTS.labels(*labels).inc()
    REQUEST_SECONDS.labels(*labels).observe(perf_counter() - started)
    return status, _PROBLEM, body


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
