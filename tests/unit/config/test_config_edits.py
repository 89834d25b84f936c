"""Edits of users' files: atomic writes, catalog merge-import, registry toggles with comments."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from config_support import dedent
from mcp_fleet.config import atomic_write, import_catalog, load_catalog, load_registry, set_enabled
from mcp_fleet.errors import FleetConfigError

# --- atomic_write -------------------------------------------------------------


def test_atomic_write_keeps_mode_and_makes_backup(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("old\n")
    path.chmod(0o640)
    backup = atomic_write(path, "new\n", backup=True)
    assert path.read_text() == "new\n"
    assert backup == tmp_path / "f.yaml.bak" and backup.read_text() == "old\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_atomic_write_failure_leaves_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("original\n")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, "half written")
    assert path.read_text() == "original\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.yaml"]


def test_atomic_write_mode_is_set_before_content(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    atomic_write(path, "K=v\n", mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- catalog import -------------------------------------------------------------

TARGET = """
# Our in-house catalog. Keep this comment.
version: "2"
registry:
  alpha:
    image: alpha:1 # pinned on purpose
  beta:
    image: beta:1
"""

SOURCE = """
version: "2"
registry:
  alpha:
    image: alpha:1 # pinned on purpose
  beta:
    image: beta:2
  gamma:
    # the new one
    image: gamma:1
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text))
    return path


def test_import_refuses_changed_entries_and_writes_nothing(tmp_path: Path) -> None:
    target = write(tmp_path / "catalogs" / "custom.yaml", TARGET)
    source = write(tmp_path / "incoming.yaml", SOURCE)
    before = target.read_bytes()
    report = import_catalog(source, target)
    assert (report.added, report.changed, report.unchanged) == (["gamma"], ["beta"], ["alpha"])
    assert report.refused and not report.written
    assert target.read_bytes() == before
    assert not (tmp_path / "catalogs" / "custom.yaml.bak").exists()


def test_import_with_overwrite_merges_keeps_comments_and_backs_up(tmp_path: Path) -> None:
    target = write(tmp_path / "catalogs" / "custom.yaml", TARGET)
    source = write(tmp_path / "incoming.yaml", SOURCE)
    before = target.read_text()
    report = import_catalog(source, target, overwrite=True)
    assert report.written and report.backup == target.with_name("custom.yaml.bak")
    assert report.backup.read_text() == before
    text = target.read_text()
    assert "# Our in-house catalog. Keep this comment." in text
    assert "# pinned on purpose" in text
    assert "# the new one" in text
    merged = load_catalog(target)
    assert {n: e.image for n, e in merged.entries.items()} == {
        "alpha": "alpha:1",
        "beta": "beta:2",
        "gamma": "gamma:1",
    }


def test_import_adds_without_overwrite_when_nothing_differs(tmp_path: Path) -> None:
    target = write(tmp_path / "catalogs" / "custom.yaml", TARGET)
    source = write(
        tmp_path / "new.yaml",
        'version: "2"\nregistry:\n  beta:\n    image: beta:1\n  d: {image: d}\n',
    )
    report = import_catalog(source, target)
    assert (report.added, report.changed, report.unchanged) == (["d"], [], ["beta"])
    assert report.written
    assert set(load_catalog(target).entries) == {"alpha", "beta", "d"}


def test_import_into_a_new_catalog(tmp_path: Path) -> None:
    source = write(tmp_path / "team.yaml", SOURCE)
    target = tmp_path / "catalogs" / "team.yaml"
    report = import_catalog(source, target)
    assert report.added == ["alpha", "beta", "gamma"] and report.written
    assert report.backup is None
    assert set(load_catalog(target).entries) == {"alpha", "beta", "gamma"}


def test_import_nothing_new_writes_nothing(tmp_path: Path) -> None:
    target = write(tmp_path / "catalogs" / "custom.yaml", TARGET)
    mtime = target.stat().st_mtime_ns
    report = import_catalog(target, target)
    assert report.unchanged == ["alpha", "beta"] and not report.written
    assert target.stat().st_mtime_ns == mtime


