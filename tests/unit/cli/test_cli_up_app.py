"""``mcp-fleet up``'s application started in the test's own event loop.

``UpApp`` is what the command runs once its options are parsed: here it
runs a process-runtime fleet (the echo server) on port 0, an official MCP
client calls a tool through its router, and leaving the block stops it all:
the server, the demand socket, the lock, with the last status written.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mcp_fleet.cli.up_app import UpApp, UpOptions
from mcp_fleet.config import resolve_files
from mcp_fleet.reconcile.lock import ControllerBusy, holder_pid
from mcp_fleet.reconcile.statusfile import read_status, status_path
from mcp_fleet.status import ServerState
from support import until
from support.fleet_up import ECHO, mcp_client, process_entry, tool_text, write_fleet


def options_for(home: Path) -> UpOptions:
    return UpOptions(files=resolve_files(home), port=0)


async def test_up_serves_a_fleet_in_process_and_stops_it(tmp_path: Path) -> None:
    home = write_fleet(tmp_path, {"echo": process_entry(ECHO)})
    state_dir = home / ".state"
    said: list[str] = []
    async with UpApp(options_for(home), say=said.append) as app:
        assert app.url is not None and app.url.startswith("http://127.0.0.1:")
        assert holder_pid(state_dir) is not None  # this process holds the fleet's lock
        await asyncio.wait_for(app.published.wait(), 60)
        async with mcp_client(app.url) as session:
            tools = await session.list_tools()
            assert "echo" in {t.name for t in tools.tools}
            result = await session.call_tool("echo", {"text": "in process"})
            assert tool_text(result) == "in process"
        echo = app.controller.status().server("echo")
        assert echo is not None and echo.state is ServerState.READY
        await until(lambda: any(line.startswith("ready    echo") for line in said),
                    what="the router says echo is ready")  # fmt: skip
    assert holder_pid(state_dir) is None  # the lock went with it
    last = read_status(status_path(state_dir))
    assert last is not None and last.controller_pid is None
    stopped = last.server("echo")
    assert stopped is not None and stopped.state is ServerState.STOPPED
    assert said[0] == f"mcp-fleet is serving {home} on {app.url}"
    assert said[-1] == "fleet stopped"


async def test_a_second_up_on_the_same_fleet_fails_to_start(tmp_path: Path) -> None:
    home = write_fleet(tmp_path, {"echo": process_entry(ECHO)})
    async with UpApp(options_for(home)) as first:
        second = UpApp(options_for(home))
        with pytest.raises(ControllerBusy, match="already manages"):
            await second.start()
        assert second.url is None
        assert first.url is not None
        await asyncio.wait_for(first.published.wait(), 60)
        async with mcp_client(first.url) as session:  # the first one serves on, untouched
            result = await session.call_tool("echo", {"text": "still here"})
            assert tool_text(result) == "still here"
