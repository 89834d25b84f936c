"""``sessions: per-client`` in the router: one instance per client session, and its end.

The router is real and runs; the launcher is scripted: each launch is a
small counting MCP server in memory, so the bookkeeping can be watched
exactly (how many launches, which stream was closed, what each session
heard). Real processes and containers through ``mcp-fleet up`` are in
tests/integration/test_per_client_sessions.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import support
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.model import CatalogEntry, ProcessSpec, ServerSpec, SessionMode
from mcp_fleet.router import jsonrpc
from mcp_fleet.router.per_client import LIMITED, NEEDS_UP
from mcp_fleet.router.router import Router
from mcp_fleet.router.session import RouterSession
from mcp_fleet.router.session_launcher import SessionInstance, max_session_instances
from mcp_fleet.transport import StreamClosed

pytestmark = pytest.mark.timeout(30)

TOOLS = (
    {"name": "increment", "inputSchema": {"type": "object"}},
    {"name": "announce", "inputSchema": {"type": "object"}},
)


class Pipe:
    """The router's end of one in-memory server."""

    def __init__(self, stop_gate: asyncio.Event | None = None) -> None:
        self.to_server: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.to_router: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False
        self.stop_gate = stop_gate

    async def send(self, message: bytes) -> None:
        if self.closed:
            raise StreamClosed("closed")
        self.to_server.put_nowait(message)

    async def receive(self) -> bytes:
        data = await self.to_router.get()
        if data is None:
            raise StreamClosed("end of stream")
        return data

    async def aclose(self) -> None:
        self.closed = True
        self.to_server.put_nowait(None)
        self.to_router.put_nowait(None)
        if self.stop_gate is not None:
            await self.stop_gate.wait()

    def crash(self) -> None:
        self.to_router.put_nowait(None)


async def serve(pipe: Pipe, levels: list[str]) -> None:
    """A counting server: ``increment`` counts per instance; ``announce`` logs first."""
    count = 0
    while (raw := await pipe.to_server.get()) is not None:
        msg = orjson.loads(raw)
        method, mid = msg.get("method"), msg.get("id")
        if mid is None or method is None:
            continue
        result: dict[str, Any] = {}
        if method == "initialize":
            result = {
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}, "logging": {}},
                "serverInfo": {"name": "counter", "version": "1"},
            }
        elif method == "tools/list":
            result = {"tools": list(TOOLS)}
        elif method == "logging/setLevel":
            levels.append(msg["params"]["level"])
        elif method == "tools/call":
            if msg["params"]["name"] == "announce":
                note = {"level": "info", "data": f"from {id(pipe)}"}
                pipe.to_router.put_nowait(jsonrpc.notification("notifications/message", note))
            count += 1
            result = {"content": [{"type": "text", "text": str(count)}]}
        pipe.to_router.put_nowait(jsonrpc.result(mid, result))


class Launcher:
    """Scripted ``SessionLauncher``: in-memory servers; ``fail`` refuses the next launches."""

    def __init__(self) -> None:
        self.pipes: dict[str, Pipe] = {}
        self.levels: dict[str, list[str]] = {}
        self.fail = 0
        self.gate = asyncio.Event()
        self.gate.set()
        #: Cleared: an instance's stop hangs (its stream's close waits) until set.
        self.stop_gate = asyncio.Event()
        self.stop_gate.set()
        self.swept: list[set[str]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def launch(self, spec: ServerSpec, name: str) -> SessionInstance:
        await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise RuntimeFailure(f"{spec.name}: cannot run 'nope': nope not found")
        pipe = self.pipes[name] = Pipe(self.stop_gate)
        self.levels[name] = []
        task = asyncio.get_running_loop().create_task(serve(pipe, self.levels[name]))
        self._tasks.add(task)
        return SessionInstance(name=name, server=spec.name, stream=pipe, instance_id=name)

    async def sweep(self, held: Callable[[str], bool]) -> int:
        self.swept.append({name for name in self.pipes if held(name)})
        return 0

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()

    def open(self) -> list[str]:
        return [name for name, pipe in self.pipes.items() if not pipe.closed]


class Channel:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, data: bytes, *, related: Any = None, final: bool = False) -> None:
        self.sent.append(orjson.loads(data))


