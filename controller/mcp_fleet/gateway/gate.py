"""The request gate: who may make this HTTP request, decided from plain values.

Framework-free on purpose: ``callback.GatewayHandler`` runs it on each
request's head as the router's own HTTP server parses it (and on the body of
a sign-in form), with no framework object per request.
``RequestGate.check`` takes the method, path, query, the request headers
(lower-case names), the local address and scheme, and returns:

- ``None``: a public path (``/healthz``, ``/readyz``, the page's static
  assets): go on, no identity needed;
- an ``Identity``: go on, on behalf of it (``identity.ANONYMOUS`` while no
  authentication is configured);
- an ``Answer`` (status, headers, body): send it and stop. 403 for a
  failed Host/Origin check, 401 with ``WWW-Authenticate: Bearer`` and a
  JSON body ``{"error", "error_description", "message"}`` for a missing or
  bad credential (the HTML sign-in page for a browser asking for ``/``),
  403 for a valid identity mapped to nothing, 303 with the sign-in cookie
  for a token exchange;
- an awaitable of an ``Identity`` or ``Answer``, only when a JWT's signing
  keys must be fetched first.

Checks, in order: DNS-rebinding (``rebinding``), then the credential: an
``Authorization: Bearer`` header; the status page's token exchange
(``GET /?token=...`` or the sign-in form's ``POST /login``, answered with a
redirect to ``/`` that sets the cookie, so the token leaves the address bar
at once); the sign-in cookie, for ``GET``/``HEAD`` of the read-only pages
only (``/``, ``/api/status``, ``/metrics``): never for MCP calls.

``/metrics`` (``FULL_ACCESS_PATHS``) is for an identity that may use every
server (allow-list ``*``; the anonymous one while no authentication is
configured): its series name every server and tool, its process and
reconcile figures are the whole fleet's. A restricted token gets 403 there,
and its own servers' figures on ``/api/status``. ``public_metrics`` (an
in-cluster scraper) makes it public instead, a choice of the operator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs

import orjson

from mcp_fleet.gateway.cookies import cookie_header, find_cookie
from mcp_fleet.gateway.credentials import Authenticated, Authenticator
from mcp_fleet.gateway.identity import ANONYMOUS, AuthError, Identity
from mcp_fleet.gateway.rebinding import HostPolicy

REALM: Final = "mcp-fleet"
PUBLIC_PATHS: Final = frozenset({"/healthz", "/readyz"})
#: Served to anyone whose Host/Origin pass (the sign-in page needs the style sheet).
#: Exact paths, not a prefix: ``/static/../mcp`` must not skip authentication.
ASSET_PATHS: Final = frozenset({"/static/status.css", "/static/status.js"})
COOKIE_PATHS: Final = frozenset({"/", "/api/status", "/metrics"})
#: Paths only an identity that may use every server may read (see the module doc).
FULL_ACCESS_PATHS: Final = frozenset({"/metrics"})
LOGIN_PATH: Final = "/login"
#: Bytes of a sign-in form read at most.
MAX_FORM_BYTES: Final = 64 * 1024
_JSON: Final = (b"content-type", b"application/json")
_NO_STORE: Final = ((b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer"))
_LOGIN_CSP: Final = (
    b"default-src 'none'; style-src 'self'; form-action 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'"
)
_LOGIN_PAGE: Final = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mcp-fleet: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="static/status.css"></head>
<body><main class="login"><h1>mcp-fleet</h1>
<p>This gateway needs a token. Paste one made with <code>mcp-fleet token create NAME</code>.</p>
<form method="post" action="login">
<input type="password" name="token" autocomplete="off" placeholder="mcpf_..." required autofocus>
<button type="submit">Sign in</button></form>
<p class="hint">The token is exchanged for a cookie that only opens this page.</p>
</main></body></html>
"""

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Answer:
    """A response the gate gives itself (a refusal or a redirect)."""

    status: int
    headers: Headers
    body: bytes


Verdict = Identity | Answer | None


def json_error(error: str, description: str) -> bytes:
    """The JSON body of every gateway refusal."""
    return orjson.dumps({"error": error, "error_description": description, "message": description})


