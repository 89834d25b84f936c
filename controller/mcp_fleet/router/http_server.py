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

Exposed to anyone who can reach the port, it bounds what a client can make
the router hold, before knowing who the client is:

- Bodies. A body over ``max_body_bytes`` is refused with 413 as soon as its
  ``Content-Length`` is read (or, when chunked, as soon as it grows past
  it); the bodies being read and waiting in pipelines, across all
  connections, share ``max_buffered_bytes`` (503 for the request that would
  go over). A ``screen`` (the gateway's Host, Origin and credential checks)
  sees each request's head the moment it is whole: a request it refuses is
  answered without its body ever being kept (it is read and dropped, so the
  connection stays usable), and an accepted one carries the screen's
  verdict to the handler in ``Request.context`` (nothing is checked twice).
- Heads. At most ``max_header_count`` header lines and ``max_header_bytes``
  of URL and headers (431, or 414 for the URL alone), checked when a head
  is whole and after every read that ends inside one, so a flood is cut
  off within one read of the limit; repeated headers are collected in
  lists and joined once, in linear time. A head that arrived whole in one
  small read is within the limits by its size: the common request pays
  for no counting.
- Connections. At most ``max_connections`` at once (lowered to what the
  process's descriptor limit allows, keeping ``fd_reserve`` descriptors, or
  a quarter of the limit, for the rest of the process: the controller's
  backends, files and sockets) and ``max_connections_per_peer`` from one
  address (IPv6: one /64). At a cap the connections that hold nothing (idle
  between requests, or still sending a request head), longest quiet first,
  are closed to make room; when none can go, the new connection gets a 503
  and is closed. The listen backlog (``accept_backlog``) is half the reserve,
  as the loop accepts a backlog at once before any of it can be closed.
- Time. A request's head must arrive within ``head_timeout`` of its first
  byte (a new connection counts as a request begun), the whole request
  within ``request_timeout``, else 408 and the connection is closed; a
  connection with nothing in flight is closed after ``idle_timeout``.

A refusal (400 for bytes that are not HTTP, 413, 414, 431, 408, 503) comes
after the answers to the requests before it, in order, and nothing after
it is parsed, so a pipelined request or stray bytes behind a ``connection:
close`` request never cost the client the answer it is owed (an event
stream, which never ends by itself, is cut off instead). What the client
still sends is read and dropped for ``LINGER_SECONDS`` (a lingering close),
so that the refusal reaches it rather than a connection reset. A client that
closes its side (EOF) is gone: what it still waits for is cancelled (see
``eof_received``). One watchdog task per server checks the deadlines every
second, so a request costs a clock read rather than a timer. Each refusal
(and each 503 to a connection over a cap, or closed to make room while its
request was arriving) is reported once, with its status, to ``on_refused``
(the gateway counts them as rejections).

A closed connection is freed by reference counting alone: it lets go of
its parser (which refers back to it), buffers and queue, so neither the
router's frozen, rarely collected heap nor a stream of hostile clients can
pile closed connections up.

The server is four modules, one job each: this one is the connection
(``HttpConnection``: parsing, requests and answers in order, refusals) and
``start_server``; ``http_messages`` is what a handler sees (``Request``,
``Responder``, ``Refusal``; re-exported here); ``http_head`` collects a
request's head within its limits; ``http_limits`` holds the limits, the
connection accounting and the watchdog (the deadlines, the choice of whom to
close at a cap). The parser calls the head's collectors directly, so the
split costs the common request no extra call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

import httptools

from mcp_fleet.router.http_head import HeadReader
from mcp_fleet.router.http_limits import (
    FD_RESERVE,
    HEAD_TIMEOUT_SECONDS,
    IDLE_TIMEOUT_SECONDS,
    LINGER_SECONDS,
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_PEER,
    MAX_HEADER_BYTES,
    MAX_HEADER_COUNT,
    REQUEST_TIMEOUT_SECONDS,
    ConnectionTable,
    Limits,
    accept_backlog,
    peer_key,
    start_watchdog,
)
from mcp_fleet.router.http_messages import Handler, Refusal, Request, Responder, Screen

__all__ = [
    "Handler",
    "HttpConnection",
    "OnRefused",
    "Refusal",
    "Request",
    "Responder",
    "Screen",
    "start_server",
]

log = logging.getLogger(__name__)

#: Hears the status of each answer the server gives on its own (see the module docstring).
OnRefused = Callable[[int], None]

_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"retry-after: 1\r\ncontent-length: 41\r\nconnection: close\r\n\r\n"
    b"Service Unavailable: too many connections"
)