def per_client_spec(name: str = "pc", *, tools: tuple[dict[str, Any], ...] = TOOLS) -> ServerSpec:
    entry = CatalogEntry(
        name=name,
        source=Path("catalog.yaml"),
        process=ProcessSpec(command=("counter",)),
        sessions=SessionMode.PER_CLIENT,
        tools=tools,
    )
    return ServerSpec(name=name, enabled=True, entry=entry)


@contextlib.asynccontextmanager
async def running(
    launcher: Launcher | None, *, cap: int = 4, spec: ServerSpec | None = None
) -> AsyncIterator[Router]:
    table = EndpointTable()
    await table.publish_on_demand({"pc": spec or per_client_spec()})
    router = Router(table, launcher=launcher, max_session_instances=cap, activation_timeout=2)
    task = asyncio.create_task(router.run())
    try:
        await asyncio.wait_for(router.settled.wait(), 5)
        yield router
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def client(router: Router, *, logging: str | None = None) -> RouterSession:
    s = router.open_session(Channel())
    s.initialized = True
    s.log_level = logging
    return s


def sent(s: RouterSession) -> list[dict[str, Any]]:
    assert isinstance(s.channel, Channel)
    return s.channel.sent


_ids = iter(range(1, 1_000_000))


async def call(s: RouterSession, tool: str = "increment") -> dict[str, Any]:
    """One tools/call from the client ``s``; returns the reply it got."""
    mid = next(_ids)
    s.handle_message(
        {"jsonrpc": "2.0", "id": mid, "method": "tools/call", "params": {"name": tool}}
    )
    for _ in range(400):
        for msg in sent(s):
            if msg.get("id") == mid and ("result" in msg or "error" in msg):
                return msg
        await asyncio.sleep(0.01)
    raise AssertionError(f"no reply to {mid}")


def count_of(reply: dict[str, Any]) -> int:
    assert "result" in reply, reply
    return int(reply["result"]["content"][0]["text"])


async def until(check: Any, what: str = "") -> None:
    await support.until(check, within=4.0, every=0.01, what=what)


async def test_every_session_counts_on_its_own_instance() -> None:
    launcher = Launcher()
    async with running(launcher) as router:
        assert [t["name"] for t in router.table.tools] == ["increment", "announce"]  # cold
        a, b = client(router), client(router)
        launcher.gate.clear()  # hold the start: concurrent first calls must share it
        first = [asyncio.create_task(call(a)) for _ in range(5)]
        await asyncio.sleep(0.05)
        launcher.gate.set()
        assert sorted(count_of(r) for r in await asyncio.gather(*first)) == [1, 2, 3, 4, 5]
        assert len(launcher.pipes) == 1
        assert count_of(await call(b)) == 1 and count_of(await call(a)) == 6
        assert count_of(await call(b)) == 2 and len(launcher.pipes) == 2
        assert router.per_client.describe()["servers"]["pc"]["instances"] == 2
        # The first instance of the run also refreshed the advertised lists.
        await until(lambda: router.per_client.describe()["servers"]["pc"]["lists_from"] == "server")


async def test_a_session_that_ends_stops_its_instance_and_only_its_own() -> None:
    launcher = Launcher()
    async with running(launcher) as router:
        a, b = client(router), client(router)
        count_of(await call(a))
        count_of(await call(b))
        _, name_b = launcher.pipes
        a.close()
        await until(lambda: launcher.open() == [name_b], "a's instance stopped")
        await until(lambda: router.per_client.running == 1)
        assert count_of(await call(b)) == 2
    assert launcher.open() == []  # the router's shutdown stops the rest
    assert launcher.swept and launcher.swept[0] == set()  # swept at start, nothing to keep


async def test_the_cap_refuses_a_first_call_with_a_clear_error_until_room_is_made() -> None:
    launcher = Launcher()
    async with running(launcher, cap=2) as router:
        a, b, c = client(router), client(router), client(router)
        count_of(await call(a))
        count_of(await call(b))
        refused = await call(c)
        assert refused["error"]["code"] == LIMITED
        assert "2 per-client instances already run" in refused["error"]["message"]
        assert refused["error"]["data"]["max"] == 2
        assert count_of(await call(a)) == 2  # sessions that have theirs go on
        b.close()
        await until(lambda: router.per_client.running == 1, "b's instance stopped")
        assert count_of(await call(c)) == 1


