"""``mcp-fleet up --transport stdio``: what a client's config launches, end to end.

A fleet directory with two process servers; the official client launches
``mcp-fleet up --transport stdio`` the way Claude Desktop would, lists the
fleet's tools, calls them, and sees a server disappear (with
``notifications/tools/list_changed``) when registry.yaml disables it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mcp import StdioServerParameters, stdio_client
from router_support import ECHO, PY, ROOT, TIME, ClientRunner, text_of, tool_names, until_tools

pytestmark = [pytest.mark.timeout(90), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

#: The CLI with ``up`` registered (main.py gets the line once the command lands there).
LAUNCH = (
    "from mcp_fleet.cli.main import app\n"
    "from mcp_fleet.cli import up_cmd\n"
    "names = {c.name for c in app.registered_commands}\n"
    "'up' in names or up_cmd.register(app)\n"
    "app()\n"
)


def registry(time_enabled: bool) -> str:
    return (
        "registry:\n"
        "  echo:\n    catalog: test\n    enabled: true\n"
        f"  time:\n    catalog: test\n    enabled: {'true' if time_enabled else 'false'}\n"
    )


def write_fleet(home: Path) -> None:
    (home / "catalogs").mkdir(parents=True)
    argv = lambda cmd: "[" + ", ".join(f'"{a}"' for a in cmd) + "]"  # noqa: E731
    (home / "catalogs" / "test.yaml").write_text(
        'version: "2"\n'
        "registry:\n"
        f"  echo:\n    description: echo\n    process:\n      command: {argv(ECHO)}\n"
        f"  time:\n    description: time\n    process:\n      command: {argv(TIME)}\n"
    )
    (home / "registry.yaml").write_text(registry(True))


async def test_up_over_stdio_serves_the_fleet_and_follows_registry_edits(tmp_path: Path) -> None:
    home = tmp_path / "fleet"
    write_fleet(home)
    params = StdioServerParameters(
        command=PY,
        args=["-c", LAUNCH, "up", "--transport", "stdio", "--dir", str(home)],
        cwd=str(ROOT),
    )
    runner = ClientRunner(lambda: stdio_client(params))
    try:
        session = await runner.session(timeout=60)
        # The first list waits for the controller's first pass: the fleet is there at once.
        assert {"echo", "get_current_time"} <= await tool_names(session)
        assert text_of(await session.call_tool("echo", {"text": "through up"})) == "through up"
        runner.recorder.changed.clear()
        (home / "registry.yaml").write_text(registry(False))
        await asyncio.wait_for(runner.recorder.changed.wait(), 30)
        for _ in range(100):
            if "get_current_time" not in await tool_names(session):
                break
            await asyncio.sleep(0.1)
        names = await tool_names(session)
        assert "get_current_time" not in names and "echo" in names
        await until_tools(session, {"echo"})
    finally:
        await runner.aclose()
