"""The hot route answered at the HTTP protocol, before any ASGI.

uvicorn turns every request into an ASGI scope, a task and two ``send`` messages with
their own header checks and socket writes. For ``GET /v1/customers/{id}/coupons`` that
machinery cost more CPU than the query and the eligibility rule together: serving a
fixed body from two processes at 7,000 requests/s, uvicorn's protocol and the ASGI
cycle took 0.045-0.055 ms of CPU per request, this protocol 0.024 ms.

``HotRouteProtocol`` is uvicorn's httptools protocol with one change: when a request's
headers are complete, an ordinary hot-route request (plainly valid parameters, a key
the process already knows to work, no earlier response still pending on the connection)
is answered here. Its list is fetched through the app's batcher, and the response is
written from the batcher's callback in one write: no scope, no task. Every other
request (another route, a key not yet in the cache, odd parameters, a request
pipelined behind another) goes the usual way, through uvicorn's cycle to
``CouponQueryApp``, which gives the same bytes. Keep-alive, ``Connection: close``,
pipelining order, disconnects and graceful shutdown follow uvicorn's own bookkeeping:
the hot request takes the place of uvicorn's ``RequestResponseCycle`` in ``self.cycle``.

It also bounds what a client may make it hold: a request head over
``limits.MAX_HEAD_BYTES`` is answered 431 and the connection closed while it is read,
before httptools has buffered the rest of it (a 32 MB header, a thousand headers).

It reads uvicorn's private attributes, so it is used only with the uvicorn minor it was
written against (``hotroute.fence``); any other gets uvicorn's stock protocol.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from punchcard_coupon_query.hotroute.asgi import CouponQueryApp
from punchcard_coupon_query.hotroute.batcher import ListFuture
from punchcard_coupon_query.hotroute.parsing import ListRequest
from punchcard_coupon_query.limits import MAX_HEAD_BYTES, head_too_large
from punchcard_coupon_query.metrics import REQUESTS
from punchcard_coupon_query.problems import PROBLEM_MEDIA_TYPE

__all__ = ["HotRouteProtocol"]

_CLOSE = b"connection: close\r\n"
_PROBLEM = PROBLEM_MEDIA_TYPE.encode()
_HEAD_REFUSED = REQUESTS.labels("-", "unmatched", "431")
_LINGER_SECONDS = 2.0
"""How long a connection whose head was refused is read (and dropped) before closing."""


class _NoEvent:
    """Stands in for the cycle's ``message_event``: nothing waits for a hot request's body."""

    def set(self) -> None:
        """Nothing to wake."""


_NO_EVENT = _NoEvent()


class _HeadTooLargeError(Exception):
    """Raised from a parser callback to stop reading a head over the limit."""


class _HotCycle:
    """A hot-route request in ``HotRouteProtocol.cycle``, where uvicorn keeps its cycle.

    It has the attributes uvicorn's protocol reads and writes on a cycle: the protocol
    appends any body to ``body``, sets ``disconnected`` when the client goes and
    clears ``keep_alive`` on graceful shutdown. ``listed`` is the list it waits for,
    cancelled when the client goes so that the batcher leaves it out.
    """

    __slots__ = (
        "body",
        "disconnected",
        "keep_alive",
        "listed",
        "message_event",
        "more_body",
        "response_complete",
    )

    def __init__(self, *, keep_alive: bool, listed: ListFuture) -> None:
        self.keep_alive = keep_alive
        self.disconnected = False
        self.response_complete = False
        self.body = bytearray()
        self.more_body = True
        self.message_event = _NO_EVENT
        self.listed = listed


class HotRouteProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering ordinary hot-route requests itself.

    Given to ``uvicorn.Config(http=...)`` with a ``CouponQueryApp`` as the app.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self.config.app
        # What uvicorn does per request that this path would skip (a root path, an access
        # log, a concurrency limit) leaves every request to uvicorn.
        plain = not self.root_path and not self.access_log and self.limit_concurrency is None
        self._hot = app if isinstance(app, CouponQueryApp) and plain else None
        # The head being read: its size as the parser hands it over, the bytes received
        # since it began (which httptools may be holding unparsed), and whether it has a body.
        self._reading_head = True
        self._head = 0
        self._head_received = 0
        self._has_body = False
        self._refused = False

    @property
    def answers_hot_route(self) -> bool:
        """Whether this protocol answers ordinary hot-route requests itself."""
        return self._hot is not None

    def data_received(self, data: bytes) -> None:
        """uvicorn's ``data_received``, refusing a head over ``MAX_HEAD_BYTES`` with 431."""
        if self._refused:
            return  # the rest of a refused head, read only so that the client gets its 431
        if self._reading_head:
            self._head_received += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLargeError):
                self._refuse_head()
                return
            self._invalid_request()
            return
        except httptools.HttpParserError:
            self._invalid_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # All of it went into a head still unfinished: httptools holds what it has not
        # handed over yet, so the bytes received are what the head costs so far.
        if self._reading_head and self._head_received > MAX_HEAD_BYTES:
            self._refuse_head()

    def _invalid_request(self) -> None:
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)

    def _refuse_head(self) -> None:
        """Answer 431 as a problem document if no response is pending, and hang up.

        Closing at once, with the client's bytes still unread, makes the kernel reset the
        connection, and a client still sending would never read the answer. So the answer
        is followed by the end of our side of the stream, and what the client still sends
        is read and dropped until it closes or ``_LINGER_SECONDS`` have passed.
        """
        self._refused = True
        _HEAD_REFUSED.inc()
        if self.cycle is None or self.cycle.response_complete:
            body = head_too_large()
            head = [STATUS_LINE[431]]
            for name, value in self.server_state.default_headers:
                head += (name, b": ", value, b"\r\n")
            head += (
                b"content-length: ",
                str(len(body)).encode(),
                b"\r\ncontent-type: ",
                _PROBLEM,
                b"\r\n",
                _CLOSE,
                b"\r\n",
                body,
            )
            self.transport.write(b"".join(head))
            if self.transport.can_write_eof():
                self.transport.write_eof()
                self.loop.call_later(_LINGER_SECONDS, self.transport.close)
                return
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """uvicorn's bookkeeping, and a hot request's list no longer waited for."""
        cycle: object = self.cycle  # uvicorn types it as its own cycle class
        if isinstance(cycle, _HotCycle) and not cycle.response_complete:
            cycle.listed.cancel()
        super().connection_lost(exc)

    # The scope is built only for requests that go through ASGI (``_asgi_scope``); these
    # callbacks run for every request and header, so they only collect and count.
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self._head = 0
        self._has_body = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._head += len(url)
        if self._head > MAX_HEAD_BYTES:
            raise _HeadTooLargeError

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self.headers.append((name, value))
        self._head += len(name) + len(value) + 4
        if self._head > MAX_HEAD_BYTES:
            raise _HeadTooLargeError
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            self._has_body = True

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_received = 0
        request = self._hot_request()
        if request is None:
            self._asgi_scope()
            super().on_headers_complete()
            return
        assert self._hot is not None  # _hot_request found one
        listed = self._hot.lists.fetch(request.customer_id)
        cycle = _HotCycle(
            keep_alive=self.parser.should_keep_alive() and self.parser.get_http_version() != "1.0",
            listed=listed,
        )
        self.cycle = cycle  # type: ignore[assignment]  # read by uvicorn as its cycle
        listed.add_done_callback(partial(self._respond, cycle, request))

    def on_message_complete(self) -> None:
        self._reading_head = True
        self._head_received = 0
        super().on_message_complete()

    def _hot_request(self) -> ListRequest | None:
        """The request if this protocol answers it, else None."""
        hot = self._hot
        if hot is None or (self.cycle is not None and not self.cycle.response_complete):
            return None
        if self.flow.write_paused:  # uvicorn's cycle waits for the client to read
            return None
        if self._has_body or self.parser.get_method() != b"GET" or self.parser.should_upgrade():
            return None
        url = httptools.parse_url(self.url)
        path = url.path
        if b"%" in path or not path.isascii():  # left to uvicorn's decoding (and errors)
            return None
        request = hot.list_request("GET", path.decode("ascii"), url.query or b"", self.headers)
        if request is None or not hot.caller_known(request):
            return None
        return request

    def _respond(self, cycle: _HotCycle, request: ListRequest, listed: ListFuture) -> None:
        """Write the whole response at once, then let uvicorn go on with the connection."""
        if cycle.disconnected or self.transport.is_closing():
            return
        assert self._hot is not None  # only hot requests get here
        status, content_type, body, extra = self._hot.answer(request, listed)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:  # the date, as uvicorn sends it
            head += (name, b": ", value, b"\r\n")
        head += (
            b"content-length: ",
            str(len(body)).encode(),
            b"\r\ncontent-type: ",
            content_type,
            b"\r\n",
        )
        for name, value in extra:
            head += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            head.append(_CLOSE)
        head += (b"\r\n", body)
        self.transport.write(b"".join(head))
        cycle.response_complete = True
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def _asgi_scope(self) -> None:
        """The scope uvicorn's own ``on_message_begin`` and ``on_header`` would have built."""
        self.expect_100_continue = any(
            name == b"expect" and value.lower() == b"100-continue" for name, value in self.headers
        )
        self.scope = {  # type: ignore[typeddict-item]  # uvicorn completes it
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }
