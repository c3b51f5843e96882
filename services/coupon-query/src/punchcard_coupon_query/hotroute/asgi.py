"""The ASGI application served: the hot route answered without FastAPI, the rest by it.

``GET /v1/customers/{customer_id}/coupons`` is what every app start calls. FastAPI's
routing, dependency injection, parameter validation and response models cost more CPU
than the query and the eligibility rule together, so that call is answered here when
the request is an ordinary one (``parsing``): a known key, parameters that are plainly
valid. Most are answered by the HTTP protocol itself (``protocol.HotRouteProtocol``,
with ``CouponQueryApp``'s methods); the ones it leaves come to ``CouponQueryApp`` as
ASGI. Anything else (no key, a bad key, an odd or invalid parameter, another route) is
handed to the FastAPI application untouched, which answers it exactly as documented in
the OpenAPI document. The fast answer is the same bytes FastAPI would send (the
integration tests compare both), and its failures are answered through the same
``problems.failure_problem`` as FastAPI's.

An ordinary reservation call (``parsing.reservation_head``: a known key of scope
``checkout`` or ``admin``, a JSON body ``ReservationInput`` accepts) is answered here
too, through the same ``ReservationBatcher`` and ``reservations.routes.answer`` as
FastAPI's route: FastAPI's routing and dependencies cost three times the reservation's
own work. Any other is handed to FastAPI with its body as it came.

Every request passes the limits of ``limits`` here, whichever protocol read it.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any

import orjson
from fastapi import FastAPI
from punchcard_platform.db import Database
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope, Send

from punchcard_coupon_query.apikeys import ApiKeyCache
from punchcard_coupon_query.hotroute.batcher import CouponListBatcher, ListFuture
from punchcard_coupon_query.hotroute.parsing import (
    COUPONS_ROUTE,
    ListRequest,
    ReservationHead,
    list_request,
    reservation_head,
)
from punchcard_coupon_query.limits import (
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    body_too_large,
    declared_body_bytes,
    has_encoded_slash,
    head_bytes,
    head_too_large,
    path_keeping_encoded_slashes,
)
from punchcard_coupon_query.listing import coupon_list_json
from punchcard_coupon_query.metrics import REQUEST_SECONDS, REQUESTS, RequestMetricsMiddleware
from punchcard_coupon_query.models import ReservationInput
from punchcard_coupon_query.problems import PROBLEM_MEDIA_TYPE, failure_problem, problem_body
from punchcard_coupon_query.reservations.batcher import ReservationBatcher
from punchcard_coupon_query.reservations.routes import RESERVE_ROUTE, answer, ask

__all__ = ["Answer", "CouponQueryApp"]

_JSON = b"application/json"
_PROBLEM = PROBLEM_MEDIA_TYPE.encode()
_OK_REQUESTS = REQUESTS.labels("GET", COUPONS_ROUTE, "200")
_OK_SECONDS = REQUEST_SECONDS.labels("GET", COUPONS_ROUTE, "200")

Answer = tuple[int, bytes, bytes, tuple[tuple[bytes, bytes], ...]]
"""A whole response: status, content type, body, and any other headers."""


class CouponQueryApp:
    """The ASGI application served: the hot route here, everything else by FastAPI.

    ``protocol.HotRouteProtocol`` answers most hot-route requests before any ASGI (with
    ``list_request``, ``caller_known``, ``lists`` and ``answer``); the ones it leaves
    (a key not in the cache, a request pipelined behind another) come here.
    """

    def __init__(
        self,
        api: FastAPI,
        *,
        lists: CouponListBatcher,
        reservations: ReservationBatcher,
        keys: ApiKeyCache,
    ) -> None:
        self.api = api
        self._keys = keys
        self._everything_else = RequestMetricsMiddleware(api)
        self.lists = lists
        self.reservations = reservations

    @classmethod
    def over(
        cls, api: FastAPI, *, db: Database, reads: Database, keys: ApiKeyCache
    ) -> CouponQueryApp:
        """The app with batchers of its own, the lists' over ``reads`` and the
        reservations' over the primary ``db``, shared with FastAPI's routes."""
        lists = CouponListBatcher(reads)
        reservations = ReservationBatcher(db)
        api.state.lists = lists
        api.state.reservations = reservations
        return cls(api, lists=lists, reservations=reservations, keys=keys)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document (FastAPI's, which documents the hot route too)."""
        return self.api.openapi()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse what is over the limits, answer the ordinary hot route, hand the rest on."""
        if scope["type"] == "http":
            refused = _over_limits(scope)
            if refused is not None:
                await _send(send, refused)
                return
            if has_encoded_slash(scope.get("raw_path") or b""):
                scope = {**scope, "path": path_keeping_encoded_slashes(scope["raw_path"])}
            request = self.list_request(
                scope["method"], scope["path"], scope["query_string"], scope["headers"]
            )
            if request is not None:
                answer = await self.customer_coupons(request)
                if answer is not None:
                    await _send(send, answer)
                    return
            if declared_body_bytes(scope["headers"]) is None:
                receive = _bounded(receive)  # a chunked body, counted as it comes
            head = reservation_head(scope["method"], scope["path"], scope["headers"])
            if head is not None and self._may_reserve(head):
                answered, receive = await self.reserve(head, receive)
                if answered is not None:
                    await _send(send, answered)
                    return
        await self._everything_else(scope, receive, send)

    def _may_reserve(self, head: ReservationHead) -> bool:
        """True if the key is in the cache as a working key that may make reservations."""
        known, caller = self._keys.lookup(head.key)
        return known and caller is not None and caller.scope in ("checkout", "admin")

    async def reserve(
        self, head: ReservationHead, receive: Receive
    ) -> tuple[Answer | None, Receive]:
        """The answer to an ordinary reservation call, or None and its body to hand on.

        The body is read here; a body ``ReservationInput`` refuses (or one that ends
        early) goes to FastAPI as it came, which answers as documented.
        """
        body, complete = await _whole_body(receive)
        if not complete:
            return None, _replaying(body, receive, complete=False)
        try:
            asked = ReservationInput() if not body else ReservationInput.model_validate_json(body)
        except ValueError:
            return None, _replaying(body, receive, complete=True)
        known, caller = self._keys.lookup(head.key)
        if not known or caller is None:  # the key went stale while the body came
            return None, _replaying(body, receive, complete=True)
        decided = self.reservations.reserve(
            ask(caller.key_id, head.customer_id, head.coupon_id, asked, head.idempotency_key)
        )
        await asyncio.wait((decided,))
        try:
            status, content_type, content = answer(decided.result())
        except (Exception, asyncio.CancelledError) as exc:
            return _failed(exc, head.path, head.started, "POST", RESERVE_ROUTE), receive
        labels = ("POST", RESERVE_ROUTE, str(status))
        REQUESTS.labels(*labels).inc()
        REQUEST_SECONDS.labels(*labels).observe(perf_counter() - head.started)
        return (status, content_type, content, ()), receive

    @staticmethod
    def list_request(
        method: str, path: str, query_string: bytes, headers: list[tuple[bytes, bytes]]
    ) -> ListRequest | None:
        """The request if it is an ordinary one for the hot route (``parsing.list_request``)."""
        return list_request(method, path, query_string, headers)

    def caller_known(self, request: ListRequest) -> bool:
        """True if the key is in the cache as a working key: the list may be answered now."""
        known, caller = self._keys.lookup(request.key)
        return known and caller is not None

    async def customer_coupons(self, request: ListRequest) -> Answer | None:
        """The whole answer to an ordinary list request, or None to leave it to FastAPI."""
        try:
            caller = await self._keys.authenticate(request.key)  # the cache's, when fresh
        except Exception:
            return None  # FastAPI asks again and answers as documented (503 or 500)
        if caller is None:
            return None  # FastAPI answers 401 (from the cache, without a query)
        listed = self.lists.fetch(request.customer_id)
        await asyncio.wait((listed,))  # a failed or cancelled fetch is answered from the future
        return self.answer(request, listed)

    def answer(self, request: ListRequest, listed: ListFuture) -> Answer:
        """The response to a list request once its candidates are fetched (or failed to be).

        Counted and timed here. A failure is answered as FastAPI's error handlers answer
        it (``problems.failure_problem``): 503 with Retry-After if the request was shed or
        the database is away, else 500.
        """
        try:
            body = coupon_list_json(
                request.customer_id,
                request.at,
                listed.result(),  # raises what the fetch raised
                store_id=request.store_id,
                include_ineligible=request.include_ineligible,
            )
        except (Exception, asyncio.CancelledError) as exc:
            return _failed(exc, request.path, request.started, "GET", COUPONS_ROUTE)
        _OK_REQUESTS.inc()
        _OK_SECONDS.observe(perf_counter() - request.started)
        return 200, _JSON, body, ()


def _failed(exc: BaseException, path: str, started: float, method: str, route: str) -> Answer:
    failure = failure_problem(exc, path)
    body = orjson.dumps(problem_body(failure.status, failure.detail))
    labels = (method, route, str(failure.status))
    REQUESTS.labels(*labels).inc()
    REQUEST_SECONDS.labels(*labels).observe(perf_counter() - started)
    headers = tuple(
        (name.lower().encode(), value.encode()) for name, value in failure.headers.items()
    )
    return failure.status, _PROBLEM, body, headers


def _over_limits(scope: Scope) -> Answer | None:
    """431 for a head over ``MAX_HEAD_BYTES``, 413 for a declared body over ``MAX_BODY_BYTES``."""
    headers = scope["headers"]
    size = head_bytes(scope["method"], scope.get("raw_path") or b"", scope["query_string"], headers)
    if size > MAX_HEAD_BYTES:
        REQUESTS.labels(scope["method"], "unmatched", "431").inc()
        return 431, _PROBLEM, head_too_large(), ((b"connection", b"close"),)
    declared = declared_body_bytes(headers)
    if declared is None or declared <= MAX_BODY_BYTES:
        return None
    REQUESTS.labels(scope["method"], "unmatched", "413").inc()
    # The connection stays open: uvicorn drops the body as it comes, so that a client
    # still sending it reads the answer instead of a reset connection.
    return 413, _PROBLEM, orjson.dumps(problem_body(413, body_too_large())), ()


async def _send(send: Send, answer: Answer) -> None:
    status, content_type, body, extra = answer
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [  # in the order Starlette's responses send them
                (b"content-length", str(len(body)).encode()),
                (b"content-type", content_type),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _whole_body(receive: Receive) -> tuple[bytes, bool]:
    """The request's body, read to its end, and whether it came whole (not when the
    client went away). Its length was declared and is within ``MAX_BODY_BYTES``."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replaying(body: bytes, receive: Receive, *, complete: bool) -> Receive:
    """``receive``, giving first the body already read, then whatever comes after it."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": not complete}]

    async def replaying() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replaying


def _bounded(receive: Receive) -> Receive:
    """``receive``, refusing with 413 once the body has grown past ``MAX_BODY_BYTES``.

    Raised as an HTTPException, which FastAPI lets through its body parsing to the
    error handlers (``api``), so it is answered as a problem document.
    """
    received = 0

    async def bounded() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise HTTPException(413, body_too_large())
        return message

    return bounded
