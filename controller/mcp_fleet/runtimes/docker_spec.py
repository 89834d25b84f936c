"""From a resolved ``ServerSpec`` to the Docker API's create arguments: pure, hardened.

The Docker runtime does I/O; this module decides what the container looks
like, and nothing else. Keeping it free of daemon calls lets unit tests check
every hardening rule, label and validation without Docker, and keeps the
runtime a thin executor (as docker compose separates its plan from its
executor).

Hardened by default, as the catalog allows:

- ``no-new-privileges``, every capability dropped, ``init`` (a real PID 1
  reaps zombies and forwards SIGTERM), a pids limit;
- a read-only root file system unless the entry says ``readOnly: false``,
  with a small tmpfs on ``/tmp`` because servers write temporary files;
- CPU and memory limits (``cpus``/``memory`` of the entry, else the fleet
  defaults of ``conventions``), swap disabled (swap limit = memory limit);
- bounded json-file logs (stderr is what ``logs`` reads; stdout is the
  protocol and also lands there, so the size is capped).

Network rule (the design says "no network unless the catalog asks for it"):
a container gets a network only when its entry does not say
``disableNetwork: true`` AND it either lists ``allowHosts`` or carries our
explicit key ``network: true`` (or ``network: <docker network name>``).
Everything else runs with ``network_mode: none``. ``allowHosts`` grants the
network but is not a firewall: hosts are not filtered by this runtime.

Secrets reach the container only through the API's environment: they are
never in the command, a label or the name, and ``ContainerPlan`` hides the
environment from ``repr`` so a logged plan cannot leak them.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from mcp_fleet import conventions
from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.model import CatalogEntry, RuntimeKind, ServerSpec, ServerType
from mcp_fleet.status import REASON_INVALID_SPEC

#: Processes and threads a server may have (Node servers use ~12 threads idle).
DEFAULT_PIDS_LIMIT: Final = 512
#: Size of the ``/tmp`` tmpfs mounted into read-only containers.
DEFAULT_TMPFS_SIZE: Final = "64m"
#: json-file rotation: what the daemon keeps of a container's output.
DEFAULT_LOG_MAX_SIZE: Final = "10m"
DEFAULT_LOG_MAX_FILES: Final = 2
#: Container-name prefix; the rest is ``<fleet>-<server>-<hash[:12]>``.
NAME_PREFIX: Final = "mcpf"
SHORT_HASH_LENGTH: Final = 12
#: Catalog key (our extension) that asks for a network explicitly.
NETWORK_KEY: Final = "network"

_NAME_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_.-]+")
_VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_NETWORK_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?\s*$", re.IGNORECASE)
_MEMORY_UNITS: Final = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
#: Docker refuses memory limits below 6 MiB.
_MIN_MEMORY_BYTES: Final = 6 * 1024**2
_VOLUME_MODES: Final = frozenset({"ro", "rw"})


class InvalidContainerSpec(RuntimeFailure):
    """The catalog entry cannot become a container (bad volume, memory, network...).

    Retrying cannot fix it: the planner marks the server failed with ``str(err)``.
    """

    reason = REASON_INVALID_SPEC


@dataclass(frozen=True, slots=True)
class Hardening:
    """Fleet-wide container settings the catalog does not override."""

    pids_limit: int = DEFAULT_PIDS_LIMIT
    tmpfs_size: str = DEFAULT_TMPFS_SIZE
    log_max_size: str = DEFAULT_LOG_MAX_SIZE
    log_max_files: int = DEFAULT_LOG_MAX_FILES
    default_cpus: float = conventions.DEFAULT_CPUS
    default_memory: str = conventions.DEFAULT_MEMORY


@dataclass(frozen=True, slots=True)
class ContainerPlan:
    """Everything needed to create one container, split as the SDK takes it.

    ``host`` goes to ``APIClient.create_host_config``; ``create_kwargs()``
    returns the arguments of ``APIClient.create_container``. ``environment``
    holds secret values, so it is left out of ``repr``.
    """

    name: str
    image: str
    labels: Mapping[str, str]
    command: tuple[str, ...] | None
    user: str | None
    stdin_open: bool
    host: Mapping[str, Any]
    environment: Mapping[str, str] = field(repr=False)

    def create_kwargs(self, host_config: Mapping[str, Any]) -> dict[str, Any]:
        """Arguments of ``create_container``: detached, stdin open, NOT StdinOnce, no TTY.

        ``detach=True`` is what keeps ``StdinOnce`` false in the SDK: with it
        set, the first attach to disconnect would close the server's stdin
        and end it, so the controller's probe would kill what it probed.
        """
        return {
            "image": self.image,
            "command": list(self.command) if self.command is not None else None,
            "name": self.name,
            "labels": dict(self.labels),
            "environment": [f"{k}={v}" for k, v in self.environment.items()],
            "user": self.user,
            "detach": True,
            "stdin_open": self.stdin_open,
            "tty": False,
            "host_config": dict(host_config),
        }


def container_name(fleet: str, server: str, config_hash: str) -> str:
    """``mcpf-<fleet>-<server>-<hash[:12]>``: a valid Docker name, unique per config hash.

    One name per config hash lets a replacement start before the old
    container is removed; the same hash twice is a name conflict the runtime
    resolves (never two copies of one configuration).
    """
    parts = [NAME_PREFIX, _name_part(fleet, 48), _name_part(server, 63)]
    parts.append(_name_part(config_hash[:SHORT_HASH_LENGTH], SHORT_HASH_LENGTH))
    return "-".join(p for p in parts if p)


def _name_part(text: str, limit: int) -> str:
    return _NAME_BAD_CHARS.sub("-", text).strip("-._")[:limit].strip("-._")


def labels_for(spec: ServerSpec, *, fleet: str) -> dict[str, str]:
    """The ownership labels: fleet, server, config hash, runtime. Never a secret."""
    return {
        conventions.LABEL_FLEET: fleet,
        conventions.LABEL_SERVER: spec.name,
        conventions.LABEL_CONFIG_HASH: spec.config_hash(),
        conventions.LABEL_RUNTIME: RuntimeKind.DOCKER.value,
    }


def network_mode(entry: CatalogEntry) -> str | None:
    """``"none"`` unless the entry asks for a network (see the module docstring).

    Returns ``None`` for "the daemon's default network", or the name given
    by ``network: <name>``.
    """
    if entry.disable_network:
        return "none"
    asked = entry.extra.get(NETWORK_KEY)
    if isinstance(asked, str) and asked and asked.lower() not in {"true", "false", "none"}:
        if not _NETWORK_NAME_RE.match(asked):
            raise InvalidContainerSpec(
                f"{entry.name}: {NETWORK_KEY}: expected true/false or a Docker network name,"
                f" got {asked!r}"
            )
        return asked
    if asked is True or (isinstance(asked, str) and asked.lower() == "true"):
        return None
    if entry.allow_hosts:
        return None
    return "none"


def parse_memory(text: str, *, server: str = "") -> int:
    """``"2g"``, ``"512m"``, ``"256MiB"``, ``"1073741824"`` -> bytes; clear error otherwise."""
    match = _MEMORY_RE.match(text)
    where = f"{server}: memory" if server else "memory"
    if not match:
        raise InvalidContainerSpec(f"{where}: expected a size such as 512m or 2g, got {text!r}")
    value = float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()]
    if value < _MIN_MEMORY_BYTES:
        raise InvalidContainerSpec(f"{where}: at least 6m is needed, got {text!r}")
    return int(value)


def parse_volume(text: str, *, server: str = "") -> dict[str, Any]:
    """One catalog volume ``source:target[:ro|rw]`` -> a Docker ``Mounts`` entry.

    The source is an absolute host path (a bind mount, which must exist: the
    daemon refuses rather than creating a root-owned directory) or a named
    volume. Relative paths, ``~``, ``..`` components and unresolved
    ``{{templates}}`` are refused.
    """
    where = f"{server}: volumes: {text!r}" if server else f"volumes: {text!r}"
    if "{{" in text or "}}" in text:
        raise InvalidContainerSpec(f"{where}: unresolved template in a volume")
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise InvalidContainerSpec(f"{where}: expected source:target or source:target:ro")
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in _VOLUME_MODES:
        raise InvalidContainerSpec(f"{where}: mode must be ro or rw, got {mode!r}")
    if not target.startswith("/") or ".." in target.split("/"):
        raise InvalidContainerSpec(f"{where}: target must be an absolute path without '..'")
    if source.startswith("/"):
        if ".." in source.split("/"):
            raise InvalidContainerSpec(f"{where}: host path must not contain '..'")
        kind = "bind"
        source = posixpath.normpath(source)
    elif _VOLUME_NAME_RE.match(source):
        kind = "volume"
    else:
        raise InvalidContainerSpec(
            f"{where}: source must be an absolute host path or a volume name"
        )
    return {
        "Type": kind,
        "Source": source,
        "Target": posixpath.normpath(target),
        "ReadOnly": mode == "ro",
    }


def problem(spec: ServerSpec) -> str | None:
    """Why this runtime cannot run ``spec`` as configured (None when it can)."""
    entry = spec.entry
    if entry is None:
        return f"{spec.name}: no catalog entry"
    if entry.type is ServerType.REMOTE:
        return f"{spec.name}: a remote server: nothing to run in Docker"
    if not entry.image:
        return f"{spec.name}: the catalog entry has no image, so it cannot run in Docker"
    if entry.transport != "stdio":
        return (
            f"{spec.name}: transport {entry.transport!r}: the docker runtime serves stdio"
            " servers (their stdio is attached through the Docker API)"
        )
    try:
        build(spec, fleet="check")
    except InvalidContainerSpec as exc:
        return str(exc)
    return None


def build(spec: ServerSpec, *, fleet: str, hardening: Hardening | None = None) -> ContainerPlan:
    """The container for ``spec`` in ``fleet``; raises ``InvalidContainerSpec``."""
    h = hardening or Hardening()
    entry = spec.entry
    if entry is None or not entry.image:
        raise InvalidContainerSpec(f"{spec.name}: the catalog entry has no image")
    cpus = entry.cpus if entry.cpus is not None else h.default_cpus
    if not cpus > 0:
        raise InvalidContainerSpec(f"{spec.name}: cpus: expected a positive number, got {cpus}")
    memory = parse_memory(entry.memory or h.default_memory, server=spec.name)
    mounts = [parse_volume(v, server=spec.name) for v in entry.volumes]
    targets = [m["Target"] for m in mounts]
    if len(set(targets)) != len(targets):
        raise InvalidContainerSpec(f"{spec.name}: volumes: two volumes share one target")
    host: dict[str, Any] = {
        "init": True,
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
        "read_only": entry.read_only,
        "nano_cpus": round(cpus * 1e9),
        "mem_limit": memory,
        "memswap_limit": memory,
        "pids_limit": h.pids_limit,
        "network_mode": network_mode(entry),
        "log_config": {
            "Type": "json-file",
            "Config": {"max-size": h.log_max_size, "max-file": str(h.log_max_files)},
        },
    }
    if "/tmp" not in targets:
        host["tmpfs"] = {"/tmp": f"rw,nosuid,nodev,size={h.tmpfs_size}"}
    if mounts:
        host["mounts"] = mounts
    if host["network_mode"] is None:
        del host["network_mode"]
    environment = dict(spec.env)
    environment.update(spec.secret_env)
    return ContainerPlan(
        name=container_name(fleet, spec.name, spec.config_hash()),
        image=entry.image,
        labels=labels_for(spec, fleet=fleet),
        command=tuple(entry.command) if entry.command else None,
        user=entry.user or None,
        stdin_open=entry.transport == "stdio",
        host=host,
        environment=environment,
    )
