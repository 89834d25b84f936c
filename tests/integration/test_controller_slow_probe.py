"""A server whose initialize hangs holds nothing else back (process runtime, real processes).

One server (``slow``) answers nothing for the whole probe timeout; while it
is being probed, the controller must go on reacting to everything else at
once: an enabled server is Ready within about a second, a killed one comes
back after its backoff step, a disabled one stops, and the status file,
written between passes, shows ``slow`` as Starting. Disabling ``slow`` in
the middle of its probe ends its process promptly and leaves nothing behind
(no process, no pid file); left alone, its probe times out and it is
Failed and backed off exactly as before (reason ProbeFailed, the process
removed, a fresh one started after the backoff step).

The quick servers are ``tests/servers/handshake_server.py --answer-after 0``:
stdlib only, so their start costs milliseconds and the figures measure the
controller, not the import of an SDK.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from controller_support import Recorder, passes, state, until
from mcp_fleet.config import resolve_files
from mcp_fleet.conventions import fleet_name
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.model import RuntimeKind
from mcp_fleet.reconcile.backoff import BackoffPolicy
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.reconcile.snapshot import StatusSnapshot
from mcp_fleet.runtimes.process import read_stat
from mcp_fleet.runtimes.select import build_runtimes
from mcp_fleet.status import ServerState

REPO = Path(__file__).resolve().parents[2]
HANDSHAKE = REPO / "tests" / "servers" / "handshake_server.py"
PY = sys.executable
PROBE_TIMEOUT = 8.0
#: Registry saved -> a quick server Ready (the target is about a second; slack for load).
REACTION = 2.0

pytestmark = pytest.mark.timeout(90)


class Fleet:
    """A fleet directory with a hanging server and two quick ones, edited as a user would."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.marker = f"slowprobe-{uuid.uuid4().hex[:10]}"
        (home / "catalogs").mkdir(parents=True)
        entries = {
            "slow": [PY, str(HANDSHAKE), f"{self.marker}-slow"],
            "quick": [PY, str(HANDSHAKE), "--answer-after", "0", f"{self.marker}-quick"],
            "other": [PY, str(HANDSHAKE), "--answer-after", "0", f"{self.marker}-other"],
        }
        lines = ['version: "2"', "registry:"]
        for name, command in entries.items():
            lines += [f"  {name}:", "    process:", f"      command: {json.dumps(command)}"]
        (home / "catalogs" / "test.yaml").write_text("\n".join(lines) + "\n")
        self.set_registry()

    def set_registry(self, **enabled: bool) -> float:
        """Save registry.yaml; returns when (``time.monotonic``) it was saved."""
        lines = ["registry:"]
        for name, on in enabled.items():
            lines += [f"  {name}:", f"    enabled: {'true' if on else 'false'}"]
        (self.home / "registry.yaml").write_text("\n".join(lines) + "\n")
        return time.monotonic()

    def processes(self, server: str) -> list[int]:
        """Live processes of ``server`` (by the marker in their command line)."""
        return processes_with(f"{self.marker}-{server}")

    def status_file(self) -> dict:  # type: ignore[type-arg]
        return dict(json.loads((self.home / ".state" / "status.json").read_text()))


def processes_with(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        st = read_stat(int(entry.name))
        if text in cmdline and st is not None and st.alive:
            found.append(int(entry.name))
    return found


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Fleet, Controller]]:
    fleet = Fleet(tmp_path / "fleet")
    files = resolve_files(fleet.home)
    runtimes = build_runtimes(
        RuntimeKind.PROCESS, fleet=fleet_name(files.home), state_dir=files.state_dir
    )
    runtimes[RuntimeKind.PROCESS] = Recorder(runtimes[RuntimeKind.PROCESS])  # type: ignore[assignment]
    ctl = Controller(
        files, runtimes, EndpointTable(), resync_seconds=30.0, debounce_ms=50,
        probe_timeout=PROBE_TIMEOUT,
        backoff=BackoffPolicy(initial=0.2, maximum=1.0, threshold=3, window=30.0),
    )  # fmt: skip
    task = asyncio.create_task(ctl.run())
    try:
        yield fleet, ctl
    finally:
        task.cancel()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 15)
        await asyncio.wait_for(ctl.aclose(), 15)
        for pid in processes_with(fleet.marker):
            os.kill(pid, signal.SIGKILL)


def probing(snap: StatusSnapshot) -> bool:
    st = snap.server("slow")
    return st is not None and st.state is ServerState.STARTING and st.instance is not None


