"""The gateway's front door: one pure-ASGI middleware in front of the router.

Every HTTP request except the public probes (``/healthz``, ``/readyz``)
passes, in order:

1. **DNS-rebinding checks** of ``Host`` and ``Origin`` (``rebinding``): 403.
2. **Authentication**, required as soon as a token exists or OIDC is
   configured, on loopback too: ``Authorization: Bearer <token or JWT>``,
   else 401 with a JSON body ``{"error", "error_description", "message"}``
   and a ``WWW-Authenticate: Bearer`` header. The status page may also use
   the sign-in cookie (``cookies``). Once authentication has been required
   it stays required for the life of the process: revoking the last token
   locks the gateway rather than opening it.
3. **The identity** is attached at ``scope["state"]["mcp_fleet_identity"]``
   (``identity.identity_from_scope``), ``identity.ANONYMOUS`` (everything
   allowed) when no auth is configured; the router enforces per-tool
   allow-lists with it.
4. **Body limits**: a ``Content-Length`` over ``max_body_bytes`` is refused
   with 413 before reading; a body that grows past it while streaming, or
   stalls longer than ``body_timeout`` between chunks (slow clients holding
   a connection), ends with 413 or 408.

It sits on every forwarded call, so it is written for speed: one pass over
the header list, no framework objects, no file reads (the tokens file is
stat'ed at most once a second), a SHA-256 per token check, and a receive
wrapper only for requests that carry a body.

``refuse_unauthenticated_bind`` is the start-up rule: serving anything but
loopback without authentication needs an explicit ``--allow-unauthenticated``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qs

import orjson

from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.gateway.cookies import COOKIE_NAME, CookieSigner, cookie_header, find_cookie
from mcp_fleet.gateway.identity import (
    ANONYMOUS,
    AllowList,
    AuthError,
    Identity,
    PatternError,
    attach_identity,
)
from mcp_fleet.gateway.oidc import OidcValidator
from mcp_fleet.gateway.rebinding import HostPolicy
from mcp_fleet.gateway.tokens import TOKEN_PREFIX, TokenVerifier, digest_tag

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES: Final = 32 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_SECONDS: Final = 30.0
REALM: Final = "mcp-fleet"
PUBLIC_PATHS: Final = frozenset({"/healthz", "/readyz"})
PUBLIC_PREFIXES: Final = ("/static/",)
COOKIE_PATHS: Final = frozenset({"/", "/api/status", "/metrics"})
LOGIN_PATH: Final = "/login"
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_NO_STORE: Final = [(b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer")]
_LOGIN_CSP: Final = (
    b"default-src 'none'; style-src 'self'; form-action 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'"
)
_LOGIN_PAGE: Final = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mcp-fleet: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/status.css"></head>
<body><main class="login"><h1>mcp-fleet</h1>
<p>This gateway needs a token. Paste one made with <code>mcp-fleet token create NAME</code>.</p>
<form method="post" action="/login">
<input type="password" name="token" autocomplete="off" placeholder="mcpf_..." required autofocus>
<button type="submit">Sign in</button></form>
<p class="hint">The token is exchanged for a cookie that only opens this page.</p>
</main></body></html>
"""


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


class Authenticator:
    """Bearer tokens, JWTs and sign-in cookies to identities."""

    def __init__(
        self,
        *,
        tokens: TokenVerifier | None = None,
        oidc: OidcValidator | None = None,
        cookies: CookieSigner | None = None,
    ) -> None:
        self.tokens = tokens
        self.oidc = oidc
        self.cookies = cookies or CookieSigner()
        self._required = False

    @property
    def required(self) -> bool:
        """True once any token exists or OIDC is configured (then for good)."""
        if not self._required and (
            self.oidc is not None or (self.tokens is not None and self.tokens.configured)
        ):
            self._required = True
        return self._required

    async def authenticate(self, credential: str) -> tuple[Identity, float | None]:
        """``(identity, expires_at)`` for a bearer credential; ``AuthError`` when invalid."""
        if credential.startswith(TOKEN_PREFIX) or self.oidc is None:
            identity = self.tokens.verify(credential) if self.tokens is not None else None
            if identity is None:
                raise AuthError("unknown or revoked token")
            return identity, None
        return await self.oidc.verify(credential)

    def issue_cookie(self, identity: Identity, expires_at: float | None) -> tuple[str, int]:
        claims: dict[str, Any] = {"k": identity.kind, "n": identity.name}
        if identity.kind == "token" and self.tokens is not None:
            record = self.tokens.record(identity.name)
            claims["t"] = digest_tag(record.digest) if record else ""
        else:
            claims["a"] = identity.allow.patterns()
        return self.cookies.issue(claims, expires_at=expires_at)

    def from_cookie(self, value: str) -> Identity | None:
        """The identity of a valid sign-in cookie whose token (if any) still exists."""
        claims = self.cookies.read(value)
        if claims is None:
            return None
        name = claims.get("n")
        if not isinstance(name, str):
            return None
        if claims.get("k") == "token":
            record = self.tokens.record(name) if self.tokens is not None else None
            if record is None or digest_tag(record.digest) != claims.get("t"):
                return None
            return record.identity
        if claims.get("k") == "oidc" and self.oidc is not None:
            patterns = claims.get("a")
            if not isinstance(patterns, list):
                return None
            try:
                return Identity(name=name, kind="oidc", allow=AllowList.parse(patterns))
            except PatternError:
                return None
        return None


