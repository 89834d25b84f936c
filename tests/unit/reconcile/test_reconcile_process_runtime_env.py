"""The process runtime's environment, /proc parsing and pid-file leftovers (no servers run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp_fleet.model import CatalogEntry, ProcessSpec, ServerSpec, frozen_map
from mcp_fleet.runtimes.process import ProcessRuntime, read_stat, session_members


def make_spec() -> ServerSpec:
    entry = CatalogEntry(
        name="s",
        source=Path("c.yaml"),
        process=ProcessSpec(
            command=("prog",), env=frozen_map({"SHARED": "from-process", "P": "1"})
        ),
    )
    return ServerSpec(
        name="s",
        enabled=True,
        entry=entry,
        env=frozen_map({"SHARED": "from-env", "E": "2"}),
        secret_env=frozen_map({"SHARED": "from-secret", "TOKEN": "t0ken-value"}),
    )


def test_environment_is_minimal_and_layered(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak")
    runtime = ProcessRuntime(fleet="f", state_dir=tmp_path / ".state")
    env = runtime.environment(make_spec())
    assert env["PATH"] == "/usr/bin"
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert (env["TOKEN"], env["E"], env["P"]) == ("t0ken-value", "2", "1")
    assert env["SHARED"] == "from-process"  # secrets, then env, then process.env on top


def test_read_stat_knows_our_own_process() -> None:
    me = read_stat(os.getpid())
    assert me is not None and me.alive and me.pid == os.getpid() and me.start_time > 0
    assert read_stat(2**22 + 7) is None


def test_leftover_sessions_are_observed_and_ended(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)  # fmt: skip
    try:
        stat = read_stat(child.pid)
        assert stat is not None
        assert session_members(child.pid, stat.start_time) == [child.pid]
        assert session_members(child.pid, stat.start_time + 1) == []  # a reused pid is not ours
        state = tmp_path / ".state"
        (state / "processes").mkdir(parents=True)
        record = {"pid": child.pid, "start_time": stat.start_time, "server": "s",
                  "fleet": "f", "config_hash": "abc", "started_at": 1.0}  # fmt: skip
        (state / "processes" / f"s.{child.pid}.json").write_text(json.dumps(record))
        stale = {**record, "pid": 2**22 + 7}
        (state / "processes" / "s.stale.json").write_text(json.dumps(stale))
        runtime = ProcessRuntime(fleet="f", state_dir=state, stop_grace=2.0)

        import asyncio

        observed = asyncio.run(runtime.observe())
        (leftover,) = observed.instances
        assert leftover.instance_id == f"pid:{child.pid}:{stat.start_time}"
        assert leftover.running and leftover.config_hash == "abc"
        assert not (state / "processes" / "s.stale.json").exists()
        asyncio.run(runtime.stop(leftover))
        assert child.wait(5) is not None
        assert list((state / "processes").iterdir()) == []
    finally:
        if child.poll() is None:
            child.kill()
