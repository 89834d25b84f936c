"""The CLI under test, invoked in-process with typer's runner (stdout and stderr apart)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import Invoke
from click.testing import Result
from mcp_fleet.cli.main import app
from typer.testing import CliRunner


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Invoke:
    """``cli("server", "ls", input=...)``; MCP_FLEET_HOME points at an unused folder."""
    monkeypatch.setenv("MCP_FLEET_HOME", str(tmp_path / "default-home"))
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, list(args), input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def home(tmp_path: Path, cli: Invoke) -> Path:
    """A fleet directory holding the example fleet ``mcp-fleet init`` writes."""
    path = tmp_path / "fleet"
    result = cli("init", "--dir", str(path))
    assert result.exit_code == 0, result.output
    return path