class _BodyTooLargeError(Exception):
    pass


class _BodyTimeoutError(Exception):
    pass


class _LimitedReceive:
    """``receive`` that counts body bytes and times out a stalled body."""

    __slots__ = ("done", "limit", "receive", "seen", "timeout")

    def __init__(self, receive: Receive, limit: int, timeout: float | None) -> None:
        self.receive = receive
        self.limit = limit
        self.timeout = timeout
        self.seen = 0
        self.done = False

    async def __call__(self) -> Message:
        if self.done:
            return await self.receive()
        if self.timeout is None:
            message = await self.receive()
        else:
            try:
                async with asyncio.timeout(self.timeout):
                    message = await self.receive()
            except TimeoutError:
                raise _BodyTimeoutError from None
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


def _json_error(error: str, description: str) -> bytes:
    return orjson.dumps({"error": error, "error_description": description, "message": description})


class GatewayMiddleware:
    """Rebinding checks, authentication and body limits around ``app`` (see module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: Authenticator,
        hosts: HostPolicy | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT_SECONDS,
        public_paths: frozenset[str] = PUBLIC_PATHS,
        public_prefixes: tuple[str, ...] = PUBLIC_PREFIXES,
        cookie_paths: frozenset[str] = COOKIE_PATHS,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.auth = auth
        self.hosts = hosts or HostPolicy()
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.public_paths = public_paths
        self.public_prefixes = public_prefixes
        self.cookie_paths = cookie_paths
        self.on_reject = on_reject

    def _reject(self, reason: str) -> None:
        if self.on_reject is not None:
            self.on_reject(reason)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in self.public_paths:
            await self.app(scope, receive, send)
            return
        host = origin = authorization = length = cookie = accept = None
        for key, value in scope["headers"]:
            if key == b"host":
                host = value.decode("latin-1")
            elif key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"origin":
                origin = value.decode("latin-1")
            elif key == b"content-length":
                length = value
            elif key == b"cookie":
                cookie = value.decode("latin-1")
            elif key == b"accept":
                accept = value
        refused = self.hosts.check(scope, host, origin)
        if refused is not None:
            self._reject(f"rebinding_{refused[0]}")
            await _respond(
                send,
                403,
                _json_error("forbidden", refused[1]),
                [(b"content-type", b"application/json")],
            )
            return
        method: str = scope["method"]
        if not path.startswith(self.public_prefixes):
            identity = await self._identify(
                scope, receive, send, path, method, authorization, cookie, accept
            )
            if identity is None:
                return
            attach_identity(scope, identity)
        if method in _BODY_METHODS:
            if length is not None:
                try:
                    size = int(length)
                except ValueError:
                    size = -1
                if size < 0:
                    await _respond(send, 400, b"Bad Request: invalid Content-Length")
                    return
                if size > self.max_body_bytes:
                    self._reject("body_too_large")
                    await self._too_large(send)
                    return
            receive = _LimitedReceive(receive, self.max_body_bytes, self.body_timeout)
            try:
                await self.app(scope, receive, send)
            except _BodyTooLargeError:
                self._reject("body_too_large")
                await self._too_large(send)
            except _BodyTimeoutError:
                self._reject("body_timeout")
                await self._late_error(
                    send, 408, b"Request Timeout: the body did not arrive in time"
                )
            return
        await self.app(scope, receive, send)

    async def _too_large(self, send: Send) -> None:
        await self._late_error(
            send, 413, f"Payload Too Large: the limit is {self.max_body_bytes} bytes".encode()
        )

    async def _late_error(self, send: Send, status: int, text: bytes) -> None:
        try:
            await _respond(send, status, text, [(b"content-type", b"text/plain; charset=utf-8")])
        except Exception:  # the app had started its answer already: the connection just ends
            log.debug("could not send %d, response already started", status)

    # -- authentication ------------------------------------------------------------------

    async def _identify(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        method: str,
        authorization: str | None,
        cookie: str | None,
        accept: bytes | None,
    ) -> Identity | None:
        """The caller's identity, or None after answering the request (401/403/redirect)."""
        if authorization is not None and self.auth.required:
            scheme, _, credential = authorization.partition(" ")
            credential = credential.strip()
            if scheme.lower() != "bearer" or not credential:
                await self._unauthorized(send, "use 'Authorization: Bearer <token>'", invalid=True)
                return None
            try:
                identity, _ = await self.auth.authenticate(credential)
            except AuthError as exc:
                await self._auth_error(send, exc)
                return None
            return identity
        if path == "/" and method == "GET" and b"token=" in scope.get("query_string", b""):
            await self._exchange(scope, send, _query_token(scope))
            return None
        if path == LOGIN_PATH and method == "POST":
            await self._exchange(scope, send, await _form_token(receive, self.max_body_bytes))
            return None
        if not self.auth.required:
            return ANONYMOUS
        if cookie is not None and method in ("GET", "HEAD") and path in self.cookie_paths:
            value = find_cookie(cookie)
            from_cookie = self.auth.from_cookie(value) if value else None
            if from_cookie is not None:
                return from_cookie
        if path == "/" and method == "GET" and accept is not None and b"text/html" in accept:
            self._reject("unauthenticated")
            await _respond(
                send,
                401,
                _LOGIN_PAGE,
                [
                    (b"content-type", b"text/html; charset=utf-8"),
                    (b"www-authenticate", f'Bearer realm="{REALM}"'.encode()),
                    (b"content-security-policy", _LOGIN_CSP),
                    *_NO_STORE,
                ],
            )
            return None
        await self._unauthorized(
            send, "this gateway needs 'Authorization: Bearer <token>'", invalid=False
        )
        return None

    async def _exchange(self, scope: Scope, send: Send, token: str | None) -> None:
        """Trade a token for the sign-in cookie and redirect to ``/`` (token out of the URL)."""
        headers = [(b"location", b"/"), *_NO_STORE]
        if self.auth.required:
            if not token:
                await self._unauthorized(send, "no token given", invalid=True)
                return
            try:
                identity, expires_at = await self.auth.authenticate(token)
            except AuthError as exc:
                await self._auth_error(send, exc)
                return
            value, max_age = self.auth.issue_cookie(identity, expires_at)
            secure = scope.get("scheme") == "https"
            headers.append((b"set-cookie", cookie_header(value, max_age, secure=secure)))
        await _respond(send, 303, b"", headers)

    async def _auth_error(self, send: Send, exc: AuthError) -> None:
        if exc.status == 401:
            await self._unauthorized(send, exc.description, invalid=True)
            return
        self._reject("forbidden" if exc.status == 403 else "auth_unavailable")
        await _respond(
            send,
            exc.status,
            _json_error(exc.error, exc.description),
            [(b"content-type", b"application/json"), *_NO_STORE],
        )

    async def _unauthorized(self, send: Send, description: str, *, invalid: bool) -> None:
        self._reject("unauthenticated")
        challenge = f'Bearer realm="{REALM}"'
        if invalid:
            quoted = description.replace("\\", "").replace('"', "'")
            challenge += f', error="invalid_token", error_description="{quoted}"'
        await _respond(
            send,
            401,
            _json_error("invalid_token" if invalid else "unauthorized", description),
            [
                (b"content-type", b"application/json"),
                (b"www-authenticate", challenge.encode("latin-1", "replace")),
                *_NO_STORE,
            ],
        )


def _query_token(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0].strip() if values else None


async def _form_token(receive: Receive, limit: int) -> str | None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > min(limit, 64 * 1024) or not message.get("more_body", False):
            break
    values = parse_qs(body.decode("latin-1")).get("token")
    return values[0].strip() if values else None


__all__ = [
    "COOKIE_NAME",
    "Authenticator",
    "GatewayMiddleware",
    "UnsafeBindError",
    "is_loopback_host",
    "refuse_unauthenticated_bind",
]
