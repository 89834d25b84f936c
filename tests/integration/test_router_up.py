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

#: The CLI, run from the checkout.
LAUNCH = "from mcp_fleet.cli.main import app\napp()\n"


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


async def test_a_second_up_on_the_same_fleet_fails_at_once(tmp_path: Path) -> None:
    """Two ``up`` on one fleet: the second exits 1 naming the first, and serves nothing."""
    home = tmp_path / "fleet"
    write_fleet(home)
    first = await asyncio.create_subprocess_exec(
        PY, "-c", LAUNCH, "up", "--transport", "stdio", "--dir", str(home),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, cwd=str(ROOT),
    )  # fmt: skip
    try:
        lock = home / ".state" / "controller.lock"
        for _ in range(300):
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                break
            await asyncio.sleep(0.1)
        second = await asyncio.create_subprocess_exec(
            PY, "-c", LAUNCH, "up", "--port", "0", "--dir", str(home),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(ROOT),
        )  # fmt: skip
        out, err = await asyncio.wait_for(second.communicate(), timeout=60)
        assert second.returncode == 1, (out, err)
        assert f"another controller (pid {first.pid}) already manages" in err.decode()
        assert b"serving" not in out
    finally:
        first.terminate()
        await first.wait()
