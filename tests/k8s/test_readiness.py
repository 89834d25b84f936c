"""The readiness probe: a real MCP initialize over HTTP, and every way it can fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from k8s_support import free_port
from mcp_fleet.operator.k8s_plan import ServiceAddress
from mcp_fleet.operator.readiness import cluster_url, mcp_probe

pytestmark = pytest.mark.timeout(30)


async def test_probe_initializes_and_lists_tools(time_bridge: int) -> None:
    result = await mcp_probe(
        f"http://127.0.0.1:{time_bridge}/mcp", transport="streamable-http", within=10
    )
    assert result.ok, result.error
    assert result.server_name == "mcp-time" and result.protocol_version
    assert set(result.tools) >= {"get_current_time", "convert_time"}


async def test_probe_reports_refused_connections() -> None:
    result = await mcp_probe(
        f"http://127.0.0.1:{free_port()}/mcp", transport="streamable-http", within=5
    )
    assert not result.ok and result.error is not None
    assert "127.0.0.1" in result.error and "Connect" in result.error


async def test_probe_reports_a_wrong_path(time_bridge: int) -> None:
    result = await mcp_probe(
        f"http://127.0.0.1:{time_bridge}/nope", transport="streamable-http", within=5
    )
    assert not result.ok and result.error


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections and never answers."""
    port = free_port()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", port)
    try:
        yield port
    finally:
        server.close()


async def test_probe_times_out(silent_server: int) -> None:
    result = await mcp_probe(
        f"http://127.0.0.1:{silent_server}/mcp", transport="streamable-http", within=1
    )
    assert (
        not result.ok
        and result.error == f"no answer from http://127.0.0.1:{silent_server}/mcp within 1 s"
    )


def test_default_resolver_is_the_cluster_dns_name() -> None:
    assert (
        cluster_url(ServiceAddress("time", "team-a", 8080, "/mcp"))
        == "http://time.team-a.svc:8080/mcp"
    )
