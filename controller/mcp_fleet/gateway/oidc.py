"""Optional OIDC: accept JWTs from a team's identity provider instead of (or beside) tokens.

Configured by ``<fleet dir>/oidc.yaml`` (read once at start; restart to
change it)::

    issuer: https://idp.example.com/
    audience: mcp-fleet                # or a list; the token's aud must hold one
    jwks_url: https://idp.example.com/.well-known/jwks.json
    # jwks_file: jwks.json             # instead of jwks_url (relative to this file)
    identity_claim: email              # default: sub
    groups_claim: groups               # optional: a list claim
    algorithms: [RS256, ES256]         # asymmetric only; default RS/PS/ES/EdDSA
    leeway_seconds: 30
    identities:                        # identity claim value -> allow-list
      alice@example.com: ['*']
    groups:                            # group name -> allow-list (added up)
      platform: [github, 'time:*']
    default: []                        # optional: allow-list of anyone else signed in

A valid JWT whose identity maps to nothing is refused with 403 and a
message saying where to map it, rather than admitted with no rights.

Validation is PyJWT's (signature, ``exp``/``nbf``, ``iss``, ``aud``; ``exp``,
``iss`` and ``aud`` required), with the algorithm pinned to the configured
asymmetric ones and to the key's type, so neither ``none`` nor an HMAC
forged with the public key gets through. Keys come from a JWKS file
(reloaded when it changes) or URL; a URL's keys are cached, fetched again on
an unknown ``kid`` (key rotation) at most once per ``min_refresh_seconds``
so random kids cannot turn the gateway into a request flood, and refreshed
after ``max_age_seconds``. A URL must be https unless it points at loopback.
Fetching uses httpx asynchronously, never blocking the event loop; PyJWT's
own ``PyJWKClient`` is synchronous (urllib), hence not used.

Verified tokens are cached (bounded, until their ``exp``) so a client
sending the same JWT on every call pays the RSA check once, and
``verify_nowait`` answers without awaiting whenever the key is at hand
(the router's HTTP server calls handlers synchronously).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, StrictStr, ValidationError

from mcp_fleet.config.schema import validation_diagnostics
from mcp_fleet.config.yamlsource import read_yaml
from mcp_fleet.errors import Diagnostic, FleetConfigError
from mcp_fleet.gateway.identity import AllowList, AuthError, Identity, PatternError

log = logging.getLogger(__name__)

ASYMMETRIC: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_FAMILY: Final = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
CACHE_SIZE: Final = 1024


class _OidcDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    issuer: StrictStr
    audience: StrictStr | list[StrictStr]
    jwks_url: StrictStr | None = None
    jwks_file: StrictStr | None = None
    identity_claim: StrictStr = "sub"
    groups_claim: StrictStr | None = None
    algorithms: list[StrictStr] = sorted(ASYMMETRIC)
    leeway_seconds: StrictFloat | StrictInt = 30
    identities: dict[StrictStr, list[StrictStr]] = {}
    groups: dict[StrictStr, list[StrictStr]] = {}
    default: list[StrictStr] | None = None


@dataclass(frozen=True, slots=True)
class OidcConfig:
    """The validated ``oidc.yaml``."""

    source: Path
    issuer: str
    audiences: tuple[str, ...]
    jwks_url: str | None
    jwks_file: Path | None
    identity_claim: str
    groups_claim: str | None
    algorithms: frozenset[str]
    leeway_seconds: float
    identities: Mapping[str, tuple[str, ...]]
    groups: Mapping[str, tuple[str, ...]]
    default: tuple[str, ...] | None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_oidc_config(path: Path) -> OidcConfig:
    """Read and check ``oidc.yaml``; ``FleetConfigError`` (file, line, field) when wrong."""
    doc = read_yaml(path)
    try:
        model = _OidcDoc.model_validate(doc.data if doc.data is not None else {})
    except ValidationError as exc:
        raise FleetConfigError(validation_diagnostics(exc, doc, ())) from None
    problems: list[Diagnostic] = []
    if (model.jwks_url is None) == (model.jwks_file is None):
        problems.append(doc.diag((), "give exactly one of jwks_url and jwks_file"))
    if model.jwks_url is not None:
        url = urlsplit(model.jwks_url)
        if url.scheme != "https" and not (url.scheme == "http" and _loopback(url.hostname or "")):
            problems.append(
                doc.diag(("jwks_url",), "must be an https:// URL (http only to loopback)")
            )
    bad_algs = sorted(set(model.algorithms) - ASYMMETRIC)
    if bad_algs or not model.algorithms:
        problems.append(
            doc.diag(
                ("algorithms",), f"use asymmetric algorithms only ({', '.join(sorted(ASYMMETRIC))})"
            )
        )
    for section, table in (("identities", model.identities), ("groups", model.groups)):
        for key, patterns in table.items():
            try:
                AllowList.parse(patterns)
            except PatternError as exc:
                problems.append(doc.diag((section, key), str(exc)))
    if model.default is not None:
        try:
            AllowList.parse(model.default)
        except PatternError as exc:
            problems.append(doc.diag(("default",), str(exc)))
    if problems:
        raise FleetConfigError(problems)
    audiences = (model.audience,) if isinstance(model.audience, str) else tuple(model.audience)
    return OidcConfig(
        source=path,
        issuer=model.issuer,
        audiences=audiences,
        jwks_url=model.jwks_url,
        jwks_file=(path.parent / model.jwks_file) if model.jwks_file else None,
        identity_claim=model.identity_claim,
        groups_claim=model.groups_claim,
        algorithms=frozenset(model.algorithms),
        leeway_seconds=float(model.leeway_seconds),
        identities={k: tuple(v) for k, v in model.identities.items()},
        groups={k: tuple(v) for k, v in model.groups.items()},
        default=tuple(model.default) if model.default is not None else None,
    )


def _parse_jwks(doc: Any, where: str) -> dict[str | None, jwt.PyJWK]:
    """Usable signing keys of a JWKS document by ``kid`` (bad or non-signing keys skipped)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError(f"{where}: not a JWKS document (expected an object with 'keys')")
    keys: dict[str | None, jwt.PyJWK] = {}
    for i, data in enumerate(doc["keys"]):
        if (
            not isinstance(data, dict)
            or data.get("use", "sig") != "sig"
            or data.get("kty") == "oct"
        ):
            continue
        try:
            key = jwt.PyJWK(data)
        except jwt.PyJWTError as exc:
            log.warning("%s: key %d skipped: %s", where, i, exc)
            continue
        keys[key.key_id] = key
    if not keys:
        raise ValueError(f"{where}: no usable signing key")
    return keys


