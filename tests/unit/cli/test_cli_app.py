"""The application itself: help texts, version, exit codes for usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from cli_support import Invoke
from mcp_fleet import __version__
from mcp_fleet.cli.common import exit_on_error
from mcp_fleet.errors import Diagnostic, FleetConfigError, RuntimeFailure


def test_version(cli: Invoke) -> None:
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout == f"mcp-fleet {__version__}\n"


@pytest.mark.parametrize(
    "command",
    [
        ["init"],
        ["catalog", "validate"],
        ["catalog", "show"],
        ["catalog", "import"],
        ["server", "ls"],
        ["server", "enable"],
        ["server", "disable"],
        ["secret", "set"],
        ["secret", "ls"],
        ["secret", "rm"],
    ],
)
def test_every_command_has_help_with_examples(cli: Invoke, command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.exit_code == 0
    assert "Examples" in result.stdout
    assert "mcp-fleet " + " ".join(command) in result.stdout


def test_fleet_options_are_listed(cli: Invoke) -> None:
    text = cli("server", "ls", "--help").stdout
    for option in ("--dir", "--catalog", "--registry", "--config", "--tools-config", "--secrets"):
        assert option in text


def test_usage_error_is_exit_2(cli: Invoke) -> None:
    assert cli("server", "enable").exit_code == 2
    assert cli("no-such-command").exit_code == 2


def test_json_logs_option(cli: Invoke, tmp_path: Path) -> None:
    result = cli("--log-format", "json", "-v", "catalog", "validate", "--dir", str(tmp_path))
    assert result.exit_code == 0


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (FleetConfigError(Diagnostic(message="bad", file=Path("registry.yaml"), line=3)), 2),
        (RuntimeFailure("docker daemon is not running"), 1),
        (PermissionError(13, "Permission denied", "/etc/x"), 1),
    ],
)
def test_errors_map_to_exit_codes(
    error: Exception, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit) as info, exit_on_error():
        raise error
    assert info.value.exit_code == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
