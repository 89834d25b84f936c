"""Session ids any router replica can serve: signed tokens that carry the session.

With several router replicas behind one Service, a client's requests land on
whichever replica the load balancer picks. Session affinity (sticky cookies,
client-IP hashing) depends on the ingress in front and breaks on every
rescale; a shared session store adds a database to the router. Instead, the
``Mcp-Session-Id`` the router hands out *is* the session's state: the few
things a later request needs from the original ``initialize`` (the
negotiated protocol version, the client's capabilities, the client's name),
who owns the session, when it began and a random nonce, serialised and
signed with HMAC-SHA256 under a key every replica shares
(``MCP_FLEET_SESSION_KEY``, a Secret in the Helm chart). A replica that does
not know an id verifies the signature and restores the session as if the
client had initialized there; nothing is stored or looked up elsewhere.

The token is signed, not encrypted: the client can read its own protocol
version, capability names and client name, nothing else. The owner is a
keyed digest of the identity's label, so a session id presented by another
identity is refused and the id reveals no token name. Capabilities are kept
two levels deep (``{"roots": {"listChanged": true}, "sampling": {}}``): the
router only ever asks which capabilities a client has, and this bounds the
id's length whatever a client declares.

Keys rotate: ``MCP_FLEET_SESSION_KEY`` may hold several keys separated by
commas; the first signs, every one verifies. Each key is stretched through
HMAC with a fixed label, so the same secret used elsewhere yields a
different MAC key here.

What stays with one replica (the limit of the scheme): requests a server
sends to the client (sampling, elicitation, roots), resource
subscriptions, log levels and calls in flight live in the replica that
holds them, and messages that belong to no request go out on the session's
GET stream on the replica where it is open. A restored session starts with
none of these. A ``DELETE`` ends the session on the replica that receives
it; another replica would still restore the id until it expires
(``max_age``, a day by default).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson

from mcp_fleet.model import frozen_map
from mcp_fleet.router.jsonrpc import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION

if TYPE_CHECKING:
    from mcp_fleet.router.session import RouterSession

#: Environment variable holding the shared key(s), comma-separated, first one signing.
ENV_SESSION_KEY: Final = "MCP_FLEET_SESSION_KEY"
#: Every id this module mints starts with this (so it is told apart from a random id).
TOKEN_PREFIX: Final = "mf1."
#: Shortest key accepted, in bytes (the chart generates 48 characters).
MIN_KEY_BYTES: Final = 16
#: How long a session id stays restorable after its initialize, in seconds.
DEFAULT_MAX_AGE_SECONDS: Final = 24 * 3600.0
#: Clock skew tolerated between replicas for an id issued "in the future".
CLOCK_SKEW_SECONDS: Final = 300.0
#: Client names and capability keys longer than this are cut (bounds the id's length).
MAX_TEXT: Final = 128
MAX_KEYS: Final = 32
_LABEL: Final = b"mcp-fleet session id v1"


class SessionKeyError(ValueError):
    """The configured session key is unusable (too short, empty)."""


class InvalidSessionToken(ValueError):
    """A session id that is not ours: malformed, badly signed or expired."""


class ForeignSession(InvalidSessionToken):
    """A valid session id presented by an identity other than its owner."""


@dataclass(frozen=True, slots=True)
class SessionClaims:
    """What a restored session needs from the original ``initialize``."""

    protocol_version: str
    capabilities: Mapping[str, Any] = field(default_factory=frozen_map)
    client_name: str = ""
    issued_at: float = 0.0

    @classmethod
    def from_initialize(cls, params: Any) -> SessionClaims:
        """The claims of an ``initialize`` request's params, negotiated as the router does."""
        params = params if isinstance(params, dict) else {}
        requested = params.get("protocolVersion")
        version = (
            requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
        )
        info = params.get("clientInfo")
        name = info.get("name") if isinstance(info, dict) else None
        return cls(
            protocol_version=str(version),
            capabilities=frozen_map(capability_flags(params.get("capabilities"))),
            client_name=name[:MAX_TEXT] if isinstance(name, str) else "",
        )


def capability_flags(capabilities: Any) -> dict[str, Any]:
    """Capabilities cut to two levels: nested objects become ``{}``, booleans stay, rest goes."""
    if not isinstance(capabilities, dict):
        return {}
    out: dict[str, Any] = {}
    for name, value in list(capabilities.items())[:MAX_KEYS]:
        if not isinstance(name, str):
            continue
        inner: dict[str, Any] = {}
        if isinstance(value, dict):
            for key, sub in list(value.items())[:MAX_KEYS]:
                if isinstance(sub, bool):
                    inner[key[:MAX_TEXT]] = sub
                elif isinstance(sub, dict):
                    inner[key[:MAX_TEXT]] = {}
        out[name[:MAX_TEXT]] = inner
    return out


