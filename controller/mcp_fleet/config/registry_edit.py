"""Enable or disable a server in registry.yaml, keeping everything else as written.

``mcp-fleet server enable|disable`` edits one entry through a round trip
(comments, order, quoting and the other entries untouched) and writes the
file atomically, so a controller watching it never reads half a file. The
caller checks that the server exists in a catalog; this module only edits.

Disabling writes ``enabled: false`` rather than deleting the entry, so the
entry's other settings (its catalog, inline config) survive a toggle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml.comments import CommentedMap

from mcp_fleet.config.atomic import atomic_write
from mcp_fleet.config.registry import load_registry
from mcp_fleet.config.yamledit import RoundTrip, ensure_map
from mcp_fleet.errors import Diagnostic, FleetConfigError


@dataclass(frozen=True)
class RegistryEdit:
    """What an edit did: ``changed`` is False when the file already said so."""

    name: str
    enabled: bool
    changed: bool
    created_entry: bool


def set_enabled(
    path: Path, name: str, enabled: bool, *, catalog: str | None = None
) -> RegistryEdit:
    """Set ``registry.<name>.enabled`` (and ``catalog`` if given); atomic, comments kept."""
    load_registry(path)  # refuse to edit a file that does not validate
    doc = RoundTrip.load(path)
    if not isinstance(doc.data, dict):
        raise FleetConfigError(Diagnostic(message="expected a mapping with registry:", file=path))
    registry = ensure_map(doc.data, "registry")
    created = name not in registry
    entry = registry.get(name)
    if not isinstance(entry, dict):
        entry = CommentedMap()
        registry[name] = entry
    before = (entry.get("enabled", True) if not created else None, entry.get("catalog"))
    if catalog is not None:
        entry["catalog"] = catalog
    if enabled and "enabled" not in entry and not created:
        pass  # Docker's form: presence already means enabled
    else:
        entry["enabled"] = enabled
    after = (entry.get("enabled", True), entry.get("catalog"))
    changed = created or before != after
    if changed:
        atomic_write(path, doc.dump())
    return RegistryEdit(name=name, enabled=enabled, changed=changed, created_entry=created)
