"""The gateway's ASGI front door, and the rule about serving without authentication.

``GatewayMiddleware`` wraps an ASGI app (the gateway's routes around the
router). Every HTTP request except the public probes (``/healthz``,
``/readyz``) passes, in order:

1. The request gate (``gate.RequestGate``): DNS-rebinding checks of
   ``Host`` and ``Origin`` (403), then authentication, required as soon as
   a token exists or OIDC is configured, on loopback too (401 with a JSON
   body and ``WWW-Authenticate: Bearer``; the status page may use its
   sign-in cookie instead).
2. The identity is attached at ``scope["state"]["mcp_fleet_identity"]``
   (``identity.identity_from_scope``; ``identity.ANONYMOUS``, allowed
   everything, while no authentication is configured). The router enforces
   per-tool allow-lists with it.
3. Body limits: a ``Content-Length`` over ``max_body_bytes`` is refused with
   413 before reading; a body that grows past it while streaming ends with
   413; a body whose next chunk takes longer than ``body_timeout`` (a slow
   client holding a connection) ends with 408.

It sits on every forwarded call, so it is written for speed: one pass over
the header list, no framework objects, no file reads (the tokens file is
stat'ed at most once a second), a SHA-256 per token check, no timer per
request (one shared watchdog task enforces body timeouts), and a receive
wrapper only for requests that carry a body. The router's own callback
HTTP server uses the same gate through ``callback.GatewayHandler``.

``refuse_unauthenticated_bind`` is the start-up rule: serving anything but
loopback without authentication needs an explicit ``--allow-unauthenticated``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final

from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.gateway.gate import LOGIN_PATH, MAX_FORM_BYTES, Answer, RequestGate
from mcp_fleet.gateway.identity import Identity, attach_identity

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES: Final = 32 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_SECONDS: Final = 30.0
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
#: Request headers the gate reads (ASGI names are lower-case bytes already).
_WANTED: Final = {
    b"host": "host",
    b"origin": "origin",
    b"authorization": "authorization",
    b"cookie": "cookie",
    b"accept": "accept",
    b"content-length": "content-length",
}


class UnsafeBindError(RuntimeFailure):
    """Serving a non-loopback address without authentication, not explicitly allowed."""


def is_loopback_host(host: str) -> bool:
    """``localhost`` and loopback IP literals (``127.0.0.1``, ``::1``, ``[::1]``)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def refuse_unauthenticated_bind(
    host: str, auth_configured: bool, allow_unauthenticated: bool
) -> None:
    """Raise ``UnsafeBindError`` unless ``host`` is loopback, auth is set up, or it is allowed."""
    if is_loopback_host(host) or auth_configured or allow_unauthenticated:
        return
    raise UnsafeBindError(
        f"refusing to listen on {host} without authentication: anyone who can reach it "
        "could call every tool of the fleet. Create a token (mcp-fleet token create NAME), "
        "configure OIDC (oidc.yaml in the fleet directory), listen on 127.0.0.1, "
        "or pass --allow-unauthenticated"
    )


class _BodyTooLargeError(Exception):
    pass


class _BodyTimeoutError(Exception):
    pass


class _BodyWatchdog:
    """Cancels body reads that wait longer than ``timeout`` for their next chunk.

    One shared task that wakes every ``interval`` while reads are waiting,
    instead of a timer per request: arming a timer (``asyncio.timeout``)
    cost more than the rest of the middleware together. Deadlines are thus
    enforced to within ``interval``, which is plenty for a slow-client guard.
    """

    def __init__(self, timeout: float, *, interval: float = 1.0) -> None:
        self.timeout = timeout
        self.interval = min(interval, timeout)
        self.waiting: dict[_LimitedReceive, float] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, reader: _LimitedReceive) -> None:
        self.waiting[reader] = time.monotonic() + self.timeout
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self.waiting:
                await asyncio.sleep(self.interval)
                now = time.monotonic()
                for reader, deadline in list(self.waiting.items()):
                    if deadline <= now and reader.task is not None:
                        del self.waiting[reader]
                        reader.expired = True
                        reader.task.cancel()
        finally:
            self._task = None


