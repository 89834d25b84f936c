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
second, so a request costs a clock read rather than a timer.

A closed connection is freed by reference counting alone: it lets go of
its parser (which refers back to it), buffers and queue, so neither the
router's frozen, rarely collected heap nor a stream of hostile clients can
pile closed connections up.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import logging
import resource
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

import httptools

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 64 * 1024 * 1024
#: Seconds a request may take to arrive whole, from its first byte (slow-client guard).
REQUEST_TIMEOUT_SECONDS: Final = 30.0
#: Seconds a request's head (request line and headers) may take, from its first byte; for
#: a new connection, from when it opened (a silent connection is closed this soon).
HEAD_TIMEOUT_SECONDS: Final = 10.0
#: Seconds a keep-alive connection may wait with nothing in flight before it is closed.
IDLE_TIMEOUT_SECONDS: Final = 60.0
#: Header lines in one request, at most.
MAX_HEADER_COUNT: Final = 100
#: Bytes of one request's head (request line and headers), at most.
MAX_HEADER_BYTES: Final = 64 * 1024
#: Request bodies held at once across all connections (at least twice ``max_body_bytes``).
MAX_BUFFERED_BYTES: Final = 256 * 1024 * 1024
#: Connections at once, at most (lower when the descriptor limit says so).
MAX_CONNECTIONS: Final = 4096
#: Connections at once from one address (IPv6: one /64).
MAX_CONNECTIONS_PER_PEER: Final = 512
#: Descriptors left to the rest of the process (at least; a quarter of the limit when more).
FD_RESERVE: Final = 256
#: What ``raise_fd_limit`` raises the soft descriptor limit to (at most the hard limit).
FD_LIMIT_TARGET: Final = 65536
#: Seconds a refused client is still read from (and its bytes dropped) after the refusal,
#: so that the refusal reaches it rather than a reset (a "lingering close", as nginx does).
LINGER_SECONDS: Final = 2.0
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
    414: b"URI Too Long",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"retry-after: 1\r\ncontent-length: 41\r\nconnection: close\r\n\r\n"
    b"Service Unavailable: too many connections"
)


@dataclass(slots=True)
class Request:
    """One parsed HTTP request."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""
    keep_alive: bool = True
    #: What the server's ``screen`` attached to the request (e.g. the caller's identity).
    context: Any = None


class Refusal(Protocol):
    """An answer a ``screen`` gives instead of letting a request through."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> list[tuple[bytes, bytes]]: ...
    @property
    def body(self) -> bytes: ...


@dataclass(slots=True, eq=False)
class Responder:
    """Writes the answer to one request: whole, or as a stream of chunks."""

    _conn: HttpConnection
    keep_alive: bool
    started: bool = False
    finished: bool = False
    streaming: bool = False
    #: Called once if the answer will never be finished: the client went away first, or
    #: the handler failed (answered 500), so whoever waits to answer can let go. Emptied
    #: once the answer is finished (a callback that refers to its responder is no cycle).
    on_close: list[Callable[[], None]] = field(default_factory=list)
    #: The answer to a HEAD request: its head only (with the body's ``content-length``).
    head_only: bool = False

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
        self.on_close.clear()
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Status"))]
        for name, value in headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-length: %d\r\n" % len(body))
        if not self.keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if self.head_only:
            body = b""  # a body after the head would be read as the next response
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
        self.on_close.clear()
        self._conn.write(b"0\r\n\r\n")
        self._conn.response_done(self)


Handler = Callable[[Request, Responder], None]
#: Sees each request once its head is whole (``body`` still empty): returns a refusal to
#: answer instead (the body is then read and dropped), or None to let it through, having
#: set ``request.context`` if it likes.
Screen = Callable[[Request], Refusal | None]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one server lets its clients hold (see the module docstring)."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_header_count: int = MAX_HEADER_COUNT
    max_header_bytes: int = MAX_HEADER_BYTES
    #: None: ``MAX_BUFFERED_BYTES``, or twice ``max_body_bytes`` when that is more.
    max_buffered_bytes: int | None = None
    max_connections: int = MAX_CONNECTIONS
    max_connections_per_peer: int = MAX_CONNECTIONS_PER_PEER
    fd_reserve: int = FD_RESERVE


