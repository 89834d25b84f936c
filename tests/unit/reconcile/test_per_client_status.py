"""How ``mcp-fleet status`` shows a ``sessions: per-client`` server.

The controller never runs a shared instance of such a server (the router
starts one per client session), so "on demand: starts on the next call"
would be wrong: it is Stopped with reason PerClient, counted as fine by
``all_ready``, and under ``mcp-fleet up`` (controller and router in one
process) the status file says how many session instances run, in an
additive key that older readers ignore and older files lack. The ``up``
controller is run for real over a fake runtime, with a stand-in for the
router's counts.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

from mcp_fleet.cli.up_controller import UpHooks, follow_sessions
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.errors import Diagnostic
from mcp_fleet.model import FleetFiles, Lifecycle, RuntimeKind, ServerSpec, SessionMode
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.reconcile.memory import Memory, Tracker
from mcp_fleet.reconcile.snapshot import (
    ServerStatus,
    StatusSnapshot,
    server_statuses,
    with_session_instances,
)
from mcp_fleet.reconcile.statusfile import read_status, status_path, write_status
from mcp_fleet.runtimes.base import ObservedState
from mcp_fleet.runtimes.fake import FakeRuntime
from mcp_fleet.status import (
    REASON_EXITED,
    REASON_IDLE,
    REASON_INITIALIZED,
    REASON_MISSING_SECRET,
    REASON_PER_CLIENT,
    ServerState,
)
from reconcile_builders import FLEET, desired, instance, spec

GENERIC = "per-client: one instance per client session, started by the router"


def per_client(name: str = "pc", **kw: object) -> ServerSpec:
    base = spec(name, **kw)  # type: ignore[arg-type]
    assert base.entry is not None
    return replace(base, entry=replace(base.entry, sessions=SessionMode.PER_CLIENT))


def statuses(
    *specs: ServerSpec,
    tracker: Tracker | None = None,
    observed: ObservedState | None = None,
    owned: frozenset[str] = frozenset(),
    ready: frozenset[str] = frozenset(),
) -> dict[str, ServerStatus]:
    memory = Memory(now=50.0, owned=owned, ready=ready)
    out = server_statuses(
        desired(*specs), observed or ObservedState(), tracker or Tracker(), memory
    )
    return {s.name: s for s in out}


def test_per_client_is_its_own_state_not_scaled_to_zero() -> None:
    st = statuses(per_client(), spec("always"))["pc"]
    assert (st.state, st.reason, st.message) == (ServerState.STOPPED, REASON_PER_CLIENT, GENERIC)
    assert "on demand" not in st.message and "next call" not in st.message
    assert st.runtime == "process" and st.instance is None and st.session_instances is None


def test_failures_of_a_former_shared_instance_do_not_show() -> None:
    tracker = Tracker()
    for at in (1.0, 2.0, 3.0):  # crash-looping back when it was `shared`
        tracker.failed("pc", at=at, reason=REASON_EXITED, message="exited with code 1")
    st = statuses(per_client(), tracker=tracker)["pc"]
    assert (st.state, st.reason, st.message) == (ServerState.STOPPED, REASON_PER_CLIENT, GENERIC)
    assert st.restarts == tracker.health["pc"].restarts


def test_a_per_client_server_that_cannot_run_is_failed() -> None:
    bad = per_client(problems=(Diagnostic("TOKEN is not set", field="secrets.TOKEN"),))
    st = statuses(bad)["pc"]
    assert (st.state, st.reason) == (ServerState.FAILED, REASON_MISSING_SECRET)


def test_a_shared_instance_still_running_shows_until_it_is_scaled_down() -> None:
    s = per_client()
    iid = "pid:7:7"
    observed = ObservedState((instance("pc", iid, config_hash=s.config_hash()),))
    st = statuses(s, observed=observed, owned=frozenset({iid}), ready=frozenset({iid}))["pc"]
    assert (st.state, st.reason, st.instance) == (ServerState.READY, REASON_INITIALIZED, iid)


def test_on_demand_servers_still_scale_to_zero() -> None:
    od = spec("od")
    assert od.entry is not None
    od = replace(od, entry=replace(od.entry, lifecycle=Lifecycle.ON_DEMAND))
    st = statuses(od)["od"]
    assert (st.state, st.reason) == (ServerState.STOPPED, REASON_IDLE)


def snapshot_of(*servers: ServerStatus) -> StatusSnapshot:
    return StatusSnapshot(fleet=FLEET, home="/h", updated_at=1.0, runtime="process",
                          servers=servers)  # fmt: skip


def test_all_ready_counts_a_per_client_server_as_fine() -> None:
    by_name = statuses(per_client(), spec("always"))
    ready = replace(by_name["always"], state=ServerState.READY, reason=REASON_INITIALIZED)
    assert snapshot_of(by_name["pc"], ready).all_ready
    assert not snapshot_of(by_name["pc"], by_name["always"]).all_ready  # Pending is not


def test_session_counts_are_added_to_per_client_servers_only() -> None:
    by_name = statuses(per_client("pc"), per_client("pc2"), spec("always"))
    snap = snapshot_of(*by_name.values())
    counted = with_session_instances(snap, {"pc": 2, "always": 5})
    pc, pc2, always = (counted.server(n) for n in ("pc", "pc2", "always"))
    assert pc is not None and pc2 is not None
    assert (pc.session_instances, pc.message) == (2, "per-client: 2 session instances running")
    assert (pc2.session_instances, pc2.state, pc2.reason) == (0, ServerState.STOPPED,
                                                              REASON_PER_CLIENT)  # fmt: skip
    assert pc2.message.startswith("per-client: no session instance runs")
    assert always == by_name["always"]  # not per-client: untouched
    one = with_session_instances(snap, {"pc": 1}).server("pc")
    assert one is not None and one.message == "per-client: 1 session instance running"


def test_the_count_is_an_additive_key_of_the_status_file(tmp_path: Path) -> None:
    by_name = statuses(per_client(), spec("always"))
    snap = with_session_instances(snapshot_of(*by_name.values()), {"pc": 3})
    path = status_path(tmp_path / ".state")
    write_status(path, snap)
    doc = json.loads(path.read_text())
    assert doc["version"] == 1
    rows = {s["name"]: s for s in doc["servers"]}
    assert (rows["pc"]["state"], rows["pc"]["reason"]) == ("Stopped", "PerClient")
    assert rows["pc"]["session_instances"] == 3 and rows["always"]["session_instances"] is None
    assert read_status(path) == snap
    # A file written before the key existed still reads.
    for row in doc["servers"]:
        del row["session_instances"]
    path.write_text(json.dumps(doc))
    back = read_status(path)
    assert back is not None and all(s.session_instances is None for s in back.servers)


def up_controller(
    tmp_path: Path, counts: dict[str, int]
) -> tuple[Controller, UpHooks, FakeRuntime]:
    """A controller with ``up``'s hooks attached, the router's counts being ``counts``."""
    fake = FakeRuntime(fleet=FLEET)
    files = FleetFiles(home=tmp_path, catalogs=(), registry=tmp_path / "registry.yaml",
                       config=tmp_path / "c.yaml", tools=tmp_path / "t.yaml",
                       secrets=tmp_path / "s.env")  # fmt: skip
    state = desired(per_client(), spec("always"))
    ctl = Controller(
        files, {RuntimeKind.PROCESS: fake}, EndpointTable(), loader=lambda _f: state, watch=False
    )
    hooks = UpHooks(sessions=lambda: counts)
    hooks.attach(ctl)
    return ctl, hooks, fake


async def test_up_writes_the_routers_session_counts_once_per_pass(tmp_path: Path) -> None:
    counts = {"pc": 2}
    ctl, hooks, fake = up_controller(tmp_path, counts)
    try:
        snap = await ctl.reconcile_once()
        assert hooks.published.is_set() and snap.all_ready
        assert [i.server for i in fake.running()] == ["always"]  # never a shared pc
        on_disk = read_status(ctl.status_file)
        assert on_disk is not None and on_disk == ctl.status() == snap
        pc = on_disk.server("pc")
        assert pc is not None and pc.session_instances == 2
        assert pc.message == "per-client: 2 session instances running"

        counts["pc"] = 1
        await ctl.reconcile_once()
        pc = read_status(ctl.status_file).server("pc")  # type: ignore[union-attr]
        assert pc is not None and pc.session_instances == 1
    finally:
        counts.clear()  # the router stopped its instances before the controller closes
        await ctl.aclose()
    last = read_status(ctl.status_file)
    assert last is not None and last.controller_pid is None
    pc = last.server("pc")
    assert pc is not None and pc.session_instances == 0


async def test_a_change_of_the_counts_wakes_the_loop(tmp_path: Path) -> None:
    counts: dict[str, int] = {}
    ctl, _, _ = up_controller(tmp_path, counts)
    woken: list[float] = []
    ctl.wake = lambda: woken.append(1.0)  # type: ignore[method-assign]
    follower = asyncio.create_task(follow_sessions(ctl, lambda: counts, interval=0.01))
    try:
        await asyncio.sleep(0.05)
        assert woken == []  # nothing changed: no pass asked for
        counts["pc"] = 1
        for _ in range(100):
            if woken:
                break
            await asyncio.sleep(0.01)
        assert len(woken) == 1
        await asyncio.sleep(0.05)
        assert len(woken) == 1  # once per change
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await ctl.aclose()
