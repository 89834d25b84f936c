"""The gateway's options of ``up`` and ``router``: parsing, limits, errors, help.

The commands are invoked for real through typer; ``GatewayOptions.settings``
is replaced by a recorder that stops the command right after parsing (where
it would check the settings and start serving), so the tests see exactly
what the command line turned into.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from cli_support import Invoke
from mcp_fleet.cli.gateway_options import (
    NO_GATEWAY_OPTIONS,
    GatewayOptions,
    parse_rate,
    with_gateway_options,
)
from mcp_fleet.gateway.limits import LimitSettings

COMMANDS = [["up"], ["router"]]


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[GatewayOptions]:
    """The ``GatewayOptions`` each invoked command built (the command stops there)."""
    seen: list[GatewayOptions] = []

    def record(self: GatewayOptions, **_: Any) -> Any:
        seen.append(self)
        raise typer.Exit(0)

    monkeypatch.setattr(GatewayOptions, "settings", record)
    return seen


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("5", 5.0), ("2/s", 2.0), ("0.5/sec", 0.5), ("30/m", 0.5), ("90/min", 1.5),
     ("1800/h", 0.5), (" 4 / S ", 4.0)],
)  # fmt: skip
def test_rates_per_second_minute_or_hour(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize(
    ("text", "message"),
    [("0/s", "more than 0"), ("-3", "more than 0"), ("fast", "is not a rate"),
     ("5/d", "is not a rate"), ("inf/s", "is not a rate"), ("nan", "is not a rate")],
)  # fmt: skip
def test_bad_rates_are_refused(text: str, message: str) -> None:
    with pytest.raises(typer.BadParameter, match=message):
        parse_rate(text)


@pytest.mark.parametrize("command", COMMANDS)
def test_limit_options_reach_the_gateway_options(
    cli: Invoke, home: Path, parsed: list[GatewayOptions], command: list[str]
) -> None:
    result = cli(
        *command, "--dir", str(home),
        "--max-calls-per-identity", "3", "--max-calls-per-server", "10",
        "--rate-per-identity", "30/m", "--burst-per-identity", "4",
        "--rate-per-server", "100", "--otel",
        "--allowed-host", "gw.example", "--allowed-host", "gw2.example", "--public-metrics",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [options] = parsed
    assert options == GatewayOptions(
        allowed_hosts=("gw.example", "gw2.example"),
        max_body_bytes=32 * 1024 * 1024,
        public_metrics=True,
        max_calls_per_identity=3,
        max_calls_per_server=10,
        rate_per_identity=0.5,
        burst_per_identity=4,
        rate_per_server=100.0,
        otel=True,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_without_gateway_options_the_defaults_apply(
    cli: Invoke, home: Path, parsed: list[GatewayOptions], command: list[str]
) -> None:
    assert cli(*command, "--dir", str(home)).exit_code == 0
    [options] = parsed
    assert options == GatewayOptions(max_body_bytes=32 * 1024 * 1024)
    assert options.limits() == LimitSettings() and not options.limits().active
    assert NO_GATEWAY_OPTIONS.otel is None


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-calls-per-identity", "0"], "'--max-calls-per-identity'"),
        (["--max-calls-per-server", "-2"], "'--max-calls-per-server'"),
        (["--burst-per-server", "0", "--rate-per-server", "1"], "'--burst-per-server'"),
        (["--rate-per-identity", "0/s"], "a rate must be more than 0 calls"),
        (["--rate-per-server", "often"], "'often' is not a rate"),
    ],
)
def test_zero_or_negative_limits_are_usage_errors(
    cli: Invoke, home: Path, command: list[str], args: list[str], message: str
) -> None:
    result = cli(*command, "--dir", str(home), *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


@pytest.mark.parametrize("command", COMMANDS)
def test_a_burst_without_its_rate_is_refused_before_serving(
    cli: Invoke, home: Path, command: list[str]
) -> None:
    result = cli(*command, "--dir", str(home), "--burst-per-identity", "5", "--port", "0")
    assert result.exit_code == 2
    assert "--burst-per-identity 5: a burst needs a rate; give --rate-per-identity too" in (
        result.stderr
    )
    assert "listening" not in result.stderr and "serving" not in result.stderr


def test_settings_carry_the_limits_and_tracing(tmp_path: Path) -> None:
    options = GatewayOptions(
        max_calls_per_identity=2, max_calls_per_server=5, rate_per_identity=0.5,
        burst_per_identity=3, rate_per_server=20.0, otel=False,
    )  # fmt: skip
    settings = options.settings(home=tmp_path, host="127.0.0.1", stdio=False)
    assert settings.limits == LimitSettings(
        identity_concurrency=2,
        server_concurrency=5,
        identity_rate=0.5,
        identity_burst=3,
        server_rate=20.0,
        server_burst=None,
    )
    assert settings.tracing is False


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_the_limits_in_the_gateway_panel(cli: Invoke, command: list[str]) -> None:
    text = cli(*command, "--help").stdout
    panel = text[text.index("Gateway") : text.index("Fleet files")]
    for option in (
        "--max-calls-per-identity", "--max-calls-per-server", "--rate-per-identity",
        "--burst-per-identity", "--rate-per-server", "--burst-per-server", "--otel",
        "--allow-unauthenticated", "--audit-log", "--max-body-bytes",
    ):  # fmt: skip
        assert option in panel
    assert "N[/s|/m|/h]" in panel and "mcp-fleet[otel]" in panel


def test_a_command_without_a_gateway_parameter_is_a_mistake() -> None:
    def plain(dir: str | None = None) -> None: ...

    with pytest.raises(TypeError, match="no 'gateway' parameter"):
        with_gateway_options(plain)
