"""A replaced server, make-before-break: the router's side of a rolling update.

The router is real; each server instance is a small MCP server in memory,
so every step can be held and looked at: the new instance is attached
beside the old one while calls still go to the old one; once it is listed
the router switches in one step (no ``list_changed`` when the lists are
equal, one when they differ); new calls go to the new instance; a call in
flight on the old one is answered by it, never failed with "replaced"; the
old backend is closed once drained, and only then does the table hear that
the old instance is let go. A new instance that cannot be attached leaves
the old one serving; an old one that dies meanwhile hands over to the new.
Real processes are in tests/integration/test_router_replace.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import support
from mcp_fleet.endpoints import EndpointEntry, EndpointTable, StreamEndpoint
from mcp_fleet.model import CatalogEntry, ServerSpec
from mcp_fleet.router import jsonrpc
from mcp_fleet.router.router import Router
from mcp_fleet.transport import StreamClosed

pytestmark = pytest.mark.timeout(30)

SPEC = ServerSpec(name="s", enabled=True, entry=CatalogEntry(name="s", source=Path("c.yaml")))
ECHO = {"name": "echo", "description": "Echo.", "inputSchema": {"type": "object"}}
EXTRA = {"name": "extra", "description": "New.", "inputSchema": {"type": "object"}}


class Instance:
    """One instance of server ``s`` in memory: answers initialize, lists and echo calls.

    ``gate`` holds its calls, ``init_gate`` its initialize; ``broken`` makes
    its initialize fail; ``kill()`` ends its stream as a crash does.
    """

    def __init__(self, iid: str, tools: tuple[dict[str, Any], ...] = (ECHO,)) -> None:
        self.iid = iid
        self.tools = tools
        self.gate = asyncio.Event()
        self.gate.set()
        self.init_gate = asyncio.Event()
        self.init_gate.set()
        self.broken = False
        self.calls = 0
        self.connections = 0
        self.to_router: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

    # The router's end of the stream.
    async def send(self, message: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(orjson.loads(message)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def receive(self) -> bytes:
        data = await self.to_router.get()
        if data is None:
            raise StreamClosed("end of stream")
        return data

    async def aclose(self) -> None:
        self.to_router.put_nowait(None)

    async def open(self) -> Instance:
        self.connections += 1
        return self

    def kill(self) -> None:
        self.to_router.put_nowait(None)

    @property
    def entry(self) -> EndpointEntry:
        return EndpointEntry(SPEC, StreamEndpoint("s", self.iid, self.open))

    async def _handle(self, msg: dict[str, Any]) -> None:
        if "id" not in msg or "method" not in msg:
            return
        method, mid = msg["method"], msg["id"]
        if method == "initialize":
            await self.init_gate.wait()
            if self.broken:
                self.to_router.put_nowait(jsonrpc.error(mid, jsonrpc.INTERNAL_ERROR, "broken"))
                return
            result: dict[str, Any] = {
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": self.iid, "version": "1"},
            }
        elif method == "tools/list":
            result = {"tools": list(self.tools)}
        elif method == "tools/call":
            self.calls += 1
            await self.gate.wait()
            text = f"{self.iid}:{msg['params']['arguments']['text']}"
            result = {"content": [{"type": "text", "text": text}]}
        else:
            self.to_router.put_nowait(jsonrpc.error(mid, jsonrpc.METHOD_NOT_FOUND, method))
            return
        self.to_router.put_nowait(jsonrpc.result(mid, result))


class Client:
    """A client session's channel: answers by id, notifications in order."""

    def __init__(self, router: Router) -> None:
        self.answers: dict[Any, dict[str, Any]] = {}
        self.notices: list[str] = []
        self.arrived = asyncio.Event()
        self.session = router.open_session(self)
        self.session.initialized = True
        self._next = 0

    def send(self, data: bytes, *, related: Any = None, final: bool = False) -> None:
        msg = orjson.loads(data)
        if "id" in msg and "method" not in msg:
            self.answers[msg["id"]] = msg
            self.arrived.set()
        elif "method" in msg:
            self.notices.append(msg["method"])

    def call(self, text: str, tool: str = "echo") -> int:
        self._next += 1
        params = {"name": tool, "arguments": {"text": text}}
        msg = {"jsonrpc": "2.0", "id": self._next, "method": "tools/call", "params": params}
        self.session.handle(orjson.dumps(msg))
        return self._next

    async def answer(self, mid: int, within: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while mid not in self.answers:
                self.arrived.clear()
                await self.arrived.wait()
        return self.answers[mid]

    async def text(self, mid: int) -> str:
        msg = await self.answer(mid)
        assert "result" in msg, msg
        return str(msg["result"]["content"][0]["text"])


@contextlib.asynccontextmanager
async def routed(first: Instance) -> AsyncIterator[tuple[EndpointTable, Router, Client]]:
    table = EndpointTable()
    router = Router(table, attach_timeout=5.0)
    task = asyncio.create_task(router.run())
    await table.publish({"s": first.entry})
    try:
        await until(lambda: attached(router) == first.iid)
        yield table, router, Client(router)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def attached(router: Router) -> str | None:
    backend = router.backend("s")
    return backend.instance_id if backend is not None else None


async def until(predicate: Any, timeout: float = 5.0) -> None:
    await support.until(predicate, within=timeout, every=0.005)


async def test_calls_in_flight_drain_on_the_old_instance_and_new_calls_go_to_the_new() -> None:
    old, new = Instance("a"), Instance("b")
    async with routed(old) as (table, router, client):
        assert table.held("s", "a")
        first = router.backend("s")
        assert first is not None
        old.gate.clear()  # a call in flight on the old instance, unanswered
        slow = client.call("slow")
        await until(lambda: old.calls == 1)
        new.init_gate.clear()  # the new instance takes its time to initialize
        await table.publish({"s": new.entry})
        await until(lambda: new.connections == 1)
        # While the new one is attaching, calls still go to the old one, and succeed.
        old.gate.set()
        assert await client.text(slow) == "a:slow"
        during = client.call("during")
        assert await client.text(during) == "a:during"
        assert table.held("s", "a") and table.held("s", "b")
        old.gate.clear()
        held = client.call("held")  # in flight on the old one when the switch comes
        await until(lambda: old.calls == 3)
        new.init_gate.set()
        await until(lambda: attached(router) == "b")
        after = client.call("after")
        assert await client.text(after) == "b:after"  # new calls: the new instance
        assert table.held("s", "a") and not first.closed  # draining: the held call is out
        old.gate.set()
        assert await client.text(held) == "a:held"  # answered by the old one, not failed
        await until(lambda: not table.held("s", "a"))
        assert first.closed and table.held("s", "b")  # the stream stays: the runtime's
        assert all("error" not in a for a in client.answers.values()), client.answers
        assert client.notices == []  # same lists: no list_changed at all


async def test_a_new_instance_with_other_tools_gives_exactly_one_list_changed() -> None:
    old, new = Instance("a"), Instance("b", tools=(ECHO, EXTRA))
    async with routed(old) as (table, router, client):
        await table.publish({"s": new.entry})
        await until(lambda: attached(router) == "b")
        await until(lambda: not table.held("s", "a"))
        assert client.notices == ["notifications/tools/list_changed"]
        assert set(router.table.tool_routes) == {"echo", "extra"}
        assert await client.text(client.call("x", tool="extra")) == "b:x"


async def test_a_table_waiting_for_the_release_is_answered_once_the_old_one_is_drained() -> None:
    old, new = Instance("a"), Instance("b")
    async with routed(old) as (table, router, client):
        old.gate.clear()
        pending = client.call("pending")
        await until(lambda: old.calls == 1)
        released = asyncio.create_task(table.wait_released("s", "a", timeout=5.0))
        await table.publish({"s": new.entry})
        await until(lambda: attached(router) == "b")
        await asyncio.sleep(0.1)
        assert not released.done()  # a call is still in flight on it
        old.gate.set()
        assert await asyncio.wait_for(released, 5) is True
        assert await client.text(pending) == "a:pending"
        # Bounded: an instance that stays in use is waited for no longer than asked.
        assert await table.wait_released("s", "b", timeout=0.1) is False


async def test_a_new_instance_that_cannot_be_attached_leaves_the_old_one_serving() -> None:
    old, broken, good = Instance("a"), Instance("b"), Instance("c")
    broken.broken = True
    async with routed(old) as (table, router, client):
        await table.publish({"s": broken.entry})
        await until(lambda: broken.connections >= 1)
        await asyncio.sleep(0.1)
        assert attached(router) == "a"
        assert await client.text(client.call("still")) == "a:still"
        assert table.held("s", "a")
        # Superseded by a good one: that one is attached, the old one let go.
        await table.publish({"s": good.entry})
        await until(lambda: attached(router) == "c")
        await until(lambda: not table.held("s", "a") and not table.held("s", "b"))
        assert await client.text(client.call("now")) == "c:now"


async def test_an_old_instance_that_dies_meanwhile_hands_over_to_the_new_one() -> None:
    old, new = Instance("a"), Instance("b")
    async with routed(old) as (table, router, client):
        new.init_gate.clear()
        await table.publish({"s": new.entry})
        await until(lambda: new.connections == 1)
        old.kill()
        await until(lambda: attached(router) is None)
        assert not table.held("s", "a")
        new.init_gate.set()
        await until(lambda: attached(router) == "b")
        assert await client.text(client.call("x")) == "b:x"


async def test_going_back_to_the_running_instance_drops_the_one_being_attached() -> None:
    old, new = Instance("a"), Instance("b")
    async with routed(old) as (table, router, client):
        new.init_gate.clear()
        await table.publish({"s": new.entry})
        await until(lambda: table.held("s", "b"))
        await table.publish({"s": old.entry})
        await until(lambda: not table.held("s", "b"))
        new.init_gate.set()
        await asyncio.sleep(0.1)
        assert attached(router) == "a" and table.held("s", "a")
        assert await client.text(client.call("x")) == "a:x"


async def test_a_stopped_router_holds_nothing() -> None:
    table = EndpointTable()
    router = Router(table)
    task = asyncio.create_task(router.run())
    await table.publish({"s": Instance("a").entry})
    await until(lambda: attached(router) == "a")
    assert table.held("s", "a")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not table.held("s", "a")
    assert await table.wait_released("s", "a", timeout=0.0) is True
