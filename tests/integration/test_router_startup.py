"""A client that calls a tool right after ``initialize``, while the fleet is still starting.

Claude Desktop and other clients launch the router and send ``tools/list``
or ``tools/call`` the moment ``initialize`` is answered. The stdio frontend
answers ``initialize`` once the servers started with it have attached
(bounded), so:

- ``mcp-fleet router --server ...`` and ``mcp-fleet up --transport stdio``,
  driven by the official MCP client, list every tool and answer a call sent
  right after ``initialize``;
- past the bound (a server slower to start than the hold), ``initialize``
  is answered anyway, and a call for the slow server's tool waits for it
  instead of failing with "Unknown tool"; a name nobody offers still fails,
  and a held call that is cancelled never reaches a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import StdioServerParameters, stdio_client
from mcp_fleet.router.frontend_stdio import serve_stream
from mcp_fleet.router.router import Router
from mcp_fleet.sources.adhoc import AdhocFleet
from mcp_fleet.transport import MAX_MESSAGE_BYTES, NewlineStream
from router_support import ECHO, PY, ROOT, TIME, ClientRunner, text_of, tool_names
from test_router_up import write_fleet

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CLI = [PY, "-m", "mcp_fleet.cli.main"]


async def first_call(params: StdioServerParameters) -> tuple[set[str], str]:
    """Connect, then at once list the tools and call ``echo``."""
    runner = ClientRunner(lambda: stdio_client(params))
    try:
        session = await runner.session(timeout=60)
        result = await session.call_tool("echo", {"text": "right away"})
        assert not result.is_error, result
        return await tool_names(session), text_of(result)
    finally:
        await runner.aclose()


async def test_router_server_answers_a_call_sent_right_after_initialize() -> None:
    servers = {"echo": ECHO, "time": TIME}
    args = [*CLI[1:], "router"]
    for name, argv in servers.items():
        args += ["--server", f"{name}=" + " ".join(argv)]
    params = StdioServerParameters(command=PY, args=args, cwd=str(ROOT))
    names, text = await first_call(params)
    assert text == "right away"
    assert {"echo", "add", "get_current_time"} <= names


async def test_up_over_stdio_answers_a_call_sent_right_after_initialize(tmp_path: Path) -> None:
    home = tmp_path / "fleet"
    write_fleet(home)
    params = StdioServerParameters(
        command=PY,
        args=[*CLI[1:], "up", "--transport", "stdio", "--dir", str(home)],
        cwd=str(ROOT),
    )
    names, text = await first_call(params)
    assert text == "right away"
    assert {"echo", "get_current_time"} <= names


class RawClient:
    """JSON-RPC lines over a socket pair to ``serve_stream`` (what a stdio client writes)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.answers: dict[int, dict[str, Any]] = {}
        self.arrived = asyncio.Event()
        self._reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while line := await self.reader.readline():
            msg = json.loads(line)
            if "id" in msg and "method" not in msg:
                self.answers[msg["id"]] = msg
                self.arrived.set()

    def send(self, msg: dict[str, Any]) -> None:
        self.writer.write(json.dumps({"jsonrpc": "2.0", **msg}).encode() + b"\n")

    def call(self, mid: int, method: str, params: dict[str, Any]) -> None:
        self.send({"id": mid, "method": method, "params": params})

    async def answer(self, mid: int, *, within: float) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while mid not in self.answers:
                self.arrived.clear()
                await self.arrived.wait()
        return self.answers[mid]

    async def aclose(self) -> None:
        self.writer.close()
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reading


@contextlib.asynccontextmanager
async def served(hold: float, servers: dict[str, list[str]]) -> AsyncIterator[RawClient]:
    """A router over ``servers`` and one client on a socket pair, ``hold`` seconds of hold."""
    ours, theirs = socket.socketpair()
    async with AdhocFleet() as fleet:
        for name, argv in servers.items():
            await fleet.add(name, argv)
        router = Router(fleet.table)
        following = asyncio.create_task(router.run())
        reader, writer = await asyncio.open_connection(sock=ours, limit=MAX_MESSAGE_BYTES)
        serving = asyncio.create_task(
            serve_stream(router, NewlineStream(reader, writer), startup_hold=hold)
        )
        client = RawClient(*await asyncio.open_connection(sock=theirs))
        try:
            yield client
        finally:
            await client.aclose()
            for task in (serving, following):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            writer.close()


def forwarded(received: Path, tool: str) -> list[dict[str, Any]]:
    """The ``tools/call`` requests for ``tool`` the server read (its stdin, as recorded)."""
    lines = received.read_text().splitlines() if received.exists() else []
    calls = [json.loads(line) for line in lines if line.strip()]
    return [
        c["params"]
        for c in calls
        if c.get("method") == "tools/call" and c.get("params", {}).get("name") == tool
    ]


async def test_past_the_hold_a_call_waits_for_its_slow_server(tmp_path: Path) -> None:
    # The slow server starts only once the test opens its gate, and records all it reads.
    gate, received = tmp_path / "gate", tmp_path / "slow.stdin"
    wait_for_gate = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    slow = ["sh", "-c", f"{wait_for_gate}; tee {received} | {' '.join(TIME)}"]
    async with served(0.5, {"echo": ECHO, "slow": slow}) as client:
        started = time.monotonic()
        client.call(1, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                      "clientInfo": {"name": "t", "version": "1"}})  # fmt: skip
        await client.answer(1, within=10)  # the slow server has not even started
        assert time.monotonic() - started >= 0.4  # the hold
        client.send({"method": "notifications/initialized"})
        client.call(2, "tools/call", {"name": "get_current_time",
                                      "arguments": {"timezone": "UTC"}})  # fmt: skip
        client.call(3, "tools/call", {"name": "no_such_tool", "arguments": {}})
        client.call(4, "tools/call", {"name": "convert_time", "arguments": {}})
        client.send({"method": "notifications/cancelled", "params": {"requestId": 4}})
        client.call(5, "tools/call", {"name": "echo", "arguments": {"text": "fast"}})

        fast = await client.answer(5, within=30)  # not held behind the slow server
        assert fast["result"]["content"][0]["text"] == "fast"
        assert 2 not in client.answers

        gate.touch()
        timed = await client.answer(2, within=30)
        assert "result" in timed and not timed["result"].get("isError"), timed
        assert "UTC" in timed["result"]["content"][0]["text"]
        unknown = await client.answer(3, within=30)
        assert "Unknown tool: no_such_tool" in unknown["error"]["message"]
        # A call sent now reaches the server after anything released with call 2: once
        # it is answered, the server has read all it will ever read of call 4.
        now = {"source_timezone": "UTC", "time": "12:00", "target_timezone": "UTC"}
        client.call(6, "tools/call", {"name": "convert_time", "arguments": now})
        converted = await client.answer(6, within=30)
        assert "result" in converted and not converted["result"].get("isError"), converted
        assert [p["arguments"] for p in forwarded(received, "convert_time")] == [now]
        assert 4 not in client.answers  # cancelled while held: never answered