class _Stop(Exception):
    """Raised from a parser callback to stop reading a request already refused."""


class _Nobody:
    """The protocol of the parser a closed connection keeps (it refers to nothing)."""


#: What a closed connection holds instead of its parser: the parser refers to its
#: protocol, and that cycle would keep the connection alive until a full collection.
_NO_PARSER: Final = httptools.HttpRequestParser(_Nobody())


@dataclass(slots=True)
class _Refused:
    """A request the screen refused, waiting its turn to be answered."""

    refusal: Refusal
    keep_alive: bool


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, runs the handler, keeps answers in order."""

    def __init__(
        self,
        handler: Handler,
        connections: set[HttpConnection],
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        screen: Screen | None = None,
        table: ConnectionTable[HttpConnection] | None = None,
        on_refused: OnRefused | None = None,
    ) -> None:
        self._handler = handler
        self._screen = screen
        self._on_refused = on_refused
        self._table = table or ConnectionTable(connections, Limits(max_body_bytes=max_body_bytes))
        limits = self._table.limits
        self._max_body = max_body_bytes
        head = self._head = HeadReader(limits.max_header_count, limits.max_header_bytes)
        # The parser calls the head's collectors itself: httptools looks each callback up
        # on its protocol once, when it is made, so a header costs no call through here.
        self.on_url = head.on_url
        self.on_header = head.on_header
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._registered = False
        #: The request whose body is being read (None: between requests, or in its head).
        self._request: Request | None = None
        #: The screen refused the request being read: its body is read and dropped.
        self._refused: Refusal | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._queue: deque[Request | _Refused] = deque()
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
        #: When the watchdog first saw the connection with nothing in flight (or closing).
        self.idle_since: float | None = None
        #: Ends the lingering close after a refusal (see ``_refuse``).
        self._linger: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        get_extra_info = getattr(transport, "get_extra_info", None)
        self._peer = peer_key(get_extra_info("peername")) if get_extra_info is not None else ""
        if not self._table.admit(self, self._peer):
            self.closing = True
            self._transport.write(_BUSY)
            self._transport.close()
            self._report(503)
            return
        self._registered = True
        self.reading_since = time.monotonic()  # a silent new connection is a slow request

    def data_received(self, data: bytes) -> None:
        if self.closing or self._failed:
            return
        head = self._head
        head.began = False
        head.chunk_size = len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"upgrades are not supported")
        except httptools.HttpParserError:
            self._fail(400, b"malformed HTTP request")
        if head.in_head and not self._failed:
            refused = head.unfinished()
            if refused is not None:
                self._fail(*refused)

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
        if self._registered:
            self._registered = False
            self._table.remove(self, self._peer)
        current, self._current = self._current, None
        self._drop_queue()
        self._drop_body()
        # Let go of everything, the parser first: it refers back to this connection.
        self._parser = _NO_PARSER
        self._transport = None
        self._head.clear()
        self._request = None
        self._refused = None
        self.reading_since = self.idle_since = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if current is not None and not current.finished:
            current.abandon()

    # -- httptools callbacks (on_url and on_header are the head's) -------------------

    def on_message_begin(self) -> None:
        head = self._head
        head.url = b""
        head.headers = {}
        head.chunks = 0
        head.in_head = head.began = True
        self._body_size = 0
        self.idle_since = None
        if self.reading_since is None:
            self.reading_since = time.monotonic()

    def on_headers_complete(self) -> None:
        head = self._head
        head.in_head = False
        headers = head.headers
        if (  # else the head is certainly within the limits: it came in one small chunk
            head.repeated is not None
            or len(headers) > head.max_count
            or not head.began
            or head.chunk_size > head.max_bytes
        ):
            refused = head.over_limits(whole=True)
            if refused is not None:
                self._fail(*refused)
                raise _Stop
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self._too_large()
            return
        if self.lost or self._failed or self.closing:
            return  # behind a request that closes the connection: never answered
        path, _, query = head.url.decode("latin-1").partition("?")
        request = Request(
            method=self._parser.get_method().decode("latin-1"),
            path=path,
            query=query,
            headers=headers,
        )
        self._request = request
        if self._screen is not None:
            try:
                self._refused = self._screen(request)
            except Exception:
                log.exception("HTTP screen failed for %s %s", request.method, path)
                self._fail(500, b"internal error")
                raise _Stop from None

    def on_body(self, body: bytes) -> None:
        size = self._body_size + len(body)
        self._body_size = size
        if size > self._max_body:
            self._too_large()
            return
        if self._request is None or self._refused is not None:
            return  # refused (by the screen or already failed): read, never kept
        self._body.append(body)
        table = self._table
        table.buffered += len(body)
        if table.buffered > table.max_buffered:
            self._fail(503, b"Service Unavailable: too many request bodies at once, retry")

    def on_message_complete(self) -> None:
        self.reading_since = None
        request = self._request
        if request is None:
            return  # refused, or bytes after a request that closes the connection
        self._request = None
        if self.lost or self._failed or self.closing:
            self._drop_body()
            return
        keep_alive = self._parser.should_keep_alive()
        item: Request | _Refused
        refusal = self._refused
        if refusal is not None:
            self._refused = None
            item = _Refused(refusal, keep_alive)
        else:
            request.keep_alive = keep_alive
            body = self._body
            if body:
                self._body = []
                request.body = b"".join(body)
            item = request
        if self._current is None:
            self._dispatch(item)
        else:
            self._queue.append(item)
            if len(self._queue) > 16 and self._transport is not None:
                self._transport.pause_reading()

    # -- plumbing ----------------------------------------------------------------------

    def _dispatch(self, item: Request | _Refused) -> None:
        responder = Responder(self, item.keep_alive)
        responder.head_only = isinstance(item, Request) and item.method == "HEAD"
        self._current = responder
        if isinstance(item, _Refused):
            refusal = item.refusal
            responder.respond(refusal.status, refusal.headers, refusal.body)
            return
        request = item
        if request.body:
            self._table.buffered -= len(request.body)
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
            self.close()
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
            self.close()  # refused or gone: every answer that could go is out

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self.lost and not self.closing:
            self._transport.write(data)

    def _drop_body(self) -> None:
        """Let go of the body being read (and uncount it)."""
        if self._body:
            self._table.buffered -= sum(map(len, self._body))
            self._body = []

    def _drop_queue(self) -> None:
        """Let go of the pipelined requests (and uncount their bodies)."""
        for item in self._queue:
            if isinstance(item, Request) and item.body:
                self._table.buffered -= len(item.body)
        self._queue.clear()

    def close(self) -> None:
        """Close after what is written so far; the rest of the client's bytes are ignored."""
        self.closing = True
        self.reading_since = None
        self._drop_queue()
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

    @property
    def head_read(self) -> bool:
        """The head of the request being read is whole: its body is being read."""
        return self._request is not None

    @property
    def answering(self) -> bool:
        """An answer is being written, or requests wait for theirs."""
        return self._current is not None or bool(self._queue)

    @property
    def holding(self) -> bool:
        """It holds more than a request's head: a body, answers, a refusal."""
        return self._failed or self._request is not None or self.answering

    def evict(self) -> None:
        """Close to make room for others (it holds nothing: ``http_limits.quiet_since``), at
        once, to give its descriptor back (a 503 first if a request has begun)."""
        if self._registered:
            self._registered = False
            self._table.remove(self, self._peer)
        if self.reading_since is not None and self._transport is not None:
            self._failed = True
            self._transport.write(_BUSY)
            self._report(503)
        self.close()

    def _report(self, status: int) -> None:
        """Tell ``on_refused`` of an answer the server gives on its own."""
        if self._on_refused is not None:
            try:
                self._on_refused(status)
            except Exception:
                log.exception("on_refused failed for a %d", status)

    def _fail(self, status: int, message: bytes) -> None:
        """Refuse what the client sends now: after the answers to the requests before it
        (in order, as pipelining asks), then close. Nothing more is read."""
        if self._failed or self.closing:
            return
        self._failed = True
        self._report(status)
        self.reading_since = None
        self._request = self._refused = None
        self._drop_body()  # the partial body of the refused request
        current = self._current
        if current is not None and current.streaming and not current.finished:
            self.close()  # an event stream never ends by itself: it ends here, unanswered
            return
        if current is not None and not self.lost:
            self._refusal = (status, message)
            if self._transport is not None:
                self._transport.pause_reading()
            return
        self._refuse(status, message)

    def _refuse(self, status: int, message: bytes) -> None:
        transport = self._transport
        if transport is None or self.lost:
            self.close()
            return
        Responder(self, keep_alive=False).respond(
            status, [(b"content-type", b"text/plain; charset=utf-8")], message
        )
        self.closing = True
        self.reading_since = None
        self._drop_queue()
        # The client may still be sending (a body, a flood of headers): closing now, with
        # its bytes unread, would reset the connection and lose the refusal on the way.
        # Send it and our end of the stream, and drop what comes until the client closes
        # its side or LINGER_SECONDS pass.
        try:
            transport.write_eof()
            transport.resume_reading()
        except (AttributeError, NotImplementedError, OSError, RuntimeError):
            transport.close()
            return
        loop = asyncio.get_running_loop()
        self._linger = loop.call_later(LINGER_SECONDS, self.abort)


