"""``mcp-fleet up`` with a router beside it: its own router and others on the demand socket.

``up``'s ``Demand`` has two sources: the router of its own process
(``serve``, answering synchronously) and a ``DemandServer`` for the routers
of other processes (``serve_remote``, over a real Unix socket here, with a
real ``DemandClient`` on the other side). Checked: activity is merged (the
least idle, every router's calls), a stop needs every router's yes (a busy
own router says no before anyone is asked; the others are asked first, the
own router last, so it marks the server retired only when the stop goes
ahead), and each source is installed and removed on its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
import pytest_asyncio
from mcp_fleet.endpoints import Activity, Demand
from mcp_fleet.reconcile.demand_server import DemandServer
from test_demand_ipc import Peer, Source, until

pytestmark = pytest.mark.timeout(30)


class Recording(Source):
    """A router's answers, noting who was asked in one list shared by all routers."""

    def __init__(self, who: str, order: list[str], activity: Mapping[str, Activity]) -> None:
        super().__init__(activity)
        self.who = who
        self.order = order

    def retire(self, server: str) -> bool:
        self.order.append(self.who)
        return super().retire(server)


class Up:
    """up's demand channel: its own router, the socket, and one router beside it."""

    def __init__(self, state_dir: Path) -> None:
        self.order: list[str] = []
        self.own = Recording("own", self.order, {"od": Activity(10.0)})
        self.other = Recording("other", self.order, {"od": Activity(2.0)})
        self.demand = Demand()
        self.server = DemandServer(state_dir, self.demand, query_timeout=0.5, retire_timeout=0.5)
        self.peer: Peer | None = None


@pytest_asyncio.fixture
async def up(tmp_path: Path) -> AsyncIterator[Up]:
    u = Up(tmp_path / ".state")
    await u.server.start()  # as in up: the socket first, then its router starts serving
    u.demand.serve(u.own)
    u.peer = Peer(u.server.state_dir, u.other)
    await u.peer.connected()
    await until(lambda: u.server.routers == 1)
    try:
        yield u
    finally:
        await u.peer.stop()
        await u.server.aclose()


async def test_activity_of_both_routers_is_merged(up: Up) -> None:
    up.own.now = {"od": Activity(10.0, inflight=1), "own-only": Activity(4.0)}
    up.other.now = {"od": Activity(2.0, waiting=2)}
    await up.demand.refresh()
    merged = up.demand.activity()
    assert merged["od"].inflight == 1 and merged["od"].waiting == 2
    assert 2.0 <= merged["od"].idle_seconds < 3.0  # the least idle of the two
    assert merged["own-only"] == Activity(4.0)


async def test_a_stop_needs_both_routers_and_asks_the_own_last(up: Up) -> None:
    assert await up.demand.retire_async("od") is True
    assert up.order == ["other", "own"]


async def test_the_other_router_saying_no_keeps_the_own_router_unmarked(up: Up) -> None:
    up.other.agree = False
    assert await up.demand.retire_async("od") is False
    assert up.order == ["other"]  # the own router never marked it retired


async def test_a_busy_own_router_says_no_before_anyone_is_asked(up: Up) -> None:
    up.own.now = {"od": Activity(0.0, inflight=1)}
    assert await up.demand.retire_async("od") is False
    assert up.order == []
    up.own.now = {"od": Activity(0.0, waiting=1)}
    assert await up.demand.retire_async("od") is False
    assert up.order == []


async def test_the_own_router_saying_no_is_final(up: Up) -> None:
    up.own.agree = False
    assert await up.demand.retire_async("od") is False
    assert up.order == ["other", "own"]


async def test_each_source_comes_and_goes_on_its_own(up: Up) -> None:
    assert up.demand.source is up.own and up.demand.remote is up.server
    await up.server.aclose()
    assert up.demand.remote is None and up.demand.source is up.own
    assert await up.demand.retire_async("od") is True
    assert up.order == ["own"]
    up.demand.serve(None)
    assert up.demand.source is None and up.demand.retire("od") is True


async def test_without_routers_beside_up_only_its_own_decides(tmp_path: Path) -> None:
    order: list[str] = []
    own = Recording("own", order, {"od": Activity(30.0)})
    demand = Demand()
    demand.serve(own)
    server = DemandServer(tmp_path / ".state", demand)
    await server.start()
    try:
        await demand.refresh()  # nobody to ask: no suspension worth waiting for
        assert demand.activity()["od"] == Activity(30.0)
        assert demand.retire("od") is True and order == ["own"]
        assert await demand.retire_async("od") is True and order == ["own", "own"]
    finally:
        await server.aclose()