async def test_the_instance_that_learns_the_lists_does_not_count_against_the_cap() -> None:
    """With no catalog tools, one instance is started to list the server; while it
    is still stopping, a session's first call under a cap of 1 must get its own."""
    launcher = Launcher()
    launcher.stop_gate.clear()  # the listing instance's stop hangs
    async with running(launcher, cap=1, spec=per_client_spec(tools=())) as router:
        await until(lambda: len(launcher.pipes) == 1, "the listing instance started")
        (listing,) = launcher.pipes.values()
        await until(lambda: listing.closed, "the listing instance is stopping")
        assert router.per_client.running == 1  # still stopping: it holds no session's slot
        a = client(router)
        assert count_of(await call(a)) == 1
        assert len(launcher.pipes) == 2
        refused = await call(client(router))  # the cap still holds for sessions
        assert refused["error"]["code"] == LIMITED
        launcher.stop_gate.set()


async def test_a_lost_instance_fails_its_call_and_the_next_call_starts_afresh() -> None:
    launcher = Launcher()
    async with running(launcher) as router:
        a = client(router)
        assert count_of(await call(a)) == 1
        (first,) = launcher.pipes.values()
        first.crash()
        await until(lambda: router.per_client.ready(a, "pc") is None, "instance dropped")
        assert count_of(await call(a)) == 1  # a new instance: the old state is gone
        assert len(launcher.pipes) == 2
        await until(lambda: first.closed, "the lost instance was stopped too")


async def test_a_failed_start_answers_the_call_and_the_next_call_tries_again() -> None:
    launcher = Launcher()
    launcher.fail = 1
    async with running(launcher) as router:
        a = client(router)
        failed = await call(a)
        assert failed["error"]["code"] == jsonrpc.BACKEND_UNAVAILABLE
        assert "nope not found" in failed["error"]["message"]
        assert count_of(await call(a)) == 1
        assert router.per_client.running == 1


async def test_log_level_and_log_messages_are_each_sessions_own() -> None:
    launcher = Launcher()
    async with running(launcher) as router:
        a, b = client(router, logging="debug"), client(router)
        count_of(await call(a))
        count_of(await call(b))
        name_a, name_b = launcher.pipes
        assert launcher.levels[name_a] == ["debug"] and launcher.levels[name_b] == []
        count_of(await call(a, "announce"))
        await until(lambda: any(m.get("method") == "notifications/message" for m in sent(a)))
        await asyncio.sleep(0.05)
        assert not any(m.get("method") == "notifications/message" for m in sent(b))


async def test_without_a_launcher_the_server_is_listed_and_calls_say_why_they_fail() -> None:
    async with running(None) as router:
        assert [t["name"] for t in router.table.tools] == ["increment", "announce"]
        reply = await call(client(router))
        assert reply["error"]["code"] == jsonrpc.BACKEND_UNAVAILABLE
        assert NEEDS_UP in reply["error"]["message"]


async def test_a_server_no_longer_per_client_stops_its_session_instances() -> None:
    launcher = Launcher()
    async with running(launcher) as router:
        a = client(router)
        count_of(await call(a))
        await router.endpoints.publish_on_demand({})
        await until(lambda: launcher.open() == [], "instance stopped with its server")
        assert "pc" not in router.per_client and router.table.tools == ()
        reply = await call(a)
        assert reply["error"]["code"] == jsonrpc.INVALID_PARAMS  # no longer routed at all


def test_the_cap_comes_from_the_environment_or_defaults_to_32() -> None:
    from mcp_fleet.errors import FleetConfigError

    assert max_session_instances({}) == 32
    assert max_session_instances({"MCP_FLEET_MAX_SESSION_INSTANCES": "5"}) == 5
    with pytest.raises(FleetConfigError, match="MCP_FLEET_MAX_SESSION_INSTANCES"):
        max_session_instances({"MCP_FLEET_MAX_SESSION_INSTANCES": "many"})
