"""Request count and latency per route template and status, for /metrics.

Labelled by the route template (``/v1/customers/{customer_id}/coupons``), never the
raw path, so the number of series stays bounded however many customers call.
"""

from __future__ import annotations

from time import perf_counter

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "KEYS_REFUSED_UNASKED",
    "KEY_QUERIES",
    "LIST_QUERY_SECONDS",
    "LIST_SHED",
    "LIST_WAITING",
    "REQUESTS",
    "REQUEST_SECONDS",
    "RESERVATION_BATCH_ASKS",
    "RequestMetricsMiddleware",
]

REQUESTS = Counter(
    "punchcard_coupon_query_http_requests_total",
    "HTTP requests answered by coupon-query.",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "punchcard_coupon_query_http_request_duration_seconds",
    "Time to answer an HTTP request of coupon-query.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

LIST_WAITING = Gauge(
    "punchcard_coupon_query_list_waiting",
    "Hot-route requests of this process queued for their coupon list's query.",
)
LIST_SHED = Counter(
    "punchcard_coupon_query_list_shed_total",
    "Hot-route requests answered 503 without their list, or dropped as their client left.",
    ["reason"],
)
LIST_QUERY_SECONDS = Histogram(
    "punchcard_coupon_query_list_query_seconds",
    "Time of one batched coupon-list query, from taking a connection to its rows.",
    ["outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
)

KEY_QUERIES = Counter(
    "punchcard_coupon_query_api_key_queries_total",
    "API key lookups this process sent to the database (cache misses and refreshes).",
)
KEYS_REFUSED_UNASKED = Counter(
    "punchcard_coupon_query_api_keys_refused_unasked_total",
    "Keys not in the cache refused without a lookup: the process's key query rate was spent.",
)


class RequestMetricsMiddleware:
    """Plain ASGI middleware (no per-request task or body buffering) that times each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on and record how it was answered, even when it failed."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            # The router writes the matched route into the shared scope.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            labels = (scope["method"], route, str(status))
            REQUESTS.labels(*labels).inc()
            REQUEST_SECONDS.labels(*labels).observe(perf_counter() - started)


RESERVATION_BATCH_ASKS = Histogram(
    "punchcard_coupon_query_reservation_batch_asks",
    "Reservations asked for together and decided in one transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
