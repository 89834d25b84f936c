"""Registry ConfigMap mode, the pure half: ConfigMap data in, MCPServer manifests out.

One ``registry.yaml`` (and its catalogs) can drive a cluster as it drives a
laptop: the operator is told the name of a ConfigMap in its namespace and
keeps one MCPServer per enabled, usable server of that registry. This module
decides *what* those MCPServers are; ``registry_watch`` watches the
ConfigMap and applies the difference.

The ConfigMap's keys (anything else is ignored with a warning):

- ``registry.yaml`` (required: a ConfigMap without it changes nothing, where
  a missing file would mean an empty fleet and delete every server);
- ``config.yaml`` and ``tools.yaml`` (optional), as in a fleet directory;
- catalogs as ``<name>.catalog.yaml`` (or ``.catalog.yml``): ``<name>`` is
  what a registry entry's ``catalog:`` names, as a file stem does in
  ``catalogs/``; they are layered in key order (a later entry wins).

The data is written to a private temporary directory and read by the very
loaders the local controller uses (``load_fleet``), so both accept and
refuse exactly the same files; diagnostics name the ConfigMap key, line and
field (``registry.yaml:7: registry.cisco-asa.enabled: expected true/false``).
Secrets are never in the ConfigMap: each catalog ``secrets:`` entry becomes
a ``secretRef`` to one Secret (``--registry-secret``), key = the secret's
name, and the kubelet injects it; the operator never reads the value.

A catalog entry maps field by field (image, command -> args, env, secrets,
transport, port, lifecycle/idleTimeout, cpus/memory -> limits, network the
way the docker runtime reads it, readOnly, user, sessions, prefix, the
tools.yaml allow-list; ``remote`` -> ``spec.remote``). What the Docker format
cannot say about a cluster (the full command a stdio server needs when the
bridge runs as a sidecar, since the image's entrypoint is not known here)
goes under our catalog extension key ``kubernetes:``, a mapping of MCPServer
spec fields merged over the derived spec (mappings merge, anything else
replaces). Every result is parsed by the operator's own spec model: a
server that would only be Degraded (or has no image, or a problem in the
registry) is skipped with a diagnostic, and the rest of the fleet is made.

Each manifest is labelled ``mcp-fleet.dev/registry=<configmap>`` (the only
MCPServers the sync ever updates or deletes), owned by the ConfigMap
(deleting it lets the garbage collector remove them) and stamped with the
hash of its own content (``mcp-fleet.dev/applied-hash``), so an unchanged
server is never rewritten and a change is found without comparing fields.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

from mcp_fleet import conventions as c
from mcp_fleet.config import load_fleet, resolve_files
from mcp_fleet.errors import Diagnostic, FleetConfigError, Severity
from mcp_fleet.kube.spec import parse_spec
from mcp_fleet.model import CatalogEntry, Lifecycle, ServerSpec, ServerType, SessionMode
from mcp_fleet.operator.k8s_plan import Manifest, canonical_hash
from mcp_fleet.runtimes.docker_spec import NETWORK_KEY, InvalidContainerSpec, parse_memory

CATALOG_KEY_SUFFIXES: Final = (".catalog.yaml", ".catalog.yml")
#: Keys copied as they are (the fleet directory's file names).
FILE_KEYS: Final = (c.REGISTRY_FILE, c.CONFIG_FILE, c.TOOLS_FILE)
#: Catalog extension key: MCPServer spec fields merged over the derived spec.
KUBERNETES_KEY: Final = "kubernetes"
GROUP_VERSION: Final = f"{c.K8S_GROUP}/{c.K8S_VERSION}"
SECRET_KEY_RE: Final = re.compile(r"^[-._a-zA-Z0-9]+$")
_MI: Final = 1024**2
_REMOTE_TRANSPORTS: Final = {
    "sse": "sse",
    "streamable-http": "streamable-http",
    "http": "streamable-http",
}


@dataclass(frozen=True, slots=True)
class RegistrySource:
    """The ConfigMap the servers come from, and the Secret their secrets are in."""

    namespace: str
    configmap: str
    uid: str
    secret: str | None = None


@dataclass(frozen=True, slots=True)
class RegistryPlan:
    """The MCPServers the registry wants, and why the others were left out."""

    servers: tuple[Manifest, ...]
    #: One error per enabled server that is not made (the rest of the fleet is).
    skipped: tuple[Diagnostic, ...] = ()
    #: Things to know that change nothing (unknown keys, overridden catalog entries...).
    warnings: tuple[Diagnostic, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m["metadata"]["name"] for m in self.servers)


@dataclass(frozen=True, slots=True)
class ServerAction:
    """One change to one MCPServer, with its cause (``str()`` is the log line)."""

    verb: Literal["create", "update", "delete"]
    name: str
    cause: str
    manifest: Manifest | None = None

    def __str__(self) -> str:
        return f"{self.verb} MCPServer {self.name} ({self.cause})"


class SkipServer(Exception):
    """This enabled server cannot become an MCPServer (``field`` under ``registry.<name>``)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def catalog_name(key: str) -> str | None:
    """``custom.catalog.yaml`` -> ``custom``; None for a key that is not a catalog."""
    for suffix in CATALOG_KEY_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)]
    return None


def plan_registry(data: Mapping[str, str], source: RegistrySource) -> RegistryPlan:
    """The MCPServers ``data`` (a ConfigMap's ``data``) asks for.

    Raises ``FleetConfigError`` when a file is broken as a whole (or
    ``registry.yaml`` is missing): then nothing should change.
    """
    warnings: list[Diagnostic] = []
    with tempfile.TemporaryDirectory(prefix="mcp-fleet-registry-") as tmp:
        root = Path(tmp)
        keys = _write(data, root, warnings)
        files = resolve_files(
            root,
            catalogs=[root / c.CATALOGS_DIR / f"{catalog_name(k)}{Path(k).suffix}" for k in keys],
        )
        names = {root / k: k for k in FILE_KEYS}
        names.update({path: key for path, key in zip(files.catalogs, keys, strict=True)})
        try:
            with _quiet(logging.getLogger("mcp_fleet.config")):
                state = load_fleet(files, fleet=source.configmap, resolve_secrets=False)
        except FleetConfigError as exc:
            raise FleetConfigError(_relabel(exc.diagnostics, names)) from None

    servers: list[Manifest] = []
    skipped: list[Diagnostic] = []
    for name, server in sorted(state.servers.items()):
        if not server.enabled:
            continue
        if not server.usable or server.entry is None:
            skipped.extend(server.problems)
            continue
        entry = server.entry
        try:
            manifest = server_manifest(server, entry, source, warnings)
        except SkipServer as skip:
            field = f"registry.{name}" + (f".{skip.field}" if skip.field else "")
            skipped.append(
                Diagnostic(skip.message, entry.source, entry.source_line, field, server=name)
            )
            continue
        servers.append(manifest)
    warnings.extend(d for d in state.diagnostics if d.severity is Severity.WARNING)
    return RegistryPlan(
        servers=tuple(servers),
        skipped=tuple(_relabel(skipped, names)),
        warnings=tuple(_relabel(warnings, names)),
    )


def _write(data: Mapping[str, str], root: Path, warnings: list[Diagnostic]) -> list[str]:
    """The keys as fleet files under ``root``; returns the catalog keys in layering order."""
    if c.REGISTRY_FILE not in data:
        raise FleetConfigError(
            Diagnostic(
                f"no {c.REGISTRY_FILE} key: the ConfigMap must hold the registry "
                "(an empty one is `registry: {}`); nothing was changed",
                field="data",
            )
        )
    (root / c.CATALOGS_DIR).mkdir()
    catalogs: list[str] = []
    for key in sorted(data):
        text = data[key] if isinstance(data[key], str) else str(data[key])
        name = catalog_name(key)
        if key in FILE_KEYS:
            (root / key).write_text(text, encoding="utf-8")
        elif name is not None:
            (root / c.CATALOGS_DIR / f"{name}{Path(key).suffix}").write_text(text, encoding="utf-8")
            catalogs.append(key)
        else:
            why = (
                "secrets never belong in a ConfigMap: put them in the Secret given with "
                "--registry-secret (key = the secret's name)"
                if key == c.SECRETS_FILE
                else "catalogs are keys ending in .catalog.yaml"
            )
            warnings.append(
                Diagnostic(f"unknown key, ignored ({why})", Path(key), severity=Severity.WARNING)
            )
    return catalogs


def _relabel(diagnostics: Iterable[Diagnostic], names: Mapping[Path, str]) -> list[Diagnostic]:
    """Point diagnostics (and paths quoted in messages) at the ConfigMap's keys."""
    out: list[Diagnostic] = []
    for d in diagnostics:
        message = d.message
        for path, name in names.items():
            message = message.replace(str(path), name)
        key = names.get(d.file) if d.file is not None else None
        out.append(replace(d, file=Path(key) if key is not None else d.file, message=message))
    return out


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """Mute ``logger`` while loading: it would name the scratch files (we log the keys)."""
    mute = logging.Filter("\0")  # matches no logger name: drops every record
    logger.addFilter(mute)
    try:
        yield
    finally:
        logger.removeFilter(mute)


