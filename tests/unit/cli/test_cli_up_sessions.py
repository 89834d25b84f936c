"""``up --max-session-instances`` and how ``status`` shows per-client servers.

The option is parsed by the real command: the router it would build is
replaced by a recorder that stops the command there (before anything
listens or starts), so the test sees exactly what reached ``Router``. The
status table is rendered from a snapshot to plain text, as a person reads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
import typer
from cli_support import Invoke
from mcp_fleet.cli import up_cmd
from mcp_fleet.cli.controller_cmds import render_status
from mcp_fleet.reconcile.snapshot import ServerStatus, StatusSnapshot
from mcp_fleet.router.session_launcher import DEFAULT_MAX_INSTANCES, ENV_MAX_INSTANCES
from mcp_fleet.status import REASON_IDLE, REASON_PER_CLIENT, ServerState
from rich.console import Console

OPTION = "--max-session-instances"


@pytest.fixture
def router_kwargs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What each ``up`` gave ``Router``; the command stops right there."""
    import mcp_fleet.cli.up_app as up_app_module
    import mcp_fleet.router.serve as serve_module

    seen: list[dict[str, Any]] = []

    def record(*_: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        raise typer.Exit(0)

    def plain_run(main: Coroutine[Any, Any, None]) -> None:
        asyncio.run(main)  # without serve.run's process-wide gc tuning

    monkeypatch.setattr(up_app_module, "Router", record)
    monkeypatch.setattr(serve_module, "run", plain_run)
    monkeypatch.delenv(ENV_MAX_INSTANCES, raising=False)
    return seen


def test_the_default_matches_the_router() -> None:
    assert up_cmd.DEFAULT_MAX_SESSION_INSTANCES == DEFAULT_MAX_INSTANCES == 32


def test_the_option_is_documented(cli: Invoke) -> None:
    out = cli("up", "--help").stdout
    assert OPTION in out and ENV_MAX_INSTANCES in out


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [([OPTION, "5"], None, 5), ([], "7", 7), ([], None, 32), ([OPTION, "3"], "9", 3)],
)
def test_option_then_variable_then_default_reach_the_router(
    cli: Invoke,
    home: Path,
    router_kwargs: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: str | None,
    expected: int,
) -> None:
    if env is not None:
        monkeypatch.setenv(ENV_MAX_INSTANCES, env)
    result = cli("up", "--dir", str(home), *argv)
    assert result.exit_code == 0, result.output
    assert [kw["max_session_instances"] for kw in router_kwargs] == [expected]


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5"])
def test_a_bad_option_exits_2_naming_it(
    cli: Invoke, home: Path, router_kwargs: list[dict[str, Any]], value: str
) -> None:
    result = cli("up", "--dir", str(home), OPTION, value)
    assert result.exit_code == 2
    assert OPTION in result.stderr
    assert router_kwargs == []


@pytest.mark.parametrize("value", ["0", "lots"])
def test_a_bad_variable_exits_2_naming_it_before_anything_starts(
    cli: Invoke,
    home: Path,
    router_kwargs: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    value: str,
) -> None:
    monkeypatch.setenv(ENV_MAX_INSTANCES, value)
    result = cli("up", "--dir", str(home))
    assert result.exit_code == 2
    assert ENV_MAX_INSTANCES in result.stderr and "positive integer" in result.stderr
    assert router_kwargs == []
    assert not (home / ".state" / "status.json").exists()


def rendered(*servers: ServerStatus) -> str:
    snap = StatusSnapshot(fleet="f", home="/h", updated_at=100.0, runtime="process",
                          controller_pid=1, servers=servers)  # fmt: skip
    console = Console(width=200, record=True, color_system=None)
    console.print(render_status(snap, alive=True, now=100.0))
    return console.export_text()


def row(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(name + " "))


def test_status_shows_per_client_servers_with_their_session_count() -> None:
    running = ServerStatus("browser", "enabled", ServerState.STOPPED, REASON_PER_CLIENT,
                           "per-client: 2 session instances running", runtime="process",
                           session_instances=2)  # fmt: skip
    unknown = ServerStatus("shell", "enabled", ServerState.STOPPED, REASON_PER_CLIENT,
                           "per-client: one instance per client session, started by the router",
                           runtime="process")  # fmt: skip
    cold = ServerStatus("fetch", "enabled", ServerState.STOPPED, REASON_IDLE,
                        "on demand: starts on the next call", runtime="process")  # fmt: skip
    text = rendered(running, unknown, cold)
    assert "MESSAGE" in text and "LAST ERROR" not in text
    browser = row(text, "browser")
    assert "Stopped" in browser and "PerClient" in browser and "2 sessions" in browser
    assert "per-client: 2 session instances running" in browser
    shell = row(text, "shell")
    assert "PerClient" in shell and "sessions" not in shell.split("per-client")[0]
    assert "on demand" in row(text, "fetch") and "ScaledToZero" in row(text, "fetch")


def test_only_failures_are_shown_as_errors() -> None:
    failed = ServerStatus("bad", "enabled", ServerState.FAILED, "MissingSecret", "TOKEN unset")
    quiet = ServerStatus("pc", "enabled", ServerState.STOPPED, REASON_PER_CLIENT, "per-client")
    snap = StatusSnapshot(fleet="f", home="/h", updated_at=1.0, runtime="process",
                          servers=(failed, quiet))  # fmt: skip
    console = Console(width=200, record=True, color_system="standard", force_terminal=True)
    console.print(render_status(snap, alive=False, now=1.0))
    text = console.export_text(styles=True)
    red, dim = "\x1b[31m", "\x1b[2m"
    assert f"{red}TOKEN unset" in text
    assert f"{dim}per-client" in text and f"{red}per-client" not in text
