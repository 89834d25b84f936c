"""The demand channel between a controller and routers in other processes, over a real socket.

``DemandServer`` (the controller's end) and ``DemandClient`` (a router's
end) talk over a real Unix socket in a temporary state directory, in one
event loop. A scripted router (``Source``, a ``DemandSource`` as the
router's ``Activator`` is one) answers on the client side; raw sockets play
routers that misbehave. Checked: the wire format, merging several routers,
"every router agrees" for a stop, an unanswering router counting as busy,
reconnection after a controller restart, the socket's mode and the short
path for a deep fleet directory, and a Controller driven through the socket.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
from mcp_fleet.endpoints import Activity, Demand, EndpointTable, merge_activity
from mcp_fleet.model import FleetFiles, Lifecycle, RuntimeKind, ServerSpec
from mcp_fleet.reconcile import demand_ipc
from mcp_fleet.reconcile.demand_ipc import ActivityQuery, DemandProtocolError, Hello, Reply, Want
from mcp_fleet.reconcile.demand_server import DemandServer
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.runtimes.fake import FakeRuntime
from mcp_fleet.sources.demand_client import DemandClient
from mcp_fleet.status import REASON_IDLE, ServerState
from reconcile_builders import FLEET, desired, spec

pytestmark = pytest.mark.timeout(30)


class Source:
    """A router's answers: activity as scripted, retire as told (and recorded)."""

    def __init__(self, activity: Mapping[str, Activity] | None = None) -> None:
        self.now: Mapping[str, Activity] = activity or {}
        self.agree = True
        self.asked: list[str] = []

    def activity(self) -> Mapping[str, Activity]:
        return self.now

    def retire(self, server: str) -> bool:
        self.asked.append(server)
        return self.agree


async def until(check: Callable[[], object], *, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


class Peer:
    """A router's side: its own Demand, its answers, the client task."""

    def __init__(self, state_dir: Path, source: Source) -> None:
        self.demand = Demand()
        self.demand.serve(source)
        self.source = source
        self.client = DemandClient(
            state_dir, self.demand, reconnect_initial=0.01, reconnect_max=0.05
        )
        self.task = asyncio.create_task(self.client.run())

    async def connected(self) -> None:
        await asyncio.wait_for(self.client.connected.wait(), 5)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[DemandServer]:
    srv = DemandServer(tmp_path / ".state", Demand(), query_timeout=0.3, retire_timeout=0.3)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.aclose()


async def connect(server: DemandServer, source: Source, *, routers: int = 1) -> Peer:
    peer = Peer(server.state_dir, source)
    await peer.connected()
    await until(lambda: server.routers == routers)
    return peer


# -- the wire format -----------------------------------------------------------


def test_messages_are_one_json_line_each_and_round_trip() -> None:
    wire = demand_ipc.activity_to_wire({"od": Activity(2.5, inflight=1, waiting=3)})
    for message in (
        Hello(op="hello", version=1, pid=42),
        Want(op="want", server="od"),
        ActivityQuery(op="activity", id=7),
        Reply(op="reply", id=7, activity=wire),
        Reply(op="reply", id=8, retire=False),
    ):
        line = demand_ipc.encode(message)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert demand_ipc.decode(line) == message
    assert orjson.loads(demand_ipc.encode(Want(op="want", server="od"))) == {
        "op": "want",
        "server": "od",
    }


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"{not json", "not JSON"),
        (b'{"op": "launch"}', "op"),
        (b'{"op": "want", "server": "../etc"}', "server"),
        (b'{"op": "reply", "id": 1, "activity": {"od": {"idle": -1}}}', "activity.od.idle"),
    ],
)
def test_a_bad_line_is_refused_with_what_is_wrong(line: bytes, says: str) -> None:
    with pytest.raises(DemandProtocolError, match=says.replace(".", r"\.")):
        demand_ipc.decode(line)


def test_several_routers_merge_into_least_idle_and_all_calls() -> None:
    merged = merge_activity(
        [
            {"a": Activity(10.0, inflight=1), "b": Activity(3.0)},
            {"a": Activity(4.0, waiting=2)},
            {},
        ]
    )
    assert merged == {"a": Activity(4.0, inflight=1, waiting=2), "b": Activity(3.0)}