def server_manifest(
    server: ServerSpec,
    entry: CatalogEntry,
    source: RegistrySource,
    warnings: list[Diagnostic] | None = None,
) -> Manifest:
    """The MCPServer for one usable server; raises ``SkipServer`` when it cannot be one."""
    notes: list[tuple[str, str]] = []
    spec = _spec(server, entry, source, notes)
    overrides = entry.extra.get(KUBERNETES_KEY)
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            raise SkipServer("expected a mapping of MCPServer spec fields", KUBERNETES_KEY)
        spec = _merge(spec, overrides)
    try:
        parse_spec(spec, name=server.name)
    except FleetConfigError as exc:
        problems = "; ".join(
            f"{d.field}: {d.message}" if d.field else d.message for d in exc.diagnostics
        )
        hint = ""
        if "spec.command" in problems and "command" not in (overrides or {}):
            hint = (
                f" (give the server's full command in its catalog entry, e.g. "
                f"{KUBERNETES_KEY}: {{command: [my-server]}}, or use bridge.mode inline)"
            )
        raise SkipServer(f"cannot be an MCPServer: {problems}{hint}") from None
    for field, message in notes:
        if warnings is not None:
            warnings.append(
                Diagnostic(
                    message,
                    entry.source,
                    entry.source_line,
                    f"registry.{server.name}.{field}",
                    Severity.WARNING,
                    server.name,
                )
            )
    manifest: Manifest = {
        "apiVersion": GROUP_VERSION,
        "kind": c.K8S_KIND,
        "metadata": {
            "name": server.name,
            "namespace": source.namespace,
            "labels": {
                c.K8S_LABEL_REGISTRY: source.configmap,
                "app.kubernetes.io/managed-by": c.K8S_MANAGER,
                "app.kubernetes.io/part-of": c.K8S_PART_OF,
            },
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": source.configmap,
                    "uid": source.uid,
                    "controller": True,
                }
            ],
        },
        "spec": spec,
    }
    manifest["metadata"]["annotations"] = {c.K8S_ANNOTATION_APPLIED_HASH: canonical_hash(manifest)}
    return manifest


def _spec(
    server: ServerSpec, entry: CatalogEntry, source: RegistrySource, notes: list[tuple[str, str]]
) -> dict[str, Any]:
    if entry.type is ServerType.REMOTE and entry.remote is not None:
        spec = _remote_spec(entry)
    elif not entry.image:
        raise SkipServer(
            "no image: a process-only server runs with the local controller (mcp-fleet up), "
            "not in a cluster; add image: to its catalog entry to run it here",
            "image",
        )
    else:
        spec = _image_spec(server, entry, source, notes)
    if server.tools_allow is not None:
        spec["tools"] = list(server.tools_allow)
    if entry.prefix:
        spec["prefix"] = entry.prefix
    return spec


def _remote_spec(entry: CatalogEntry) -> dict[str, Any]:
    """The spec of a ``type: remote`` entry: its URL and transport (headers cannot go yet)."""
    assert entry.remote is not None
    if entry.remote.headers:
        raise SkipServer(
            "headers for remote servers cannot be given to an MCPServer yet", "remote.headers"
        )
    transport = _REMOTE_TRANSPORTS.get(entry.remote.transport_type)
    if transport is None:
        raise SkipServer(
            f"transport_type {entry.remote.transport_type!r} is not one of sse, streamable-http",
            "remote.transport_type",
        )
    return {"remote": {"url": entry.remote.url, "transport": transport}}


def _image_spec(
    server: ServerSpec, entry: CatalogEntry, source: RegistrySource, notes: list[tuple[str, str]]
) -> dict[str, Any]:
    """The spec of an image entry: how it runs (image, args, env, secrets, transport, port)
    and what bounds it (``_bounds``)."""
    spec: dict[str, Any] = {"image": entry.image}
    if entry.command:
        spec["args"] = list(entry.command)  # Docker's catalog command: the entrypoint's args
    if entry.env:
        spec["env"] = [
            {"name": e.name, "value": server.env.get(e.name, e.value)} for e in entry.env
        ]
    if entry.secrets:
        spec["secretRefs"] = _secret_refs(entry, source)
    if entry.transport != "stdio":
        spec["transport"] = entry.transport
    if entry.port is not None:
        spec["port"] = entry.port
    spec.update(_bounds(entry, notes))
    if entry.volumes:
        notes.append(
            ("volumes", "volumes are not mounted in a cluster (use kubernetes.podTemplate)")
        )
    return spec