def test_import_dry_run_writes_nothing(tmp_path: Path) -> None:
    target = write(tmp_path / "catalogs" / "custom.yaml", TARGET)
    source = write(tmp_path / "incoming.yaml", SOURCE)
    before = target.read_bytes()
    report = import_catalog(source, target, overwrite=True, dry_run=True)
    assert report.added == ["gamma"] and not report.written
    assert target.read_bytes() == before


def test_import_of_a_broken_file_leaves_the_target_intact(tmp_path: Path) -> None:
    target = write(tmp_path / "catalogs" / "custom.yaml", TARGET)
    source = write(tmp_path / "broken.yaml", "registry:\n  x:\n    image: [not, a, string]\n")
    before = target.read_bytes()
    with pytest.raises(FleetConfigError) as info:
        import_catalog(source, target, overwrite=True)
    assert str(info.value) == "broken.yaml:3: registry.x.image: expected a string, got a list"
    assert target.read_bytes() == before


def test_import_refuses_to_merge_into_a_broken_target(tmp_path: Path) -> None:
    target = write(tmp_path / "catalogs" / "custom.yaml", "registry:\n  x: {port: no}\n")
    source = write(tmp_path / "ok.yaml", SOURCE)
    with pytest.raises(FleetConfigError, match=r"^custom\.yaml:2: registry\.x\.port"):
        import_catalog(source, target)


# --- registry edits ---------------------------------------------------------

REGISTRY = """
# Which servers run.
registry:
  paloalto-firewall:
    catalog: custom
    enabled: true
  cisco-asa:
    catalog: custom
    enabled: true
  internal-ticketing:
    catalog: custom
    enabled: false # staged but turned off
  docker-style:
    ref: ""
"""


def test_disable_keeps_comments_and_other_entries(tmp_path: Path) -> None:
    path = write(tmp_path / "registry.yaml", REGISTRY)
    edit = set_enabled(path, "cisco-asa", False)
    assert edit.changed and not edit.created_entry
    expected = dedent(REGISTRY).replace(
        "  cisco-asa:\n    catalog: custom\n    enabled: true\n",
        "  cisco-asa:\n    catalog: custom\n    enabled: false\n",
    )
    assert path.read_text() == expected


def test_enable_keeps_the_users_comment(tmp_path: Path) -> None:
    path = write(tmp_path / "registry.yaml", REGISTRY)
    set_enabled(path, "internal-ticketing", True)
    # the comment stays, at its column
    assert "    enabled: true  # staged but turned off\n" in path.read_text()
    assert load_registry(path).entries["internal-ticketing"].enabled


def test_enable_new_server_appends_an_entry(tmp_path: Path) -> None:
    path = write(tmp_path / "registry.yaml", REGISTRY)
    edit = set_enabled(path, "time", True, catalog="example")
    assert edit.created_entry
    assert (
        path.read_text() == dedent(REGISTRY) + "  time:\n    catalog: example\n    enabled: true\n"
    )


def test_enable_twice_is_a_no_op(tmp_path: Path) -> None:
    path = write(tmp_path / "registry.yaml", REGISTRY)
    before = path.read_text()
    assert not set_enabled(path, "paloalto-firewall", True).changed
    assert not set_enabled(path, "docker-style", True).changed  # presence means enabled
    assert path.read_text() == before


def test_disable_docker_style_entry(tmp_path: Path) -> None:
    path = write(tmp_path / "registry.yaml", REGISTRY)
    set_enabled(path, "docker-style", False)
    assert path.read_text().endswith('  docker-style:\n    ref: ""\n    enabled: false\n')


def test_registry_file_is_created(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    set_enabled(path, "time", True)
    assert path.read_text() == "registry:\n  time:\n    enabled: true\n"


def test_broken_registry_is_not_edited(tmp_path: Path) -> None:
    path = write(tmp_path / "registry.yaml", "registry:\n  a: {enabled: perhaps}\n")
    before = path.read_bytes()
    with pytest.raises(FleetConfigError):
        set_enabled(path, "a", False)
    assert path.read_bytes() == before


def test_four_space_indentation_is_kept(tmp_path: Path) -> None:
    text = "registry:\n    a:\n        enabled: true\n    b:\n        enabled: true\n"
    path = write(tmp_path / "registry.yaml", text)
    set_enabled(path, "a", False)
    assert path.read_text() == text.replace("enabled: true\n    b", "enabled: false\n    b")
