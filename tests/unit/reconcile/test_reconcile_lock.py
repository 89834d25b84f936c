"""The controller lock, one protocol for its holder and for ``mcp-fleet down``.

A controller takes the lock and writes its pid into it; a second one is
refused naming that pid; ``down`` reads the pid, signals the holder and
waits until the lock is free. The holder here is a real process, so the
kernel's part (the ``flock`` goes when its holder dies) is tested too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp_fleet.cli.controller_cmds import _stop_controller
from mcp_fleet.model import FleetFiles
from mcp_fleet.reconcile.lock import (
    LOCK_FILE,
    ControllerBusy,
    ControllerLock,
    holder_pid,
    is_free,
    lock_path,
)
from support import until_sync

HOLD = """
import sys, time
from pathlib import Path
from mcp_fleet.reconcile.lock import ControllerLock
lock = ControllerLock(Path(sys.argv[1]), home=Path(sys.argv[2]))
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def files_at(home: Path) -> FleetFiles:
    return FleetFiles(home=home, catalogs=(), registry=home / "registry.yaml",
                      config=home / "config.yaml", tools=home / "tools.yaml",
                      secrets=home / "secrets.env")  # fmt: skip


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of the fleet at ``tmp_path``."""
    files = files_at(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(files.state_dir), str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_the_holder_writes_its_pid_and_a_second_one_is_refused(tmp_path: Path) -> None:
    state = tmp_path / ".state"
    one = ControllerLock(state, home=tmp_path)
    one.acquire()
    one.acquire()  # idempotent
    try:
        assert one.held
        assert lock_path(state) == state / LOCK_FILE
        assert lock_path(state).read_text() == str(os.getpid())
        assert state.stat().st_mode & 0o777 == 0o700  # .state is private first
        assert lock_path(state).stat().st_mode & 0o777 == 0o600
    finally:
        one.release()
    assert not one.held
    assert holder_pid(state) is None and is_free(state)


def test_another_process_holding_it_is_named(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    state = files_at(tmp_path).state_dir
    assert holder_pid(state) == str(holder.pid)
    assert not is_free(state)
    with pytest.raises(ControllerBusy, match=f"pid {holder.pid}.*already manages {tmp_path}"):
        ControllerLock(state, home=tmp_path).acquire()
    holder.kill()  # the kernel lets the lock go with its holder, even on SIGKILL
    holder.wait()
    assert holder_pid(state) is None
    mine = ControllerLock(state, home=tmp_path)
    mine.acquire()
    mine.release()


def test_no_lock_file_means_no_controller(tmp_path: Path) -> None:
    assert holder_pid(tmp_path / ".state") is None
    assert _stop_controller(files_at(tmp_path)) is None


def test_down_stops_the_holder_and_waits_for_the_lock(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    files = files_at(tmp_path)
    assert _stop_controller(files, grace=10.0) == holder.pid
    assert is_free(files.state_dir)
    until_sync(lambda: holder.poll() is not None, within=10.0, what="the holder exits")
    assert _stop_controller(files) is None  # nobody holds it any more