def restore(session: RouterSession, claims: SessionClaims) -> None:
    """Put a fresh ``RouterSession`` in the state its ``initialize`` left it in."""
    session.protocol_version = claims.protocol_version
    session.client_capabilities = {k: dict(v) for k, v in claims.capabilities.items()}
    session.client_info = {"name": claims.client_name} if claims.client_name else {}
    session.initialized = True


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Mints and verifies session ids under shared keys (see the module docstring)."""

    def __init__(
        self,
        keys: Sequence[bytes],
        *,
        max_age: float = DEFAULT_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise SessionKeyError("no session key given")
        for key in keys:
            if len(key) < MIN_KEY_BYTES:
                raise SessionKeyError(
                    f"a session key must have at least {MIN_KEY_BYTES} bytes, got {len(key)}"
                )
        self._keys = [hmac.new(k, _LABEL, hashlib.sha256).digest() for k in keys]
        self.max_age = max_age
        self._clock = clock

    @classmethod
    def from_env(
        cls, var: str = ENV_SESSION_KEY, *, max_age: float = DEFAULT_MAX_AGE_SECONDS
    ) -> SessionSigner | None:
        """The signer for ``$var`` (comma-separated keys, first signs); None when unset."""
        raw = os.environ.get(var, "")
        if not raw.strip():
            return None
        keys = [k.strip().encode() for k in raw.split(",") if k.strip()]
        try:
            return cls(keys, max_age=max_age)
        except SessionKeyError as exc:
            raise SessionKeyError(f"${var}: {exc}") from None

    @classmethod
    def ephemeral(cls) -> SessionSigner:
        """A signer with a random key: ids only this process can restore (one replica)."""
        return cls([secrets.token_bytes(32)])

    def _owner(self, key: bytes, owner: str) -> str:
        return _b64(hmac.new(key, b"owner\0" + owner.encode(), hashlib.sha256).digest()[:12])

    def mint(self, claims: SessionClaims, *, owner: str) -> str:
        """A new session id carrying ``claims``, owned by the identity labelled ``owner``."""
        key = self._keys[0]
        payload = orjson.dumps(
            {
                "p": claims.protocol_version,
                "c": dict(claims.capabilities),
                "n": claims.client_name,
                "o": self._owner(key, owner),
                "t": int(self._clock()),
                "r": _b64(secrets.token_bytes(12)),
            }
        )
        body = _b64(payload)
        mac = hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()
        return f"{TOKEN_PREFIX}{body}.{_b64(mac)}"

    def verify(self, token: str, *, owner: str) -> SessionClaims:
        """The claims of ``token``; raises ``InvalidSessionToken`` or ``ForeignSession``."""
        if not token.startswith(TOKEN_PREFIX):
            raise InvalidSessionToken("not a signed session id")
        body, sep, mac_text = token[len(TOKEN_PREFIX) :].partition(".")
        if not sep or not body or not mac_text:
            raise InvalidSessionToken("malformed session id")
        try:
            mac = _unb64(mac_text)
        except (binascii.Error, ValueError):
            raise InvalidSessionToken("malformed session id") from None
        signer = next(
            (
                k
                for k in self._keys
                if hmac.compare_digest(
                    hmac.new(k, body.encode("ascii", "replace"), hashlib.sha256).digest(), mac
                )
            ),
            None,
        )
        if signer is None:
            raise InvalidSessionToken("bad signature")
        try:
            data = orjson.loads(_unb64(body))
        except (binascii.Error, ValueError):
            raise InvalidSessionToken("malformed session id") from None
        if not isinstance(data, dict):
            raise InvalidSessionToken("malformed session id")
        issued, version = data.get("t"), data.get("p")
        caps, name, who = data.get("c"), data.get("n"), data.get("o")
        if (
            not isinstance(issued, int)
            or not isinstance(version, str)
            or not isinstance(caps, dict)
            or not isinstance(name, str)
            or not isinstance(who, str)
        ):
            raise InvalidSessionToken("malformed session id")
        now = self._clock()
        if issued > now + CLOCK_SKEW_SECONDS or now - issued > self.max_age:
            raise InvalidSessionToken("session id expired")
        if not hmac.compare_digest(who, self._owner(signer, owner)):
            raise ForeignSession("session belongs to another identity")
        return SessionClaims(
            protocol_version=version,
            capabilities=frozen_map(caps),
            client_name=name,
            issued_at=float(issued),
        )