async def start_server(
    handler: Handler,
    *,
    host: str,
    port: int,
    max_body_bytes: int = MAX_BODY_BYTES,
    request_timeout: float | None = REQUEST_TIMEOUT_SECONDS,
    head_timeout: float | None = HEAD_TIMEOUT_SECONDS,
    idle_timeout: float | None = IDLE_TIMEOUT_SECONDS,
    screen: Screen | None = None,
    max_header_count: int = MAX_HEADER_COUNT,
    max_header_bytes: int = MAX_HEADER_BYTES,
    max_buffered_bytes: int | None = None,
    max_connections: int = MAX_CONNECTIONS,
    max_connections_per_peer: int = MAX_CONNECTIONS_PER_PEER,
    fd_reserve: int = FD_RESERVE,
    on_refused: OnRefused | None = None,
) -> tuple[asyncio.Server, set[HttpConnection]]:
    """Listen on ``host:port``; returns the server and its live connections.

    ``request_timeout=None`` turns the whole-request deadline off, ``head_timeout=None``
    the head's (it is never later than the whole request's), ``idle_timeout=None`` lets
    idle connections stay. ``screen`` sees every request's head first (see ``Screen``).
    ``on_refused`` is called once per answer the server gives on its own, with its status:
    400, 408, 413, 414, 431, 503 (a cap or the body budget), 500 (the screen failed). The
    other arguments are ``Limits``.
    """
    loop = asyncio.get_running_loop()
    connections: set[HttpConnection] = set()
    limits = Limits(
        max_body_bytes=max_body_bytes,
        max_header_count=max_header_count,
        max_header_bytes=max_header_bytes,
        max_buffered_bytes=max_buffered_bytes,
        max_connections=max_connections,
        max_connections_per_peer=max_connections_per_peer,
        fd_reserve=fd_reserve,
    )
    table = ConnectionTable(connections, limits)
    server = await loop.create_server(
        lambda: HttpConnection(
            handler,
            connections,
            max_body_bytes=max_body_bytes,
            screen=screen,
            table=table,
            on_refused=on_refused,
        ),
        host,
        port,
        backlog=accept_backlog(fd_reserve),
    )
    start_watchdog(server, table, request_timeout, head_timeout, idle_timeout)
    return server, connections