def _bounds(entry: CatalogEntry, notes: list[tuple[str, str]]) -> dict[str, Any]:
    """Limits, network, security context, sessions and lifecycle of an image entry."""
    spec: dict[str, Any] = {}
    limits = _limits(entry)
    if limits:
        spec["resources"] = {"limits": limits}
    network = _network(entry)
    if network is not None:
        spec["network"] = network
    security = _security(entry, notes)
    if security:
        spec["securityContext"] = security
    if entry.sessions is SessionMode.PER_CLIENT:
        spec["sessions"] = SessionMode.PER_CLIENT.value
    if entry.lifecycle is Lifecycle.ON_DEMAND:
        lifecycle: dict[str, Any] = {"mode": Lifecycle.ON_DEMAND.value}
        if entry.idle_timeout_seconds:
            lifecycle["idleTimeout"] = max(1, math.ceil(entry.idle_timeout_seconds))
        spec["lifecycle"] = lifecycle
    return spec


def _secret_refs(entry: CatalogEntry, source: RegistrySource) -> list[dict[str, Any]]:
    names = ", ".join(s.name for s in entry.secrets)
    if source.secret is None:
        raise SkipServer(
            f"needs secrets {names}, but the operator has no --registry-secret "
            "(chart: operator.registrySecret) to take them from",
            "secrets",
        )
    refs: list[dict[str, Any]] = []
    for s in entry.secrets:
        if not SECRET_KEY_RE.match(s.name):
            raise SkipServer(
                f"secret name {s.name!r} cannot be a key of a Secret (letters, digits, '-', "
                "'_' and '.')",
                "secrets",
            )
        refs.append(
            {"name": source.secret, "key": s.name, "env": s.env, "optional": not s.required}
        )
    return refs


def _limits(entry: CatalogEntry) -> dict[str, str]:
    limits: dict[str, str] = {}
    if entry.cpus is not None:
        limits["cpu"] = f"{max(1, round(entry.cpus * 1000))}m"
    if entry.memory is not None:
        try:
            size = parse_memory(entry.memory, server=entry.name)
        except InvalidContainerSpec as exc:
            raise SkipServer(str(exc).removeprefix(f"{entry.name}: memory: "), "memory") from None
        limits["memory"] = f"{size // _MI}Mi" if size % _MI == 0 else str(size)
    return limits


def _network(entry: CatalogEntry) -> dict[str, Any] | None:
    """As the docker runtime reads the entry: none unless it asks for a network."""
    if entry.disable_network:
        return None  # the MCPServer default: no egress at all
    if entry.allow_hosts:
        return {"mode": "allowHosts", "allowHosts": list(entry.allow_hosts)}
    asked = entry.extra.get(NETWORK_KEY)
    if asked is True or (isinstance(asked, str) and asked.lower() not in {"", "false", "none"}):
        return {"mode": "open"}
    return None


def _security(entry: CatalogEntry, notes: list[tuple[str, str]]) -> dict[str, Any]:
    security: dict[str, Any] = {}
    if not entry.read_only:
        security["readOnlyRootFilesystem"] = False
    if entry.user:
        uid, _, gid = entry.user.partition(":")
        if uid.isdigit() and (not gid or gid.isdigit()):
            security["runAsUser"] = int(uid)
            if gid:
                security["runAsGroup"] = int(gid)
        else:
            notes.append(("user", f"user {entry.user!r} is not numeric: the pod runs as 65534"))
    return security


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        out[key] = (
            _merge(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
        )
    return out


def applied_hash(obj: Mapping[str, Any]) -> str | None:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(c.K8S_ANNOTATION_APPLIED_HASH)
    return value if isinstance(value, str) else None


def diff_servers(
    desired: Sequence[Manifest], owned: Sequence[Mapping[str, Any]]
) -> tuple[ServerAction, ...]:
    """What turns ``owned`` (the MCPServers with our label) into ``desired``, in name order."""
    have = {str(o["metadata"]["name"]): o for o in owned}
    wanted = {str(m["metadata"]["name"]): m for m in desired}
    actions: list[ServerAction] = []
    for name, manifest in sorted(wanted.items()):
        current = have.get(name)
        if current is None:
            actions.append(ServerAction("create", name, "enabled in the registry", manifest))
        elif applied_hash(current) != applied_hash(manifest):
            actions.append(ServerAction("update", name, "registry entry changed", manifest))
    for name in sorted(set(have) - set(wanted)):
        actions.append(ServerAction("delete", name, "no longer enabled in the registry"))
    return tuple(actions)


__all__ = [
    "CATALOG_KEY_SUFFIXES",
    "RegistryPlan",
    "RegistrySource",
    "ServerAction",
    "SkipServer",
    "applied_hash",
    "catalog_name",
    "diff_servers",
    "plan_registry",
    "server_manifest",
]