def test_a_deep_fleet_gets_a_short_socket_path_and_a_pointer(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*(["d" * 30] * 4), ".state")
    deep.mkdir(parents=True)
    assert not demand_ipc.fits(deep / demand_ipc.SOCKET_NAME)
    path = demand_ipc.bind_path(deep)
    assert demand_ipc.fits(path) and path == demand_ipc.short_socket_path(deep)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    pointer = deep / demand_ipc.POINTER_NAME
    assert stat.S_IMODE(pointer.stat().st_mode) == 0o600
    assert demand_ipc.locate(deep) == path
    # Another fleet gets another path; a shallow one the plain path and no pointer.
    other = tmp_path.joinpath(*(["e" * 30] * 4), ".state")
    other.mkdir(parents=True)
    assert demand_ipc.bind_path(other) != path
    shallow = tmp_path / ".state"
    shallow.mkdir()
    assert demand_ipc.bind_path(shallow) == shallow / demand_ipc.SOCKET_NAME
    assert demand_ipc.locate(shallow) == shallow / demand_ipc.SOCKET_NAME


# -- the controller's end, with routers connected --------------------------------


async def test_no_router_means_nobody_is_using_anything(server: DemandServer) -> None:
    await server.refresh()
    assert server.activity() == {}
    assert await server.retire_async("od") is True
    assert server.demand.source is server


async def test_the_socket_is_private(server: DemandServer) -> None:
    assert server.path is not None
    assert stat.S_ISSOCK(server.path.stat().st_mode)
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600


async def test_want_wakes_the_controller_and_activity_is_the_routers(
    server: DemandServer,
) -> None:
    woken: list[bool] = []
    server.demand.subscribe(lambda: woken.append(True))
    source = Source({"od": Activity(1.0, waiting=2)})
    peer = await connect(server, source)
    try:
        peer.demand.want("od")
        await until(lambda: woken)
        await server.refresh()
        got = server.activity()["od"]
        assert (got.waiting, got.inflight) == (2, 0) and 1.0 <= got.idle_seconds < 2.0
    finally:
        await peer.stop()


async def test_two_routers_merge_and_a_stop_needs_both(server: DemandServer) -> None:
    one = await connect(server, Source({"od": Activity(30.0, inflight=1)}), routers=1)
    two = await connect(server, Source({"od": Activity(5.0), "x": Activity(8.0)}), routers=2)
    try:
        await server.refresh()
        act = server.activity()
        assert act["od"].inflight == 1 and 5.0 <= act["od"].idle_seconds < 6.0
        assert 8.0 <= act["x"].idle_seconds < 9.0

        assert await server.retire_async("od") is True
        assert one.source.asked == ["od"] and two.source.asked == ["od"]
        two.source.agree = False
        assert await server.retire_async("od") is False
        one.source.agree, two.source.agree = False, True
        assert await server.retire_async("x") is False
        assert one.source.asked[-1] == "x" and two.source.asked == ["od", "od"]  # stopped at no
    finally:
        await one.stop()
        await two.stop()


