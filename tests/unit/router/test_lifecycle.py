"""The backend lifecycle on its own: attach, retry, detach, refresh, release, switch.

``BackendLifecycle`` is driven as the router drives it (``follow`` on every
table change; ``retry_due`` whenever it wakes or a retry is due), with a
recording host in place of the router and in-memory servers whose every
step can be held. Nothing here sleeps a fixed time: each test waits for the
state it needs. The router as a whole is in test_router_switchover.py and
test_activator.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import support
from mcp_fleet.endpoints import EndpointEntry, EndpointTable, StreamEndpoint
from mcp_fleet.model import CatalogEntry, ServerSpec
from mcp_fleet.router import jsonrpc
from mcp_fleet.router.backend import BackendSession
from mcp_fleet.router.lifecycle import BackendLifecycle
from mcp_fleet.router.table import ServerLists
from mcp_fleet.transport import StreamClosed

pytestmark = pytest.mark.timeout(30)

ECHO = {"name": "echo", "inputSchema": {"type": "object"}}
EXTRA = {"name": "extra", "inputSchema": {"type": "object"}}


def spec(prefix: str | None = None) -> ServerSpec:
    entry = CatalogEntry(name="s", source=Path("c.yaml"), prefix=prefix)
    return ServerSpec(name="s", enabled=True, entry=entry)


class Instance:
    """One instance of server ``s`` in memory.

    ``init_gate`` holds its initialize, ``list_gate`` its tools/list and
    ``gate`` its calls; ``broken`` fails its initialize; ``kill()`` ends its
    stream as a crash does; ``changed()`` sends ``tools/list_changed``.
    """

    def __init__(self, iid: str, tools: Iterable[dict[str, Any]] = (ECHO,)) -> None:
        self.iid = iid
        self.tools = list(tools)
        self.init_gate, self.list_gate, self.gate = (asyncio.Event() for _ in range(3))
        for event in (self.init_gate, self.list_gate, self.gate):
            event.set()
        self.broken = False
        self.calls = 0
        self.connections = 0
        self.to_router: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

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

    def changed(self) -> None:
        self.to_router.put_nowait(jsonrpc.notification("notifications/tools/list_changed"))

    def entry(self, prefix: str | None = None) -> EndpointEntry:
        return EndpointEntry(spec(prefix), StreamEndpoint("s", self.iid, self.open))

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
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": self.iid, "version": "1"},
            }
        elif method == "tools/list":
            await self.list_gate.wait()
            result = {"tools": list(self.tools)}
        elif method == "tools/call":
            self.calls += 1
            await self.gate.wait()
            result = {"content": [{"type": "text", "text": self.iid}]}
        else:
            self.to_router.put_nowait(jsonrpc.error(mid, jsonrpc.METHOD_NOT_FOUND, method))
            return
        self.to_router.put_nowait(jsonrpc.result(mid, result))


@dataclass
class Host:
    """The router's side of the lifecycle, recorded."""

    lifecycle: BackendLifecycle | None = None
    rebuilds: int = 0
    restored: list[str] = field(default_factory=list)

    def backend_notification(self, backend: BackendSession, method: str, msg: Any) -> None:
        if method == "notifications/tools/list_changed" and self.lifecycle is not None:
            self.lifecycle.refresh(backend, ("tools",))

    def backend_request(self, backend: BackendSession, msg: Any) -> None:
        backend.respond_error(msg["id"], jsonrpc.METHOD_NOT_FOUND, "no client")

    def backend_closed(self, backend: BackendSession, reason: str) -> None:
        if self.lifecycle is not None:
            self.lifecycle.closed(backend, reason)

    async def restore_client_state(self, backend: BackendSession) -> None:
        self.restored.append(backend.instance_id)

    def rebuild(self) -> None:
        self.rebuilds += 1


