"""The demand channel between processes: where its socket lives and what goes over it.

``mcp-fleet up`` runs the controller and the router in one process, and the
on-demand questions (``endpoints.Demand``: a call waits for a cold server;
which servers are busy or idle; may an idle one stop now) are plain calls
on one event loop. ``mcp-fleet controller`` and ``mcp-fleet router --dir``
are two processes, so the same questions travel over a Unix socket that the
controller listens on (``reconcile.demand_server``) and the router connects
to (``router.demand_client``).

Why a socket, and not files in the state directory like ``status.json``:

- ``retire`` is a question whose answer changes the asker's next step and
  must be atomic on the router's side (mark the backend retired, then say
  yes): a file would need a request file, a reply file, polling and a
  protocol for who deletes what, and a stale reply could stop a busy server.
- A call for a cold server waits for the controller: a message wakes it at
  once, where a file watch adds its debounce to every cold start.
- A connection says who is there: a router that dies (even by SIGKILL)
  closes it, so the controller stops counting it at once instead of
  trusting a file it left behind; and the controller may start, stop or
  restart while the router reconnects.
- Mode 600 in the fleet's private state directory (and a peer-credential
  check) keeps it to the fleet's owner, as the status file is.

The wire format is one JSON object per line (orjson), checked with pydantic:

- router -> controller: ``{"op": "hello", "version": 1, "pid": P}`` once,
  ``{"op": "want", "server": S}`` when a call waits for a cold server,
  ``{"op": "reply", "id": N, "activity": {S: {"idle": s, "inflight": n,
  "waiting": n}}}`` and ``{"op": "reply", "id": N, "retire": true|false}``.
- controller -> router: ``{"op": "activity", "id": N}``,
  ``{"op": "retire", "id": N, "server": S}`` and, before the old instance
  of a replaced server is stopped, ``{"op": "release", "id": N, "server":
  S, "instance": I, "timeout": s}``, which the router answers (``{"op":
  "reply", "id": N, "released": true|false}``) once it no longer uses
  instance I, or when ``timeout`` runs out. A router of an older version
  ignores the question; the controller then waits its timeout out.

Unix socket paths are limited to 107 bytes. A fleet whose
``<state>/demand.sock`` is longer gets a short path under
``$XDG_RUNTIME_DIR`` (or ``/tmp``) in a private ``mcp-fleet-<uid>``
folder, and ``<state>/demand.sock.path`` names it for the router.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mcp_fleet import conventions
from mcp_fleet.config.atomic import atomic_write
from mcp_fleet.endpoints import Activity
from mcp_fleet.errors import RuntimeFailure

PROTOCOL_VERSION: Final = 1
SOCKET_NAME: Final = "demand.sock"
POINTER_NAME: Final = "demand.sock.path"
#: sun_path holds 108 bytes on Linux, the last one a NUL.
MAX_SOCKET_PATH_BYTES: Final = 107
#: Longest line either side accepts (an activity answer for a few thousand servers).
MAX_LINE_BYTES: Final = 1 << 20


def _server_name(value: str) -> str:
    if not conventions.SERVER_NAME_RE.match(value):
        raise ValueError(f"not a server name: {value!r}")
    return value


ServerName = Annotated[str, AfterValidator(_server_name)]


class DemandProtocolError(ValueError):
    """A line that is not a message of this protocol."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class WireActivity(_Message):
    idle: float = Field(ge=0)
    inflight: int = Field(default=0, ge=0)
    waiting: int = Field(default=0, ge=0)


class Hello(_Message):
    op: Literal["hello"]
    version: int
    pid: int = 0


class Want(_Message):
    op: Literal["want"]
    server: ServerName


class Reply(_Message):
    op: Literal["reply"]
    id: int
    activity: dict[ServerName, WireActivity] | None = None
    retire: bool | None = None
    released: bool | None = None


class ActivityQuery(_Message):
    op: Literal["activity"]
    id: int


class RetireQuery(_Message):
    op: Literal["retire"]
    id: int
    server: ServerName


