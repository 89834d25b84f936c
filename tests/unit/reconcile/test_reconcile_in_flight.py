"""Actions in flight: the planner's rules for them, the executor's flights, the loop around them.

- Planning (pure): a server whose start or probe is under way gets no new
  action (no second start, no second probe), unless it was disabled, removed
  or changed meanwhile: then exactly one ``cancel``; a flight that only
  stops is never cancelled; other servers are planned as if nothing flew.
- Executor: ``launch`` returns while a probe hangs; a cancel interrupts the
  probe (or waits for a start to return) and stops what the flight started,
  counting no failure; the start slots bound starts, not stops; ``aclose``
  abandons what it cuts short.
- Loop: with one server's probe hanging, an edit enabling another makes it
  Ready at once, status shows the hanging one Starting, and disabling it
  cancels its flight and stops its instance.
- Bookkeeping: a listing taken before a flight landed is not used to plan
  that server or to count its new instance as vanished.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.model import DesiredState, FleetFiles, RuntimeKind, ServerSpec
from mcp_fleet.reconcile.actions import Cancel, Create, Plan, Remove
from mcp_fleet.reconcile.executor import CANCELLED, Executor
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.reconcile.memory import InFlight, Memory, Tracker
from mcp_fleet.reconcile.plan import plan
from mcp_fleet.runtimes.base import Instance, ObservedState
from mcp_fleet.runtimes.fake import FakeRuntime
from mcp_fleet.status import ServerState
from reconcile_builders import FLEET, desired, instance, spec
from test_reconcile_plan_properties import SETTINGS, worlds

P, D = RuntimeKind.PROCESS, RuntimeKind.DOCKER


def flying(s: ServerSpec, *, runtime: RuntimeKind = P, **kw: object) -> InFlight:
    """A start of ``s`` in flight since t=40."""
    return InFlight(since=40.0, actions=("create ...",), config_hash=s.config_hash(),
                    runtime=runtime, **kw)  # type: ignore[arg-type]  # fmt: skip


# -- planning ------------------------------------------------------------------


def test_a_server_in_flight_gets_no_second_start_nor_probe() -> None:
    a, b = spec("alpha"), spec("beta")
    memory = Memory(now=50.0, in_flight={"alpha": flying(a)})
    # Nothing observed yet (the start has not returned): no second create.
    assert [(x.verb, x.server) for x in plan(desired(a, b), ObservedState(), memory).actions] == [
        ("create", "beta")
    ]
    # Its new instance observed, owned, not ready yet: no probe of our own, no removal.
    new = instance("alpha", "pid:7:7", config_hash=a.config_hash())
    owned = Memory(now=50.0, owned=frozenset({"pid:7:7"}), in_flight={"alpha": flying(a)})
    assert not plan(desired(a), ObservedState((new,)), owned)
    # Even exited, it is the flight's to report (the probe fails): nothing planned.
    dead = instance("alpha", "pid:7:7", config_hash=a.config_hash(), running=False, exit_code=1)
    assert not plan(desired(a), ObservedState((dead,)), owned)


@pytest.mark.parametrize(
    ("now", "cause"),
    [
        ("disabled", "disabled"),
        ("removed", "orphaned: no registry entry"),
        ("changed", "config changed"),
        ("docker", "runtime changed: process -> docker"),
    ],
)
def test_a_server_changed_mid_flight_is_cancelled_once(now: str, cause: str) -> None:
    was = spec("alpha", version="1", image="img")
    wanted = {
        "disabled": [spec("alpha", enabled=False)],
        "removed": [],
        "changed": [spec("alpha", version="2", image="img")],
        "docker": [was],
    }[now]
    preferred = D if now == "docker" else P
    new = instance("alpha", "pid:7:7", config_hash=was.config_hash())
    memory = Memory(
        now=50.0, owned=frozenset({"pid:7:7"}), in_flight={"alpha": flying(was)},
        preferred_runtime=preferred, available_runtimes=frozenset({P, D}),
    )  # fmt: skip
    result = plan(desired(*wanted), ObservedState((new,)), memory)
    assert len(result.actions) == 1 and isinstance(result.actions[0], Cancel)
    assert result.actions[0].server == "alpha" and result.actions[0].cause.startswith(cause)
    assert str(result).startswith("cancel      server:alpha")
    # Cancelled just the same before the start has returned (nothing observed yet).
    early = plan(desired(*wanted), ObservedState(), memory)
    assert [(a.verb, a.server) for a in early.actions] == [("cancel", "alpha")]
    # Once the cancel is under way, nothing more until the flight has landed.
    cancelling = Memory(
        now=50.0, owned=frozenset({"pid:7:7"}),
        in_flight={"alpha": flying(was, cancelling=True)},
        preferred_runtime=preferred, available_runtimes=frozenset({P, D}),
    )  # fmt: skip
    assert not plan(desired(*wanted), ObservedState((new,)), cancelling)
    # Landed (the cancel stopped its instance): the usual rules take over.
    after = plan(desired(*wanted), ObservedState(), Memory(now=50.0, preferred_runtime=preferred,
                 available_runtimes=frozenset({P, D})))  # fmt: skip
    assert all(not isinstance(x, Cancel) for x in after.actions)


def test_a_flight_that_only_stops_is_never_cancelled() -> None:
    a = spec("alpha")
    stopping = InFlight(since=40.0, actions=("remove ...",))
    assert not stopping.starts
    old = instance("alpha", "pid:1:1", config_hash="stale")
    memory = Memory(now=50.0, owned=frozenset({"pid:1:1"}), in_flight={"alpha": stopping})
    assert not plan(desired(a), ObservedState((old,)), memory)
    assert not plan(desired(spec("alpha", enabled=False)), ObservedState((old,)), memory)


@st.composite
def flights(draw: st.DrawFn, d: DesiredState, names: list[str]) -> dict[str, InFlight]:
    out = {}
    for name in draw(st.lists(st.sampled_from(names), unique=True)) if names else []:
        s = d.servers.get(name)
        config_hash = draw(st.sampled_from([s.config_hash() if s else "gone", "stale", None]))
        out[name] = InFlight(
            since=45.0, config_hash=config_hash, runtime=draw(st.sampled_from([P, D])),
            cancelling=draw(st.booleans()),
        )  # fmt: skip
    return out


@settings(SETTINGS)
@given(st.data())
def test_in_flight_servers_get_a_cancel_at_most_and_the_others_plan_as_usual(
    data: st.DataObject,
) -> None:
    d, insts, memory = data.draw(worlds())
    names = sorted(set(d.servers) | {i.server for i in insts})
    in_flight = data.draw(flights(d, names))
    observed = ObservedState(tuple(insts))
    result = plan(d, observed, Memory(**{**_fields(memory), "in_flight": in_flight}))
    baseline = plan(d, observed, memory)
    for name, flight in in_flight.items():
        mine = result.for_server(name)
        assert all(isinstance(a, Cancel) for a in mine) and len(mine) <= 1, mine
        if mine:
            assert flight.starts and not flight.cancelling
    others = [a for a in baseline.actions if a.server not in in_flight]
    assert [a for a in result.actions if a.server not in in_flight] == others


def _fields(memory: Memory) -> dict[str, object]:
    return {f: getattr(memory, f) for f in memory.__slots__}  # type: ignore[attr-defined]


# -- the executor --------------------------------------------------------------


class GatedRuntime(FakeRuntime):
    """A fake whose probes (and, when asked, starts) wait until the test opens a gate."""

    def __init__(self) -> None:
        super().__init__(fleet=FLEET)
        self.probe_gates: dict[str, asyncio.Event] = {}
        self.start_gates: dict[str, asyncio.Event] = {}
        self.probing: set[str] = set()

    async def start(self, s: ServerSpec) -> Instance:
        gate = self.start_gates.get(s.name)
        if gate is not None:
            await gate.wait()
        return await super().start(s)

    async def probe(self, inst: Instance, *, timeout: float) -> None:
        gate = self.probe_gates.get(inst.server)
        if gate is not None:
            self.probing.add(inst.server)
            try:
                await gate.wait()
            finally:
                self.probing.discard(inst.server)
        await super().probe(inst, timeout=timeout)


async def settle_until(check: object, *, within: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.005)


async def test_launch_returns_while_a_probe_hangs_and_the_landing_is_announced() -> None:
    runtime, tracker, changes = GatedRuntime(), Tracker(), []
    runtime.probe_gates["slow"] = asyncio.Event()
    executor = Executor({P: runtime}, tracker, clock=lambda: 50.0,
                        on_change=lambda: changes.append(1))  # fmt: skip
    slow, quick = spec("slow"), spec("quick")
    done = await executor.launch(Plan((Create(slow, P, "absent"), Create(quick, P, "absent"))))
    assert done == [] and executor.in_flight == {"slow", "quick"}
    await settle_until(lambda: executor.in_flight == {"slow"})
    assert tracker.ready and "slow" in runtime.probing
    flight = tracker.in_flight["slow"]
    assert flight.since == 50.0 and flight.config_hash == slow.config_hash() and flight.starts
    assert flight.actions[0].startswith("create      server:slow")
    runtime.probe_gates["slow"].set()
    await executor.settle()
    assert not tracker.in_flight and len(tracker.ready) == 2
    assert len(changes) >= 4  # two starts, two landings


async def test_a_cancel_mid_probe_stops_what_the_flight_started_and_counts_no_failure() -> None:
    runtime, tracker = GatedRuntime(), Tracker()
    runtime.probe_gates["slow"] = asyncio.Event()  # never opened: the probe hangs
    executor = Executor({P: runtime}, tracker, clock=lambda: 50.0)
    create = Create(spec("slow"), P, "absent")
    await executor.launch(Plan((create,)))
    await settle_until(lambda: "slow" in runtime.probing)
    (started,) = runtime.running("slow")
    assert started.instance_id in tracker.owned  # known before any cancel can come
    outcomes = await executor.apply(Plan((Cancel("slow", "disabled"),)))
    assert [o.ok for o in outcomes] == [True]
    assert runtime.running("slow") == [] and ("stop", started.instance_id) in runtime.calls
    assert started.instance_id not in tracker.owned and not executor.in_flight
    assert tracker.health_of("slow").streak == 0 and not tracker.in_flight


async def test_a_cancel_during_a_start_waits_for_it_then_stops_the_instance() -> None:
    runtime, tracker = GatedRuntime(), Tracker()
    runtime.start_gates["slow"] = asyncio.Event()
    executor = Executor({P: runtime}, tracker, clock=lambda: 50.0)
    create = Create(spec("slow"), P, "absent")
    await executor.launch(Plan((create,)))
    await asyncio.sleep(0.01)
    await executor.launch(Plan((Cancel("slow", "disabled"),)))
    assert tracker.in_flight["slow"].cancelling and executor.in_flight == {"slow"}
    runtime.start_gates["slow"].set()  # the runtime's start returns: then it is stopped
    await executor.settle()
    assert runtime.instances == {} and not tracker.owned
    stops = [c for c in runtime.calls if c[0] == "stop"]
    assert len(stops) == 1 and ("probe", stops[0][1]) not in runtime.calls


async def test_start_slots_bound_starts_and_never_hold_stops_back() -> None:
    runtime, tracker = GatedRuntime(), Tracker()
    for name in ("one", "two"):
        runtime.probe_gates[name] = asyncio.Event()
    old = instance("gone", "fake-old", config_hash="x")
    runtime.plant(old)
    executor = Executor({P: runtime}, tracker, concurrency=1, clock=lambda: 50.0)
    await executor.launch(Plan((Create(spec("one"), P, "absent"),
                                Create(spec("two"), P, "absent"))))  # fmt: skip
    await settle_until(lambda: runtime.probing == {"one"})
    assert tracker.in_flight["two"].queued and not tracker.in_flight["one"].queued
    # A removal is not queued behind the hanging probe.
    outcomes = await asyncio.wait_for(executor.apply(Plan((Remove(old, "orphaned"),))), 1.0)
    assert [o.ok for o in outcomes] == [True] and "fake-old" not in runtime.instances
    runtime.probe_gates["one"].set()
    await settle_until(lambda: runtime.probing == {"two"})
    assert not tracker.in_flight["two"].queued
    runtime.probe_gates["two"].set()
    await executor.settle()


async def test_aclose_abandons_flights_without_stopping_what_they_started() -> None:
    runtime, tracker = GatedRuntime(), Tracker()
    runtime.probe_gates["slow"] = asyncio.Event()
    executor = Executor({P: runtime}, tracker, clock=lambda: 50.0)
    await executor.launch(Plan((Create(spec("slow"), P, "absent"),)))
    await settle_until(lambda: "slow" in runtime.probing)
    await executor.aclose()
    assert not executor.in_flight and len(runtime.running("slow")) == 1  # left for a successor
    assert not [c for c in runtime.calls if c[0] == "stop"]


async def test_cancelled_actions_report_cancelled() -> None:
    runtime, tracker = GatedRuntime(), Tracker()
    runtime.start_gates["slow"] = asyncio.Event()
    executor = Executor({P: runtime}, tracker, clock=lambda: 50.0)
    create = Create(spec("slow"), P, "absent")
    applying = asyncio.create_task(executor.apply(Plan((create,))))
    await asyncio.sleep(0.01)
    await executor.launch(Plan((Cancel("slow", "disabled"),)))
    runtime.start_gates["slow"].set()
    (outcome,) = await applying
    assert not outcome.ok and outcome.error == CANCELLED


# -- what the loop sees --------------------------------------------------------


def test_a_listing_older_than_a_landing_is_not_used_for_that_server() -> None:
    tracker, alpha = Tracker(), spec("alpha")
    new = instance("alpha", "pid:9:9", config_hash=alpha.config_hash())
    before = {"alpha": flying(alpha)}
    tracker.started(new, restart=False)  # what the flight did, after the listing
    stale = ObservedState()  # the listing taken before: it misses the new instance
    assert tracker.unexpected_exits(stale, busy=before.keys()) == []
    tracker.forget_vanished(stale, busy=before.keys())
    assert new.instance_id in tracker.owned
    memory = tracker.memory(50.0, observed_in_flight=before)
    assert "alpha" in memory.in_flight  # the planner leaves alpha alone until a fresh look
    assert not plan(desired(alpha), stale, memory)  # not a second create
    # A fresh listing, with nothing in flight: the instance is there, nothing vanished.
    assert tracker.unexpected_exits(ObservedState((new,))) == []
    assert "alpha" not in tracker.memory(51.0).in_flight


class LateListing(FakeRuntime):
    """Lists its instances, then takes a while to answer: flights land meanwhile."""

    async def observe(self) -> ObservedState:
        listed = await super().observe()
        await asyncio.sleep(0.02)
        return listed


async def test_flights_landing_during_a_listing_never_cause_a_second_start(
    tmp_path: Path,
) -> None:
    runtime = LateListing(fleet=FLEET)
    names = ("a", "b", "c", "d")
    ctl = Controller(
        files_at(tmp_path), {P: runtime}, EndpointTable(), watch=False,
        loader=lambda _f: desired(*(spec(n) for n in names)), resync_seconds=3600.0,
    )  # fmt: skip
    task = asyncio.create_task(ctl.run())
    try:
        await settle_until(
            lambda: all(
                getattr(ctl.status().server(n), "state", None) is ServerState.READY for n in names
            )
        )
        await asyncio.sleep(0.2)  # a few more passes over late listings
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await ctl.aclose()
    assert sorted(c[1] for c in runtime.calls if c[0] == "start") == list(names)
    assert not [c for c in runtime.calls if c[0] == "stop"]
    assert all(ctl.tracker.health_of(n).streak == 0 for n in names)


def files_at(home: Path) -> FleetFiles:
    return FleetFiles(home=home, catalogs=(), registry=home / "registry.yaml",
                      config=home / "config.yaml", tools=home / "tools.yaml",
                      secrets=home / "secrets.env")  # fmt: skip


async def test_an_edit_is_applied_while_another_servers_probe_hangs(tmp_path: Path) -> None:
    runtime = GatedRuntime()
    runtime.probe_gates["slow"] = asyncio.Event()  # never opened
    state = {"now": desired(spec("slow"))}
    ctl = Controller(
        files_at(tmp_path), {P: runtime}, EndpointTable(), loader=lambda _f: state["now"],
        watch=False, resync_seconds=3600.0,
    )  # fmt: skip
    task = asyncio.create_task(ctl.run())
    status_file = tmp_path / ".state" / "status.json"

    def server_state(name: str) -> ServerState | None:
        st = ctl.status().server(name)
        return None if st is None else st.state

    try:
        await settle_until(lambda: "slow" in runtime.probing)
        await settle_until(lambda: getattr(ctl.status().server("slow"), "instance", None))
        assert server_state("slow") is ServerState.STARTING
        # An edit: quick enabled. It is Ready while slow still hangs.
        state["now"] = desired(spec("slow"), spec("quick"))
        (tmp_path / "registry.yaml").write_text("# quick enabled\n")
        ctl.wake()
        await settle_until(lambda: server_state("quick") is ServerState.READY)
        doc = json.loads(status_file.read_text())
        assert {s["name"]: s["state"] for s in doc["servers"]} == {
            "quick": "Ready", "slow": "Starting"
        }  # fmt: skip
        (line,) = [line for line in doc["pending"] if "server:slow" in line]
        assert line.endswith("[in flight]")
        assert "slow" in runtime.probing and "quick" in ctl.endpoints.snapshot()
        # slow disabled mid-probe: its flight is cancelled and its instance stopped.
        (slow_instance,) = runtime.running("slow")
        state["now"] = desired(spec("slow", enabled=False), spec("quick"))
        (tmp_path / "registry.yaml").write_text("# slow disabled\n")
        ctl.wake()
        await settle_until(lambda: server_state("slow") is ServerState.STOPPED)
        assert runtime.running("slow") == [] and "slow" not in runtime.probing
        assert ("stop", slow_instance.instance_id) in runtime.calls
        assert json.loads(status_file.read_text())["pending"] == []
        assert [c[1] for c in runtime.calls if c[0] == "start"] == ["slow", "quick"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await ctl.aclose()
