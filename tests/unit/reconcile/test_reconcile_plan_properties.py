"""Properties of the planner over random fleets (hypothesis), applied on fake runtimes.

- Idempotence: apply ``plan(d, o)`` through the executor on fake runtimes,
  observe again, plan again: nothing is left to do.
- Ownership: no action ever names an instance of another fleet or an
  unlabelled one.
- Determinism: the same inputs give the same plan text, whatever the order
  the runtime listed the instances in.
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp_fleet.errors import Diagnostic
from mcp_fleet.model import DesiredState, RuntimeKind, ServerSpec
from mcp_fleet.reconcile.actions import Create, MarkFailed, Replace
from mcp_fleet.reconcile.executor import Executor
from mcp_fleet.reconcile.memory import Memory, Tracker
from mcp_fleet.reconcile.plan import plan
from mcp_fleet.runtimes.base import Instance, ObservedState
from mcp_fleet.runtimes.fake import FakeRuntime
from reconcile_builders import FLEET, desired, instance, spec

P, D = RuntimeKind.PROCESS, RuntimeKind.DOCKER
NAMES = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]
KINDS = ["process", "image", "both", "remote", "problem", "missing"]


@st.composite
def specs(draw: st.DrawFn, name: str) -> ServerSpec:
    kind = draw(st.sampled_from(KINDS))
    enabled = draw(st.booleans())
    version = draw(st.sampled_from(["1", "2"]))
    if kind == "remote":
        return spec(name, enabled=enabled, remote="http://127.0.0.1:9/mcp", process=False)
    if kind == "problem":
        return spec(name, enabled=enabled, problems=(Diagnostic("required secret s is not set"),))
    if kind == "missing":
        return spec(name, enabled=enabled, missing=True, problems=(Diagnostic("unknown"),))
    return spec(
        name,
        enabled=enabled,
        version=version,
        image="img" if kind in ("image", "both") else None,
        process=kind != "image",
    )


@st.composite
def worlds(draw: st.DrawFn) -> tuple[DesiredState, list[Instance], Memory]:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)))
    d = desired(*[draw(specs(n)) for n in sorted(names)])
    preferred = draw(st.sampled_from([P, D]))
    insts: list[Instance] = []
    owned: set[str] = set()
    ready: set[str] = set()
    for i in range(draw(st.integers(0, 10))):
        server = draw(st.sampled_from(NAMES))
        runtime = draw(st.sampled_from([P, D]))
        target = d.servers.get(server)
        good_hash = target.config_hash() if target is not None else "x"
        iid = f"{runtime.value}-old-{i}"
        insts.append(
            instance(
                server,
                iid,
                config_hash=draw(st.sampled_from([good_hash, "stale"])),
                fleet=draw(st.sampled_from([FLEET, FLEET, "other-fleet", ""])),
                running=draw(st.booleans()),
                runtime=runtime,
                started_at=float(draw(st.integers(0, 5))),
                exit_code=draw(st.sampled_from([None, 1, 3])),
            )
        )
        if draw(st.booleans()):
            owned.add(iid)
            if draw(st.booleans()):
                ready.add(iid)
    memory = Memory(
        now=50.0,
        owned=frozenset(owned),
        ready=frozenset(ready),
        preferred_runtime=preferred,
        available_runtimes=frozenset({P, D}),
    )
    return d, insts, memory


def _fakes(insts: list[Instance]) -> dict[RuntimeKind, FakeRuntime]:
    fakes = {P: FakeRuntime(fleet=FLEET, kind=P), D: FakeRuntime(fleet=FLEET, kind=D)}
    for inst in insts:
        fakes[inst.runtime].plant(inst)
    return fakes


async def _observe(fakes: dict[RuntimeKind, FakeRuntime]) -> ObservedState:
    found: list[Instance] = []
    for fake in fakes.values():
        found.extend((await fake.observe()).instances)
    return ObservedState(tuple(found))


def _seed(memory: Memory) -> Tracker:
    tracker = Tracker()
    tracker.owned |= memory.owned
    tracker.ready |= memory.ready
    return tracker


SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(SETTINGS, max_examples=200)
@given(worlds())
def test_applying_a_plan_then_planning_again_yields_nothing(
    world: tuple[DesiredState, list[Instance], Memory],
) -> None:
    d, insts, memory = world

    async def scenario() -> None:
        fakes = _fakes(insts)
        tracker = _seed(memory)
        executor = Executor(fakes, tracker, clock=lambda: memory.now)
        first = plan(d, await _observe(fakes), memory)
        outcomes = await executor.apply(first)
        assert all(o.ok for o in outcomes), [o for o in outcomes if not o.ok]
        again_memory = tracker.memory(
            memory.now, preferred=memory.preferred_runtime, available=memory.available_runtimes
        )
        again = plan(d, await _observe(fakes), again_memory)
        assert not again, f"first:\n{first}\nagain:\n{again}"
        # And the result is what was asked for: one running instance per runnable server.
        for name, s in d.servers.items():
            running = [i for f in fakes.values() for i in f.running(name) if i.fleet == FLEET]
            wanted = any(
                isinstance(a, Create | Replace) and a.server == name for a in first.actions
            )
            if wanted:
                assert len(running) == 1 and running[0].config_hash == s.config_hash()

    asyncio.run(scenario())


@SETTINGS
@given(worlds())
def test_no_action_touches_another_fleets_or_unlabelled_instance(
    world: tuple[DesiredState, list[Instance], Memory],
) -> None:
    d, insts, memory = world
    foreign = {i.instance_id for i in insts if i.fleet != FLEET}
    for action in plan(d, ObservedState(tuple(insts)), memory).actions:
        touched = set()
        for attr in ("instance", "old"):
            inst = getattr(action, attr, None)
            if inst is not None:
                touched.add(inst.instance_id)
        touched |= {i.instance_id for i in getattr(action, "retire", ())}
        assert not touched & foreign, action
        if isinstance(action, MarkFailed):
            assert action.server in d.servers


@SETTINGS
@given(worlds(), st.randoms())
def test_plans_are_deterministic_whatever_the_listing_order(
    world: tuple[DesiredState, list[Instance], Memory], rnd: object
) -> None:
    d, insts, memory = world
    shuffled = list(insts)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    one = plan(d, ObservedState(tuple(insts)), memory)
    two = plan(d, ObservedState(tuple(shuffled)), memory)
    assert str(one) == str(two)
    assert one.actions == two.actions
