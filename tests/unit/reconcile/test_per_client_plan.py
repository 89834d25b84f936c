"""``sessions: per-client`` servers in the planner: no shared instance, ever.

Each client session of a per-client server gets an instance of its own,
started and stopped by the router; the controller must neither start a
shared one nor keep one running from before (the entry was ``shared``).
Checked as plan text and as status, with no process or router at all.
"""

from __future__ import annotations

from dataclasses import replace

from mcp_fleet.model import Lifecycle, ServerSpec, ServerType, SessionMode
from mcp_fleet.reconcile.actions import ScaleDown
from mcp_fleet.reconcile.demand import is_on_demand, is_per_client
from mcp_fleet.reconcile.memory import Memory, Tracker
from mcp_fleet.reconcile.plan import plan
from mcp_fleet.reconcile.snapshot import server_statuses
from mcp_fleet.runtimes.base import ObservedState
from mcp_fleet.status import REASON_PER_CLIENT, ServerState
from reconcile_builders import desired, instance, spec

IID = "pid:7:7"


def per_client(name: str = "pc", **kw: object) -> ServerSpec:
    base = spec(name, **kw)  # type: ignore[arg-type]
    assert base.entry is not None
    return replace(base, entry=replace(base.entry, sessions=SessionMode.PER_CLIENT))


def ready(now: float = 200.0, **kw: object) -> Memory:
    return Memory(now=now, owned=frozenset({IID}), ready=frozenset({IID}), **kw)  # type: ignore[arg-type]


def test_per_client_servers_count_as_on_demand_and_shared_ones_do_not() -> None:
    assert is_per_client(per_client()) and is_on_demand(per_client())
    assert not is_per_client(spec("shared")) and not is_on_demand(spec("shared"))
    remote = per_client()
    assert remote.entry is not None
    remote = replace(remote, entry=replace(remote.entry, type=ServerType.REMOTE))
    assert not is_per_client(remote) and not is_on_demand(remote)


def test_no_shared_instance_of_a_per_client_server_is_started() -> None:
    result = plan(desired(per_client(), spec("always")), ObservedState(), Memory())
    assert [(a.verb, a.server) for a in result.actions] == [("create", "always")]


def test_a_shared_instance_left_running_is_scaled_down_at_once() -> None:
    s = per_client()
    observed = ObservedState((instance("pc", IID, config_hash=s.config_hash(), started_at=199.0),))
    result = plan(desired(s), observed, ready(now=200.0))
    assert len(result.actions) == 1
    action = result.actions[0]
    assert isinstance(action, ScaleDown) and action.instance.instance_id == IID
    resource = f"server:pc/{IID}"
    assert str(result) == (
        f"scale-down  {resource:<40} (per-client: each client session runs its own instance)"
    )
    assert result.wake_at is None


def test_an_on_demand_per_client_server_is_scaled_down_too() -> None:
    s = per_client()
    assert s.entry is not None
    s = replace(s, entry=replace(s.entry, lifecycle=Lifecycle.ON_DEMAND, idle_timeout_seconds=60))
    observed = ObservedState((instance("pc", IID, config_hash=s.config_hash(), started_at=199.0),))
    assert [a.verb for a in plan(desired(s), observed, ready(now=200.0)).actions] == ["scale-down"]


def test_a_busy_shared_instance_stays_until_its_calls_end() -> None:
    s = per_client()
    observed = ObservedState((instance("pc", IID, config_hash=s.config_hash(), started_at=199.0),))
    result = plan(desired(s), observed, ready(now=200.0, busy=frozenset({"pc"})))
    assert not result.actions and result.wake_at is not None


def test_a_per_client_server_shows_stopped_while_no_shared_instance_runs() -> None:
    s = per_client()
    memory = Memory(now=5.0)
    (status,) = server_statuses(desired(s), ObservedState(), Tracker(), memory)
    assert (status.state, status.reason) == (ServerState.STOPPED, REASON_PER_CLIENT)
    assert status.message == "per-client: one instance per client session, started by the router"