def _reserve(soft: int, reserve: int) -> int:
    return max(reserve, soft // 4)


def connection_cap(maximum: int, reserve: int = FD_RESERVE) -> int:
    """``maximum``, lowered so that the open connections leave ``reserve`` descriptors (or a
    quarter of the soft limit, when that is more) to the rest of the process."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return maximum
    return max(1, min(maximum, soft - _reserve(soft, reserve)))


def accept_backlog(reserve: int = FD_RESERVE) -> int:
    """The listen backlog: half the descriptors in reserve, at most 2048.

    The event loop accepts every pending connection in one go, and the ones then closed
    at a cap (or made room for) give their descriptors back only on the next turn: a
    burst of at most a backlog takes from the reserve, and leaves half of it.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 2048
    return max(16, min(2048, _reserve(soft, reserve) // 2))


def raise_fd_limit(target: int = FD_LIMIT_TARGET) -> int:
    """Raise the soft descriptor limit to ``target`` (at most the hard limit), as servers
    commonly do at start; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(hard, target)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (OSError, ValueError):
            return int(soft)
        return int(want)
    return int(soft)


def peer_key(peername: object) -> str:
    """The address connections are counted by: the IP (an IPv6 address's /64)."""
    if not isinstance(peername, tuple) or not peername:
        return ""
    host = str(peername[0])
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class ConnectionTable:
    """The live connections of one server, by peer, and the body bytes they hold."""

    def __init__(self, connections: set[HttpConnection], limits: Limits) -> None:
        self.connections = connections
        self.limits = limits
        self.peers: dict[str, set[HttpConnection]] = {}
        #: Body bytes being read or waiting in pipelines, across all connections.
        self.buffered = 0
        self.max_buffered = limits.max_buffered_bytes or max(
            MAX_BUFFERED_BYTES, 2 * limits.max_body_bytes
        )
        self.cap = limits.max_connections
        self.refresh()
        self._warned = 0.0

    def refresh(self) -> None:
        """Follow the descriptor limit (another part of the process may change it)."""
        self.cap = connection_cap(self.limits.max_connections, self.limits.fd_reserve)

    def admit(self, conn: HttpConnection, peer: str) -> bool:
        """Register ``conn`` from ``peer``, making room at a cap; False: no room."""
        group = self.peers.get(peer)
        per_peer = self.limits.max_connections_per_peer
        if group is not None and len(group) >= per_peer:
            self._evict(group, per_peer)
            if len(group) >= per_peer:
                self._warn(f"{peer or 'a client'} holds {len(group)} connections (the cap)")
                return False
        if len(self.connections) >= self.cap:
            self._evict(self.connections, self.cap)
            if len(self.connections) >= self.cap:
                self._warn(f"{len(self.connections)} connections open (the cap)")
                return False
        self.connections.add(conn)
        if group is None:
            group = self.peers[peer] = set()
        group.add(conn)
        return True

    def remove(self, conn: HttpConnection, peer: str) -> None:
        self.connections.discard(conn)
        group = self.peers.get(peer)
        if group is not None:
            group.discard(conn)
            if not group:
                del self.peers[peer]

    def _evict(self, group: Iterable[HttpConnection], cap: int) -> None:
        """Close the connections of ``group`` that hold nothing, longest quiet first: enough
        for a sixteenth of ``cap`` to arrive before the next search."""
        now = time.monotonic()
        quiet: list[tuple[float, int, HttpConnection]] = []
        for i, conn in enumerate(group):
            since = conn.quiet_since(now)
            if since is not None:
                quiet.append((since, i, conn))
        for _, _, conn in heapq.nsmallest(max(1, cap // 16), quiet):
            conn.evict()

    def _warn(self, what: str) -> None:
        now = time.monotonic()
        if now - self._warned > 60:
            self._warned = now
            log.warning("refusing new connections: %s", what)


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
        table: ConnectionTable | None = None,
    ) -> None:
        self._handler = handler
        self._screen = screen
        self._table = table or ConnectionTable(connections, Limits(max_body_bytes=max_body_bytes))
        limits = self._table.limits
        self._max_body = max_body_bytes
        self._max_header_count = limits.max_header_count
        self._max_header_bytes = limits.max_header_bytes
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._registered = False
        self._url = b""
        self._headers: dict[str, str] = {}
        #: Headers sent more than once: every value, joined when the head is whole.
        self._repeated: dict[str, list[str]] | None = None
        #: The head being read is unfinished; it began in the chunk being parsed; the bytes
        #: of the chunks wholly inside it (a header value httptools is still building).
        self._in_head = False
        self._began = False
        self._head_chunks = 0
        self._chunk_size = 0
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
            return
        self._registered = True
        self.reading_since = time.monotonic()  # a silent new connection is a slow request

    def data_received(self, data: bytes) -> None:
        if self.closing or self._failed:
            return
        self._began = False
        self._chunk_size = len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"upgrades are not supported")
        except httptools.HttpParserError:
            self._fail(400, b"malformed HTTP request")
        if self._in_head and not self._failed:
            self._head_unfinished()

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
        self._headers = {}
        self._repeated = None
        self._url = b""
        self._request = None
        self._refused = None
        self.reading_since = self.idle_since = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if current is not None and not current.finished:
            current.abandon()

    # -- httptools callbacks -------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body_size = self._head_chunks = 0
        self._in_head = self._began = True
        self.idle_since = None
        if self.reading_since is None:
            self.reading_since = time.monotonic()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        headers = self._headers
        if key in headers:
            self._repeat(key, value.decode("latin-1"))
        else:
            headers[key] = value.decode("latin-1")

    def _repeat(self, key: str, text: str) -> None:
        """A header sent again: its values are kept in a list (joined once, linear time)."""
        repeated = self._repeated
        if repeated is None:
            repeated = self._repeated = {}
        values = repeated.get(key)
        if values is None:
            repeated[key] = [self._headers[key], text]
        else:
            values.append(text)

    def on_headers_complete(self) -> None:
        self._in_head = False
        headers = self._headers
        if (  # else the head is certainly within the limits: it came in one small chunk
            self._repeated is not None
            or len(headers) > self._max_header_count
            or not self._began
            or self._chunk_size > self._max_header_bytes
        ) and self._head_refused(whole=True):
            raise _Stop
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self._too_large()
            return
        if self.lost or self._failed or self.closing:
            return  # behind a request that closes the connection: never answered
        path, _, query = self._url.decode("latin-1").partition("?")
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

    def _close(self) -> None:
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

    def _head_unfinished(self) -> None:
        """A chunk ended inside a request's head: is it already over the limits?"""
        if not self._began:  # the whole chunk is head (a header value is being built)
            self._head_chunks += self._chunk_size
        self._head_refused(whole=False)

    def _head_refused(self, *, whole: bool) -> bool:
        """Refuse (414, 431) a head over the limits, as far as it is read; ``whole``: it is
        complete, and repeated headers are joined now."""
        headers = self._headers
        repeated = self._repeated
        count = len(headers)
        if repeated is not None:
            count += sum(len(values) - 1 for values in repeated.values())
        status = 0
        if len(self._url) > self._max_header_bytes:
            status = 414
        elif count > self._max_header_count or self._head_chunks > self._max_header_bytes:
            status = 431
        else:
            size = len(self._url) + sum(len(k) + len(v) + 4 for k, v in headers.items())
            if repeated is not None:
                size += sum(len(v) + len(k) + 4 for k, vs in repeated.items() for v in vs[1:])
            if size > self._max_header_bytes:
                status = 431
        if status == 414:
            self._fail(414, b"URI Too Long: the limit is %d bytes" % self._max_header_bytes)
        elif status == 431:
            self._fail(
                431,
                b"Request Header Fields Too Large: the limits are %d header lines and %d bytes"
                % (self._max_header_count, self._max_header_bytes),
            )
        elif whole and repeated is not None:
            for key, values in repeated.items():
                headers[key] = ", ".join(values)
        if whole:
            self._repeated = None
        return status != 0

    def expire(self) -> None:
        """The request being read took too long: answer 408 and close."""
        self.reading_since = None
        self._fail(408, b"Request Timeout: the request did not arrive in time")

    def quiet_since(self, now: float) -> float | None:
        """Since when the connection holds nothing (None: it does), for eviction at a cap:
        between requests with every answer out, or still sending a request's head."""
        if self.closing or self.lost or self._failed or self._current is not None:
            return None
        if self._queue or self._request is not None:
            return None
        since = self.reading_since if self.reading_since is not None else self.idle_since
        return now if since is None else since

    def evict(self) -> None:
        """Close to make room for others (the connection holds nothing, see ``quiet_since``):
        at once, to give its descriptor back (a 503 first if a request has begun)."""
        if self._registered:
            self._registered = False
            self._table.remove(self, self._peer)
        if self.reading_since is not None and self._transport is not None:
            self._failed = True
            self._transport.write(_BUSY)
        self._close()

    def check_deadlines(
        self,
        now: float,
        request_timeout: float | None,
        head_timeout: float | None,
        idle_timeout: float | None,
    ) -> None:
        """The watchdog's look at this connection (see the module docstring)."""
        since = self.reading_since
        if since is not None:
            age = now - since
            if (request_timeout is not None and age > request_timeout) or (
                head_timeout is not None and self._request is None and age > head_timeout
            ):
                self.expire()
            return
        if self.lost:
            return
        if not self.closing and (self._current is not None or self._queue):
            self.idle_since = None  # an answer is on its way
        elif self.idle_since is None:
            self.idle_since = now
        elif idle_timeout is not None and now - self.idle_since > idle_timeout:
            if self.closing:
                self.abort()  # a client that does not read what we still have to write
            else:
                self._close()

    def _fail(self, status: int, message: bytes) -> None:
        """Refuse what the client sends now: after the answers to the requests before it
        (in order, as pipelining asks), then close. Nothing more is read."""
        if self._failed or self.closing:
            return
        self._failed = True
        self.reading_since = None
        self._request = self._refused = None
        self._drop_body()  # the partial body of the refused request
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
        transport = self._transport
        if transport is None or self.lost:
            self._close()
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


async def _watch(
    server: asyncio.Server,
    table: ConnectionTable,
    request_timeout: float | None,
    head_timeout: float | None,
    idle_timeout: float | None,
) -> None:
    """Enforce the connections' deadlines; follow the descriptor limit."""
    interval = min([1.0, *(t / 2 for t in (request_timeout, head_timeout, idle_timeout) if t)])
    while server.is_serving():
        await asyncio.sleep(interval)
        now = time.monotonic()
        table.refresh()
        for conn in list(table.connections):
            conn.check_deadlines(now, request_timeout, head_timeout, idle_timeout)


#: Watchdog tasks of live servers (kept referenced until they end).
_WATCHDOGS: set[asyncio.Task[None]] = set()


def _positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None


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
) -> tuple[asyncio.Server, set[HttpConnection]]:
    """Listen on ``host:port``; returns the server and its live connections.

    ``request_timeout=None`` turns the whole-request deadline off, ``head_timeout=None``
    the head's (it is never later than the whole request's), ``idle_timeout=None`` lets
    idle connections stay. ``screen`` sees every request's head first (see ``Screen``);
    the other arguments are ``Limits``.
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
            handler, connections, max_body_bytes=max_body_bytes, screen=screen, table=table
        ),
        host,
        port,
        backlog=accept_backlog(fd_reserve),
    )
    request_timeout = _positive(request_timeout)
    head_timeout = _positive(head_timeout)
    if head_timeout is not None and request_timeout is not None:
        head_timeout = min(head_timeout, request_timeout)
    idle_timeout = _positive(idle_timeout)
    if request_timeout is not None or head_timeout is not None or idle_timeout is not None:
        task = loop.create_task(_watch(server, table, request_timeout, head_timeout, idle_timeout))
        _WATCHDOGS.add(task)
        task.add_done_callback(_WATCHDOGS.discard)
    return server, connections