class _LimitedReceive:
    """``receive`` that counts body bytes and gives up on a stalled body."""

    __slots__ = ("done", "expired", "limit", "receive", "seen", "task", "watchdog")

    def __init__(self, receive: Receive, limit: int, watchdog: _BodyWatchdog | None) -> None:
        self.receive = receive
        self.limit = limit
        self.watchdog = watchdog
        self.seen = 0
        self.done = False
        self.expired = False
        self.task: asyncio.Task[Any] | None = None

    async def __call__(self) -> Message:
        if self.done:
            return await self.receive()
        watchdog = self.watchdog
        if watchdog is None:
            message = await self.receive()
        else:
            if self.task is None:
                self.task = asyncio.current_task()
            watchdog.watch(self)
            try:
                message = await self.receive()
            except asyncio.CancelledError:
                if self.expired and self.task is not None:
                    self.task.uncancel()
                    raise _BodyTimeoutError from None
                raise
            finally:
                watchdog.waiting.pop(self, None)
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                raise _BodyTooLargeError
            if not message.get("more_body", False):
                self.done = True
        else:
            self.done = True
        return message


async def _respond(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


async def _read_form(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        chunk: bytes = message.get("body", b"")
        body += chunk
        if len(body) > MAX_FORM_BYTES or not message.get("more_body", False):
            return body


class GatewayMiddleware:
    """The request gate and body limits around an ASGI ``app`` (see module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        gate: RequestGate,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.gate = gate
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self._watchdog = _BodyWatchdog(body_timeout) if body_timeout else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in self.gate.public_paths:
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for key, value in scope["headers"]:
            name = _WANTED.get(key)
            if name is not None:
                headers[name] = value.decode("latin-1")
        method: str = scope["method"]
        form = await _read_form(receive) if method == "POST" and path == LOGIN_PATH else None
        verdict = self.gate.check(
            method,
            path,
            scope.get("query_string", b"").decode("latin-1"),
            headers,
            server=scope.get("server"),
            scheme=scope.get("scheme", "http"),
            form=form,
        )
        if not (verdict is None or isinstance(verdict, Identity | Answer)):
            verdict = await verdict
        if isinstance(verdict, Answer):
            await _respond(send, verdict.status, verdict.body, verdict.headers)
            return
        if verdict is not None:
            attach_identity(scope, verdict)
        if method not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        length = headers.get("content-length")
        if length is not None:
            size = int(length) if length.isdigit() else -1
            if size < 0:
                await _respond(send, 400, b"Bad Request: invalid Content-Length")
                return
            if size > self.max_body_bytes:
                self.gate.reject("body_too_large")
                await self._too_large(send)
                return
        try:
            await self.app(
                scope, _LimitedReceive(receive, self.max_body_bytes, self._watchdog), send
            )
        except _BodyTooLargeError:
            self.gate.reject("body_too_large")
            await self._too_large(send)
        except _BodyTimeoutError:
            self.gate.reject("body_timeout")
            await self._late_error(send, 408, b"Request Timeout: the body did not arrive in time")

    async def _too_large(self, send: Send) -> None:
        await self._late_error(
            send, 413, f"Payload Too Large: the limit is {self.max_body_bytes} bytes".encode()
        )

    async def _late_error(self, send: Send, status: int, text: bytes) -> None:
        try:
            await _respond(send, status, text, [(b"content-type", b"text/plain; charset=utf-8")])
        except Exception:  # the app had started its answer already: the connection just ends
            log.debug("could not send %d, response already started", status)


__all__ = [
    "GatewayMiddleware",
    "UnsafeBindError",
    "is_loopback_host",
    "refuse_unauthenticated_bind",
]
