"""Plain data views of the desired state, shared by the table and ``--json`` outputs.

Tables and JSON are built from the same rows so they never disagree, and the
JSON is stable (sorted keys, sorted rows): scripts may depend on it. No view
ever includes a secret value; secrets appear by name only.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp_fleet.model import CatalogEntry, DesiredState, ServerSpec


def runs(entry: CatalogEntry | None, *, short: bool = False) -> str:
    """What runs the server, in one string: image, process argv or remote URL.

    ``short`` shows only the program's file name (tables; JSON keeps full paths).
    """
    if entry is None:
        return "-"
    if entry.remote is not None:
        return f"remote {entry.remote.url}"
    parts = []
    if entry.process is not None:
        argv = list(entry.process.command)
        if short and argv:
            argv[0] = PurePath(argv[0]).name
        parts.append("process " + " ".join(argv))
    if entry.image:
        parts.append(f"image {entry.image}")
    return "; ".join(parts) or "-"


def catalog_rows(state: DesiredState) -> list[dict[str, Any]]:
    rows = []
    for name, entry in sorted(state.catalog.items()):
        spec = state.servers.get(name)
        rows.append(
            {
                "name": name,
                "title": entry.title,
                "description": entry.description,
                "type": entry.type.value,
                "image": entry.image,
                "process": list(entry.process.command) if entry.process else None,
                "remote": entry.remote.url if entry.remote else None,
                "secrets": [s.name for s in entry.secrets],
                "enabled": None if spec is None else spec.enabled,
                "source": str(entry.source),
                "line": entry.source_line,
            }
        )
    return rows


def server_row(spec: ServerSpec) -> dict[str, Any]:
    entry = spec.entry
    return {
        "name": spec.name,
        "enabled": spec.enabled,
        "usable": spec.usable,
        "catalog": spec.catalog,
        "ref": spec.ref,
        "runs": runs(entry),
        "secrets": [s.name for s in entry.secrets] if entry else [],
        "tools_allow": list(spec.tools_allow) if spec.tools_allow is not None else None,
        "problems": [p.to_json() for p in spec.problems],
    }


def server_rows(state: DesiredState) -> list[dict[str, Any]]:
    return [server_row(spec) for _, spec in sorted(state.servers.items())]


def secret_usage(state: DesiredState) -> dict[str, list[tuple[str, bool, bool]]]:
    """Secret name -> [(server, enabled, required)] over every registry server."""
    usage: dict[str, list[tuple[str, bool, bool]]] = {}
    for name, spec in sorted(state.servers.items()):
        if spec.entry is None:
            continue
        for ref in spec.entry.secrets:
            usage.setdefault(ref.name, []).append((name, spec.enabled, ref.required))
    return usage
