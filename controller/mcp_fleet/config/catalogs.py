"""Catalog files: validate each one, convert its entries, layer them in order.

A catalog says which servers exist (Docker's ``version: "2"`` /
``registry:`` format plus our ``process:`` and lifecycle extensions). Several
catalogs are layered in the order given; a later entry of the same name wins,
with a warning naming both files, so an in-house catalog can shadow an
upstream one on purpose and never by accident.

Type errors anywhere in a catalog make the whole file invalid (the controller
then keeps its last good state); unknown keys only warn and are kept in
``CatalogEntry.extra``. A server name that is not a valid name, or an entry
type we do not run (Docker's ``poci``), is not a file error: the entry is kept
and the resolver marks that one server unusable if the registry enables it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mcp_fleet.config.schema import (
    DOCKER_INFORMATIONAL_KEYS,
    EXTENSION_KEYS,
    CatalogEntryModel,
    CatalogFileModel,
    describe,
    extra_keys,
    validation_diagnostics,
)
from mcp_fleet.config.yamlsource import YamlDoc, YamlPath, dotted, parse_yaml, read_bytes
from mcp_fleet.errors import Diagnostic, FleetConfigError, Severity
from mcp_fleet.model import (
    CatalogEntry,
    EnvVar,
    Lifecycle,
    ProcessSpec,
    RemoteSpec,
    SecretRef,
    ServerType,
    SessionMode,
    frozen_map,
)

#: ``extra`` key holding an entry ``type`` we do not run (the resolver reports it).
UNSUPPORTED_TYPE_KEY = "type"

_KNOWN_VERSIONS = {"2", "2.0"}


@dataclass(frozen=True)
class CatalogFile:
    """One catalog file as read: its name (file stem), entries and warnings."""

    path: Path
    name: str
    entries: Mapping[str, CatalogEntry]
    #: Names the file itself gives (Docker's top-level ``name``), also accepted by the registry.
    aliases: frozenset[str] = frozenset()
    diagnostics: tuple[Diagnostic, ...] = ()


@dataclass(frozen=True)
class LayeredCatalog:
    """Every catalog file in order, and the merged view (later wins)."""

    files: tuple[CatalogFile, ...]
    merged: Mapping[str, CatalogEntry]
    diagnostics: tuple[Diagnostic, ...] = field(default=())

    def by_catalog_name(self, name: str) -> CatalogFile | None:
        """The last loaded catalog called ``name`` (file stem or its own ``name:``)."""
        for cat in reversed(self.files):
            if cat.name == name or name in cat.aliases:
                return cat
        return None


def _warn(doc: YamlDoc, path: YamlPath, message: str) -> Diagnostic:
    return doc.diag(path, message, severity=Severity.WARNING)


def _to_entry(
    name: str, model: CatalogEntryModel, doc: YamlDoc, at: YamlPath
) -> tuple[CatalogEntry, list[Diagnostic]]:
    warnings: list[Diagnostic] = []
    extra: dict[str, Any] = dict(model.model_extra or {})
    for path, key in extra_keys(model, at):
        if len(path) == len(at) + 1 and (key in DOCKER_INFORMATIONAL_KEYS or key in EXTENSION_KEYS):
            continue
        warnings.append(_warn(doc, path, "unknown key, ignored"))

    try:
        server_type = ServerType(model.type)
    except ValueError:
        server_type = ServerType.SERVER
        extra[UNSUPPORTED_TYPE_KEY] = model.type
        warnings.append(
            _warn(doc, (*at, "type"), f"type {describe(model.type)} is not supported here")
        )

    remote: RemoteSpec | None = None
    if model.remote is not None and model.remote.url:
        remote = RemoteSpec(
            url=model.remote.url,
            transport_type=model.remote.transport_type or "streamable-http",
            headers=frozen_map(model.remote.headers),
        )
    elif model.sse_endpoint:
        remote = RemoteSpec(url=model.sse_endpoint, transport_type="sse")

    lifecycle = Lifecycle(model.lifecycle) if model.lifecycle else Lifecycle.ALWAYS
    if model.long_lived and model.lifecycle == Lifecycle.ON_DEMAND.value:
        warnings.append(
            _warn(
                doc,
                (*at, "lifecycle"),
                "longLived: true conflicts with lifecycle: on-demand; using on-demand",
            )
        )

    config_schema: Mapping[str, Any] | None
    if isinstance(model.config, list):
        # Docker writes ``config`` as a list of schemas; all of them apply.
        config_schema = (
            frozen_map(model.config[0])
            if len(model.config) == 1
            else frozen_map({"allOf": model.config})
        )
    else:
        config_schema = None if model.config is None else frozen_map(model.config)

    title = model.title or (model.name if model.name and model.name != name else "") or ""
    entry = CatalogEntry(
        name=name,
        source=doc.path,
        source_line=doc.line(at),
        title=title,
        description=model.description,
        categories=tuple(model.categories),
        type=server_type,
        image=model.image or None,
        command=tuple(model.command),
        env=tuple(EnvVar(name=e.name, value=e.value) for e in model.env),
        secrets=tuple(
            SecretRef(
                name=s.name,
                env=s.env or s.name,
                required=s.required,
                description=s.description,
            )
            for s in model.secrets
        ),
        volumes=tuple(model.volumes),
        user=model.user,
        disable_network=model.disable_network,
        allow_hosts=tuple(model.allow_hosts),
        long_lived=model.long_lived,
        prefix=model.prefix,
        remote=remote,
        tools=tuple(frozen_map(t) for t in model.tools),
        config_schema=config_schema,
        process=None
        if model.process is None
        else ProcessSpec(
            command=tuple(model.process.command),
            env=frozen_map(model.process.env),
            cwd=model.process.cwd,
        ),
        lifecycle=lifecycle,
        idle_timeout_seconds=model.idle_timeout,
        sessions=SessionMode(model.sessions),
        cpus=model.cpus,
        memory=model.memory,
        read_only=model.read_only,
        call_timeout_seconds=model.timeout,
        transport=model.transport,
        port=model.port,
        extra=frozen_map(extra),
    )
    return entry, warnings


def _drop_elisions(raw: dict[str, Any], doc: YamlDoc, at: YamlPath) -> list[Diagnostic]:
    """Documentation writes ``secrets: [...]`` for "as above": ignore that placeholder."""
    secrets = raw.get("secrets")
    if not isinstance(secrets, list) or "..." not in secrets:
        return []
    raw["secrets"] = [s for s in secrets if s != "..."]
    return [_warn(doc, (*at, "secrets"), "placeholder '...' ignored")]


def parse_catalog(doc: YamlDoc) -> CatalogFile:
    """Validate one parsed catalog; raises ``FleetConfigError`` listing every type error."""
    if doc.data is None:
        return CatalogFile(path=doc.path, name=doc.path.stem, entries={})
    if not isinstance(doc.data, dict):
        raise FleetConfigError(
            doc.diag(
                (), f'expected a mapping with version: "2" and registry:, got {describe(doc.data)}'
            )
        )
    try:
        top = CatalogFileModel.model_validate(doc.data)
    except ValidationError as exc:
        raise FleetConfigError(validation_diagnostics(exc, doc, ())) from None

    warnings: list[Diagnostic] = []
    for key in top.model_extra or {}:
        warnings.append(_warn(doc, (key,), "unknown key, ignored"))
    if top.version is not None and top.version not in _KNOWN_VERSIONS:
        warnings.append(
            _warn(
                doc, ("version",), f'unknown catalog version {describe(top.version)}, read as "2"'
            )
        )
    if top.registry is None and "registry" not in doc.data:
        warnings.append(_warn(doc, (), "no registry: map, the catalog is empty"))

    errors: list[Diagnostic] = []
    entries: dict[str, CatalogEntry] = {}
    for name, raw in (top.registry or {}).items():
        at: YamlPath = ("registry", name)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            errors.append(doc.diag(at, f"expected a mapping, got {describe(raw)}"))
            continue
        raw = dict(raw)
        warnings.extend(_drop_elisions(raw, doc, at))
        try:
            model = CatalogEntryModel.model_validate(raw)
        except ValidationError as exc:
            errors.extend(validation_diagnostics(exc, doc, at, server=name))
            continue
        entry, entry_warnings = _to_entry(name, model, doc, at)
        entries[name] = entry
        warnings.extend(entry_warnings)
    if errors:
        raise FleetConfigError(errors)
    aliases = frozenset(n for n in (top.name, top.display_name) if n)
    return CatalogFile(
        path=doc.path,
        name=doc.path.stem,
        entries=frozen_map(entries),
        aliases=aliases,
        diagnostics=tuple(warnings),
    )


#: Parsed catalogs by path and content digest: an official catalog is large and rarely
#: changes, so a reload after a registry edit must not parse it again. Keyed by content
#: (not mtime, whose granularity is coarse) so an edit is never missed.
_CACHE: dict[tuple[Path, bytes], CatalogFile] = {}
_CACHE_SIZE = 32


def load_catalog(path: Path) -> CatalogFile:
    """Read and validate one catalog file (parsed once per distinct content)."""
    raw = read_bytes(path)
    key = (path, hashlib.blake2b(raw, digest_size=16).digest())
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    catalog = parse_catalog(parse_yaml(raw, path))
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = catalog
    return catalog


def layer(files: Sequence[CatalogFile]) -> LayeredCatalog:
    """Merge catalogs in order: a later entry of the same name wins, with a warning."""
    merged: dict[str, CatalogEntry] = {}
    warnings: list[Diagnostic] = []
    for cat in files:
        warnings.extend(cat.diagnostics)
        for name, entry in cat.entries.items():
            previous = merged.get(name)
            if previous is not None and previous.source != entry.source:
                where = previous.source.name
                if previous.source_line is not None:
                    where += f":{previous.source_line}"
                warnings.append(
                    Diagnostic(
                        message=f"overrides the entry from {where} ({previous.source})",
                        file=entry.source,
                        line=entry.source_line,
                        field=dotted(("registry", name)),
                        severity=Severity.WARNING,
                        server=name,
                    )
                )
            merged[name] = entry
    return LayeredCatalog(files=tuple(files), merged=merged, diagnostics=tuple(warnings))


def load_catalogs(paths: Sequence[Path]) -> LayeredCatalog:
    """Read every catalog (collecting all errors before raising) and layer them."""
    files: list[CatalogFile] = []
    errors: list[Diagnostic] = []
    for path in paths:
        try:
            files.append(load_catalog(path))
        except FleetConfigError as exc:
            errors.extend(exc.diagnostics)
    if errors:
        raise FleetConfigError(errors)
    return layer(files)
