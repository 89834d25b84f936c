"""The Controller over fake runtimes: convergence, last good state, backoff, status, lock."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.errors import Diagnostic, FleetConfigError
from mcp_fleet.model import DesiredState, FleetFiles, RuntimeKind, ServerSpec
from mcp_fleet.reconcile.backoff import BackoffPolicy
from mcp_fleet.reconcile.loop import Controller, ControllerBusy
from mcp_fleet.runtimes.base import Instance
from mcp_fleet.runtimes.fake import FakeRuntime
from mcp_fleet.status import ServerState
from reconcile_builders import FLEET, desired, spec


def files_at(home: Path) -> FleetFiles:
    return FleetFiles(home=home, catalogs=(), registry=home / "registry.yaml",
                      config=home / "config.yaml", tools=home / "tools.yaml",
                      secrets=home / "secrets.env")  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Files:
    """A loader whose result (or error) the test sets; setting it touches registry.yaml,
    as an edit would (the controller skips reading files that did not change)."""

    def __init__(self, state: DesiredState) -> None:
        self._state: DesiredState | Exception = state
        self.edits = 0
        self.reads = 0
        self.path: Path | None = None

    @property
    def state(self) -> DesiredState | Exception:
        return self._state

    @state.setter
    def state(self, value: DesiredState | Exception) -> None:
        self._state = value
        self.edits += 1
        if self.path is not None:
            self.path.write_text("#" * self.edits)

    def __call__(self, files: FleetFiles) -> DesiredState:
        self.path = files.registry
        self.reads += 1
        if isinstance(self._state, Exception):
            raise self._state
        return self._state


def make(tmp_path: Path, state: DesiredState, **kw: object) -> tuple[Controller, FakeRuntime, Files, EndpointTable, Clock]:  # fmt: skip  # noqa: E501
    fake = FakeRuntime(fleet=FLEET)
    loader = Files(state)
    table = EndpointTable()
    clock = Clock()
    ctl = Controller(files_at(tmp_path), {RuntimeKind.PROCESS: fake}, table, loader=loader,
                     watch=False, clock=clock,
                     backoff=BackoffPolicy(initial=1.0, maximum=8.0, threshold=3, window=60.0),
                     **kw)  # type: ignore[arg-type]  # fmt: skip
    return ctl, fake, loader, table, clock


async def test_converges_publishes_endpoints_and_writes_status(tmp_path: Path) -> None:
    ctl, fake, _, table, _ = make(
        tmp_path, desired(spec("a"), spec("b"), spec("off", enabled=False))
    )
    snap = await ctl.reconcile_once()
    assert {s.name: s.state for s in snap.servers} == {
        "a": ServerState.READY, "b": ServerState.READY, "off": ServerState.STOPPED,
    }  # fmt: skip
    assert snap.all_ready and not snap.pending
    assert sorted(table.snapshot()) == ["a", "b"]
    assert table.snapshot()["a"].endpoint.instance_id == snap.server("a").instance  # type: ignore[union-attr]
    doc = json.loads((tmp_path / ".state" / "status.json").read_text())
    assert [s["state"] for s in doc["servers"]] == ["Ready", "Ready", "Stopped"]
    again = await ctl.reconcile_once()
    assert [c for c in fake.calls if c[0] == "start"] == [("start", "a"), ("start", "b")]
    assert again.servers == snap.servers


async def test_broken_files_keep_the_last_good_state_and_fixing_resumes(tmp_path: Path) -> None:
    ctl, fake, files, table, _ = make(tmp_path, desired(spec("a")))
    await ctl.reconcile_once()
    files.state = FleetConfigError(Diagnostic("expected true/false, got 'yes please'",
                                              file=tmp_path / "registry.yaml", line=7,
                                              field="registry.a.enabled"))  # fmt: skip
    broken = await ctl.reconcile_once()
    assert [str(d) for d in broken.file_errors] == [
        "registry.yaml:7: registry.a.enabled: expected true/false, got 'yes please'"
    ]
    assert broken.server("a").state is ServerState.READY  # type: ignore[union-attr]
    assert len(fake.running("a")) == 1 and "a" in table.snapshot()
    files.state = desired(spec("a"), spec("b"))
    fixed = await ctl.reconcile_once()
    assert not fixed.file_errors
    assert fixed.server("b").state is ServerState.READY  # type: ignore[union-attr]


async def test_nothing_is_touched_before_the_files_ever_loaded(tmp_path: Path) -> None:
    ctl, fake, files, _, _ = make(tmp_path, desired())
    files.state = FleetConfigError(Diagnostic("bad"))
    snap = await ctl.reconcile_once()
    assert snap.fleet is None and [d.message for d in snap.file_errors] == ["bad"]
    assert not [c for c in fake.calls if c[0] in ("start", "stop")]


async def test_crashes_back_off_then_crashloop_with_exit_code(tmp_path: Path) -> None:
    ctl, fake, _, _, clock = make(tmp_path, desired(spec("a")))
    await ctl.reconcile_once()
    (first,) = fake.running("a")
    fake.crash(first.instance_id, exit_code=3)
    snap = await ctl.reconcile_once()
    st = snap.server("a")
    assert st is not None and st.state is ServerState.PENDING and st.reason == "Exited"
    assert not fake.running("a")  # waiting out the 1 s backoff
    clock.now += 1.0
    assert (await ctl.reconcile_once()).server("a").state is ServerState.READY  # type: ignore[union-attr]
    fake.exits_at_start["a"] = 3  # from now on it dies at once, like a broken server
    fake.crash(fake.running("a")[0].instance_id, exit_code=3)
    for _ in range(4):
        clock.now += 10.0
        snap = await ctl.reconcile_once()
        assert not fake.running("a")
    st = snap.server("a")
    assert st is not None and st.state is ServerState.CRASHLOOP
    assert st.exit_code == 3 and st.reason == "CrashLoopBackOff" and st.restarts >= 3
    assert snap.all_ready is False


async def test_missing_secret_fails_only_that_server(tmp_path: Path) -> None:
    bad = spec("bad", problems=(Diagnostic("required secret api.key is not set"),))
    good = spec("good", secrets={"GOOD_TOKEN": "value-of-good-secret"})
    ctl, _, _, table, _ = make(tmp_path, desired(bad, good))
    snap = await ctl.reconcile_once()
    st = snap.server("bad")
    assert st is not None and st.state is ServerState.FAILED and st.reason == "MissingSecret"
    assert "api.key" in st.message
    assert snap.server("good").state is ServerState.READY  # type: ignore[union-attr]
    assert list(table.snapshot()) == ["good"]
    assert "value-of-good-secret" not in (tmp_path / ".state" / "status.json").read_text()


async def test_run_wakes_on_a_runtime_event(tmp_path: Path) -> None:
    ctl, fake, *_ = make(tmp_path, desired(spec("a")), resync_seconds=3600.0)
    ctl.tracker.policy = BackoffPolicy(initial=0.0, maximum=0.0)
    task = asyncio.create_task(ctl.run())
    try:
        for _ in range(100):
            if fake.running("a"):
                break
            await asyncio.sleep(0.01)
        (first,) = fake.running("a")
        fake.crash(first.instance_id)
        for _ in range(200):
            if [i for i in fake.running("a") if i.instance_id != first.instance_id]:
                break
            await asyncio.sleep(0.01)
        assert len(fake.running("a")) == 1
        assert fake.running("a")[0].instance_id != first.instance_id
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await ctl.aclose()


async def test_a_second_controller_on_the_same_fleet_is_refused(tmp_path: Path) -> None:
    one, *_ = make(tmp_path, desired(spec("a")))
    two, *_ = make(tmp_path, desired(spec("a")))
    await one.reconcile_once()
    with pytest.raises(ControllerBusy, match="already manages"):
        await two.reconcile_once()
    await one.aclose()
    await two.reconcile_once()
    await two.aclose()


async def test_dry_run_preview_applies_nothing(tmp_path: Path) -> None:
    ctl, fake, *_ = make(tmp_path, desired(spec("a")))
    preview = await ctl.preview()
    assert str(preview).startswith("create      server:a")
    assert not [c for c in fake.calls if c[0] == "start"]


async def test_unchanged_files_are_not_parsed_again_until_a_resync(tmp_path: Path) -> None:
    ctl, _, files, _, clock = make(tmp_path, desired(spec("a")), resync_seconds=30.0)
    await ctl.reconcile_once()
    await ctl.reconcile_once()
    assert files.reads == 1
    files.state = desired(spec("a"), spec("b"))
    assert (await ctl.reconcile_once()).server("b") is not None
    assert files.reads == 2
    clock.now += 31.0
    await ctl.reconcile_once()
    assert files.reads == 3


async def test_a_cancel_that_comes_with_a_wake_still_stops_the_loop(tmp_path: Path) -> None:
    # SIGTERM (a cancel) arriving together with a wake-up (a file change, a
    # container event) must end the loop, not be taken for the wake-up.
    ctl, _, _, _, _ = make(tmp_path, desired(spec("a")), resync_seconds=60.0)
    task = asyncio.create_task(ctl.run())
    for _ in range(100):
        if ctl.status().fleet is not None:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the pass is over: the loop sleeps until woken
    ctl.wake()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2.0)
    assert done, "the loop went on after it was cancelled"
    assert task.cancelled()
    await ctl.aclose()


async def test_status_shows_a_pass_in_progress(tmp_path: Path) -> None:
    # A slow start (an image pull) must not leave `mcp-fleet status` blind.
    ctl, fake, *_ = make(tmp_path, desired(spec("slow")))
    release = asyncio.Event()
    real_start = fake.start

    async def slow_start(s: ServerSpec) -> Instance:
        await release.wait()
        return await real_start(s)

    fake.start = slow_start  # type: ignore[method-assign, assignment]
    one = asyncio.create_task(ctl.reconcile_once())
    path = tmp_path / ".state" / "status.json"
    for _ in range(200):
        if ctl.status().servers:
            break
        await asyncio.sleep(0.01)
    # The start is in flight: Starting (before any instance exists), the create pending.
    assert ctl.status().server("slow").state is ServerState.STARTING  # type: ignore[union-attr]
    during = json.loads(path.read_text())  # written before status() changed
    assert [(s["name"], s["state"]) for s in during["servers"]] == [("slow", "Starting")]
    assert during["pending"][0].startswith("create") and "server:slow" in during["pending"][0]
    assert during["pending"][0].endswith("[in flight]")
    release.set()
    snap = await one
    assert snap.server("slow").state is ServerState.READY  # type: ignore[union-attr]
    assert json.loads(path.read_text())["pending"] == []
    await ctl.aclose()


async def test_a_disabled_server_is_stopping_until_its_instance_is_gone(tmp_path: Path) -> None:
    ctl, fake, loader, *_ = make(tmp_path, desired(spec("a")))
    (inst,) = [s.instance for s in (await ctl.reconcile_once()).servers]
    release = asyncio.Event()
    real_stop = fake.stop

    async def slow_stop(instance: Instance) -> None:
        await release.wait()
        await real_stop(instance)

    fake.stop = slow_stop  # type: ignore[method-assign]
    loader.state = desired(spec("a", enabled=False))
    one = asyncio.create_task(ctl.reconcile_once())
    for _ in range(200):
        if ctl.status().server("a").desired == "disabled":  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.01)
    during = ctl.status().server("a")
    assert during is not None and during.state is ServerState.STOPPING
    assert during.instance == inst and during.message == "being stopped"
    release.set()
    after = (await one).server("a")
    assert after is not None and after.state is ServerState.STOPPED and after.instance is None
    await ctl.aclose()