async def test_a_hanging_initialize_holds_nothing_else_back(
    running: tuple[Fleet, Controller],
) -> None:
    fleet, ctl = running
    await until(ctl, lambda s: s.fleet is not None)
    fleet.set_registry(slow=True)
    first = (await until(ctl, probing, within=10)).server("slow")
    assert first is not None and first.instance is not None
    probe_began = time.monotonic()

    # An edit while slow probes: the quick server is Ready within about a second.
    saved = fleet.set_registry(slow=True, quick=True)
    snap = await until(ctl, state("quick", ServerState.READY), within=REACTION)
    enable_took = time.monotonic() - saved
    assert "quick" in ctl.endpoints.snapshot()
    # The status written between passes shows slow as Starting, quick as Ready.
    doc = fleet.status_file()
    by_name = {s["name"]: s for s in doc["servers"]}
    assert by_name["slow"]["state"] == "Starting", doc
    assert by_name["slow"]["instance"] == first.instance
    assert by_name["quick"]["state"] == "Ready", doc
    assert any("server:slow" in line for line in doc["pending"]), doc["pending"]

    # A crash of another server while slow probes: restarted after its backoff step.
    quick = snap.server("quick")
    assert quick is not None and quick.instance is not None
    os.kill(int(quick.instance.split(":")[1]), signal.SIGKILL)
    killed = time.monotonic()
    await until(
        ctl,
        lambda s: (
            state("quick", ServerState.READY)(s) and s.server("quick").instance != quick.instance  # type: ignore[union-attr]
        ),
        within=REACTION + 0.2,
    )
    restart_took = time.monotonic() - killed

    # Another edit: quick disabled, other enabled, in one save.
    saved = fleet.set_registry(slow=True, quick=False, other=True)
    await until(
        ctl,
        lambda s: state("other", ServerState.READY)(s) and state("quick", ServerState.STOPPED)(s),
        within=REACTION,
    )
    edit_took = time.monotonic() - saved
    assert fleet.processes("quick") == []
    st = ctl.status().server("slow")
    assert st is not None and st.state is ServerState.STARTING and st.instance == first.instance
    assert time.monotonic() - probe_began < PROBE_TIMEOUT, "the checks above outlasted the probe"

    # Left alone, slow's probe times out: Failed and backed off as before.
    failed = await until(
        ctl,
        lambda s: s.server("slow") is not None and s.server("slow").reason == "ProbeFailed",  # type: ignore[union-attr]
        within=PROBE_TIMEOUT + 5,
    )
    st = failed.server("slow")
    assert st is not None and "no answer to initialize within" in st.message
    assert time.monotonic() - probe_began >= PROBE_TIMEOUT - 1.0
    await until(ctl, lambda s: probing(s) and s.server("slow").instance != first.instance)  # type: ignore[union-attr]
    assert (ctl.status().server("slow") or st).restarts == 1
    assert len(fleet.processes("slow")) == 1, "never two copies"
    print(
        f"\nregistry save -> Ready while a probe hangs: {enable_took:.2f} s; "
        f"killed -> Ready again: {restart_took:.2f} s (backoff 0.2 s); "
        f"disable one + enable another -> both done: {edit_took:.2f} s"
    )


async def test_disabling_a_server_mid_probe_ends_it_promptly(
    running: tuple[Fleet, Controller],
) -> None:
    fleet, ctl = running
    await until(ctl, lambda s: s.fleet is not None)
    fleet.set_registry(slow=True, quick=True)
    snap = await until(ctl, lambda s: probing(s) and state("quick", ServerState.READY)(s))
    slow = snap.server("slow")
    assert slow is not None and slow.instance is not None
    (pid,) = fleet.processes("slow")
    assert str(pid) == slow.instance.split(":")[1]
    pidfiles = fleet.home / ".state" / "processes"
    assert [p.name for p in pidfiles.glob("slow.*.json")] == [f"slow.{pid}.json"]

    recorder = ctl.runtimes[RuntimeKind.PROCESS]
    assert isinstance(recorder, Recorder)
    mark = len(recorder.calls)
    saved = fleet.set_registry(slow=False, quick=True)
    await until(ctl, state("slow", ServerState.STOPPED), within=REACTION)
    took = time.monotonic() - saved
    assert fleet.processes("slow") == [], "the probed process outlived its disable"
    assert list(pidfiles.glob("slow.*.json")) == []
    assert [s["state"] for s in fleet.status_file()["servers"] if s["name"] == "slow"] == [
        "Stopped"
    ]
    assert fleet.status_file()["pending"] == []
    # Nothing comes back by itself and the other server was never touched: whole passes
    # since the disable started nothing and stopped nothing but the probed process.
    after_disable = await passes(ctl, 2)
    actions = recorder.actions_since(mark)
    assert actions and set(actions) == {("stop", slow.instance)}, actions
    assert fleet.processes("slow") == []
    quick = after_disable.server("quick")
    assert quick is not None and quick.instance == snap.server("quick").instance  # type: ignore[union-attr]

    # Enabled again, it is probed afresh (a new process); still no second copy.
    fleet.set_registry(slow=True, quick=True)
    again = (await until(ctl, probing, within=REACTION)).server("slow")
    assert again is not None and again.instance != slow.instance
    assert len(fleet.processes("slow")) == 1
    print(f"\ndisable mid-probe -> process gone, Stopped: {took:.2f} s")
