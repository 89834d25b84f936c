"""The desired state of a fleet: immutable, typed, resolved.

Loaders (``mcp_fleet.config``) turn catalogs, registry, config, tools and
secrets into one ``DesiredState``; the planner, the runtimes and the router
only ever see these frozen dataclasses, never raw YAML. Pydantic models live
at the file edge in ``config``; inside we keep plain frozen dataclasses so a
``DesiredState`` is hashable, cheap to compare and safe to share between
tasks.

Secret values are carried in ``ServerSpec.secret_env`` (needed to start the
server) but are hidden from ``repr`` and never serialised: ``to_json`` and
``config_hash`` only ever see a hash of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mcp_fleet.errors import Diagnostic


def frozen_map(values: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only mapping view, so nobody mutates a DesiredState by accident."""
    return MappingProxyType(dict(values or {}))


class ServerType(StrEnum):
    """Catalog ``type``: a server we run, or a remote one we only route to."""

    SERVER = "server"
    REMOTE = "remote"


class Lifecycle(StrEnum):
    """``always`` keeps a server running; ``on-demand`` scales it to zero when idle."""

    ALWAYS = "always"
    ON_DEMAND = "on-demand"


class SessionMode(StrEnum):
    """Whether client sessions share one backend (default) or get one each."""

    SHARED = "shared"
    PER_CLIENT = "per-client"


class RuntimeKind(StrEnum):
    """Where a server runs."""

    PROCESS = "process"
    DOCKER = "docker"
    KUBERNETES = "kubernetes"
    REMOTE = "remote"


@dataclass(frozen=True, slots=True)
class EnvVar:
    """A catalog ``env`` entry; ``value`` may still hold ``{{server.key}}`` templates."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A catalog ``secrets`` entry: the secret ``name`` is looked up, ``env`` receives it."""

    name: str
    env: str
    required: bool = True
    description: str = ""


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """Our extension: how to run a server as a local process (the process runtime)."""

    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=frozen_map)
    cwd: str | None = None


@dataclass(frozen=True, slots=True)
class RemoteSpec:
    """A ``type: remote`` server reached over HTTP."""

    url: str
    transport_type: str = "streamable-http"
    headers: Mapping[str, str] = field(default_factory=frozen_map)


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One server as a catalog describes it (after layering), before resolution."""

    name: str
    source: Path
    source_line: int | None = None
    title: str = ""
    description: str = ""
    categories: tuple[str, ...] = ()
    type: ServerType = ServerType.SERVER
    image: str | None = None
    command: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    secrets: tuple[SecretRef, ...] = ()
    volumes: tuple[str, ...] = ()
    user: str | None = None
    disable_network: bool = False
    allow_hosts: tuple[str, ...] = ()
    long_lived: bool = False
    prefix: str | None = None
    remote: RemoteSpec | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    config_schema: Mapping[str, Any] | None = None
    process: ProcessSpec | None = None
    lifecycle: Lifecycle = Lifecycle.ALWAYS
    idle_timeout_seconds: float | None = None
    sessions: SessionMode = SessionMode.SHARED
    cpus: float | None = None
    memory: str | None = None
    read_only: bool = True
    call_timeout_seconds: float | None = None
    transport: str = "stdio"
    port: int | None = None
    #: Keys we did not recognise, kept so newer catalogs still round-trip.
    extra: Mapping[str, Any] = field(default_factory=frozen_map)


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One registry entry resolved against the catalogs, config, tools and secrets.

    ``problems`` is non-empty when the server cannot run (unknown catalog entry,
    missing required secret, ...): the planner marks it failed with those
    reasons and leaves the rest of the fleet alone.
    """

    name: str
    enabled: bool
    entry: CatalogEntry | None
    catalog: str | None = None
    ref: str | None = None
    #: Resolved non-secret environment (templates filled from config).
    env: Mapping[str, str] = field(default_factory=frozen_map)
    #: Resolved secret environment: values hidden from repr, never serialised.
    secret_env: Mapping[str, str] = field(default_factory=frozen_map, repr=False)
    config: Mapping[str, Any] = field(default_factory=frozen_map)
    #: Tool allow-list from tools.yaml (None: everything allowed).
    tools_allow: tuple[str, ...] | None = None
    problems: tuple[Diagnostic, ...] = ()

    @property
    def usable(self) -> bool:
        return self.entry is not None and not self.problems

    def secret_digest(self) -> str:
        """A hash of the secret values, so a rotated secret changes the config hash."""
        h = hashlib.sha256()
        for key in sorted(self.secret_env):
            h.update(key.encode())
            h.update(b"\0")
            h.update(self.secret_env[key].encode())
            h.update(b"\0")
        return h.hexdigest()

    def canonical(self) -> dict[str, Any]:
        """The spec fields that, when changed, need a new instance of the server."""
        e = self.entry
        if e is None:
            return {"name": self.name, "missing": True}
        return {
            "name": self.name,
            "type": e.type.value,
            "image": e.image,
            "command": list(e.command),
            "process": None
            if e.process is None
            else {
                "command": list(e.process.command),
                "env": dict(sorted(e.process.env.items())),
                "cwd": e.process.cwd,
            },
            "remote": None
            if e.remote is None
            else {
                "url": e.remote.url,
                "transport_type": e.remote.transport_type,
                "headers": dict(sorted(e.remote.headers.items())),
            },
            "env": dict(sorted(self.env.items())),
            "secrets": self.secret_digest(),
            "volumes": list(e.volumes),
            "user": e.user,
            "disable_network": e.disable_network,
            "allow_hosts": list(e.allow_hosts),
            "cpus": e.cpus,
            "memory": e.memory,
            "read_only": e.read_only,
            "transport": e.transport,
            "port": e.port,
        }

    def config_hash(self) -> str:
        """SHA-256 of the canonical spec (secrets only as a hash): changed hash, replace."""
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class FleetFiles:
    """Where each input of a fleet was read from (after ``--dir`` and Docker's flags)."""

    home: Path
    catalogs: tuple[Path, ...]
    registry: Path
    config: Path
    tools: Path
    secrets: Path
    #: True when ``catalogs`` is the directory's ``catalogs/*.yaml`` (no ``--catalog``
    #: given): readers then rescan the directory, so a catalog file added while
    #: the controller runs is picked up.
    catalogs_from_dir: bool = False

    @property
    def state_dir(self) -> Path:
        return self.home / ".state"


@dataclass(frozen=True, slots=True)
class DesiredState:
    """Everything the fleet should be, as of one successful read of its files."""

    fleet: str
    files: FleetFiles
    #: Every server of the merged catalogs, by name.
    catalog: Mapping[str, CatalogEntry]
    #: Every registry entry, enabled or not, resolved.
    servers: Mapping[str, ServerSpec]
    #: Warnings (and per-server errors) found while loading; never fatal.
    diagnostics: tuple[Diagnostic, ...] = ()

    def enabled(self) -> list[ServerSpec]:
        """Servers that should run, in name order (deterministic plans)."""
        return [s for _, s in sorted(self.servers.items()) if s.enabled]
