"""The status page's sign-in cookie: how a browser reaches ``/`` without sending a header.

A browser cannot add ``Authorization: Bearer`` to a page load, so the page
takes the token once (``GET /?token=...`` or the sign-in form's POST to
``/login``), and the gateway answers with a redirect to ``/`` (the token
leaves the address bar and history at once) that sets this cookie. The
cookie is not the token: it is a signed statement "token ``alice`` with
stored hash tag T, until time E", HMAC-SHA256 under a key drawn at start.

What keeps it safe:

- It is accepted only for ``GET``/``HEAD`` of the read-only pages (``/``,
  ``/api/status``, ``/metrics``), never for ``/mcp``: an ambient credential
  must not be able to call tools (no CSRF on calls, by construction).
- ``HttpOnly; SameSite=Strict; Path=/`` (and ``Secure`` over https).
- A token cookie is checked against the tokens file on every use (the
  token must still exist with the same hash), so ``token revoke`` ends the
  browser session too; it expires after ``max_age`` (12 h by default), and
  a restart (new key) ends every session. An OIDC cookie never outlives the
  JWT it came from.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from typing import Any, Final

import orjson

COOKIE_NAME: Final = "mcp_fleet_session"
_VERSION: Final = "v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CookieSigner:
    """Issues and reads the signed session cookie."""

    def __init__(
        self,
        key: bytes | None = None,
        *,
        max_age: int = 12 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key or os.urandom(32)
        self.max_age = max_age
        self._clock = clock

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

    def issue(self, claims: dict[str, Any], *, expires_at: float | None = None) -> tuple[str, int]:
        """``(cookie value, max-age in seconds)`` for ``claims`` (no secret values in them)."""
        now = self._clock()
        end = now + self.max_age if expires_at is None else min(expires_at, now + self.max_age)
        body = f"{_VERSION}.{_b64(orjson.dumps({**claims, 'e': int(end)}))}"
        return f"{body}.{self._mac(body)}", max(0, int(end - now))

    def read(self, value: str) -> dict[str, Any] | None:
        """The claims of a valid, unexpired cookie, else None."""
        version, _, rest = value.partition(".")
        payload, _, mac = rest.partition(".")
        if version != _VERSION or not payload or not mac:
            return None
        if not hmac.compare_digest(mac, self._mac(f"{version}.{payload}")):
            return None
        try:
            claims = orjson.loads(_unb64(payload))
        except (ValueError, orjson.JSONDecodeError):
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("e"), int):
            return None
        if claims["e"] <= self._clock():
            return None
        return claims


def cookie_header(value: str, max_age: int, *, secure: bool) -> bytes:
    """The ``Set-Cookie`` value for the session cookie."""
    text = f"{COOKIE_NAME}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
    return (text + "; Secure" if secure else text).encode()


def find_cookie(header: str, name: str = COOKIE_NAME) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header."""
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None
