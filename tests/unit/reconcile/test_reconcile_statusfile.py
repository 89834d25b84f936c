"""The status file: atomic, private, round-trips, and never carries a secret value."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mcp_fleet.errors import Diagnostic
from mcp_fleet.logsetup import redactor
from mcp_fleet.reconcile.snapshot import ServerStatus, StatusSnapshot
from mcp_fleet.reconcile.statusfile import (
    controller_alive,
    read_status,
    status_path,
    write_status,
)
from mcp_fleet.status import ServerState


def snapshot(**overrides: object) -> StatusSnapshot:
    base: dict[str, object] = {
        "fleet": "f-1",
        "home": "/h",
        "updated_at": 123.5,
        "runtime": "process",
        "controller_pid": os.getpid(),
        "servers": (
            ServerStatus("a", "enabled", ServerState.READY, "Initialized", instance="pid:1:2",
                         runtime="process", started_at=100.0, config_hash="abc"),
            ServerStatus("b", "enabled", ServerState.CRASHLOOP, "CrashLoopBackOff",
                         "exit code 3: boom", restarts=4, exit_code=3,
                         stderr_tail=("line 1", "boom")),
        ),
        "file_errors": (Diagnostic("expected true/false", file=Path("/h/registry.yaml"),
                                   line=7, field="registry.b.enabled"),),
    }  # fmt: skip
    base.update(overrides)
    return StatusSnapshot(**base)  # type: ignore[arg-type]


def test_round_trip_and_stable_keys(tmp_path: Path) -> None:
    path = status_path(tmp_path / ".state")
    snap = snapshot()
    write_status(path, snap)
    back = read_status(path)
    assert back == snap
    assert back.to_json() == snap.to_json()
    doc = snap.to_json()
    assert list(doc) == [
        "version", "fleet", "home", "updated_at", "runtime", "controller_pid", "file_errors",
        "warnings", "runtime_errors", "pending", "all_ready", "servers",
    ]  # fmt: skip
    assert doc["file_errors"][0]["text"] == (
        "registry.yaml:7: registry.b.enabled: expected true/false"
    )
    assert doc["all_ready"] is False


def test_file_is_private_and_replaced_atomically(tmp_path: Path) -> None:
    path = status_path(tmp_path)
    write_status(path, snapshot())
    inode = path.stat().st_ino
    write_status(path, snapshot(updated_at=200.0))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temp file left
    assert read_status(path).updated_at == 200.0  # type: ignore[union-attr]


def test_missing_file_reads_as_none(tmp_path: Path) -> None:
    assert read_status(tmp_path / "status.json") is None


def test_secret_values_are_redacted_on_write(tmp_path: Path) -> None:
    redactor().set_secrets(["s3cr3t-value-42"])
    try:
        bad = ServerStatus("a", "enabled", ServerState.FAILED, "ProbeFailed",
                           "server said: token s3cr3t-value-42 rejected")  # fmt: skip
        path = status_path(tmp_path)
        write_status(path, snapshot(servers=(bad,)))
        text = path.read_text()
        assert "s3cr3t-value-42" not in text
        assert "token *** rejected" in text
    finally:
        redactor().set_secrets([])


def test_controller_liveness_from_the_pid() -> None:
    assert controller_alive(snapshot())
    assert not controller_alive(snapshot(controller_pid=None))
    assert not controller_alive(snapshot(controller_pid=2**22 + 12345))
