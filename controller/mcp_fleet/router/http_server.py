"""A small HTTP/1.1 server for the router's frontend: httptools parsing, callback responses.

Every forwarded call over HTTP is one POST, so the HTTP layer is most of the
router's cost per call. A general ASGI server (uvicorn) spends about 150 us
of CPU per request on things the router does not need (a task per request,
scope dictionaries, header validation, middleware); this server parses with
httptools (the C parser uvicorn itself uses), hands each complete request to
a plain callback, and lets the answer be written whenever it is ready, from
whatever callback has it (the backend's reader, for a forwarded call). No
task and no future per request: the same design as the stdio path.

What it supports is what MCP's HTTP transports use: keep-alive (HTTP/1.1,
one request at a time per connection; pipelined requests wait their turn),
fixed-length and chunked request bodies (bounded), complete responses with
``content-length``, and streamed responses (chunked, for SSE) that end when
the handler ends them or the client goes away.

Shared safely, it bounds what one client can hold: a body over
``max_body_bytes`` is refused with 413 as soon as its ``Content-Length``
is read (or, when chunked, as soon as it grows past it), and a request must
arrive whole within ``request_timeout`` of its first byte (a new connection
counts as a request begun), else 408 and the connection is closed. A
refusal (400 for bytes that are not HTTP, 413, 408) comes after the answers
to the requests before it, in order, and nothing after it is read, so a
pipelined request or stray bytes behind a ``connection: close`` request
never cost the client the answer it is owed (an event stream, which never
ends by itself, is cut off instead). A client that closes its side (EOF)
is gone: what it still waits for is cancelled (see ``eof_received``). One
watchdog task per server checks those deadlines every second, so a request
costs a clock read rather than a timer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, cast

import httptools

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 64 * 1024 * 1024
#: Seconds a request may take to arrive whole, from its first byte (slow-client guard).
REQUEST_TIMEOUT_SECONDS: Final = 30.0
#: Bytes queued towards a client before a streamed response is cut off.
MAX_WRITE_BUFFER: Final = 64 * 1024 * 1024
_REASONS: Final = {
    200: b"OK",
    202: b"Accepted",
    204: b"No Content",
    303: b"See Other",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    406: b"Not Acceptable",
    408: b"Request Timeout",
    409: b"Conflict",
    413: b"Payload Too Large",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


@dataclass(slots=True)
class Request:
    """One parsed HTTP request."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""
    keep_alive: bool = True


