"""Backends reached over HTTP: streamable HTTP and legacy SSE (catalog ``type: remote``).

One router serves the echo server over HTTP; a second router reaches it
twice, once per HTTP transport, as two remote servers. The official client
talks to the second router, so every message crosses both transports.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from mcp.shared.exceptions import MCPError
from mcp_fleet.endpoints import EndpointEntry, EndpointTable, HttpEndpoint
from mcp_fleet.router.http_service import serve_http
from mcp_fleet.router.router import Router
from mcp_fleet.sources.adhoc import AdhocFleet, adhoc_spec
from router_support import ECHO, http_client, text_of, tool_names, until_tools

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


async def _serve(router: Router, tasks: list[asyncio.Task[None]]) -> str:
    urls: asyncio.Queue[str] = asyncio.Queue()
    tasks.append(asyncio.create_task(router.run()))
    tasks.append(asyncio.create_task(serve_http(router, port=0, ready=urls.put_nowait)))
    return await asyncio.wait_for(urls.get(), 10)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def front() -> AsyncIterator[str]:
    tasks: list[asyncio.Task[None]] = []
    async with AdhocFleet() as fleet:
        await fleet.add("echo", ECHO)
        inner = await _serve(Router(fleet.table), tasks)
        base = inner.rsplit("/", 1)[0]
        table = EndpointTable()
        await table.publish(
            {
                "viahttp": EndpointEntry(
                    adhoc_spec("viahttp", ["remote"]), HttpEndpoint("viahttp", "1", inner)
                ),
                "viasse": EndpointEntry(
                    adhoc_spec("viasse", ["remote"]),
                    HttpEndpoint("viasse", "1", base + "/sse", transport="sse"),
                ),
            }
        )
        outer = await _serve(Router(table), tasks)
        try:
            yield outer
        finally:
            for task in reversed(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_both_http_transports_carry_calls(front: str) -> None:
    async with http_client(front) as (session, _):
        await until_tools(session, {"viahttp__echo", "viasse__echo"})
        assert text_of(await session.call_tool("viahttp__echo", {"text": "one"})) == "one"
        assert text_of(await session.call_tool("viasse__add", {"a": 1, "b": 2})) == "3.0"
        results = await asyncio.gather(
            *(session.call_tool("viahttp__echo", {"text": str(i)}) for i in range(30)),
            *(session.call_tool("viasse__echo", {"text": str(i)}) for i in range(30)),
        )
        assert [text_of(r) for r in results] == [str(i) for i in range(30)] * 2
        assert {"viahttp__sleep", "viasse__sleep"} <= await tool_names(session)


async def test_tool_errors_from_an_http_backend_come_back_unchanged(front: str) -> None:
    async with http_client(front) as (session, _):
        await until_tools(session, {"viahttp__echo", "viasse__echo"})
        for name in ("viahttp__add", "viasse__add"):
            result = await session.call_tool(name, {"a": "not a number"})
            assert result.is_error is True
        with pytest.raises(MCPError, match="Unknown tool"):
            await session.call_tool("viahttp__nothing", {})
