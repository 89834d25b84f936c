"""The example fleet's servers, run for real as processes and spoken to with the official client.

``mcp-fleet init`` promises a fleet that works; this starts every server of
it exactly as the fleet resolves it (argv, env, cwd from ``load_fleet``) and
does ``initialize`` + ``tools/list`` with the ``mcp`` SDK's stdio client,
plus one tool call each. No Docker: real child processes.
"""

from __future__ import annotations

import sys
import time

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import TextContent
from mcp_fleet.config import load_fleet, resolve_files
from mcp_fleet.config.atomic import atomic_write
from mcp_fleet.examples.fleet import example_files
from mcp_fleet.model import DesiredState

EXPECTED_TOOLS = {
    "calc": {"add", "subtract", "multiply", "divide", "echo"},
    "notes": {"add_note", "list_notes", "read_note", "delete_note"},
    "time": {"get_current_time", "convert_time"},
}
CALLS = {
    "calc": ("multiply", {"a": 6, "b": 7}, "42"),
    "notes": ("add_note", {"title": "t", "text": "hello"}, "added note 't'"),
    "time": (
        "convert_time",
        {"source_timezone": "UTC", "time": "12:00", "target_timezone": "UTC"},
        "12:00",
    ),
}


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> DesiredState:
    home = tmp_path_factory.mktemp("fleet")
    for rel, text in example_files().items():
        atomic_write(home / rel, text)
    return load_fleet(resolve_files(home))


def params(state: DesiredState, name: str) -> StdioServerParameters:
    spec = state.servers[name]
    assert spec.usable, spec.problems
    assert spec.entry is not None and spec.entry.process is not None
    command, *args = spec.entry.process.command
    assert command == sys.executable
    return StdioServerParameters(
        command=command,
        args=args,
        env={**spec.env, **spec.entry.process.env, **spec.secret_env},
        cwd=spec.entry.process.cwd,
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(EXPECTED_TOOLS))
async def test_example_server_answers_initialize_and_tools(state: DesiredState, name: str) -> None:
    started = time.monotonic()
    async with (
        stdio_client(params(state, name)) as (read, write),
        ClientSession(read, write) as session,
    ):
        init = await session.initialize()
        ready = time.monotonic() - started
        assert init.server_info.name
        listed = await session.list_tools()
        assert {t.name for t in listed.tools} >= EXPECTED_TOOLS[name]
        tool, arguments, expected = CALLS[name]
        result = await session.call_tool(tool, arguments)
        assert not result.is_error
        text = "".join(c.text for c in result.content if isinstance(c, TextContent))
        assert expected in text
    if name == "calc":
        assert ready < 5.0, f"calc should start in a blink, took {ready:.2f}s"


@pytest.mark.timeout(60)
async def test_calc_reports_tool_errors_as_results(state: DesiredState) -> None:
    async with (
        stdio_client(params(state, "calc")) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool("divide", {"a": 1, "b": 0})
        assert result.is_error
        assert "division by zero" in "".join(
            c.text for c in result.content if isinstance(c, TextContent)
        )
        await session.send_ping()