class JwksSource:
    """Signing keys from a JWKS file or URL, cached and refreshed as described above."""

    def __init__(
        self,
        *,
        url: str | None = None,
        file: Path | None = None,
        min_refresh_seconds: float = 30.0,
        max_age_seconds: float = 3600.0,
        timeout_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (url is None) == (file is None):
            raise ValueError("give exactly one of url and file")
        self.url = url
        self.file = file
        self.min_refresh_seconds = min_refresh_seconds
        self.max_age_seconds = max_age_seconds
        self.timeout_seconds = timeout_seconds
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._loaded_at: float | None = None
        self._last_attempt: float | None = None
        self._file_stamp: tuple[int, int] | None = None
        self._lock: asyncio.Lock | None = None
        self._client: httpx.AsyncClient | None = None
        if file is not None:
            self._load_file()

    def _load_file(self) -> None:
        assert self.file is not None
        st = self.file.stat()
        self._keys = _parse_jwks(_json_file(self.file), str(self.file))
        self._file_stamp = (st.st_mtime_ns, st.st_ino)
        self._loaded_at = self._clock()

    def _follow_file(self) -> None:
        assert self.file is not None
        now = self._clock()
        if self._last_attempt is not None and now - self._last_attempt < 1.0:
            return
        self._last_attempt = now
        try:
            st = self.file.stat()
            if (st.st_mtime_ns, st.st_ino) != self._file_stamp:
                self._load_file()
        except (OSError, ValueError) as exc:
            log.error("JWKS file not reloaded, the previous keys stay in use: %s", exc)

    async def _fetch(self) -> None:
        assert self.url is not None
        if self._lock is None:
            self._lock = asyncio.Lock()
        attempt = self._last_attempt
        async with self._lock:
            if self._last_attempt != attempt:
                return  # another task refreshed while we waited
            self._last_attempt = self._clock()
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=self.timeout_seconds)
            try:
                response = await self._client.get(self.url, headers={"accept": "application/json"})
                response.raise_for_status()
                self._keys = _parse_jwks(response.json(), self.url)
                self._loaded_at = self._clock()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("cannot fetch JWKS from %s: %s", self.url, exc)

    def _may_fetch(self) -> bool:
        return (
            self._last_attempt is None
            or self._clock() - self._last_attempt >= self.min_refresh_seconds
        )

    def key_nowait(self, kid: str | None) -> jwt.PyJWK | None:
        """The key for ``kid`` if it can be had without I/O; None: ``await get(kid)``.

        Raises ``AuthError`` when there is no such key and fetching again is
        not allowed yet (or the keys come from a file).
        """
        if self.file is not None:
            self._follow_file()
        elif self._may_fetch():
            if self._loaded_at is None or self._clock() - self._loaded_at > self.max_age_seconds:
                return None
            if self._find(kid) is None:
                return None  # the provider may have rotated its keys
        return self._found(kid)

    async def get(self, kid: str | None) -> jwt.PyJWK:
        """The key for ``kid``, fetching the JWKS when needed; ``AuthError`` if none."""
        key = self.key_nowait(kid)
        if key is not None:
            return key
        await self._fetch()
        return self._found(kid)

    def _found(self, kid: str | None) -> jwt.PyJWK:
        key = self._find(kid)
        if key is None:
            if not self._keys:
                raise AuthError("the identity provider's signing keys are unavailable", status=503)
            raise AuthError(f"JWT signed with an unknown key (kid {kid!r})")
        return key

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _json_file(path: Path) -> Any:
    import json

    with path.open("rb") as f:
        return json.load(f)


