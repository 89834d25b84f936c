"""What a handler of the router's HTTP server sees and answers through.

``Request`` (one parsed request), ``Responder`` (writes the answer to one
request, whole or as a stream of chunks, whenever it is ready) and
``Refusal`` (what a screen answers instead) are the whole interface between
the server (``http_server``) and the code that serves MCP over it
(``frontend_http``, the gateway). They live apart from the connection that
parses requests so that handlers, and their tests, need none of its
machinery; a ``Responder`` writes through the small ``Connection`` protocol,
which ``http_server.HttpConnection`` implements.

The answer's head is built in one join and written with the body in one
write (a large body in a second one): every forwarded call over HTTP ends
here, so it costs no more than that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

log = logging.getLogger(__name__)

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


class Connection(Protocol):
    """What a ``Responder`` writes through: the client's connection."""

    @property
    def lost(self) -> bool: ...
    def write(self, data: bytes) -> None: ...
    def response_done(self, responder: Responder) -> None:
        """The answer is complete: the next request's turn (or the connection closes)."""

    def buffered(self) -> int:
        """Bytes written and not yet sent to the client."""

    def abort(self) -> None: ...


@dataclass(slots=True, eq=False)
class Responder:
    """Writes the answer to one request: whole, or as a stream of chunks."""

    _conn: Connection
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
