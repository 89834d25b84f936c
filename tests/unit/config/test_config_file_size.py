"""Fleet files past the size limit are refused before they are parsed.

Parsing YAML costs several hundred times a file's size in memory, so every
fleet file (catalogs, registry.yaml, config.yaml, tools.yaml, secrets.env)
is checked against ``max_file_bytes()`` (8 MiB, or
``MCP_FLEET_MAX_FILE_BYTES``) first: its size as ``fstat`` gives it, then at
most one byte past the limit is read. The refusal is the loader's usual
``FleetConfigError`` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from config_support import WriteFleet
from mcp_fleet.config import load_catalog, load_fleet, resolve_files, set_enabled, set_secret
from mcp_fleet.config.yamlsource import (
    DEFAULT_MAX_FILE_BYTES,
    ENV_MAX_FILE_BYTES,
    max_file_bytes,
    read_bytes,
)
from mcp_fleet.errors import FleetConfigError

CATALOG = """\
version: "2"
registry:
  echo:
    process:
      command: [prog]
"""


def refusal(exc: pytest.ExceptionInfo[FleetConfigError]) -> tuple[Path | None, str]:
    (diag,) = exc.value.diagnostics
    return diag.file, diag.message


def test_the_limit_is_8_mib_unless_the_environment_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV_MAX_FILE_BYTES, raising=False)
    assert max_file_bytes() == DEFAULT_MAX_FILE_BYTES == 8 * 1024 * 1024
    monkeypatch.setenv(ENV_MAX_FILE_BYTES, "4096")
    assert max_file_bytes() == 4096
    for bad in ("", "lots", "-1", "0"):
        monkeypatch.setenv(ENV_MAX_FILE_BYTES, bad)
        assert max_file_bytes() == DEFAULT_MAX_FILE_BYTES


def test_a_file_past_the_limit_is_refused_without_being_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_MAX_FILE_BYTES, str(len(CATALOG)))
    path = tmp_path / "test.yaml"
    path.write_text(CATALOG)
    assert "echo" in load_catalog(path).entries  # exactly at the limit: read
    broken = CATALOG + "  {{{ not: yaml\n"  # a YAML error, were it parsed
    path.write_text(broken)
    with pytest.raises(FleetConfigError) as exc:
        load_catalog(path)
    file, message = refusal(exc)
    assert file == path
    assert message == (
        f"file too large, not read: {len(broken)} bytes, the limit is {len(CATALOG)}"
        f" ({ENV_MAX_FILE_BYTES} changes it)"
    )
    assert str(exc.value).startswith("test.yaml: file too large")


def test_a_huge_sparse_file_is_refused_from_its_size_alone(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:
        f.truncate(400 * 1024 * 1024)  # 400 MB, no block written: never read
    with pytest.raises(FleetConfigError) as exc:
        read_bytes(path)
    assert refusal(exc) == (
        path,
        f"file too large, not read: {400 * 1024 * 1024} bytes, the limit is"
        f" {DEFAULT_MAX_FILE_BYTES} ({ENV_MAX_FILE_BYTES} changes it)",
    )


def test_a_file_whose_size_says_nothing_is_read_only_up_to_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_MAX_FILE_BYTES, "65536")
    endless = tmp_path / "catalogs.yaml"
    endless.symlink_to("/dev/zero")  # size 0, bytes without end
    assert endless.stat().st_size == 0
    with pytest.raises(FleetConfigError) as exc:
        read_bytes(endless)
    assert refusal(exc) == (
        endless,
        f"file too large, not read: more than the limit of 65536 bytes"
        f" ({ENV_MAX_FILE_BYTES} changes it)",
    )


def test_every_fleet_file_is_held_to_the_limit(
    write_fleet: WriteFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    padding = "#" * 2000 + "\n"
    home = write_fleet(
        catalogs={"big": CATALOG + padding, "small": 'version: "2"\nregistry: {}\n'},
        registry="registry:\n  echo: {}\n" + padding,
        config="echo: {}\n" + padding,
        tools="echo: [t]\n" + padding,
        secrets="TOKEN=value\n" + padding,
    )
    files = resolve_files(home)
    assert "echo" in load_fleet(files).servers
    monkeypatch.setenv(ENV_MAX_FILE_BYTES, "1024")
    with pytest.raises(FleetConfigError) as exc:
        load_fleet(files)
    refused = {d.file.name: d.message for d in exc.value.diagnostics if d.file is not None}
    assert set(refused) == {"big.yaml", "registry.yaml", "config.yaml", "tools.yaml", "secrets.env"}
    assert all(m.startswith("file too large, not read: ") for m in refused.values()), refused


def test_edits_refuse_a_file_past_the_limit_and_leave_it_as_it_was(
    write_fleet: WriteFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    padding = "#" * 2000 + "\n"
    home = write_fleet(
        catalogs={"c": CATALOG},
        registry="registry:\n  echo: {}\n" + padding,
        secrets="TOKEN=value\n" + padding,
    )
    before = {p: p.read_bytes() for p in (home / "registry.yaml", home / "secrets.env")}
    monkeypatch.setenv(ENV_MAX_FILE_BYTES, "1024")
    with pytest.raises(FleetConfigError, match="file too large"):
        set_enabled(home / "registry.yaml", "echo", False)
    with pytest.raises(FleetConfigError, match="file too large"):
        set_secret(home / "secrets.env", "OTHER", "v")
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in home.iterdir()) == [
        "catalogs",
        "registry.yaml",
        "secrets.env",
    ]