async def test_an_unanswering_router_keeps_the_server_and_bounds_the_wait(
    server: DemandServer,
) -> None:
    assert server.path is not None
    reader, writer = await asyncio.open_unix_connection(os.fspath(server.path))
    try:
        writer.write(demand_ipc.encode(Hello(op="hello", version=1, pid=1)))
        await until(lambda: server.routers == 1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await server.refresh()
        assert server.activity() == {}
        assert await server.retire_async("od") is False  # silent: counted as busy
        assert loop.time() - started < 1.5
        # The questions did reach it: it was asked, and silence counted as busy.
        query = demand_ipc.decode(await reader.readline())
        assert isinstance(query, ActivityQuery)
    finally:
        writer.close()
    await until(lambda: server.routers == 0)
    assert await server.retire_async("od") is True


async def test_a_gone_router_leaves_when_each_server_was_last_used(server: DemandServer) -> None:
    peer = await connect(server, Source({"od": Activity(2.0, inflight=1)}))
    await server.refresh()
    await peer.stop()
    await until(lambda: server.routers == 0)
    left = server.activity()["od"]
    assert left.inflight == 0 and 2.0 <= left.idle_seconds < 3.0


async def test_garbage_from_a_peer_is_ignored_and_the_link_goes_on(server: DemandServer) -> None:
    assert server.path is not None
    reader, writer = await asyncio.open_unix_connection(os.fspath(server.path))
    try:
        writer.write(b"garbage\n" + demand_ipc.encode(Hello(op="hello", version=1, pid=2)))
        await until(lambda: server.routers == 1)
        refresh = asyncio.create_task(server.refresh())
        query = demand_ipc.decode(await reader.readline())
        assert isinstance(query, ActivityQuery)
        wire = demand_ipc.activity_to_wire({"od": Activity(0.5, waiting=1)})
        writer.write(demand_ipc.encode(Reply(op="reply", id=query.id, activity=wire)))
        await refresh
        assert server.activity()["od"].waiting == 1
    finally:
        writer.close()


async def test_another_protocol_version_is_refused(server: DemandServer) -> None:
    assert server.path is not None
    reader, writer = await asyncio.open_unix_connection(os.fspath(server.path))
    writer.write(demand_ipc.encode(Hello(op="hello", version=99, pid=3)))
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the controller
    writer.close()


# -- the router's end: connecting late, reconnecting -------------------------------


async def test_router_waits_for_a_controller_and_reconnects_after_a_restart(
    tmp_path: Path,
) -> None:
    state = tmp_path / ".state"
    source = Source({"od": Activity(0.0, waiting=1)})
    peer = Peer(state, source)  # no controller yet
    try:
        await asyncio.sleep(0.1)
        assert not peer.client.connected.is_set()
        for _ in range(2):  # a controller starts, then another after it stopped
            woken = asyncio.Event()
            srv = DemandServer(state, Demand())
            srv.demand.subscribe(woken.set)
            await srv.start()
            try:
                await peer.connected()
                # The call waiting since before is wanted again on connection.
                await asyncio.wait_for(woken.wait(), 5)
                await srv.refresh()
                assert srv.activity()["od"].waiting == 1
            finally:
                await srv.aclose()
            assert not (state / demand_ipc.SOCKET_NAME).exists()
            await until(lambda: not peer.client.connected.is_set())
    finally:
        await peer.stop()


async def test_retire_through_the_socket_uses_the_routers_own_answer(
    server: DemandServer,
) -> None:
    source = Source({"od": Activity(50.0)})
    peer = await connect(server, source)
    try:
        source.agree = False
        assert await server.demand.retire_async("od") is False
        source.agree = True
        assert await server.demand.retire_async("od") is True
        assert source.asked == ["od", "od"]
    finally:
        await peer.stop()


async def test_a_peer_of_another_user_is_refused(
    server: DemandServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "getuid", lambda: os.geteuid() + 12345)  # the peer is someone else
    assert server.path is not None
    reader, writer = await asyncio.open_unix_connection(os.fspath(server.path))
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed before a word
    writer.close()
    assert server.routers == 0


# -- a Controller whose router is in another process ---------------------------------


def on_demand(name: str, *, idle: float) -> ServerSpec:
    base = spec(name)
    assert base.entry is not None
    return replace(
        base, entry=replace(base.entry, lifecycle=Lifecycle.ON_DEMAND, idle_timeout_seconds=idle)
    )


async def test_a_controller_starts_and_scales_down_through_the_socket(tmp_path: Path) -> None:
    now = [1000.0]
    fake = FakeRuntime(fleet=FLEET, clock=900.0)
    table = EndpointTable()
    files = FleetFiles(home=tmp_path, catalogs=(), registry=tmp_path / "registry.yaml",
                       config=tmp_path / "c.yaml", tools=tmp_path / "t.yaml",
                       secrets=tmp_path / "s.env")  # fmt: skip
    state = desired(on_demand("od", idle=30.0))
    ctl = Controller(files, {RuntimeKind.PROCESS: fake}, table, loader=lambda _f: state,
                     watch=False, clock=lambda: now[0])  # fmt: skip
    srv = DemandServer(files.state_dir, table.demand, clock=lambda: now[0])
    await srv.start()
    source = Source()
    peer = await connect(srv, source)
    try:
        snap = await ctl.reconcile_once()
        assert snap.server("od").state is ServerState.STOPPED  # type: ignore[union-attr]
        ctl._wake.clear()
        source.now = {"od": Activity(0.0, waiting=1)}
        peer.demand.want("od")
        await asyncio.wait_for(ctl._wake.wait(), 5)  # the want crossed the socket
        snap = await ctl.reconcile_once()
        assert snap.server("od").state is ServerState.READY  # type: ignore[union-attr]

        # In flight at the router: never stopped, whatever the clock says.
        source.now = {"od": Activity(0.0, inflight=1)}
        now[0] += 1000
        await ctl.reconcile_once()
        assert fake.running("od") and source.asked == []
        # Idle, but the router says no at the last moment: kept.
        now[0] += 50
        source.now, source.agree = {"od": Activity(40.0)}, False
        await ctl.reconcile_once()
        assert source.asked == ["od"] and fake.running("od")
        # Idle and agreed: scaled to zero.
        source.agree = True
        now[0] += 100
        snap = await ctl.reconcile_once()
        assert not fake.running("od")
        st = snap.server("od")
        assert st is not None and (st.state, st.reason) == (ServerState.STOPPED, REASON_IDLE)
    finally:
        await peer.stop()
        await srv.aclose()
        await ctl.aclose()