class OnDemand:
    """The activator's side (``OnDemandHooks``), recorded."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names = set(names)
        self.attached_to: list[str] = []
        self.seen: list[ServerLists] = []

    def __contains__(self, server: object) -> bool:
        return server in self.names

    def attached(self, server: str, backend: BackendSession) -> None:
        self.attached_to.append(backend.instance_id)

    def learned(self, server: str, lists: ServerLists) -> None:
        self.seen.append(lists)


@dataclass
class Fleet:
    table: EndpointTable
    host: Host
    lifecycle: BackendLifecycle
    on_demand: OnDemand
    events: list[tuple[str, str, str]]

    def backend(self) -> BackendSession | None:
        return self.lifecycle.backend("s")

    def attached(self) -> str | None:
        backend = self.backend()
        return backend.instance_id if backend is not None else None

    def tools(self) -> list[str]:
        lists = self.lifecycle.lists().get("s")
        return [t["name"] for t in lists.tools] if lists is not None else []


@contextlib.asynccontextmanager
async def following(*, on_demand: Iterable[str] = ()) -> AsyncIterator[Fleet]:
    """A lifecycle driven as ``Router.run`` drives it (retries when due or woken)."""
    table, host, wake = EndpointTable(), Host(), asyncio.Event()
    events: list[tuple[str, str, str]] = []
    hooks = OnDemand(on_demand)
    lifecycle = BackendLifecycle(
        host, table, on_demand=hooks, attach_timeout=5.0,
        on_event=lambda *event: events.append(event), wake=wake.set,
    )  # fmt: skip
    host.lifecycle = lifecycle

    async def retries() -> None:
        while True:
            lifecycle.retry_due()
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(lifecycle.next_retry_in()):
                    await wake.wait()

    task = asyncio.create_task(retries())
    try:
        yield Fleet(table, host, lifecycle, hooks, events)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await lifecycle.aclose()


async def until(predicate: Any, what: str = "") -> None:
    await support.until(predicate, within=10.0, every=0.005, what=what)


async def test_a_published_server_is_attached_listed_advertised_and_held() -> None:
    inst = Instance("a")
    async with following() as fleet:
        await fleet.lifecycle.follow({"s": inst.entry()})
        assert fleet.table.held("s", "a")  # held from the attach on
        await until(lambda: fleet.tools() == ["echo"])
        assert fleet.attached() == "a" and fleet.host.restored == ["a"]
        assert fleet.host.rebuilds >= 1
        assert ("attached", "s", "instance a") in fleet.events
        assert fleet.lifecycle.describe()["s"] == {
            "attached": True, "instance": "a", "error": None, "pending": 0,
        }  # fmt: skip


async def test_a_first_attach_under_way_is_reported_until_it_ends() -> None:
    inst = Instance("a")
    inst.init_gate.clear()
    async with following() as fleet:
        await fleet.lifecycle.follow({"s": inst.entry()})
        await until(lambda: inst.connections == 1)
        assert fleet.lifecycle.attaching() and len(fleet.lifecycle.first_attaches()) == 1
        inst.init_gate.set()
        await until(lambda: not fleet.lifecycle.attaching())
        assert fleet.lifecycle.first_attaches() == [] and fleet.attached() == "a"


async def test_a_server_that_cannot_be_attached_is_retried_with_backoff() -> None:
    inst = Instance("a")
    inst.broken = True
    async with following() as fleet:
        await fleet.lifecycle.follow({"s": inst.entry()})
        await until(lambda: any(e[0] == "failed" for e in fleet.events), "a failed attach")
        status = fleet.lifecycle.describe()["s"]
        assert status["attached"] is False and "broken" in status["error"]
        assert 0.0 < fleet.lifecycle.next_retry_in() <= 0.5  # the first backoff
        assert fleet.lifecycle.first_attaches() == []  # failed once: not a "first" attach
        inst.broken = False
        await until(lambda: fleet.attached() == "a", "attached on the retry")
        assert inst.connections == 2
        assert fleet.lifecycle.describe()["s"]["error"] is None


async def test_a_dropped_backend_is_detached_at_once_then_attached_again() -> None:
    inst = Instance("a")
    async with following() as fleet:
        await fleet.lifecycle.follow({"s": inst.entry()})
        await until(lambda: fleet.attached() == "a")
        first = fleet.backend()
        inst.kill()
        await until(lambda: any(e[0] == "detached" for e in fleet.events), "detached")
        assert fleet.table.held("s", "a")  # still published: still held
        await until(lambda: fleet.backend() not in (None, first), "attached again")
        assert inst.connections == 2 and fleet.tools() == ["echo"]


async def test_a_server_removed_from_the_fleet_is_closed_and_let_go() -> None:
    inst = Instance("a")
    async with following() as fleet:
        await fleet.lifecycle.follow({"s": inst.entry()})
        await until(lambda: fleet.attached() == "a")
        backend = fleet.backend()
        await fleet.lifecycle.follow({})
        assert backend is not None and backend.closed
        assert fleet.backend() is None and not fleet.table.held("s", "a")
        assert ("detached", "s", "removed from the fleet") in fleet.events


async def test_a_new_spec_of_the_same_instance_changes_naming_inputs_without_reattaching() -> None:
    inst = Instance("a")
    async with following() as fleet:
        await fleet.lifecycle.follow({"s": inst.entry()})
        await until(lambda: fleet.tools() == ["echo"])
        await fleet.lifecycle.follow({"s": inst.entry(prefix="p")})
        assert fleet.lifecycle.lists()["s"].prefix == "p"
        assert inst.connections == 1 and fleet.attached() == "a"


async def test_list_changed_reads_the_list_again_and_rebuilds() -> None:
    inst = Instance("a")
    async with following() as fleet:
        await fleet.lifecycle.follow({"s": inst.entry()})
        await until(lambda: fleet.tools() == ["echo"])
        rebuilds = fleet.host.rebuilds
        inst.tools.append(EXTRA)
        inst.changed()
        await until(lambda: fleet.tools() == ["echo", "extra"], "the list read again")
        assert fleet.host.rebuilds > rebuilds


async def test_an_on_demand_backend_serves_before_its_lists_are_read() -> None:
    inst = Instance("a")
    inst.list_gate.clear()
    async with following(on_demand={"s"}) as fleet:
        await fleet.lifecycle.follow({"s": inst.entry()})
        await until(lambda: fleet.on_demand.attached_to == ["a"], "handed to waiting calls")
        assert fleet.attached() == "a" and fleet.tools() == []  # lists still being read
        inst.list_gate.set()
        await until(lambda: fleet.tools() == ["echo"])
        assert [t["name"] for t in fleet.on_demand.seen[0].tools] == ["echo"]


async def test_an_idle_on_demand_backend_is_released_only_without_calls_in_flight() -> None:
    inst = Instance("a")
    async with following(on_demand={"s"}) as fleet:
        await fleet.lifecycle.follow({"s": inst.entry()})
        await until(lambda: fleet.tools() == ["echo"])
        backend = fleet.backend()
        assert backend is not None
        inst.gate.clear()
        call = asyncio.create_task(backend.call("tools/call", {"name": "echo"}))
        await until(lambda: inst.calls == 1)
        assert fleet.lifecycle.release_backend("s") is False  # a call is in flight
        inst.gate.set()
        await call
        assert fleet.lifecycle.release_backend("s") is True
        assert fleet.backend() is None
        assert ("detached", "s", "idle: scaled to zero") in fleet.events
        await until(lambda: backend.closed, "the released backend closed")
        fleet.lifecycle.reattach("s")  # its stop is under way: not attached again yet
        assert inst.connections == 1 and not fleet.lifecycle.attaching()
        assert fleet.table.held("s", "a")  # still published: the controller stops it


async def test_a_new_instance_is_switched_make_before_break() -> None:
    old, new = Instance("a"), Instance("b")
    async with following() as fleet:
        await fleet.lifecycle.follow({"s": old.entry()})
        await until(lambda: fleet.attached() == "a")
        first = fleet.backend()
        assert first is not None
        old.gate.clear()
        call = asyncio.create_task(first.call("tools/call", {"name": "echo"}))
        await until(lambda: old.calls == 1)
        new.init_gate.clear()
        await fleet.lifecycle.follow({"s": new.entry()})
        await until(lambda: new.connections == 1)
        assert fleet.attached() == "a"  # the old one serves while the new one attaches
        assert fleet.table.held("s", "a") and fleet.table.held("s", "b")
        new.init_gate.set()
        await until(lambda: fleet.attached() == "b", "switched")
        assert fleet.table.held("s", "a") and not first.closed  # draining its call
        old.gate.set()
        assert (await call)["content"][0]["text"] == "a"  # answered, not failed
        await until(lambda: not fleet.table.held("s", "a"), "the old instance let go")
        assert first.closed and fleet.host.restored == ["a", "b"]


async def test_closing_detaches_everything_and_holds_nothing() -> None:
    inst = Instance("a")
    async with following() as fleet:
        await fleet.lifecycle.follow({"s": inst.entry()})
        await until(lambda: fleet.attached() == "a")
        backend = fleet.backend()
        await fleet.lifecycle.aclose()
        assert backend is not None and backend.closed
        assert not fleet.table.held("s", "a")
        assert ("detached", "s", "router stopped") in fleet.events


def test_the_backoff_stays_at_its_maximum_after_any_number_of_failures() -> None:
    from mcp_fleet.router.attachment import RETRY_MAX_SECONDS, backoff

    assert backoff(1) < backoff(2) <= RETRY_MAX_SECONDS
    assert backoff(1_025) == backoff(1_000_000) == RETRY_MAX_SECONDS  # 2.0 ** 1024 overflowed
