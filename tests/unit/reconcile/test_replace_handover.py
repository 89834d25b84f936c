"""Make-before-break, the controller's side: publish the new instance, wait for the release.

- The table's release API: each router declares what it holds
  (``holding``); ``wait_released`` returns at once when nobody holds an
  instance, when its last holder lets it go, or False at its timeout.
- Routers of other processes answer the same question over the demand
  socket (a real ``DemandServer`` and ``DemandClient``); one that goes
  away holds nothing.
- The executor: a replace publishes and waits (``handover``) between the new
  instance's probe and the old one's stop, holding no start slot; a cancel
  meanwhile stops the old instance at once.
- The controller: the new endpoint is in the table as soon as the new
  instance is Ready, the old instance runs until the router lets it go,
  and later passes never publish the old one again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mcp_fleet.endpoints import Demand, EndpointTable
from mcp_fleet.reconcile.actions import Cancel, Create, Plan, Replace
from mcp_fleet.reconcile.demand_server import DemandServer
from mcp_fleet.reconcile.executor import Executor
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.reconcile.memory import Tracker
from mcp_fleet.runtimes.base import Instance
from mcp_fleet.status import ServerState
from reconcile_builders import desired, spec
from test_demand_ipc import Peer, Source, until
from test_reconcile_in_flight import GatedRuntime, P, files_at, settle_until

pytestmark = pytest.mark.timeout(30)


# -- the table's release API ------------------------------------------------------


async def test_nobody_holding_an_instance_means_no_wait() -> None:
    table = EndpointTable()
    assert not table.held("s", "a")
    assert await table.wait_released("s", "a", timeout=5.0) is True


async def test_a_release_waits_for_every_holder_and_is_bounded() -> None:
    table = EndpointTable()
    one, two = object(), object()
    table.holding(one, {("s", "a"), ("t", "x")})
    table.holding(two, {("s", "a")})
    waiting = asyncio.create_task(table.wait_released("s", "a", timeout=5.0))
    await asyncio.sleep(0.02)
    table.holding(one, {("s", "b"), ("t", "x")})  # one switched to the new instance
    await asyncio.sleep(0.02)
    assert not waiting.done() and table.held("s", "a")
    table.released("s", "a", holder=two)
    assert await asyncio.wait_for(waiting, 1) is True
    assert table.held("s", "b") and table.held("t", "x")
    # Still held: False once the time is up, and the holder is untouched.
    assert await table.wait_released("t", "x", timeout=0.05) is False
    assert table.held("t", "x")
    table.released("t", "x")  # without a holder: every router of the process
    assert not table.held("t", "x")
    table.holding(one, ())
    assert not table.held("s", "b")


async def test_routers_of_other_processes_answer_over_the_demand_socket(tmp_path: Path) -> None:
    demand = Demand()
    server = DemandServer(tmp_path / ".state", demand, query_timeout=0.3, retire_timeout=0.3)
    await server.start()
    peer = Peer(server.state_dir, Source())
    holder = object()
    try:
        await peer.connected()
        await until(lambda: server.routers == 1)
        peer.demand.holding(holder, {("s", "a")})
        waiting = asyncio.create_task(demand.wait_released("s", "a", timeout=5.0))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # the router in the other process still holds it
        peer.demand.holding(holder, {("s", "b")})
        assert await asyncio.wait_for(waiting, 2) is True
        assert await demand.wait_released("s", "b", timeout=0.1) is False  # bounded
        # A router that goes away holds nothing.
        waiting = asyncio.create_task(demand.wait_released("s", "b", timeout=5.0))
        await asyncio.sleep(0.1)
        await peer.stop()
        assert await asyncio.wait_for(waiting, 2) is True
    finally:
        await peer.stop()
        await server.aclose()


# -- the executor -------------------------------------------------------------------


def replace_plan(runtime: GatedRuntime) -> tuple[Instance, Replace]:
    old_spec, new_spec = spec("alpha", version="1"), spec("alpha", version="2")
    old = Instance(
        server="alpha", instance_id="fake-old", runtime=P, fleet=runtime.fleet,
        config_hash=old_spec.config_hash(), running=True, started_at=1.0,
    )  # fmt: skip
    runtime.plant(old)
    return old, Replace(new_spec, P, old, "config changed")


async def test_a_replace_hands_over_between_the_probe_and_the_stop_without_a_slot() -> None:
    runtime, tracker = GatedRuntime(), Tracker()
    old, replace = replace_plan(runtime)
    release = asyncio.Event()
    seen: list[tuple[str, list[str]]] = []

    async def handover(action: Replace, new: Instance) -> None:
        seen.append((new.instance_id, sorted(runtime.instances)))
        await release.wait()

    executor = Executor({P: runtime}, tracker, concurrency=1, clock=lambda: 50.0,
                        handover=handover)  # fmt: skip
    await executor.launch(Plan((replace,)))
    await settle_until(lambda: seen)
    ((new_id, running),) = seen
    assert ("probe", new_id) in runtime.calls  # Ready first
    assert running == sorted([old.instance_id, new_id])  # the old one still runs
    # The wait holds no start slot: another server starts meanwhile (concurrency 1).
    await asyncio.wait_for(executor.apply(Plan((Create(spec("beta"), P, "absent"),))), 2)
    assert runtime.running("beta") and old.instance_id in runtime.instances
    release.set()
    await executor.settle()
    assert old.instance_id not in runtime.instances and new_id in runtime.instances
    assert old.instance_id not in tracker.owned


async def test_a_cancel_during_the_handover_stops_the_old_instance_at_once() -> None:
    runtime, tracker = GatedRuntime(), Tracker()
    old, replace = replace_plan(runtime)
    waiting = asyncio.Event()

    async def handover(action: Replace, new: Instance) -> None:
        waiting.set()
        await asyncio.Event().wait()  # a router that never lets go

    executor = Executor({P: runtime}, tracker, clock=lambda: 50.0, handover=handover)
    await executor.launch(Plan((replace,)))
    await asyncio.wait_for(waiting.wait(), 2)
    await asyncio.wait_for(executor.apply(Plan((Cancel("alpha", "config changed"),))), 2)
    assert old.instance_id not in runtime.instances and not executor.in_flight
    assert len(runtime.running("alpha")) == 1  # the new one stays, for the next plan


# -- the controller -------------------------------------------------------------------


async def test_the_new_endpoint_is_out_before_the_old_instance_stops(tmp_path: Path) -> None:
    runtime = GatedRuntime()
    state = {"now": desired(spec("alpha", version="1"))}
    table = EndpointTable()
    ctl = Controller(
        files_at(tmp_path), {P: runtime}, table, loader=lambda _f: state["now"],
        watch=False, resync_seconds=3600.0,
    )  # fmt: skip
    router = object()  # what a router declares: it uses the published instance
    task = asyncio.create_task(ctl.run())

    def published() -> str | None:
        entry = table.snapshot().get("alpha")
        return entry.endpoint.instance_id if entry is not None else None

    try:
        await settle_until(published)
        (old,) = runtime.running("alpha")
        assert published() == old.instance_id
        table.holding(router, {("alpha", old.instance_id)})
        state["now"] = desired(spec("alpha", version="2"))
        (tmp_path / "registry.yaml").write_text("# alpha v2\n")
        ctl.wake()
        await settle_until(lambda: published() not in (None, old.instance_id))
        new_id = published()
        assert old.instance_id in runtime.instances  # still running: the router holds it
        await asyncio.sleep(0.2)  # passes meanwhile keep the new one published
        assert published() == new_id and old.instance_id in runtime.instances
        table.holding(router, {("alpha", str(new_id))})  # switched and drained
        await settle_until(lambda: old.instance_id not in runtime.instances)
        await settle_until(lambda: not ctl.executor.in_flight)
        ctl.wake()
        await asyncio.sleep(0.1)
        assert published() == new_id
        status = ctl.status().server("alpha")
        assert status is not None and status.state is ServerState.READY
        assert status.instance == new_id
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ctl.aclose()
