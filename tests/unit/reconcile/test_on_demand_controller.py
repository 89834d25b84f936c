"""The Controller with on-demand servers: demand wakes it, idle servers scale to zero.

A fake runtime and a scripted router (``Router``, a ``DemandSource``) stand
in for the real ones, so the controller's side of the channel is checked
alone: what it publishes, what it starts when a call waits, and that it asks
the router before stopping an idle server (and obeys a "no").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from mcp_fleet.endpoints import Activity, EndpointTable
from mcp_fleet.model import DesiredState, FleetFiles, Lifecycle, RuntimeKind, ServerSpec
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.runtimes.fake import FakeRuntime
from mcp_fleet.status import REASON_IDLE, ServerState
from reconcile_builders import FLEET, desired, spec


def on_demand(name: str, *, idle: float) -> ServerSpec:
    base = spec(name)
    assert base.entry is not None
    return replace(
        base,
        entry=replace(base.entry, lifecycle=Lifecycle.ON_DEMAND, idle_timeout_seconds=idle),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Router:
    """What the controller learns from a router: waiting calls, use, and its consent."""

    def __init__(self) -> None:
        self.now: Mapping[str, Activity] = {}
        self.asked: list[str] = []
        self.agree = True

    def activity(self) -> Mapping[str, Activity]:
        return self.now

    def retire(self, server: str) -> bool:
        self.asked.append(server)
        return self.agree


def make(tmp_path: Path, state: DesiredState) -> tuple[Controller, FakeRuntime, Router, Clock]:
    fake = FakeRuntime(fleet=FLEET, clock=900.0)
    table = EndpointTable()
    router = Router()
    table.demand.serve(router)
    clock = Clock()
    files = FleetFiles(home=tmp_path, catalogs=(), registry=tmp_path / "registry.yaml",
                       config=tmp_path / "c.yaml", tools=tmp_path / "t.yaml",
                       secrets=tmp_path / "s.env")  # fmt: skip
    ctl = Controller(files, {RuntimeKind.PROCESS: fake}, table, loader=lambda _f: state,
                     watch=False, clock=clock)  # fmt: skip
    return ctl, fake, router, clock


async def test_cold_until_a_call_waits_then_started_once_and_published(tmp_path: Path) -> None:
    od = on_demand("od", idle=60.0)
    ctl, fake, router, _ = make(tmp_path, desired(od, spec("always")))
    snap = await ctl.reconcile_once()
    st = snap.server("od")
    assert st is not None and (st.state, st.reason) == (ServerState.STOPPED, REASON_IDLE)
    assert snap.all_ready
    assert not fake.running("od") and fake.running("always")
    table = ctl.endpoints
    assert list(table.on_demand()) == ["od"] and "od" not in table.snapshot()
    assert table.cache_dir == tmp_path / ".state" / "cache"

    router.now = {"od": Activity(idle_seconds=0.0, waiting=3)}
    ctl._wake.clear()
    table.demand.want("od")
    assert ctl._wake.is_set()  # a waiting call wakes the loop
    snap = await ctl.reconcile_once()
    assert snap.server("od").state is ServerState.READY  # type: ignore[union-attr]
    assert "od" in table.snapshot()
    await ctl.reconcile_once()
    assert [c for c in fake.calls if c == ("start", "od")] == [("start", "od")]


async def test_idle_server_is_stopped_only_with_the_routers_consent(tmp_path: Path) -> None:
    od = on_demand("od", idle=30.0)
    ctl, fake, router, clock = make(tmp_path, desired(od))
    router.now = {"od": Activity(idle_seconds=0.0, waiting=1)}
    await ctl.reconcile_once()
    (inst,) = fake.running("od")
    router.now = {"od": Activity(idle_seconds=0.0, inflight=1)}
    clock.now += 1_000
    await ctl.reconcile_once()
    assert fake.running("od") and not router.asked  # busy: not even asked

    router.now = {"od": Activity(idle_seconds=31.0)}
    router.agree = False  # a call arrived between the plan and the stop
    await ctl.reconcile_once()
    assert router.asked == ["od"] and fake.running("od")

    router.agree = True
    assert not (await ctl.reconcile_once()).pending  # the refusal counts as use: idle anew
    assert fake.running("od") and router.asked == ["od"]
    clock.now += 30.0
    snap = await ctl.reconcile_once()
    assert not fake.running("od") and ("stop", inst.instance_id) in fake.calls
    st = snap.server("od")
    assert st is not None and (st.state, st.reason) == (ServerState.STOPPED, REASON_IDLE)
    assert st.restarts == 0 and "scaled to zero" in st.message  # not a failure
    assert "od" not in ctl.endpoints.snapshot() and "od" in ctl.endpoints.on_demand()


async def test_the_pass_asks_to_be_woken_when_the_idle_period_ends(tmp_path: Path) -> None:
    od = on_demand("od", idle=30.0)
    ctl, _, router, clock = make(tmp_path, desired(od))
    router.now = {"od": Activity(idle_seconds=0.0, waiting=1)}
    await ctl.reconcile_once()
    router.now = {"od": Activity(idle_seconds=10.0)}
    await ctl.reconcile_once()
    assert ctl._wake_at == clock.now + 20.0
