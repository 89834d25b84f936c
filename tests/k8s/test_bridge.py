"""``mcp-fleet bridge``, run for real as a subprocess around real stdio MCP servers.

Clients are the official SDK's streamable HTTP client (and plain HTTP where
the wire itself is the point). Covered: the protocol round trip
(initialize, tools/list, tools/call), many sessions sharing one server
without mixing answers, ``--per-session`` isolation, session end, the
sidecar's FIFO mode with the exact shell line the operator puts in the
server container, and the bridge dying with its server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from k8s_support import free_port, log_of, start_bridge, stop, wait_ready
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_fleet.bridge.serve import BridgeOptions, serve
from mcp_fleet.operator.k8s_plan import fifo_script

pytestmark = pytest.mark.timeout(60)
NOTES = [sys.executable, "-m", "mcp_fleet.examples.servers.notes"]
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@asynccontextmanager
async def mcp_session(port: int) -> AsyncIterator[ClientSession]:
    async with (
        streamable_http_client(f"http://127.0.0.1:{port}/mcp") as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        await session.initialize()
        yield session


@pytest.fixture
def bridges() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        stop(proc)


def launch(
    bridges: list[subprocess.Popen[bytes]], *args: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = start_bridge(*args, port=port)
    bridges.append(proc)
    return proc, port


async def test_round_trip_through_the_bridge(time_bridge: int) -> None:
    async with mcp_session(time_bridge) as session:
        tools = await session.list_tools()
        assert {t.name for t in tools.tools} >= {"get_current_time", "convert_time"}
        now = await session.call_tool("get_current_time", {"timezone": "UTC"})
        assert not now.is_error and now.structured_content is not None
        assert now.structured_content["timezone"] == "UTC"
        bad = await session.call_tool("get_current_time", {"timezone": "Not/AZone"})
        assert bad.is_error  # the server's own error comes back as the server sent it


async def test_concurrent_sessions_share_one_server_without_mixing_answers(
    time_bridge: int,
) -> None:
    zones = ["Europe/Paris", "Asia/Tokyo", "America/New_York", "Africa/Cairo", "Australia/Sydney"]

    async def convert(zone: str) -> str:
        async with mcp_session(time_bridge) as session:  # every session starts its ids at 1
            result = await session.call_tool(
                "convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": zone}
            )
            assert result.structured_content is not None
            return str(result.structured_content["target"]["timezone"])

    assert await asyncio.gather(*(convert(z) for z in zones)) == zones


def test_health_readiness_and_session_end_on_the_wire(time_bridge: int) -> None:
    base = f"http://127.0.0.1:{time_bridge}"
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert httpx.get(f"{base}/readyz").text == "ready"
    opened = httpx.post(f"{base}/mcp", json=INIT, headers=HEADERS)
    assert opened.status_code == 200
    session_id = opened.headers["mcp-session-id"]
    assert '"serverInfo"' in opened.text
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    with_id = {**HEADERS, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-06-18"}
    assert httpx.post(f"{base}/mcp", json=ping, headers=with_id).status_code == 200
    assert httpx.delete(f"{base}/mcp", headers=with_id).status_code == 200
    assert httpx.post(f"{base}/mcp", json=ping, headers=with_id).status_code == 404
    unknown = {**with_id, "Mcp-Session-Id": "0" * 32}
    assert httpx.post(f"{base}/mcp", json=ping, headers=unknown).status_code == 404


async def test_shared_server_versus_one_server_per_session_and_exit_with_the_server(
    bridges: list[Any],
) -> None:
    shared, shared_port = launch(bridges, "--", *NOTES)
    isolated, isolated_port = launch(bridges, "--per-session", "--", *NOTES)
    await asyncio.to_thread(wait_ready, shared, shared_port)
    await asyncio.to_thread(wait_ready, isolated, isolated_port)

    async def seen_by_second_session(port: int) -> Any:
        async with mcp_session(port) as first, mcp_session(port) as second:
            await first.call_tool("add_note", {"title": "plan", "text": "ship it"})
            listed = await second.call_tool("list_notes", {})
            return listed.structured_content

    assert await seen_by_second_session(shared_port) == {"result": ["plan"]}
    assert await seen_by_second_session(isolated_port) == {"result": []}

    # The shared server dies: the bridge exits with it (Kubernetes restarts the container).
    (child,) = _children(shared.pid)
    os.kill(child, signal.SIGKILL)
    assert await asyncio.to_thread(shared.wait, 15) != 0
    assert "the server exited" in log_of(shared)


async def test_sidecar_mode_talks_to_the_server_container_through_fifos(
    bridges: list[Any], tmp_path: Path
) -> None:
    io_dir = tmp_path / "mcp-io"
    bridge, port = launch(bridges, "--fifo-dir", str(io_dir))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if (await http.get("/healthz", timeout=1)).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        # The sidecar is started (FIFOs made) but no server yet: alive, not ready.
        assert (io_dir / "in").is_fifo() and (io_dir / "out").is_fifo()
        assert (await http.get("/readyz")).status_code == 503
        assert (await http.post("/mcp", json=INIT, headers=HEADERS)).status_code == 503

    # The server container's command, exactly as the operator writes it.
    argv = ["/bin/sh", "-c", fifo_script(str(io_dir)), sys.executable, "-m", "mcp_server_time"]
    server = await asyncio.to_thread(subprocess.Popen, argv, stderr=subprocess.DEVNULL)
    bridges.append(server)
    await asyncio.to_thread(wait_ready, bridge, port)
    async with mcp_session(port) as session:
        result = await session.call_tool("get_current_time", {"timezone": "Asia/Tokyo"})
        assert result.structured_content is not None
        assert result.structured_content["timezone"] == "Asia/Tokyo"

    server.kill()  # the server container dies: the bridge goes with it (the pod restarts both)
    assert bridge.wait(15) != 0


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def test_bridge_command_refuses_a_missing_server_command() -> None:
    from bridge_cli import app
    from typer.testing import CliRunner

    runner = CliRunner()
    result = runner.invoke(app, ["bridge", "--port", "0"])
    assert result.exit_code == 2
    assert "give the server's command after --" in result.output
    result = runner.invoke(app, ["bridge", "--fifo-dir", "/tmp/x", "--", "srv"])
    assert result.exit_code == 2
    assert "exclude each other" in result.output


async def test_bridge_reports_a_server_that_never_initializes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    argv = (sys.executable, "-c", "import sys; sys.exit(3)")
    options = BridgeOptions(argv=argv, host="127.0.0.1", port=free_port(), init_timeout=5)
    assert await serve(options) == 1
    assert "the server did not initialize" in caplog.text
