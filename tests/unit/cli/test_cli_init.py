"""``mcp-fleet init``: a working example fleet, never clobbering an existing one."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
from cli_support import Invoke
from mcp_fleet.config import load_fleet, resolve_files
from mcp_fleet.examples.fleet import example_files

REPO = Path(__file__).resolve().parents[3]


def test_init_writes_a_fleet_where_every_server_is_usable(tmp_path: Path, cli: Invoke) -> None:
    home = tmp_path / "f"
    result = cli("init", "--dir", str(home))
    assert result.exit_code == 0, result.output
    for rel in (
        "catalogs/example.yaml",
        "registry.yaml",
        "config.yaml",
        "tools.yaml",
        "secrets.env",
    ):
        assert (home / rel).is_file()
        assert f"wrote    {home / rel}" in result.stdout
    assert "mcp-fleet up" in result.stdout
    assert stat.S_IMODE((home / "secrets.env").stat().st_mode) == 0o600

    state = load_fleet(resolve_files(home))
    assert sorted(state.servers) == ["calc", "notes", "time"]
    assert all(s.usable and s.enabled for s in state.servers.values())
    assert state.diagnostics == ()
    for spec in state.servers.values():
        assert spec.entry is not None and spec.entry.process is not None
        assert spec.entry.process.command[0] == sys.executable
    time = state.servers["time"].entry
    assert time is not None and time.process is not None
    assert time.process.command[-1] == "--local-timezone=UTC"  # template default filled


def test_init_uses_mcp_fleet_home(
    tmp_path: Path, cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_FLEET_HOME", str(tmp_path / "env-home"))
    assert cli("init").exit_code == 0
    assert (tmp_path / "env-home" / "registry.yaml").is_file()


def test_init_refuses_an_existing_fleet(home: Path, cli: Invoke) -> None:
    (home / "registry.yaml").write_text("registry: {mine: {}}\n")
    result = cli("init", "--dir", str(home))
    assert result.exit_code == 2
    assert "already holds a fleet" in result.stderr and "--force" in result.stderr
    assert (home / "registry.yaml").read_text() == "registry: {mine: {}}\n"


def test_init_force_backs_up_and_never_touches_secrets(home: Path, cli: Invoke) -> None:
    (home / "registry.yaml").write_text("registry: {mine: {}}\n")
    (home / "secrets.env").write_text("KEEP=me\n")
    result = cli("init", "--dir", str(home), "--force")
    assert result.exit_code == 0, result.output
    assert (home / "registry.yaml.bak").read_text() == "registry: {mine: {}}\n"
    assert (home / "secrets.env").read_text() == "KEEP=me\n"
    assert "kept" in result.stdout


def test_repo_quickstart_example_is_what_init_writes() -> None:
    root = REPO / "examples" / "quickstart"
    for rel, text in example_files("python3").items():
        assert (root / rel).read_text() == text, rel