class RequestGate:
    """Rebinding checks and authentication for one HTTP request (see module doc)."""

    def __init__(
        self,
        *,
        auth: Authenticator,
        hosts: HostPolicy | None = None,
        public_paths: frozenset[str] = PUBLIC_PATHS,
        asset_paths: frozenset[str] = ASSET_PATHS,
        cookie_paths: frozenset[str] = COOKIE_PATHS,
        full_access_paths: frozenset[str] = FULL_ACCESS_PATHS,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.auth = auth
        self.hosts = hosts or HostPolicy()
        self.public_paths = public_paths
        self.asset_paths = asset_paths
        self.cookie_paths = cookie_paths
        self.full_access_paths = full_access_paths - public_paths
        self.on_reject = on_reject

    def reject(self, reason: str) -> None:
        """Report a refusal (``on_reject``: the metrics' rejection counter)."""
        if self.on_reject is not None:
            self.on_reject(reason)

    def check(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        *,
        server: tuple[str, int] | None,
        scheme: str = "http",
        form: bytes | None = None,
    ) -> Verdict | Awaitable[Identity | Answer]:
        """Decide about one request; ``form`` is the body of a ``POST /login``."""
        verdict = self._check(method, path, query, headers, server=server, scheme=scheme, form=form)
        if path not in self.full_access_paths or verdict is None or isinstance(verdict, Answer):
            return verdict
        if isinstance(verdict, Identity):
            return self._full_access(verdict, path)
        return self._full_access_later(verdict, path)

    def _check(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        *,
        server: tuple[str, int] | None,
        scheme: str,
        form: bytes | None,
    ) -> Verdict | Awaitable[Identity | Answer]:
        if path in self.public_paths:
            return None
        refused = self.hosts.check(
            headers.get("host"), headers.get("origin"), server=server, scheme=scheme
        )
        if refused is not None:
            self.reject(f"rebinding_{refused[0]}")
            return Answer(403, [_JSON], json_error("forbidden", refused[1]))
        if path in self.asset_paths:
            return None
        authorization = headers.get("authorization")
        if authorization is not None and self.auth.required:
            scheme_name, _, credential = authorization.partition(" ")
            credential = credential.strip()
            if scheme_name.lower() != "bearer" or not credential:
                return self._unauthorized("use 'Authorization: Bearer <token>'", invalid=True)
            return self._authenticated(credential, None)
        if method == "GET" and path == "/" and "token=" in query:
            values = parse_qs(query).get("token")
            return self._exchange(values[0].strip() if values else None, scheme)
        if method == "POST" and path == LOGIN_PATH:
            values = parse_qs((form or b"")[:MAX_FORM_BYTES].decode("latin-1")).get("token")
            return self._exchange(values[0].strip() if values else None, scheme)
        if not self.auth.required:
            return ANONYMOUS
        cookie = headers.get("cookie")
        if cookie is not None and method in ("GET", "HEAD") and path in self.cookie_paths:
            value = find_cookie(cookie)
            identity = self.auth.from_cookie(value) if value else None
            if identity is not None:
                return identity
        if method == "GET" and path == "/" and "text/html" in headers.get("accept", ""):
            self.reject("unauthenticated")
            return Answer(
                401,
                [
                    (b"content-type", b"text/html; charset=utf-8"),
                    (b"www-authenticate", f'Bearer realm="{REALM}"'.encode()),
                    (b"content-security-policy", _LOGIN_CSP),
                    *_NO_STORE,
                ],
                _LOGIN_PAGE,
            )
        return self._unauthorized(
            "this gateway needs 'Authorization: Bearer <token>'", invalid=False
        )

    def _full_access(self, identity: Identity, path: str) -> Identity | Answer:
        """``identity`` if it may use every server, else 403 (``FULL_ACCESS_PATHS``)."""
        if identity.allow.everything:
            return identity
        self.reject("forbidden")
        description = (
            f"{identity.label} may not read {path}: it needs a token that may use every server"
        )
        return Answer(403, [_JSON, *_NO_STORE], json_error("forbidden", description))

    async def _full_access_later(
        self, pending: Awaitable[Identity | Answer], path: str
    ) -> Identity | Answer:
        verdict = await pending
        return verdict if isinstance(verdict, Answer) else self._full_access(verdict, path)

    # -- credentials -------------------------------------------------------------------

    def _authenticated(
        self, credential: str, exchange_scheme: str | None
    ) -> Identity | Answer | Awaitable[Identity | Answer]:
        """Check a bearer credential; with ``exchange_scheme``, answer with the cookie."""
        try:
            result = self.auth.authenticate_nowait(credential)
        except AuthError as exc:
            return self._auth_error(exc)
        if isinstance(result, tuple):
            return self._granted(result, exchange_scheme)
        return self._later(result, exchange_scheme)

    async def _later(
        self, pending: Awaitable[Authenticated], exchange_scheme: str | None
    ) -> Identity | Answer:
        try:
            result = await pending
        except AuthError as exc:
            return self._auth_error(exc)
        return self._granted(result, exchange_scheme)

    def _granted(self, result: Authenticated, exchange_scheme: str | None) -> Identity | Answer:
        identity, expires_at = result
        if exchange_scheme is None:
            return identity
        value, max_age = self.auth.issue_cookie(identity, expires_at)
        cookie = cookie_header(value, max_age, secure=exchange_scheme == "https")
        return Answer(303, [(b"location", b"/"), (b"set-cookie", cookie), *_NO_STORE], b"")

    def _exchange(
        self, token: str | None, scheme: str
    ) -> Identity | Answer | Awaitable[Identity | Answer]:
        """Trade a token for the sign-in cookie and redirect to ``/`` (token out of the URL)."""
        if not self.auth.required:
            return Answer(303, [(b"location", b"/"), *_NO_STORE], b"")
        if not token:
            return self._unauthorized("no token given", invalid=True)
        return self._authenticated(token, scheme)

    def _auth_error(self, exc: AuthError) -> Answer:
        if exc.status == 401:
            return self._unauthorized(exc.description, invalid=True)
        self.reject("forbidden" if exc.status == 403 else "auth_unavailable")
        return Answer(exc.status, [_JSON, *_NO_STORE], json_error(exc.error, exc.description))

    def _unauthorized(self, description: str, *, invalid: bool) -> Answer:
        self.reject("unauthenticated")
        challenge = f'Bearer realm="{REALM}"'
        if invalid:
            quoted = description.replace("\\", "").replace('"', "'")
            challenge += f', error="invalid_token", error_description="{quoted}"'
        return Answer(
            401,
            [_JSON, (b"www-authenticate", challenge.encode("latin-1", "replace")), *_NO_STORE],
            json_error("invalid_token" if invalid else "unauthorized", description),
        )
