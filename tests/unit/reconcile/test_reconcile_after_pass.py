"""The controller's hooks: ``amend_status`` before each snapshot is stored, ``after_pass`` after.

What ``mcp-fleet up`` adds to a pass (metrics, its start-up signal, the
router's session counts) goes through these two, never through the loop's
insides: an amended snapshot is the one written and returned, every pass
reports to every hook (a failed one too), and a broken hook stops nothing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from mcp_fleet.cli.up_controller import UpHooks
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.model import FleetFiles, RuntimeKind
from mcp_fleet.reconcile.loop import Controller, PassResult
from mcp_fleet.reconcile.snapshot import ServerStatus, StatusSnapshot
from mcp_fleet.reconcile.statusfile import read_status
from mcp_fleet.runtimes.fake import FakeRuntime
from mcp_fleet.status import ServerState
from reconcile_builders import FLEET, desired, spec


def controller(home: Path, **kwargs: object) -> Controller:
    files = FleetFiles(home=home, catalogs=(), registry=home / "registry.yaml",
                       config=home / "c.yaml", tools=home / "t.yaml",
                       secrets=home / "s.env")  # fmt: skip
    state = desired(spec("a"))
    return Controller(
        files, {RuntimeKind.PROCESS: FakeRuntime(fleet=FLEET)}, EndpointTable(),
        loader=lambda _f: state, watch=False, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def tagged(snapshot: StatusSnapshot) -> StatusSnapshot:
    return replace(snapshot, pending=(*snapshot.pending, "amended"))


async def test_each_pass_is_amended_stored_and_reported(tmp_path: Path) -> None:
    results: list[PassResult] = []
    ctl = controller(tmp_path, after_pass=[results.append], amend_status=tagged)
    try:
        snap = await ctl.reconcile_once()
        assert snap.pending[-1:] == ("amended",)
        assert snap == ctl.status() == read_status(ctl.status_file)
        assert results and all(r.error is None and r.seconds >= 0 for r in results)
        assert results[-1].snapshot == snap  # what the hook sees is what was stored
        ready = snap.server("a")
        assert ready is not None and ready.state is ServerState.READY
    finally:
        await ctl.aclose()
    last = read_status(ctl.status_file)
    assert last is not None and last.controller_pid is None
    assert last.pending[-1:] == ("amended",)  # the last status is amended too


async def test_a_failed_pass_is_reported_then_raised(tmp_path: Path) -> None:
    results: list[PassResult] = []

    def broken(_snapshot: StatusSnapshot) -> StatusSnapshot:
        raise RuntimeError("boom")

    ctl = controller(tmp_path, after_pass=[results.append], amend_status=broken)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            await ctl.reconcile_once()
        assert len(results) == 1
        assert results[0].snapshot is None and isinstance(results[0].error, RuntimeError)
    finally:
        ctl.amend_status = None
        await ctl.aclose()


async def test_a_broken_hook_stops_neither_the_pass_nor_the_other_hooks(tmp_path: Path) -> None:
    seen: list[PassResult] = []

    def broken(_result: PassResult) -> None:
        raise ValueError("bug in a hook")

    ctl = controller(tmp_path, after_pass=[broken, seen.append])
    try:
        snap = await ctl.reconcile_once()
        assert seen and seen[-1].snapshot == snap
    finally:
        await ctl.aclose()


async def test_ups_hooks_signal_the_start_once_nothing_is_starting(tmp_path: Path) -> None:
    def with_a(state: ServerState) -> StatusSnapshot:
        st = ServerStatus("a", "enabled", state, "Test", "")
        return StatusSnapshot(fleet=FLEET, home="/h", updated_at=1.0, runtime="process",
                              servers=(st,))  # fmt: skip

    hooks = UpHooks()
    hooks.after_pass(PassResult(with_a(ServerState.STARTING), 0.01))
    assert not hooks.published.is_set()
    hooks.after_pass(PassResult(with_a(ServerState.FAILED), 0.01))
    assert hooks.published.is_set()  # Ready or failed: the start is known

    failed = UpHooks()
    failed.after_pass(PassResult(None, 0.01, RuntimeError("boom")))
    assert failed.published.is_set()  # a failed pass says nothing more about the start

    ctl = controller(tmp_path)
    attached = UpHooks()
    attached.attach(ctl)
    try:
        await ctl.reconcile_once()
        assert attached.published.is_set()
        assert ctl.amend_status == attached.amend_status
    finally:
        await ctl.aclose()