@dataclass(slots=True, eq=False)
class Responder:
    """Writes the answer to one request: whole, or as a stream of chunks."""

    _conn: HttpConnection
    keep_alive: bool
    started: bool = False
    finished: bool = False
    streaming: bool = False
    #: Called once if the answer will never be finished: the client went away first, or
    #: the handler failed (answered 500), so whoever waits to answer can let go.
    on_close: list[Callable[[], None]] = field(default_factory=list)

    @property
    def closed(self) -> bool:
        return self.finished or self._conn.lost

    def abandon(self) -> None:
        """Run (and drop) the ``on_close`` callbacks: nobody will finish this answer."""
        callbacks, self.on_close = self.on_close, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("close callback failed")

    def respond(
        self, status: int, headers: list[tuple[bytes, bytes]] | tuple[()] = (), body: bytes = b""
    ) -> None:
        """Send a complete response (with ``content-length``)."""
        if self.started:
            return
        self.started = self.finished = True
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Status"))]
        for name, value in headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-length: %d\r\n" % len(body))
        if not self.keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        self._conn.write(b"".join(head) + body if len(body) < 65536 else b"".join(head))
        if len(body) >= 65536:
            self._conn.write(body)
        self._conn.response_done(self)

    def start_stream(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Begin a streamed (chunked) response."""
        if self.started:
            return
        self.started = self.streaming = True
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Status"))]
        for name, value in headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"transfer-encoding: chunked\r\n\r\n")
        self._conn.write(b"".join(head))

    def write(self, data: bytes) -> None:
        """One chunk of a streamed response; a client that stopped reading is cut off."""
        if not self.streaming or self.finished or not data:
            return
        self._conn.write(b"%x\r\n" % len(data) + data + b"\r\n")
        if self._conn.buffered() > MAX_WRITE_BUFFER:
            log.warning("client is not reading its event stream; closing the connection")
            self._conn.abort()

    def end(self) -> None:
        """Finish a streamed response."""
        if not self.streaming or self.finished:
            return
        self.finished = True
        self._conn.write(b"0\r\n\r\n")
        self._conn.response_done(self)


Handler = Callable[[Request, Responder], None]


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, runs the handler, keeps answers in order."""

    def __init__(
        self,
        handler: Handler,
        connections: set[HttpConnection],
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._handler = handler
        self._connections = connections
        self._max_body = max_body_bytes
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._queue: deque[Request] = deque()
        self._current: Responder | None = None
        self._failed = False
        self.lost = False
        #: We closed the connection (after a ``connection: close`` answer or a refusal): what
        #: else the client sent is not read, nothing more is written.
        self.closing = False
        #: A refusal (status, text) held until the answers to the requests before it are out.
        self._refusal: tuple[int, bytes] | None = None
        #: When the request being read began (monotonic), None between requests.
        self.reading_since: float | None = None

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._connections.add(self)
        self.reading_since = time.monotonic()  # a silent new connection is a slow request

    def data_received(self, data: bytes) -> None:
        if self.closing or self._failed:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"upgrades are not supported")
        except httptools.HttpParserError:
            self._fail(400, b"malformed HTTP request")

    def eof_received(self) -> bool:
        """The client closed its side: it is gone, as nginx and uvicorn judge it too.

        Answers already written have gone out; a request still waiting for its answer
        (a forwarded call) is given up, and closing the transport runs its ``on_close``
        callbacks, which cancel the call at its server. A client that half-closes and
        still waits for an answer is allowed by TCP but not seen in practice; a client
        that disappeared mid-call is, and its server must stop working for nobody.
        """
        self.reading_since = None
        return False  # the transport closes now

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._connections.discard(self)
        current, self._current = self._current, None
        self._queue.clear()
        if current is not None and not current.finished:
            current.abandon()

    # -- httptools callbacks -------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        if self.reading_since is None:
            self.reading_since = time.monotonic()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self._too_large()

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._max_body:
            self._too_large()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.reading_since = None
        if self.lost or self._failed or self.closing:
            return  # bytes after a request that closes the connection (pipelined or garbage)
        path, _, query = self._url.decode("latin-1").partition("?")
        request = Request(
            method=self._parser.get_method().decode("latin-1"),
            path=path,
            query=query,
            headers=self._headers,
            body=b"".join(self._body),
            keep_alive=self._parser.should_keep_alive(),
        )
        if self._current is None:
            self._dispatch(request)
        else:
            self._queue.append(request)
            if len(self._queue) > 16 and self._transport is not None:
                self._transport.pause_reading()

    # -- plumbing ----------------------------------------------------------------------

    def _dispatch(self, request: Request) -> None:
        responder = Responder(self, request.keep_alive)
        self._current = responder
        try:
            self._handler(request, responder)
        except Exception:
            log.exception("HTTP handler failed for %s %s", request.method, request.path)
            responder.abandon()  # state the handler left for this answer is let go
            if not responder.started:
                responder.respond(500, [(b"content-type", b"text/plain")], b"internal error")
            elif not responder.finished:
                self.abort()  # a stream half written: the client sees it end

    def response_done(self, responder: Responder) -> None:
        if responder is not self._current:
            return
        self._current = None
        if not responder.keep_alive:
            self._close()
            return
        if self._queue:
            if self._transport is not None and not self._failed:
                self._transport.resume_reading()
            self._dispatch(self._queue.popleft())
        elif self._refusal is not None:
            status, message = self._refusal
            self._refusal = None
            self._refuse(status, message)
        elif self._failed:
            self._close()  # refused or gone: every answer that could go is out

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self.lost and not self.closing:
            self._transport.write(data)

    def _close(self) -> None:
        """Close after what is written so far; the rest of the client's bytes are ignored."""
        self.closing = True
        self.reading_since = None
        self._queue.clear()
        if self._transport is not None:
            self._transport.close()

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _too_large(self) -> None:
        self._fail(413, b"Payload Too Large: the limit is %d bytes" % self._max_body)

    def expire(self) -> None:
        """The request being read took too long: answer 408 and close."""
        self.reading_since = None
        self._fail(408, b"Request Timeout: the request did not arrive in time")

    def _fail(self, status: int, message: bytes) -> None:
        """Refuse what the client sends now: after the answers to the requests before it
        (in order, as pipelining asks), then close. Nothing more is read."""
        if self._failed or self.closing:
            return
        self._failed = True
        self.reading_since = None
        current = self._current
        if current is not None and current.streaming and not current.finished:
            self._close()  # an event stream never ends by itself: it ends here, unanswered
            return
        if current is not None and not self.lost:
            self._refusal = (status, message)
            if self._transport is not None:
                self._transport.pause_reading()
            return
        self._refuse(status, message)

    def _refuse(self, status: int, message: bytes) -> None:
        if self._transport is not None and not self.lost:
            Responder(self, keep_alive=False).respond(
                status, [(b"content-type", b"text/plain; charset=utf-8")], message
            )
        self._close()


async def _watch_slow_requests(
    server: asyncio.Server, connections: set[HttpConnection], timeout: float
) -> None:
    """Close connections whose request is not whole ``timeout`` seconds after it began."""
    interval = min(1.0, timeout / 2)
    while server.is_serving():
        await asyncio.sleep(interval)
        cutoff = time.monotonic() - timeout
        for conn in [c for c in connections if c.reading_since is not None]:
            if conn.reading_since is not None and conn.reading_since < cutoff:
                conn.expire()


#: Watchdog tasks of live servers (kept referenced until they end).
_WATCHDOGS: set[asyncio.Task[None]] = set()


async def start_server(
    handler: Handler,
    *,
    host: str,
    port: int,
    max_body_bytes: int = MAX_BODY_BYTES,
    request_timeout: float | None = REQUEST_TIMEOUT_SECONDS,
) -> tuple[asyncio.Server, set[HttpConnection]]:
    """Listen on ``host:port``; returns the server and its live connections.

    ``request_timeout=None`` turns the slow-request guard off.
    """
    loop = asyncio.get_running_loop()
    connections: set[HttpConnection] = set()
    server = await loop.create_server(
        lambda: HttpConnection(handler, connections, max_body_bytes=max_body_bytes),
        host,
        port,
        backlog=2048,
    )
    if request_timeout is not None and request_timeout > 0:
        task = loop.create_task(_watch_slow_requests(server, connections, request_timeout))
        _WATCHDOGS.add(task)
        task.add_done_callback(_WATCHDOGS.discard)
    return server, connections
