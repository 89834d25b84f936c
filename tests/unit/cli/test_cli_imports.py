"""Start-up cost of the command: ``mcp-fleet --help`` loads typer and rich, nothing heavier.

Every command module is imported to build the application, so each keeps
its heavy imports (the config loader's pydantic models, the Docker SDK,
kopf, the Kubernetes clients, the MCP SDK, the controller and the router)
inside its command functions. Checked in a fresh interpreter, since this
test process has imported most of them already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cli_support import Invoke
from mcp_fleet.cli import router_cmds
from mcp_fleet.router.activator import DEFAULT_ACTIVATION_TIMEOUT

HEAVY = ("pydantic", "docker", "kopf", "kubernetes", "kubernetes_asyncio", "mcp", "yaml", "ruamel")
#: typer itself loads pydantic to convert option values, once a command runs.
TYPER_NEEDS = ("pydantic", "pydantic_core", "annotated_types", "typing_inspection")
#: Besides the heavy ones: what only running a fleet needs.
FLEET_MODULES = ("mcp_fleet.config", "mcp_fleet.reconcile", "mcp_fleet.router", "asyncio")


def loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return list(json.loads(out.splitlines()[-1]))


def test_importing_the_application_loads_no_heavy_library() -> None:
    modules = loaded_after("import mcp_fleet.cli.main")
    assert "typer" in modules  # the probe sees what the application loads
    heavy = [m for m in modules if m.split(".")[0] in HEAVY]
    assert heavy == []
    fleet = [m for m in modules if m.startswith(FLEET_MODULES)]
    assert fleet == []


@pytest.mark.parametrize("argv", [["--help"], ["up", "--help"], ["router", "--help"]])
def test_help_loads_no_heavy_library(argv: list[str]) -> None:
    code = (
        "from mcp_fleet.cli.main import app\n"
        f"try:\n    app({argv!r})\nexcept SystemExit:\n    pass\n"
    )
    modules = loaded_after(code)
    ours = [m for m in modules if m.split(".")[0] in HEAVY and m.split(".")[0] not in TYPER_NEEDS]
    assert ours == []
    assert [m for m in modules if m.startswith(FLEET_MODULES[:3])] == []


def test_activation_timeout_defaults_match_the_router() -> None:
    assert router_cmds.ACTIVATION_TIMEOUT_SECONDS == DEFAULT_ACTIVATION_TIMEOUT
    assert router_cmds.KUBERNETES_ACTIVATION_TIMEOUT_SECONDS == 120.0


@pytest.mark.parametrize("command", ["up", "router"])
def test_activation_timeout_is_an_option_of_up_and_router(cli: Invoke, command: str) -> None:
    assert "--activation-timeout" in cli(command, "--help").stdout
    result = cli(command, "--activation-timeout", "0", "--dir", "/nonexistent")
    assert result.exit_code == 2 and "--activation-timeout" in result.stderr


def test_module_loading_stays_inside_the_probe() -> None:
    """The probe itself: a heavy module imported on purpose is seen."""
    assert "pydantic" in loaded_after("import pydantic")