class OidcValidator:
    """Turns a JWT into an ``Identity`` (or an ``AuthError`` saying why not)."""

    def __init__(
        self,
        config: OidcConfig,
        *,
        jwks: JwksSource | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.jwks = jwks or JwksSource(url=config.jwks_url, file=config.jwks_file)
        self._wall = wall_clock
        self._verified: dict[str, tuple[Identity, float]] = {}

    def verify_nowait(
        self, token: str
    ) -> tuple[Identity, float] | Awaitable[tuple[Identity, float]]:
        """``(identity, expires_at)``, or an awaitable of it when the JWKS must be fetched.

        Raises ``AuthError`` (synchronously) for an invalid token. Callers on
        a synchronous path (the router's HTTP server) get an answer without
        a task in the common case: a cached token, or cached keys.
        """
        cached = self._verified.get(token)
        if cached is not None:
            if cached[1] > self._wall():
                return cached
            del self._verified[token]
        alg, kid = self._header(token)
        key = self.jwks.key_nowait(kid)
        if key is None:
            return self._verify_after_fetch(token, alg, kid)
        return self._decode(token, alg, key)

    async def verify(self, token: str) -> tuple[Identity, float]:
        """``(identity, expires_at)`` for a valid JWT; ``AuthError`` otherwise."""
        result = self.verify_nowait(token)
        return result if isinstance(result, tuple) else await result

    async def _verify_after_fetch(
        self, token: str, alg: str, kid: str | None
    ) -> tuple[Identity, float]:
        return self._decode(token, alg, await self.jwks.get(kid))

    def _header(self, token: str) -> tuple[str, str | None]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(
                "malformed bearer token (neither an mcp-fleet token nor a JWT)"
            ) from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.config.algorithms:
            raise AuthError(f"JWT algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        return alg, kid if isinstance(kid, str) else None

    def _decode(self, token: str, alg: str, key: jwt.PyJWK) -> tuple[Identity, float]:
        cfg = self.config
        if _FAMILY.get(alg[:2]) != key.key_type:
            raise AuthError(f"JWT algorithm {alg!r} does not match its key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=list(cfg.audiences),
                issuer=cfg.issuer,
                leeway=cfg.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("JWT expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError(f"JWT audience is not {' or '.join(cfg.audiences)}") from None
        except jwt.InvalidIssuerError:
            raise AuthError(f"JWT issuer is not {cfg.issuer}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"JWT lacks the {exc.claim!r} claim") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("JWT is not valid yet") from None
        except jwt.InvalidSignatureError:
            raise AuthError("JWT signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid JWT: {exc}") from None
        name = claims.get(cfg.identity_claim)
        if not isinstance(name, str) or not name:
            raise AuthError(f"JWT lacks the identity claim {cfg.identity_claim!r}")
        groups: list[str] = []
        if cfg.groups_claim is not None:
            raw = claims.get(cfg.groups_claim)
            if isinstance(raw, list):
                groups = [g for g in raw if isinstance(g, str)]
            elif isinstance(raw, str):
                groups = [raw]
        identity = self.identity_for(name, groups)
        if identity is None:
            raise AuthError(
                f"identity {name!r} has no access: map it under 'identities' or 'groups' "
                f"in {cfg.source.name}",
                status=403,
                error="insufficient_scope",
            )
        result = (identity, float(claims["exp"]))
        if len(self._verified) >= CACHE_SIZE:
            with contextlib.suppress(StopIteration, KeyError):
                del self._verified[next(iter(self._verified))]
        self._verified[token] = result
        return result

    def identity_for(self, name: str, groups: list[str] | tuple[str, ...] = ()) -> Identity | None:
        """The identity ``name`` (member of ``groups``) maps to, None when it maps to nothing."""
        cfg = self.config
        patterns: list[str] = []
        mapped = False
        if name in cfg.identities:
            mapped = True
            patterns += cfg.identities[name]
        for group in groups:
            if group in cfg.groups:
                mapped = True
                patterns += cfg.groups[group]
        if not mapped:
            if cfg.default is None:
                return None
            patterns = list(cfg.default)
        return Identity(name=name, kind="oidc", allow=AllowList.parse(patterns))

    async def aclose(self) -> None:
        await self.jwks.aclose()
