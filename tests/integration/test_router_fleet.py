"""The router in front of a changing fleet: collisions, timeouts, crashes, new servers, clients.

The router runs in the test's loop (streamable HTTP on a free port) and
follows an endpoint table of real server processes, so the tests can change
the fleet under a connected client: add a server, kill one mid-call.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from mcp import ClientSession
from mcp.shared.exceptions import MCPError
from mcp_fleet.router.http_service import serve_http
from mcp_fleet.router.router import Router
from mcp_fleet.sources.adhoc import AdhocFleet
from router_support import ECHO, FEATURE, TIME, http_client, text_of, tool_names, until_tools
from support import until

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(90),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

CALL_TIMEOUT = 1.5


@dataclass
class Fleet:
    fleet: AdhocFleet
    router: Router
    url: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet() -> AsyncIterator[Fleet]:
    async with AdhocFleet() as adhoc:
        await adhoc.add("alpha", ECHO)
        await adhoc.add("beta", ECHO)
        await adhoc.add("victim", FEATURE, call_timeout=CALL_TIMEOUT)
        router = Router(adhoc.table)
        urls: asyncio.Queue[str] = asyncio.Queue()
        follower = asyncio.create_task(router.run())
        server = asyncio.create_task(serve_http(router, port=0, ready=urls.put_nowait))
        try:
            yield Fleet(adhoc, router, await asyncio.wait_for(urls.get(), 10))
        finally:
            server.cancel()
            follower.cancel()
            await asyncio.gather(server, follower, return_exceptions=True)


async def test_colliding_names_are_prefixed_and_all_reachable(fleet: Fleet) -> None:
    async with http_client(fleet.url) as (session, _):
        await until_tools(session, {"alpha__echo", "beta__echo", "wait"})
        names = await tool_names(session)
        assert {
            "alpha__echo",
            "alpha__add",
            "alpha__sleep",
            "beta__echo",
            "beta__add",
            "beta__sleep",
        } <= names
        assert "echo" not in names and "wait" in names  # unique names stay as the server gives them
        assert text_of(await session.call_tool("alpha__echo", {"text": "a"})) == "a"
        assert text_of(await session.call_tool("beta__add", {"a": 2, "b": 3})) == "5.0"
    renames = fleet.router.status()["renames"]
    assert any("'echo' of alpha is 'alpha__echo': also offered by beta" in r for r in renames)


async def test_slow_backend_times_out_naming_the_server_and_is_cancelled(fleet: Fleet) -> None:
    async with http_client(fleet.url) as (session, _):
        await until_tools(session, {"wait"})
        before = (await session.call_tool("stats", {})).structured_content or {}
        with pytest.raises(MCPError) as err:
            await session.call_tool("wait", {"seconds": 30})
        assert "victim" in str(err.value) and "did not answer" in str(err.value)
        assert (
            text_of(await session.call_tool("alpha__echo", {"text": "still fine"})) == "still fine"
        )

        async def cancelled() -> int:
            stats = (await session.call_tool("stats", {})).structured_content or {}
            return int(stats["cancelled"])

        async def counted() -> bool:
            return await cancelled() > before["cancelled"]

        await until(counted, what="the feature server counted the cancel")
        assert await cancelled() == before["cancelled"] + 1


async def test_many_concurrent_http_sessions_are_isolated(fleet: Fleet) -> None:
    # A stdio server cannot say which call a sampling request belongs to; the
    # router knows for sure while one client at a time has calls in flight to
    # it, so the sampling calls take turns while everything else overlaps.
    turn = asyncio.Lock()

    async def one(i: int) -> tuple[str, int]:
        async with http_client(fleet.url) as (session, recorder):
            got = text_of(await session.call_tool("alpha__echo", {"text": f"client-{i}"}))
            if i % 5 == 0:
                async with turn:
                    sampled = await session.call_tool("sample", {"prompt": f"p{i}"})
                assert text_of(sampled) == "sampled: 42"
            for _ in range(5):
                assert text_of(await session.call_tool("beta__echo", {"text": f"{i}"})) == f"{i}"
            return got, len(recorder.sampled)

    results = await asyncio.gather(*(one(i) for i in range(20)))
    assert [text for text, _ in results] == [f"client-{i}" for i in range(20)]
    # Each sampling request went to the client whose call caused it, and only there.
    assert [n for _, n in results] == [1 if i % 5 == 0 else 0 for i in range(20)]


async def test_a_server_added_while_connected_is_announced_and_callable(fleet: Fleet) -> None:
    async with http_client(fleet.url) as (session, recorder):
        await until_tools(session, {"wait"})
        recorder.changed.clear()
        await fleet.fleet.add("time", TIME)
        await asyncio.wait_for(recorder.changed.wait(), 45)
        await until_tools(session, {"get_current_time"})
        result = await session.call_tool("get_current_time", {"timezone": "UTC"})
        assert (result.structured_content or {})["timezone"] == "UTC"
        await fleet.fleet.remove("time")
        await until(lambda: _gone(session, "get_current_time"), within=15, what="time gone")


async def _gone(session: ClientSession, name: str) -> bool:
    return name not in await tool_names(session)


async def test_backend_killed_mid_call_fails_only_its_own_calls(fleet: Fleet) -> None:
    async with http_client(fleet.url) as (session, _):
        await until_tools(session, {"wait", "alpha__echo"})
        pid = int(text_of(await session.call_tool("whoami", {})))
        doomed = asyncio.create_task(session.call_tool("progress", {"steps": 1}))
        await doomed
        doomed = asyncio.create_task(session.call_tool("wait", {"seconds": 30}))
        await until(lambda: in_flight(fleet, "victim"), what="the wait call forwarded to victim")
        os.kill(pid, signal.SIGKILL)
        other = await session.call_tool("alpha__echo", {"text": "unaffected"})
        with pytest.raises(MCPError) as err:
            await doomed
        # Failed by the kill, not by the call timeout (CALL_TIMEOUT) running out.
        assert "victim" in str(err.value) and "did not answer" not in str(err.value)
        assert text_of(other) == "unaffected"
        assert text_of(await session.call_tool("beta__echo", {"text": "after"})) == "after"
        await until(lambda: _gone(session, "wait"), within=15, what="victim's tools gone")
    assert fleet.router.status()["servers"]["victim"]["attached"] is False


def in_flight(fleet: Fleet, server: str) -> bool:
    """The router has forwarded a call to ``server`` and not had its answer yet."""
    return int(fleet.router.status()["servers"][server]["pending"]) > 0
