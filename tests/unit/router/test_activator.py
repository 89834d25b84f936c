"""The router's activator: cold lists, calls waiting for a start, activity, consent to stop.

The router is real; the server is a small MCP server in memory and the
controller is scripted (it publishes an instance when demand wakes it), so
each step of the on-demand protocol can be held and looked at. Real
processes and containers are in tests/integration/test_on_demand.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import support
from mcp_fleet.endpoints import EndpointEntry, EndpointTable, StreamEndpoint
from mcp_fleet.model import CatalogEntry, Lifecycle, ServerSpec, frozen_map
from mcp_fleet.router import jsonrpc
from mcp_fleet.router.activator import ListCache, catalog_tools
from mcp_fleet.router.router import Router
from mcp_fleet.router.table import ServerLists
from mcp_fleet.transport import StreamClosed

pytestmark = pytest.mark.timeout(30)

TOOLS = ({"name": "echo", "description": "Echo.", "inputSchema": {"type": "object"}},)


class MemoryStream:
    """One connection to a ``MiniServer``: the router's end."""

    def __init__(self) -> None:
        self.to_server: asyncio.Queue[bytes] = asyncio.Queue()
        self.to_router: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def send(self, message: bytes) -> None:
        self.to_server.put_nowait(message)

    async def receive(self) -> bytes:
        data = await self.to_router.get()
        if data is None:
            raise StreamClosed("end of stream")
        return data

    async def aclose(self) -> None:
        self.to_router.put_nowait(None)


class MiniServer:
    """Answers initialize, tools/list and tools/call (echo); ``gate`` holds calls."""

    def __init__(self, tools: tuple[dict[str, Any], ...] = TOOLS) -> None:
        self.tools = tools
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def connect(self) -> MemoryStream:
        stream = MemoryStream()
        task = asyncio.get_running_loop().create_task(self._serve(stream))
        self._tasks.add(task)
        return stream

    async def _serve(self, stream: MemoryStream) -> None:
        while True:
            msg = orjson.loads(await stream.to_server.get())
            if "id" not in msg or "method" not in msg:
                continue
            method, mid = msg["method"], msg["id"]
            if method == "initialize":
                result: dict[str, Any] = {
                    "protocolVersion": msg["params"]["protocolVersion"],
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "mini", "version": "1"},
                }
            elif method == "tools/list":
                result = {"tools": list(self.tools)}
            elif method == "tools/call":
                self.calls += 1
                task = asyncio.get_running_loop().create_task(self._answer_call(stream, msg))
                self._tasks.add(task)
                continue
            else:
                stream.to_router.put_nowait(jsonrpc.error(mid, jsonrpc.METHOD_NOT_FOUND, method))
                continue
            stream.to_router.put_nowait(jsonrpc.result(mid, result))

    async def _answer_call(self, stream: MemoryStream, msg: dict[str, Any]) -> None:
        await self.gate.wait()
        result = {"content": [{"type": "text", "text": msg["params"]["arguments"]["text"]}]}
        stream.to_router.put_nowait(jsonrpc.result(msg["id"], result))

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()


class Controller:
    """Scripted: publishes one instance of ``od`` each time demand asks and none runs."""

    def __init__(self, table: EndpointTable, spec: ServerSpec, server: MiniServer) -> None:
        self.table, self.spec, self.server = table, spec, server
        self.starts = 0
        self.running = False
        self.delay = 0.05
        self.pending: set[asyncio.Task[None]] = set()
        table.demand.subscribe(self.wake)

    def wake(self) -> None:
        if not self.running:
            self.running = True
            task = asyncio.get_running_loop().create_task(self.start())
            self.pending.add(task)

    async def start(self) -> None:
        await asyncio.sleep(self.delay)
        self.starts += 1
        server = self.server

        async def open_stream() -> MemoryStream:
            return server.connect()

        endpoint = StreamEndpoint("od", f"mem:{self.starts}", open_stream)
        await self.table.publish({"od": EndpointEntry(self.spec, endpoint)})

    async def stop(self) -> None:
        assert self.table.demand.retire("od")
        self.running = False
        await self.table.publish({})


def od_spec(tools: tuple[dict[str, Any], ...] = ()) -> ServerSpec:
    entry = CatalogEntry(
        name="od", source=Path("catalog.yaml"), lifecycle=Lifecycle.ON_DEMAND,
        tools=tuple(frozen_map(t) for t in tools),
    )  # fmt: skip
    return ServerSpec(name="od", enabled=True, entry=entry)


class Channel:
    def __init__(self) -> None:
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def send(self, data: bytes, *, related: Any = None, final: bool = False) -> None:
        self.messages.put_nowait(orjson.loads(data))

    async def reply(self, timeout: float = 5.0) -> dict[str, Any]:
        while True:
            msg = await asyncio.wait_for(self.messages.get(), timeout)
            if "id" in msg:
                return msg


def call(mid: int, text: str) -> bytes:
    params = {"name": "echo", "arguments": {"text": text}}
    return orjson.dumps({"jsonrpc": "2.0", "id": mid, "method": "tools/call", "params": params})


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, spec: ServerSpec, **kw: Any
) -> AsyncIterator[tuple[Router, Controller, MiniServer]]:
    table = EndpointTable()
    server = MiniServer()
    ctl = Controller(table, spec, server)
    router = Router(table, **kw)
    task = asyncio.create_task(router.run())
    await table.publish_on_demand({"od": spec}, cache_dir=tmp_path / "cache")
    try:
        yield router, ctl, server
    finally:
        for pending in (task, *ctl.pending):
            pending.cancel()
        await asyncio.gather(task, *ctl.pending, return_exceptions=True)
        server.stop()


async def until(predicate: Any, timeout: float = 5.0) -> None:
    await support.until(predicate, within=timeout, every=0.01)


