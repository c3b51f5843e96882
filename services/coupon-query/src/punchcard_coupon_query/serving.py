"""uvicorn's HTTP protocol with the hot route written in one piece.

Answering ``GET /v1/customers/{customer_id}/coupons`` through ASGI costs a scope-wide
``send`` twice (header checks, a flow-control check, state bookkeeping) and two socket
writes, one for the head and one for the body: with the response itself already built
in a few microseconds, that is a large share of what the process spends per request.
``HotRouteProtocol`` is uvicorn's httptools protocol, changed in one place only: when a
request for the hot route is due to be answered, it asks ``CouponQueryApp`` for the whole
answer and writes status line, headers and body with one write. Everything else stays
uvicorn's: parsing and its 400s, keep-alive and its timeout, pipelined requests (a
request is only started, here as in uvicorn, when the one before it is answered), flow
control, graceful shutdown (a request in flight is answered with ``connection: close``).
A request the fast path does not take (another route, no or an unknown key, an odd
parameter) goes to the ASGI application exactly as before, so its answer is unchanged.
"""

from __future__ import annotations

from typing import Any

import structlog
import uvicorn
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from punchcard_coupon_query.fastpath import CouponQueryApp

__all__ = ["HotRouteProtocol", "uvicorn_config"]

log = structlog.get_logger(__name__)


class HotRouteProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; the hot route's answer goes out in one write."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        app = config.app
        self._hot = app if isinstance(app, CouponQueryApp) else None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        """Start answering a request: the hot route here, anything else by uvicorn."""
        hot = self._hot
        if hot is not None and app is self.app:
            customer_id = hot.hot_customer_id(cycle.scope["method"], cycle.scope["path"])
            if customer_id is not None:
                task = self.loop.create_task(self._answer(hot, cycle, app, customer_id))
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)
                return
        super()._start_asgi_task(cycle, app)

    async def _answer(
        self,
        hot: CouponQueryApp,
        cycle: RequestResponseCycle,
        app: ASGI3Application,
        customer_id: str,
    ) -> None:
        scope = cycle.scope
        try:
            answer = await hot.customer_coupons(
                customer_id, scope["path"], scope["query_string"], scope["headers"]
            )
        except Exception:  # as uvicorn's run_asgi: log it, answer 500, keep serving
            log.exception("request_failed", path=scope["path"])
            if not cycle.disconnected:
                await cycle.send_500_response()
            cycle.on_response = _nothing
            return
        if answer is None:
            await cycle.run_asgi(app)
            return
        try:
            if cycle.flow.write_paused and not cycle.disconnected:
                await cycle.flow.drain()
            if cycle.disconnected:
                return
            status, content_type, body = answer
            # Read only now: a graceful shutdown may have cleared it meanwhile.
            keep_alive = cycle.keep_alive
            head = [STATUS_LINE[status]]
            for name, value in cycle.default_headers:  # date (uvicorn refreshes it)
                head += (name, b": ", value, b"\r\n")
            head += (  # in the order Starlette's responses send them
                b"content-length: ",
                str(len(body)).encode(),
                b"\r\ncontent-type: ",
                content_type,
                b"\r\n" if keep_alive else b"\r\nconnection: close\r\n",
                b"\r\n",
                body,
            )
            cycle.response_started = cycle.response_complete = True
            self.transport.write(b"".join(head))
            cycle.message_event.set()
            if not keep_alive:
                self.transport.close()
            cycle.on_response()
        finally:
            cycle.on_response = _nothing


def _nothing() -> None:
    """A finished request's completion callback: nothing more to start."""


def uvicorn_config(app: CouponQueryApp, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for coupon-query: uvloop-agnostic, ``HotRouteProtocol``.

    ``options`` are uvicorn's own (host, port, loop, timeouts...).
    """
    return uvicorn.Config(app, http=HotRouteProtocol, **options)
