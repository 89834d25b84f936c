"""Bearer tokens for the router: ``<fleet dir>/tokens.yaml``, hashed at rest.

``mcp-fleet token create NAME`` draws 32 random bytes (``secrets``), shows the
token once (``mcpf_`` + 43 URL-safe characters; the prefix lets secret
scanners and people recognise it) and stores only its SHA-256, with the
name, the creation time and the allow-list (``identity.AllowList``
patterns). The file is written atomically with mode 0600::

    version: 1
    tokens:
      alice:
        sha256: 5f0c...e1        # hex digest of the token, never the token
        created: '2026-01-01T12:00:00Z'
        allow: ['*']             # or [github, 'time:get_current_time']

Why SHA-256 and not bcrypt/argon2: slow password hashes exist to make
guessing a low-entropy secret expensive once its hash leaks. A token of 256
random bits cannot be guessed whatever the hash costs, so a fast hash is
exactly as safe at rest, and it keeps verification at about a microsecond
per request; bcrypt or argon2 would spend 50-100 ms of CPU on every call
(or need a cache of verified tokens, which is a plaintext store again).

Verification looks the digest up in a dict and confirms it with
``hmac.compare_digest``: the lookup's timing depends only on SHA-256 output
the caller cannot steer toward an unknown stored digest, and the final
comparison is constant-time.

``TokenVerifier`` is what the middleware holds: it never reads the file on
a request, it only ``stat``s it at most once per second and reloads when the
file changed (mtime, size or inode), so ``token create`` and ``token revoke``
take effect within a second without a restart. A file broken while running
is logged and the last good tokens stay in force; broken at start, it is a
``FleetConfigError`` (file, line, field), since serving with unknown auth
would be worse than not serving.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from mcp_fleet import conventions
from mcp_fleet.config.atomic import atomic_write
from mcp_fleet.config.schema import validation_diagnostics
from mcp_fleet.config.yamlsource import parse_yaml
from mcp_fleet.errors import Diagnostic, FleetConfigError
from mcp_fleet.gateway.identity import AllowList, Identity, PatternError

log = logging.getLogger(__name__)

TOKEN_PREFIX: Final = "mcpf_"
TOKEN_BYTES: Final = 32
#: Longer bearer values are refused before hashing (ours are 48 characters).
MAX_TOKEN_LENGTH: Final = 512
NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
FILE_MODE: Final = 0o600
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEADER = (
    "# Access tokens for the mcp-fleet router, managed with `mcp-fleet token`.\n"
    "# Only SHA-256 hashes are stored: a token is shown once, when it is created.\n"
)


class TokenError(ValueError):
    """A token command that cannot be done (bad name, name taken, unknown name)."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    sha256: StrictStr
    created: StrictStr
    allow: list[StrictStr]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: Literal[1] = 1
    tokens: dict[StrictStr, _Entry] = {}


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One token as stored: never the token itself."""

    name: str
    digest: bytes
    created: str
    allow: AllowList

    @property
    def identity(self) -> Identity:
        return Identity(
            name=self.name, kind="token", allow=self.allow, credential=digest_tag(self.digest)
        )


def tokens_path(home: Path) -> Path:
    """Where the tokens of the fleet in ``home`` live."""
    return home / conventions.TOKENS_FILE


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise TokenError(
            f"invalid token name {name!r}: use letters, digits, '_', '.', '@' or '-' "
            "(at most 64, starting with a letter or digit)"
        )
    return name


def load_tokens(path: Path) -> dict[str, TokenRecord]:
    """The tokens in ``path`` by name (none when the file does not exist).

    Raises ``FleetConfigError`` with file, line and field for a broken file.
    """
    try:
        raw = path.read_bytes()
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise FleetConfigError(
            Diagnostic(message=f"cannot read file: {exc.strerror or exc}", file=path)
        ) from None
    if mode & 0o077:
        log.warning(
            "%s is accessible by group or others (mode %o); run: chmod 600 %s", path, mode, path
        )
    doc = parse_yaml(raw, path)
    try:
        model = _Doc.model_validate(doc.data if doc.data is not None else {})
    except ValidationError as exc:
        raise FleetConfigError(validation_diagnostics(exc, doc, ())) from None
    problems: list[Diagnostic] = []
    records: dict[str, TokenRecord] = {}
    for name, entry in model.tokens.items():
        at = ("tokens", name)
        if not NAME_RE.match(name):
            problems.append(doc.diag(at, f"invalid token name {name!r}"))
            continue
        if not _HEX64.match(entry.sha256):
            problems.append(doc.diag((*at, "sha256"), "expected 64 lowercase hex digits"))
            continue
        try:
            allow = AllowList.parse(entry.allow)
        except PatternError as exc:
            problems.append(doc.diag((*at, "allow"), str(exc)))
            continue
        records[name] = TokenRecord(name, bytes.fromhex(entry.sha256), entry.created, allow)
    if problems:
        raise FleetConfigError(problems)
    return records


def _dump(records: dict[str, TokenRecord]) -> str:
    doc = {
        "version": 1,
        "tokens": {
            r.name: {"sha256": r.digest.hex(), "created": r.created, "allow": r.allow.patterns()}
            for r in sorted(records.values(), key=lambda r: r.name)
        },
    }
    return _HEADER + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the tokens file between processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def create_token(
    path: Path, name: str, *, allow: AllowList, now: dt.datetime | None = None
) -> tuple[str, TokenRecord]:
    """Create token ``name``; returns ``(token, record)``. The token is never stored."""
    check_name(name)
    with _locked(path):
        records = load_tokens(path)
        if name in records:
            raise TokenError(f"a token named {name!r} exists; revoke it first")
        token = new_token()
        stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        record = TokenRecord(name, token_digest(token), stamp, allow)
        records[name] = record
        atomic_write(path, _dump(records), mode=FILE_MODE)
    return token, record


def revoke_token(path: Path, name: str) -> bool:
    """Remove token ``name``; False when there was none."""
    with _locked(path):
        records = load_tokens(path)
        if records.pop(name, None) is None:
            return False
        atomic_write(path, _dump(records), mode=FILE_MODE)
    return True


def digest_tag(digest: bytes) -> str:
    """A short, non-secret reference to a stored digest (binds a status-page cookie to it)."""
    return base64.urlsafe_b64encode(hashlib.sha256(b"tag:" + digest).digest()[:12]).decode()


class TokenVerifier:
    """Checks bearer tokens against the tokens file, following its changes."""

    def __init__(
        self,
        path: Path,
        *,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.check_interval = check_interval
        self._clock = clock
        self._by_digest: dict[bytes, tuple[TokenRecord, Identity]] = {}
        self._by_name: dict[str, TokenRecord] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._last_check: float | None = None
        self._reload(strict=True)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:  # unreadable directory: keep what we have
            log.error("cannot stat %s, the current tokens stay in force: %s", self.path, exc)
            return self._stamp
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _reload(self, *, strict: bool) -> None:
        stamp = self._file_stamp()
        try:
            records = load_tokens(self.path)
        except FleetConfigError as exc:
            if strict:
                raise
            log.error("tokens file not reloaded, the previous tokens stay in force: %s", exc)
            self._stamp = stamp
            return
        self._by_name = records
        self._by_digest = {r.digest: (r, r.identity) for r in records.values()}
        self._stamp = stamp

    def maybe_reload(self) -> None:
        """Reload if the file changed; stats it at most once per ``check_interval``."""
        now = self._clock()
        if self._last_check is not None and now - self._last_check < self.check_interval:
            return
        self._last_check = now
        if self._file_stamp() != self._stamp:
            self._reload(strict=False)

    @property
    def configured(self) -> bool:
        """Whether any token exists (then every request needs one)."""
        self.maybe_reload()
        return bool(self._by_name)

    def verify(self, token: str) -> Identity | None:
        """The identity of ``token``, or None for an unknown one."""
        self.maybe_reload()
        if len(token) > MAX_TOKEN_LENGTH:
            return None
        digest = token_digest(token)
        found = self._by_digest.get(digest)
        if found is None or not hmac.compare_digest(found[0].digest, digest):
            return None
        return found[1]

    def record(self, name: str) -> TokenRecord | None:
        """The current record named ``name`` (revoked: None)."""
        self.maybe_reload()
        return self._by_name.get(name)

    def records(self) -> list[TokenRecord]:
        self.maybe_reload()
        return sorted(self._by_name.values(), key=lambda r: r.name)