def test_catalog_tools_become_mcp_tools_docker_form_included() -> None:
    spec = od_spec(
        (
            {"name": "search", "description": "Find.",
             "arguments": [{"name": "q", "type": "string", "desc": "query"},
                           {"name": "n", "type": "integer", "optional": True}]},
            {"name": "raw", "inputSchema": {"type": "object", "properties": {}}},
            {"description": "no name: skipped"},
        )
    )  # fmt: skip
    assert catalog_tools(spec) == (
        {"name": "search", "description": "Find.",
         "inputSchema": {"type": "object",
                         "properties": {"q": {"type": "string", "description": "query"},
                                        "n": {"type": "integer"}},
                         "required": ["q"]}},
        {"name": "raw", "inputSchema": {"type": "object", "properties": {}}},
    )  # fmt: skip


def test_list_cache_round_trip_is_private_and_ignores_junk(tmp_path: Path) -> None:
    cache = ListCache(tmp_path / "cache")
    lists = ServerLists("od", tools=TOOLS, prompts=({"name": "p"},))
    cache.save(lists, config_hash="abc")
    assert cache.load("od") == lists
    assert stat.S_IMODE(cache.path("od").stat().st_mode) == 0o600
    assert orjson.loads(cache.path("od").read_bytes())["config_hash"] == "abc"
    cache.path("od").write_text("{not json")
    assert cache.load("od") is None and cache.load("absent") is None
    with pytest.raises(ValueError, match="not a server name"):
        cache.path("../etc")


async def test_cold_server_is_listed_from_its_catalog_without_starting(tmp_path: Path) -> None:
    async with running(tmp_path, od_spec(TOOLS)) as (router, ctl, _):
        await until(lambda: router.table.tool_routes.get("echo") is not None)
        assert router.table.tools == TOOLS and ctl.starts == 0
        assert router.status()["on_demand"]["od"]["lists_from"] == "catalog"


async def test_first_calls_wait_for_one_start_then_all_go_through(tmp_path: Path) -> None:
    async with running(tmp_path, od_spec(TOOLS)) as (router, ctl, server):
        await until(lambda: "echo" in router.table.tool_routes)
        channel = Channel()
        session = router.open_session(channel)
        server.gate.clear()
        for i in range(20):
            session.handle(call(i, f"t{i}"))
        await until(lambda: ctl.starts == 1 and server.calls == 20)
        activity = router.activator.activity()["od"]
        assert (activity.inflight, activity.waiting) == (20, 0)
        assert not router.activator.retire("od")  # calls in flight: no consent
        server.gate.set()
        replies = [await channel.reply() for _ in range(20)]
        assert sorted(r["result"]["content"][0]["text"] for r in replies) == sorted(
            f"t{i}" for i in range(20)
        )
        assert ctl.starts == 1


async def test_idle_backend_is_let_go_and_the_next_call_starts_a_new_one(tmp_path: Path) -> None:
    async with running(tmp_path, od_spec(TOOLS)) as (router, ctl, _):
        await until(lambda: "echo" in router.table.tool_routes)
        channel = Channel()
        session = router.open_session(channel)
        session.initialized = True
        session.handle(call(1, "one"))
        assert (await channel.reply())["result"]["content"][0]["text"] == "one"
        table_before = router.table
        await ctl.stop()
        await until(lambda: router.backend("od") is None and "od" not in router.status()["servers"])
        assert router.table.digests == table_before.digests  # cold: still advertised
        session.handle(call(2, "two"))
        assert (await channel.reply())["result"]["content"][0]["text"] == "two"
        assert ctl.starts == 2
        assert channel.messages.empty()  # no list_changed for going cold or warm


async def test_lists_learned_while_warm_are_cached_for_the_next_router(tmp_path: Path) -> None:
    async with running(tmp_path, od_spec()) as (router, ctl, _):
        # Nothing known: started once, only to learn its lists.
        await until(lambda: ctl.starts == 1 and "echo" in router.table.tool_routes)
        await until(lambda: (tmp_path / "cache" / "od.json").exists())
        await router.wait_settled()
    async with running(tmp_path, od_spec()) as (router, ctl, _):
        await until(lambda: "echo" in router.table.tool_routes)
        assert ctl.starts == 0 and router.status()["on_demand"]["od"]["lists_from"] == "cache"


async def test_a_start_that_never_comes_fails_the_call_in_bounded_time(tmp_path: Path) -> None:
    async with running(tmp_path, od_spec(TOOLS), activation_timeout=0.3) as (router, ctl, _):
        ctl.delay = 60.0
        await until(lambda: "echo" in router.table.tool_routes)
        channel = Channel()
        router.open_session(channel).handle(call(1, "x"))
        error = (await channel.reply())["error"]
        assert error["code"] == jsonrpc.BACKEND_UNAVAILABLE
        assert "did not start within 0.3 s" in error["message"]
        assert router.activator.activity() == {}


async def test_a_cancelled_waiting_call_gets_no_answer_and_stops_waiting(tmp_path: Path) -> None:
    async with running(tmp_path, replace(od_spec(TOOLS))) as (router, ctl, _):
        ctl.delay = 60.0
        await until(lambda: "echo" in router.table.tool_routes)
        channel = Channel()
        session = router.open_session(channel)
        session.handle(call(7, "x"))
        await until(lambda: router.activator.activity().get("od") is not None)
        assert router.activator.activity()["od"].waiting == 1
        session.handle(
            orjson.dumps(
                {"jsonrpc": "2.0", "method": "notifications/cancelled",
                 "params": {"requestId": 7}}
            )
        )  # fmt: skip
        await until(lambda: "od" not in router.activator.activity())
        assert channel.messages.empty() and not session.waiting
