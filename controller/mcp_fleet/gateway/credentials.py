"""Credentials to identities: bearer tokens, JWTs and the status page's sign-in cookie.

``Authenticator`` is the one place that knows every kind of credential; the
request gate (``gate``) asks it and never looks inside a token itself. A
bearer value starting with ``mcpf_`` is one of our tokens (``tokens``);
anything else is a JWT when OIDC is configured (``oidc``).

``authenticate_nowait`` answers synchronously whenever it can (our tokens
always; JWTs when the signing key is cached) and returns an awaitable only
when a JWKS must be fetched: the router's HTTP server runs its handlers as
plain callbacks, and a task per request would cost more than the check.

Authentication becomes required as soon as a token exists or OIDC is
configured, and then stays required for the life of the process: revoking
the last token locks the gateway rather than opening it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from mcp_fleet.gateway.cookies import CookieSigner
from mcp_fleet.gateway.identity import AllowList, AuthError, Identity, PatternError
from mcp_fleet.gateway.oidc import OidcValidator
from mcp_fleet.gateway.tokens import TOKEN_PREFIX, TokenVerifier, digest_tag

Authenticated = tuple[Identity, float | None]


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

    def authenticate_nowait(self, credential: str) -> Authenticated | Awaitable[Authenticated]:
        """``(identity, expires_at)``, or an awaitable of it; ``AuthError`` when invalid."""
        if credential.startswith(TOKEN_PREFIX) or self.oidc is None:
            identity = self.tokens.verify(credential) if self.tokens is not None else None
            if identity is None:
                raise AuthError("unknown or revoked token")
            return identity, None
        return self.oidc.verify_nowait(credential)

    async def authenticate(self, credential: str) -> Authenticated:
        """``authenticate_nowait``, awaited."""
        result = self.authenticate_nowait(credential)
        return result if isinstance(result, tuple) else await result

    def issue_cookie(self, identity: Identity, expires_at: float | None) -> tuple[str, int]:
        """``(cookie value, max-age)`` binding ``identity`` (see ``cookies``)."""
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