class ReleaseQuery(_Message):
    op: Literal["release"]
    id: int
    server: ServerName
    instance: str = Field(min_length=1, max_length=512)
    timeout: float = Field(ge=0, le=3600)


Message = Hello | Want | Reply | ActivityQuery | RetireQuery | ReleaseQuery
_MESSAGE: Final = TypeAdapter[Message](Annotated[Message, Field(discriminator="op")])


def encode(message: Message) -> bytes:
    """One message as one line."""
    return orjson.dumps(message.model_dump(exclude_none=True)) + b"\n"


def decode(line: bytes) -> Message:
    """Parse one line; ``DemandProtocolError`` says what is wrong with it."""
    try:
        return _MESSAGE.validate_python(orjson.loads(line))
    except orjson.JSONDecodeError as exc:
        raise DemandProtocolError(f"not JSON: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise DemandProtocolError(f"{where}: {first['msg']}") from None


def activity_to_wire(activity: Mapping[str, Activity]) -> dict[str, WireActivity]:
    return {
        name: WireActivity(idle=max(0.0, a.idle_seconds), inflight=a.inflight, waiting=a.waiting)
        for name, a in activity.items()
    }


def activity_from_wire(
    wire: Mapping[str, WireActivity], *, age: float = 0.0
) -> dict[str, Activity]:
    """What a router said, ``age`` seconds later (its idle clocks went on meanwhile)."""
    return {
        name: Activity(idle_seconds=a.idle + max(0.0, age), inflight=a.inflight, waiting=a.waiting)
        for name, a in wire.items()
    }


# -- where the socket lives -----------------------------------------------------


def fits(path: Path) -> bool:
    """Whether ``path`` can be bound as a Unix socket."""
    return len(os.fsencode(path)) <= MAX_SOCKET_PATH_BYTES


def short_socket_path(state_dir: Path, *, runtime_dir: str | None = None) -> Path:
    """A short path for a fleet whose state directory is too deep: one per state directory."""
    digest = hashlib.sha256(os.fsencode(state_dir.resolve())).hexdigest()[:16]
    candidates = [runtime_dir] if runtime_dir is not None else []
    if runtime_dir is None and os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(os.environ["XDG_RUNTIME_DIR"])
    candidates += [tempfile.gettempdir(), "/tmp"]
    for base in candidates:
        if not base or not Path(base).is_dir():
            continue
        path = Path(base) / f"mcp-fleet-{os.getuid()}" / f"{digest}.sock"
        if fits(path):
            return path
    raise RuntimeFailure(
        f"{state_dir / SOCKET_NAME}: longer than the {MAX_SOCKET_PATH_BYTES} bytes a Unix socket "
        "path may have, and no short folder ($XDG_RUNTIME_DIR, /tmp) is usable; "
        "move the fleet directory to a shorter path"
    )


def bind_path(state_dir: Path) -> Path:
    """Where the controller listens; writes or removes the pointer file accordingly.

    The caller holds the fleet's controller lock, so nothing else uses these paths.
    """
    pointer = state_dir / POINTER_NAME
    direct = state_dir / SOCKET_NAME
    if fits(direct):
        pointer.unlink(missing_ok=True)
        return direct
    path = short_socket_path(state_dir)
    _private_dir(path.parent)
    atomic_write(pointer, os.fsencode(path) + b"\n", mode=0o600)
    return path


def locate(state_dir: Path) -> Path | None:
    """Where a router finds the controller's socket, or None when there is none yet."""
    try:
        named = (state_dir / POINTER_NAME).read_bytes().strip()
    except FileNotFoundError:
        named = b""
    except OSError:
        return None
    if named:
        path = Path(os.fsdecode(named))
        return path if fits(path) else None
    direct = state_dir / SOCKET_NAME
    return direct if fits(direct) else None


def _private_dir(path: Path) -> None:
    """Create ``path`` mode 700, or check that the existing one is ours and private."""
    path.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RuntimeFailure(f"{path}: not a folder of this user; remove it or fix its owner")
    if stat.S_IMODE(info.st_mode) & 0o077:
        path.chmod(0o700)
