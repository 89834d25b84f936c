"""Merge a catalog file into the fleet's catalogs/, never silently overwriting.

Docker's ``catalog import`` replaces the target and loses entries (their
issue #126); ours merges. Entries of the imported file are compared with the
target's, as data:

- **added**: not in the target; copied in (with their comments);
- **unchanged**: identical; nothing to do;
- **changed**: present with different content. Without ``overwrite`` the
  import writes *nothing* and reports them, so the user decides; with
  ``overwrite`` they are replaced.

Both files are validated before anything is written, the merged result is
validated again, and the write is atomic with the previous file kept as
``<name>.yaml.bak``: on any failure the original is intact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml.comments import CommentedMap

from mcp_fleet.config.atomic import atomic_write
from mcp_fleet.config.catalogs import parse_catalog
from mcp_fleet.config.yamledit import RoundTrip, ensure_map
from mcp_fleet.config.yamlsource import YamlDoc, parse_yaml, read_yaml
from mcp_fleet.errors import Diagnostic, FleetConfigError


@dataclass
class ImportReport:
    """What an import found and did."""

    source: Path
    target: Path
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: True when the target was written; False for a dry run, a no-op or a refused import.
    written: bool = False
    #: Changed entries were found and ``overwrite`` was not given: nothing written.
    refused: bool = False
    backup: Path | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "source": str(self.source),
            "target": str(self.target),
            "added": self.added,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "written": self.written,
            "refused": self.refused,
            "backup": str(self.backup) if self.backup else None,
        }


def _entries(doc: YamlDoc) -> dict[str, object]:
    if isinstance(doc.data, dict) and isinstance(doc.data.get("registry"), dict):
        return dict(doc.data["registry"])
    return {}


def import_catalog(
    source: Path, target: Path, *, overwrite: bool = False, dry_run: bool = False
) -> ImportReport:
    """Merge ``source`` into ``target``; see the module docstring for the rules."""
    src_doc = read_yaml(source)
    parse_catalog(src_doc)  # raises FleetConfigError with file:line
    src_entries = _entries(src_doc)
    if target.exists():
        tgt_doc = read_yaml(target)
        parse_catalog(tgt_doc)
        tgt_entries = _entries(tgt_doc)
    else:
        tgt_entries = {}

    report = ImportReport(source=source, target=target)
    for name, value in src_entries.items():
        if name not in tgt_entries:
            report.added.append(name)
        elif tgt_entries[name] == value:
            report.unchanged.append(name)
        else:
            report.changed.append(name)
    if report.changed and not overwrite:
        report.refused = True
        return report
    if dry_run or not (report.added or report.changed):
        return report

    src_rt = RoundTrip.load(source)
    default = CommentedMap()
    default["version"] = "2"
    default["registry"] = CommentedMap()
    tgt_rt = RoundTrip.load(target, default=default) if target.exists() else RoundTrip(default)
    registry = ensure_map(tgt_rt.data, "registry")
    src_registry = src_rt.data["registry"]
    for name in (*report.added, *report.changed):
        if name not in src_registry:  # the editor reads YAML 1.2: 0E0 is a number there
            raise FleetConfigError(
                src_doc.diag(
                    ("registry", name),
                    f"server name {name!r} reads as a number in YAML 1.2; quote it ('{name}':)",
                )
            )
        registry[name] = src_registry[name]
    text = tgt_rt.dump()
    try:
        parse_catalog(parse_yaml(text, target))
    except FleetConfigError as exc:  # pragma: no cover - a merge of two valid files is valid
        raise FleetConfigError(
            [
                Diagnostic(message=f"merged catalog does not validate: {d}", file=target)
                for d in exc.diagnostics
            ]
        ) from None
    report.backup = atomic_write(target, text, backup=True)
    report.written = True
    return report
