"""On-demand servers in the planner and the status: cold, demanded, idle, busy.

The planner only sees what the router reported, as facts of ``Memory``
(``demanded``, ``busy``, ``last_active``), so every rule is checked here as
golden plan text and as properties, with no process or router at all.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from mcp_fleet.model import Lifecycle, ServerSpec
from mcp_fleet.reconcile.actions import Create, ScaleDown
from mcp_fleet.reconcile.demand import DEFAULT_IDLE_TIMEOUT_SECONDS, idle_timeout
from mcp_fleet.reconcile.memory import Memory, Tracker
from mcp_fleet.reconcile.plan import plan
from mcp_fleet.reconcile.snapshot import server_statuses
from mcp_fleet.runtimes.base import ObservedState
from mcp_fleet.status import REASON_IDLE, ServerState
from reconcile_builders import desired, instance, spec

IID = "pid:7:7"


def on_demand(name: str = "od", *, idle: float | None = 30.0, **kw: object) -> ServerSpec:
    base = spec(name, **kw)  # type: ignore[arg-type]
    assert base.entry is not None
    entry = replace(base.entry, lifecycle=Lifecycle.ON_DEMAND, idle_timeout_seconds=idle)
    return replace(base, entry=entry)


def warm(s: ServerSpec, *, started_at: float = 100.0) -> ObservedState:
    return ObservedState(
        (instance(s.name, IID, config_hash=s.config_hash(), started_at=started_at),)
    )


def mem(now: float, **kw: object) -> Memory:
    return Memory(now=now, owned=frozenset({IID}), ready=frozenset({IID}), **kw)  # type: ignore[arg-type]


def test_a_cold_on_demand_server_is_not_started() -> None:
    result = plan(desired(on_demand(), spec("always")), ObservedState(), Memory())
    assert [(a.verb, a.server) for a in result.actions] == [("create", "always")]
    assert result.wake_at is None


def test_a_demanded_server_is_created_naming_the_demand() -> None:
    s = on_demand()
    result = plan(desired(s), ObservedState(), Memory(demanded=frozenset({"od"})))
    assert str(result) == (
        "create      server:od                                (demanded: a call is waiting)"
        f" runtime=process hash={s.config_hash()[:8]}"
    )


def test_a_demanded_start_still_waits_out_a_restart_backoff() -> None:
    memory = Memory(now=10.0, demanded=frozenset({"od"}), next_start={"od": 12.5})
    result = plan(desired(on_demand()), ObservedState(), memory)
    assert not result and result.wake_at == 12.5


def test_an_idle_server_is_scaled_down_after_its_timeout() -> None:
    s = on_demand(idle=30.0)
    used = {"od": 150.0}
    assert not plan(desired(s), warm(s), mem(179.0, last_active=used))
    result = plan(desired(s), warm(s), mem(180.0, last_active=used))
    assert str(result) == (f"scale-down  {'server:od/' + IID:<40} (idle for 30 s: scaled to zero)")
    assert isinstance(result.actions[0], ScaleDown)


def test_a_warm_idle_server_asks_to_be_woken_when_its_timeout_ends() -> None:
    s = on_demand(idle=30.0)
    result = plan(desired(s), warm(s), mem(160.0, last_active={"od": 150.0}))
    assert not result.actions and result.wake_at == 180.0


def test_a_server_never_used_counts_idle_from_its_start() -> None:
    s = on_demand(idle=5.0)
    assert plan(desired(s), warm(s, started_at=100.0), mem(104.0)).wake_at == 105.0
    assert plan(desired(s), warm(s, started_at=100.0), mem(105.0)).actions
    # An activity report older than the instance (a previous one) does not count.
    result = plan(desired(s), warm(s, started_at=100.0), mem(104.0, last_active={"od": 1.0}))
    assert not result.actions


def test_a_server_with_calls_in_flight_is_never_scaled_down() -> None:
    s = on_demand(idle=5.0)
    for now in (106.0, 1_000.0, 1e9):
        result = plan(desired(s), warm(s), mem(now, busy=frozenset({"od"}), last_active={"od": 0}))
        assert not result.actions
        assert result.wake_at == now + 5.0  # look again one idle period later


def test_a_server_wanted_again_while_warm_stays() -> None:
    s = on_demand(idle=5.0)
    result = plan(desired(s), warm(s), mem(1_000.0, demanded=frozenset({"od"})))
    assert not result.actions


def test_an_exited_instance_is_cleaned_up_but_not_restarted_unless_demanded() -> None:
    s = on_demand()
    gone = ObservedState(
        (instance("od", IID, config_hash=s.config_hash(), running=False, exit_code=1),)
    )
    assert [a.verb for a in plan(desired(s), gone, mem(200.0)).actions] == ["remove"]
    wanted = plan(desired(s), gone, mem(200.0, demanded=frozenset({"od"})))
    assert [a.verb for a in wanted.actions] == ["remove", "create"]


def test_idle_timeout_defaults_and_remote_servers_are_left_alone() -> None:
    assert idle_timeout(on_demand(idle=None)) == DEFAULT_IDLE_TIMEOUT_SECONDS
    remote = on_demand("far", remote="http://127.0.0.1:9/mcp", process=False)
    assert not plan(desired(remote), ObservedState(), Memory()).actions


def test_status_shows_a_cold_server_stopped_scaled_to_zero_and_counts_it_ready() -> None:
    from mcp_fleet.reconcile.snapshot import StatusSnapshot

    s = on_demand()
    tracker = Tracker()
    memory = tracker.memory(10.0)
    (st_cold,) = server_statuses(desired(s), ObservedState(), tracker, memory)
    assert (st_cold.state, st_cold.reason) == (ServerState.STOPPED, REASON_IDLE)
    assert "starts on the next call" in st_cold.message
    snap = StatusSnapshot(fleet="f", home="/h", updated_at=1.0, runtime="process",
                          servers=(st_cold,))  # fmt: skip
    assert snap.all_ready
    wanted = tracker.memory(10.0, demanded=frozenset({"od"}))
    (st_wanted,) = server_statuses(desired(s), ObservedState(), tracker, wanted)
    assert st_wanted.state is ServerState.PENDING


@settings(max_examples=200, deadline=None)
@given(
    now=st.floats(0, 10_000),
    started=st.floats(0, 10_000),
    used=st.one_of(st.none(), st.floats(0, 10_000)),
    idle=st.floats(0.1, 1_000),
    busy=st.booleans(),
    demanded=st.booleans(),
    running=st.booleans(),
)
def test_on_demand_rules_hold_for_any_memory(
    now: float,
    started: float,
    used: float | None,
    idle: float,
    busy: bool,
    demanded: bool,
    running: bool,
) -> None:
    s = on_demand(idle=idle)
    observed = warm(s, started_at=started) if running else ObservedState()
    memory = mem(
        now,
        busy=frozenset({"od"}) if busy else frozenset(),
        demanded=frozenset({"od"}) if demanded else frozenset(),
        last_active={} if used is None else {"od": used},
    )
    result = plan(desired(s), observed, memory)
    scale_downs = [a for a in result.actions if isinstance(a, ScaleDown)]
    creates = [a for a in result.actions if isinstance(a, Create)]
    if busy or demanded:
        assert not scale_downs  # never stopped while a call needs it
    if not demanded:
        assert not creates  # never started without a call
    if scale_downs:
        assert now >= max(started, used or 0.0) + idle
    if running and not scale_downs:
        assert result.wake_at is not None and result.wake_at > now - 1e-9
