"""The HTTP frontend: streamable HTTP on ``/mcp`` and legacy SSE on ``/sse`` + ``/messages``.

A raw ASGI application rather than a framework: every forwarded call is one
POST, so routing, header parsing and response framing are on the hot path,
and a few dictionary lookups here cost less than a framework's request and
response objects (measured in bench/router_bench.py). Served by uvicorn.

Streamable HTTP (MCP 2025-03-26 and later): ``initialize`` creates a session
and returns its ``Mcp-Session-Id``; each later POST carries that header.
Every session is its own ``RouterSession`` with its own state, so many
clients share the router without seeing each other's calls, logs or
server-to-client requests. A POST carrying a request is answered lazily: if
the first thing that comes back for it is its response, the answer is plain
``application/json``; if a progress notification or a server-to-client
request comes first, the answer becomes an SSE stream that carries those and
ends with the response. A GET opens the session's standalone SSE stream for
messages that belong to no request (list changes, log messages, resource
updates); without one, such messages ride on a request stream still open.

Legacy SSE (2024-11-05): GET ``/sse`` opens a stream whose first event names
the URL to POST messages to; every answer goes on that stream.

Browsers are kept out as the spec asks: a request whose ``Origin`` is not
one of ``allowed_origins`` (by default the loopback hosts) gets 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from mcp_fleet import conventions
from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.router import jsonrpc
from mcp_fleet.router.jsonrpc import HANDSHAKE_PROTOCOL_VERSIONS, RequestId
from mcp_fleet.router.router import Router
from mcp_fleet.router.session import RouterSession

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY_BYTES: Final = 64 * 1024 * 1024
SESSION_IDLE_SECONDS: Final = 3600.0
SSE_KEEPALIVE_SECONDS: Final = 20.0
#: Messages kept for a client whose streams are all closed, before dropping the oldest.
MAX_PARKED: Final = 1000
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})

_JSON: Final = [(b"content-type", b"application/json")]
_SSE: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


class _Exchange:
    """What one POSTed request is waiting for: messages related to it, then its response."""

    __slots__ = ("done", "event", "items")

    def __init__(self) -> None:
        self.items: deque[bytes] = deque()
        self.event = asyncio.Event()
        self.done = False

    def push(self, data: bytes, final: bool) -> None:
        self.items.append(data)
        if final:
            self.done = True
        self.event.set()


class _Stream:
    """A long-lived SSE stream (the standalone GET stream, or a legacy SSE connection)."""

    __slots__ = ("closed", "event", "items")

    def __init__(self) -> None:
        self.items: deque[bytes] = deque()
        self.event = asyncio.Event()
        self.closed = False

    def push(self, data: bytes) -> None:
        self.items.append(data)
        self.event.set()


class HttpSession:
    """One HTTP client: its router session and where its messages go (a ``ClientChannel``)."""

    def __init__(self, router: Router, session_id: str, *, legacy: bool = False) -> None:
        self.id = session_id
        self.legacy = legacy
        self.exchanges: dict[RequestId, _Exchange] = {}
        self.stream: _Stream | None = _Stream() if legacy else None
        self.parked: deque[bytes] = deque(maxlen=MAX_PARKED)
        self.last_seen = time.monotonic()
        self.session: RouterSession = router.open_session(self, session_id=session_id)

    def send(self, data: bytes, *, related: RequestId | None = None, final: bool = False) -> None:
        if self.legacy:
            assert self.stream is not None
            self.stream.push(data)
            return
        if related is not None:
            exchange = self.exchanges.get(related)
            if exchange is not None:
                exchange.push(data, final)
                return
        if self.stream is not None and not self.stream.closed:
            self.stream.push(data)
            return
        for exchange in reversed(self.exchanges.values()):
            if not exchange.done:
                exchange.push(data, False)
                return
        self.parked.append(data)

    def close(self) -> None:
        self.session.close()
        err = b'{"code":-32600,"message":"session terminated"}'
        for rid, exchange in list(self.exchanges.items()):
            if not exchange.done:
                exchange.push(
                    b'{"jsonrpc":"2.0","id":' + jsonrpc.dumps(rid) + b',"error":' + err + b"}", True
                )
        if self.stream is not None:
            self.stream.closed = True
            self.stream.event.set()


def _origin_allowed(origin: str, allowed: frozenset[str] | None) -> bool:
    if allowed is not None:
        return origin in allowed or "*" in allowed
    host = urlsplit(origin).hostname or ""
    return host in LOOPBACK_HOSTS or f"[{host}]" in LOOPBACK_HOSTS


class HttpFrontend:
    """The ASGI application serving a ``Router`` over HTTP."""

    def __init__(
        self,
        router: Router,
        *,
        path: str = conventions.DEFAULT_HTTP_PATH,
        sse_path: str = "/sse",
        messages_path: str = "/messages",
        allowed_origins: Iterable[str] | None = None,
        idle_seconds: float = SESSION_IDLE_SECONDS,
    ) -> None:
        self.router = router
        self.path = path.rstrip("/") or "/"
        self.sse_path = sse_path
        self.messages_path = messages_path
        self.allowed_origins = frozenset(allowed_origins) if allowed_origins is not None else None
        self.idle_seconds = idle_seconds
        self.sessions: dict[str, HttpSession] = {}
        self._janitor: asyncio.Task[None] | None = None

    # -- ASGI entry ----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        headers = _headers(scope)
        origin = headers.get("origin")
        if origin is not None and not _origin_allowed(origin, self.allowed_origins):
            await _plain(send, 403, b"Forbidden: origin not allowed")
            return
        method = scope["method"]
        if path == self.path:
            if method == "POST":
                await self._post(headers, receive, send)
            elif method == "GET":
                await self._get(headers, receive, send)
            elif method == "DELETE":
                await self._delete(headers, send)
            else:
                await _plain(send, 405, b"Method Not Allowed", allow=b"GET, POST, DELETE")
        elif path == self.sse_path and method == "GET":
            await self._legacy_sse(receive, send)
        elif path == self.messages_path and method == "POST":
            await self._legacy_post(scope, receive, send)
        elif path == "/healthz" and method == "GET":
            await _plain(send, 200, b"ok")
        else:
            await _plain(send, 404, b"Not Found")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._janitor = asyncio.create_task(self._sweep_idle())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
        for session in list(self.sessions.values()):
            session.close()
        self.sessions.clear()

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, self.idle_seconds / 2))
            cutoff = time.monotonic() - self.idle_seconds
            for sid, hs in list(self.sessions.items()):
                busy = hs.exchanges or (hs.stream is not None and not hs.stream.closed)
                if hs.last_seen < cutoff and not busy:
                    del self.sessions[sid]
                    hs.close()

    # -- streamable HTTP -------------------------------------------------------------

    async def _post(self, headers: dict[str, str], receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            await _plain(send, 413, b"Payload Too Large")
            return
        try:
            msg = jsonrpc.parse(body)
        except jsonrpc.InvalidMessage as exc:
            if body.lstrip()[:1] == b"[":
                err = jsonrpc.error(None, jsonrpc.INVALID_REQUEST, "batches are not supported")
            else:
                err = jsonrpc.error(None, jsonrpc.PARSE_ERROR, f"Parse error: {exc}")
            await _respond(send, 400, _JSON, err)
            return
        sid = headers.get("mcp-session-id")
        if msg.get("method") == "initialize" and "id" in msg:
            hs = HttpSession(self.router, secrets.token_hex(16))
            self.sessions[hs.id] = hs
        else:
            if sid is None:
                await _respond(
                    send, 400, _JSON,
                    jsonrpc.error(None, jsonrpc.INVALID_REQUEST, "missing Mcp-Session-Id header"),
                )  # fmt: skip
                return
            found = self.sessions.get(sid)
            if found is None:
                await _respond(
                    send,
                    404,
                    _JSON,
                    jsonrpc.error(None, jsonrpc.INVALID_REQUEST, "Session not found"),
                )
                return
            hs = found
            version = headers.get("mcp-protocol-version")
            if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
                await _respond(
                    send, 400, _JSON,
                    jsonrpc.error(None, jsonrpc.INVALID_REQUEST, f"Unsupported version: {version}"),
                )  # fmt: skip
                return
        hs.last_seen = time.monotonic()
        mid = msg.get("id")
        if "method" not in msg or mid is None:
            hs.session.handle_message(msg)
            await _respond(send, 202, (), b"")
            return
        if not jsonrpc.valid_id(mid) or mid in hs.exchanges:
            why = "duplicate request id" if jsonrpc.valid_id(mid) else "invalid request id"
            await _respond(send, 400, _JSON, jsonrpc.error(None, jsonrpc.INVALID_REQUEST, why))
            return
        exchange = _Exchange()
        hs.exchanges[mid] = exchange
        try:
            hs.session.handle_message(msg)
            await exchange.event.wait()
            extra = [(b"mcp-session-id", hs.id.encode())]
            if exchange.done and len(exchange.items) == 1:
                await _respond(send, 200, _JSON + extra, exchange.items[0])
                return
            await send({"type": "http.response.start", "status": 200, "headers": _SSE + extra})
            while True:
                while exchange.items:
                    data = exchange.items.popleft()
                    await send(
                        {"type": "http.response.body", "body": _event(data), "more_body": True}
                    )
                if exchange.done:
                    break
                exchange.event.clear()
                await exchange.event.wait()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            hs.exchanges.pop(mid, None)

    async def _get(self, headers: dict[str, str], receive: Receive, send: Send) -> None:
        if "text/event-stream" not in headers.get("accept", ""):
            await _plain(send, 406, b"Not Acceptable: expects text/event-stream")
            return
        sid = headers.get("mcp-session-id")
        hs = self.sessions.get(sid) if sid is not None else None
        if hs is None:
            await _plain(send, 400 if sid is None else 404, b"Session not found")
            return
        if hs.stream is not None and not hs.stream.closed:
            await _plain(send, 409, b"Conflict: a stream is already open for this session")
            return
        stream = _Stream()
        stream.items.extend(hs.parked)
        hs.parked.clear()
        hs.stream = stream
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*_SSE, (b"mcp-session-id", hs.id.encode())],
                }
            )
            await _pump(stream, receive, send)
        finally:
            stream.closed = True
            hs.last_seen = time.monotonic()

    async def _delete(self, headers: dict[str, str], send: Send) -> None:
        sid = headers.get("mcp-session-id")
        hs = self.sessions.pop(sid, None) if sid is not None else None
        if hs is None:
            await _plain(send, 404, b"Session not found")
            return
        hs.close()
        await _plain(send, 200, b"")

    # -- legacy SSE -------------------------------------------------------------------

    async def _legacy_sse(self, receive: Receive, send: Send) -> None:
        hs = HttpSession(self.router, secrets.token_hex(16), legacy=True)
        self.sessions[hs.id] = hs
        assert hs.stream is not None
        endpoint = f"{self.messages_path}?session_id={hs.id}".encode()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE})
            await send(
                {
                    "type": "http.response.body",
                    "body": b"event: endpoint\ndata: " + endpoint + b"\n\n",
                    "more_body": True,
                }
            )
            await _pump(hs.stream, receive, send)
        finally:
            self.sessions.pop(hs.id, None)
            hs.close()

    async def _legacy_post(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode())
        sid = (query.get("session_id") or [""])[0]
        hs = self.sessions.get(sid)
        if hs is None or not hs.legacy:
            await _plain(send, 404, b"Session not found")
            return
        body = await _read_body(receive)
        if body is None:
            await _plain(send, 413, b"Payload Too Large")
            return
        hs.last_seen = time.monotonic()
        await _plain(send, 202, b"Accepted")
        hs.session.handle(body)


async def _pump(stream: _Stream, receive: Receive, send: Send) -> None:
    """Write ``stream``'s messages as SSE events until it closes or the client goes away."""
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()
        stream.event.set()

    watcher = asyncio.create_task(watch())
    try:
        while not gone.is_set() and not stream.closed:
            while stream.items:
                data = stream.items.popleft()
                await send({"type": "http.response.body", "body": _event(data), "more_body": True})
            stream.event.clear()
            try:
                await asyncio.wait_for(stream.event.wait(), timeout=SSE_KEEPALIVE_SECONDS)
            except TimeoutError:
                await send(
                    {"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True}
                )
        if not gone.is_set():
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        pass
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher


def _event(data: bytes) -> bytes:
    return b"event: message\ndata: " + data + b"\n\n"


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def _read_body(receive: Receive) -> bytes | None:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        parts.append(chunk)
    return b"".join(parts)


async def _respond(
    send: Send, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes
) -> None:
    out = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


async def _plain(send: Send, status: int, body: bytes, *, allow: bytes | None = None) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    if allow is not None:
        headers.append((b"allow", allow))
    await _respond(send, status, headers, body)


async def serve_http(
    router: Router,
    *,
    host: str = conventions.DEFAULT_HTTP_HOST,
    port: int = conventions.DEFAULT_HTTP_PORT,
    path: str = conventions.DEFAULT_HTTP_PATH,
    allowed_origins: Iterable[str] | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``router`` over HTTP with uvicorn until cancelled; ``ready`` gets the URL."""
    import uvicorn

    app = HttpFrontend(router, path=path, allowed_origins=allowed_origins)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=1,
        ws="none",
    )
    server = uvicorn.Server(config)

    async def run() -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits when it cannot bind
            raise RuntimeFailure(f"cannot listen on {host}:{port}") from None

    task = asyncio.create_task(run())
    try:
        while not server.started:
            if task.done():
                await task  # raises what made the server fail (port in use...)
                return
            await asyncio.sleep(0.01)
        if ready is not None:
            bound = port
            for srv in server.servers:
                for sock in srv.sockets:
                    bound = sock.getsockname()[1]
            ready(f"http://{host}:{bound}{path}")
        await asyncio.shield(task)
    finally:
        # Cancelled (or done): let uvicorn shut down cleanly rather than cancelling it mid-way.
        server.should_exit = True
        if not task.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=3)
