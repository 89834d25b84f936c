"""registry.yaml, config.yaml and tools.yaml: which servers run, with what settings.

The registry accepts both spellings found in the wild: the guide's
``{catalog: custom, enabled: false}`` and Docker's ``{ref: "", config: {...}}``
(``enabled`` defaults to true, so a Docker registry where presence means
enabled reads the same). ``config.yaml`` maps a server to its settings
(used to fill ``{{server.key}}`` templates), ``tools.yaml`` maps a server to
the list of tools clients may see.

A missing file is an empty one: a fleet without registry.yaml is an empty
fleet, not an error. Wrong shapes or types are file errors with a line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mcp_fleet.config.schema import (
    RegistryEntryModel,
    RegistryFileModel,
    describe,
    extra_keys,
    validation_diagnostics,
)
from mcp_fleet.config.yamlsource import YamlDoc, YamlPath, read_yaml
from mcp_fleet.errors import Diagnostic, FleetConfigError, Severity


@dataclass(frozen=True)
class RegistryEntry:
    """One server the registry lists, with where it is in the file."""

    name: str
    enabled: bool = True
    catalog: str | None = None
    ref: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    line: int | None = None


@dataclass(frozen=True)
class Registry:
    path: Path
    entries: Mapping[str, RegistryEntry]
    diagnostics: tuple[Diagnostic, ...] = ()


def _read_optional(path: Path) -> YamlDoc | None:
    """Parse ``path``; ``None`` when it does not exist (missing means empty)."""
    if not path.exists():
        return None
    return read_yaml(path)


def _warn(doc: YamlDoc, at: YamlPath, message: str) -> Diagnostic:
    return doc.diag(at, message, severity=Severity.WARNING)


def parse_registry(doc: YamlDoc) -> Registry:
    """Validate a parsed registry.yaml."""
    if doc.data is None:
        return Registry(path=doc.path, entries={})
    if not isinstance(doc.data, dict):
        raise FleetConfigError(
            doc.diag((), f"expected a mapping with registry:, got {describe(doc.data)}")
        )
    try:
        top = RegistryFileModel.model_validate(doc.data)
    except ValidationError as exc:
        raise FleetConfigError(validation_diagnostics(exc, doc, ())) from None
    warnings = [_warn(doc, (key,), "unknown key, ignored") for key in top.model_extra or {}]
    errors: list[Diagnostic] = []
    entries: dict[str, RegistryEntry] = {}
    for name, raw in (top.registry or {}).items():
        at: YamlPath = ("registry", name)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            errors.append(doc.diag(at, f"expected a mapping, got {describe(raw)}"))
            continue
        try:
            model = RegistryEntryModel.model_validate(raw)
        except ValidationError as exc:
            errors.extend(validation_diagnostics(exc, doc, at, server=name))
            continue
        warnings.extend(_warn(doc, p, "unknown key, ignored") for p, _ in extra_keys(model, at))
        entries[name] = RegistryEntry(
            name=name,
            enabled=model.enabled,
            catalog=model.catalog or None,
            ref=model.ref or None,
            config=dict(model.config or {}),
            line=doc.line(at),
        )
    if errors:
        raise FleetConfigError(errors)
    return Registry(path=doc.path, entries=entries, diagnostics=tuple(warnings))


def load_registry(path: Path) -> Registry:
    doc = _read_optional(path)
    return Registry(path=path, entries={}) if doc is None else parse_registry(doc)


def load_config(path: Path) -> dict[str, dict[str, Any]]:
    """config.yaml: ``{server: {key: value}}``; missing file is empty."""
    return read_config(path)[0]


def read_config(path: Path) -> tuple[dict[str, dict[str, Any]], YamlDoc | None]:
    """``load_config``, and the parsed file (for the lines of later diagnostics)."""
    doc = _read_optional(path)
    if doc is None or doc.data is None:
        return {}, doc
    if not isinstance(doc.data, dict):
        raise FleetConfigError(
            doc.diag((), f"expected a mapping of server: settings, got {describe(doc.data)}")
        )
    errors: list[Diagnostic] = []
    out: dict[str, dict[str, Any]] = {}
    for server, values in doc.data.items():
        if values is None:
            values = {}
        if not isinstance(values, dict):
            errors.append(doc.diag((server,), f"expected a mapping, got {describe(values)}"))
            continue
        out[server] = values
    if errors:
        raise FleetConfigError(errors)
    return out, doc


def load_tools(path: Path) -> dict[str, tuple[str, ...]]:
    """tools.yaml: ``{server: [tool, ...]}`` allow-lists; missing file is empty."""
    doc = _read_optional(path)
    if doc is None or doc.data is None:
        return {}
    if not isinstance(doc.data, dict):
        raise FleetConfigError(
            doc.diag((), f"expected a mapping of server: [tools], got {describe(doc.data)}")
        )
    errors: list[Diagnostic] = []
    out: dict[str, tuple[str, ...]] = {}
    for server, tools in doc.data.items():
        if tools is None:
            continue  # ``server:`` with no list sets no allow-list
        if not isinstance(tools, list):
            errors.append(
                doc.diag((server,), f"expected a list of tool names, got {describe(tools)}")
            )
            continue
        bad = [i for i, t in enumerate(tools) if not isinstance(t, str)]
        for i in bad:
            errors.append(doc.diag((server, i), f"expected a tool name, got {describe(tools[i])}"))
        if not bad:
            out[server] = tuple(tools)
    if errors:
        raise FleetConfigError(errors)
    return out
