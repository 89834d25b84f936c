"""Backends that flood stdout with garbage or giant lines: isolated, and memory stays bounded.

A real controller process (process runtime) runs two healthy echo servers;
then four broken ones are enabled beside them (tests/faults/servers/
flood_server.py):
one writes a megabyte of random bytes, one a single 50 MB line, one a line
that never ends, one a 50 MB stderr line and a stray answer. The controller
must fail each of them on its own probe (with a reason saying what was
wrong) and remove the instance (a restart with backoff follows), keep the
healthy servers Ready and untouched (same instance, no restart), and its
own memory must stay bounded: the peak (``VmHWM``) within three times the
stdio line limit per oversized flood (asyncio buffers up to twice the limit
before it pauses a pipe, and CPython copies a bytearray when it shrinks
below half), and the resident size (``VmRSS``) back near where it was
before the floods once they are disabled. Before the fix, each
removed flooding instance kept up to 128 MiB forever (its paused pipe never
reached EOF, so asyncio never released it) and each stop took the whole
grace period; a 50 MB stderr line became 3,200 log lines.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

from faults_support import (
    ECHO,
    PY,
    Fleet,
    cleanup,
    cmdline,
    memory_kib,
    processes_with,
    servers_of,
    states,
    stop,
)
from mcp_fleet.transport import MAX_MESSAGE_BYTES

FLOOD = Path(__file__).resolve().parent / "servers" / "flood_server.py"
HEALTHY = ("echo1", "echo2")
FLOODS = {"garbage": "not JSON-RPC", "bigline": "not JSON-RPC",
          "endless": "", "stderr": "initialize"}  # fmt: skip
#: Short, so the floods that never answer fail quickly; long enough for the echo servers.
PROBE_TIMEOUT = 4
#: What the controller may keep once the floods are over (allocator slack, caches, logs).
RSS_GROWTH_LIMIT_KIB = 40 * 1024
#: Peak: three times the line limit for each of the two oversized floods, plus slack.
PEAK_LIMIT_KIB = 2 * (3 * MAX_MESSAGE_BYTES) // 1024 + 64 * 1024


def catalog(fleet: Fleet) -> str:
    lines = ['version: "2"', "registry:"]
    for name in HEALTHY:
        lines += [f"  {name}:", "    process:", f"      command: [{PY}, {ECHO}, {fleet.marker}]"]
    for mode in FLOODS:
        lines += [f"  {mode}:", "    process:",
                  f"      command: [{PY}, {FLOOD}, {mode}, {fleet.marker}]"]  # fmt: skip
    return "\n".join(lines) + "\n"


def wait_for_failures(fleet: Fleet, servers: set[str], *, within: float = 30) -> dict[str, str]:
    """The first probe failure of each server, from the controller's JSON log."""
    deadline = time.monotonic() + within
    found: dict[str, str] = {}
    while time.monotonic() < deadline and set(found) != servers:
        for line in fleet.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == "create failed" and event.get("server") in servers:
                    found.setdefault(event["server"], str(event.get("error", "")))
        time.sleep(0.1)
    assert set(found) == servers, f"no probe failure logged for {servers - set(found)}"
    return found


def test_flooding_backends_fail_alone_with_bounded_controller_memory(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path / "fleet", prefix="flood")
    fleet.write_catalog(catalog(fleet))
    fleet.set_registry(dict.fromkeys(HEALTHY, True))
    controllers: list[subprocess.Popen[bytes]] = []
    with cleanup(fleet, controllers):
        ctl = fleet.start_controller(probe_timeout=PROBE_TIMEOUT)
        controllers.append(ctl)
        doc = fleet.wait_status(
            lambda d: all(servers_of(d).get(n, {}).get("state") == "Ready" for n in HEALTHY)
        )
        healthy = {n: (servers_of(doc)[n]["instance"], servers_of(doc)[n]["restarts"])
                   for n in HEALTHY}  # fmt: skip
        before = memory_kib(ctl.pid)
        fleet.set_registry(dict.fromkeys([*HEALTHY, *FLOODS], True))
        t0 = time.monotonic()

        # Each probe failure is logged the moment it happens (the status file is
        # written between rounds of a pass, which the slowest probe paces).
        failures = wait_for_failures(fleet, set(FLOODS))
        took = time.monotonic() - t0
        for mode, words in FLOODS.items():
            assert words in failures[mode], failures[mode]
            assert len(failures[mode]) < 1000, "an error message carries the flood"
        log = fleet.home / ".state" / "logs" / "stderr.log"
        cut = [line for line in log.read_text().splitlines() if "line cut" in line]
        assert len(cut) == 1 and len(cut[0]) <= 16 * 1024 + 64, "one cut line per 50 MB line"
        assert log.stat().st_size < 1024 * 1024, "the 50 MB line went to the log"

        fleet.set_registry({**dict.fromkeys(HEALTHY, True), **dict.fromkeys(FLOODS, False)})
        t1 = time.monotonic()
        doc = fleet.wait_status(lambda d: all(states(d)[m] == "Stopped" for m in FLOODS), within=20)
        stopped_in = time.monotonic() - t1
        # Within one round: the pass that was probing when the edit came ends there
        # (it used to go on for more rounds, each as long as the probe timeout).
        assert stopped_in < PROBE_TIMEOUT + 3, f"disabling the floods took {stopped_in:.1f} s"
        floods_left = [p for p in processes_with(fleet.marker) if str(FLOOD) in cmdline(p)]
        assert floods_left == [], "a disabled flood still runs"
        time.sleep(0.5)
        after = memory_kib(ctl.pid)
        assert after["VmHWM"] - before["VmRSS"] <= PEAK_LIMIT_KIB, (before, after)
        assert after["VmRSS"] - before["VmRSS"] <= RSS_GROWTH_LIMIT_KIB, (before, after)
        for name, (instance, restarts) in healthy.items():
            st = servers_of(doc)[name]
            assert (st["state"], st["instance"], st["restarts"]) == ("Ready", instance, restarts)
        assert fleet.status_file.stat().st_size < 200_000
        print(
            f"flood: before {before}, after {after} KiB, floods failed in"
            f" {took:.1f} s, disabled and stopped in {stopped_in:.1f} s"
        )
        assert stop(ctl) == 0
