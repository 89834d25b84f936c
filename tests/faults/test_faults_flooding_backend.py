"""Backends that flood stdout with garbage or giant lines: isolated, and memory stays bounded.

A real controller process (process runtime) runs two healthy echo servers,
then four broken ones are enabled beside them (tests/faults/servers/
flood_server.py): one writes a megabyte of random bytes, one a single 50 MB
line, one a line that never ends, one a 50 MB stderr line and a stray
answer. The controller must fail each of them on its own probe (with a
reason saying what was wrong), restart them with backoff, keep the healthy
servers Ready and untouched (same instance, no restart), and its own memory
must stay bounded: the peak (``VmHWM``) within three times the stdio line
limit per oversized flood (asyncio buffers up to twice the limit before it
pauses a pipe, and CPython copies a bytearray when it shrinks below half),
and the resident size (``VmRSS``) back near where it started once the
floods are disabled, however many restarts happened. Before the fix, each
stopped flooding instance kept up to 128 MiB forever (its paused pipe never
reached EOF, so asyncio never released it) and each stop took the whole
grace period.
"""

from __future__ import annotations

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


def test_flooding_backends_fail_alone_with_bounded_controller_memory(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path / "fleet", prefix="flood")
    fleet.write_catalog(catalog(fleet))
    fleet.set_registry(dict.fromkeys(HEALTHY, True))
    controllers = []
    with cleanup(fleet, controllers):
        ctl = fleet.start_controller(probe_timeout=3)
        controllers.append(ctl)
        doc = fleet.wait_status(
            lambda d: all(servers_of(d).get(n, {}).get("state") == "Ready" for n in HEALTHY)
        )
        healthy = {n: servers_of(doc)[n]["instance"] for n in HEALTHY}
        time.sleep(0.5)
        before = memory_kib(ctl.pid)

        fleet.set_registry(dict.fromkeys([*HEALTHY, *FLOODS], True))
        t0 = time.monotonic()

        def floods_restarted(d: dict) -> bool:  # type: ignore[type-arg]
            st = servers_of(d)
            return all(
                st.get(m, {}).get("state") in ("Pending", "CrashLoop", "Failed")
                and st[m]["restarts"] >= 1
                and st[m]["reason"] != "Starting"
                for m in FLOODS
            )

        doc = fleet.wait_status(floods_restarted, within=60)
        took = time.monotonic() - t0
        st = servers_of(doc)
        for name, instance in healthy.items():
            assert st[name]["state"] == "Ready" and st[name]["instance"] == instance, st[name]
            assert st[name]["restarts"] == 0
        for mode, words in FLOODS.items():
            assert st[mode]["reason"] in ("ProbeFailed", "CrashLoopBackOff"), st[mode]
            assert words in st[mode]["message"], st[mode]
            assert len(st[mode]["message"]) < 1000, "an error message carries the flood"
            assert all(len(line) <= 16 * 1024 + 64 for line in st[mode]["stderr_tail"])
        cut = [line for line in st["stderr"]["stderr_tail"] if "line cut" in line]
        assert len(cut) == 1, "a 50 MB stderr line is kept as one cut line"
        log = fleet.home / ".state" / "logs" / "stderr.log"
        assert log.stat().st_size < 1024 * 1024, "the 50 MB line went to the log"

        fleet.set_registry({**dict.fromkeys(HEALTHY, True), **dict.fromkeys(FLOODS, False)})
        t1 = time.monotonic()
        fleet.wait_status(lambda d: all(states(d)[m] == "Stopped" for m in FLOODS), within=20)
        stopped_in = time.monotonic() - t1
        floods_left = [p for p in processes_with(fleet.marker) if str(FLOOD) in cmdline(p)]
        assert floods_left == [], "a disabled flood still runs"
        time.sleep(0.5)
        after = memory_kib(ctl.pid)
        assert after["VmHWM"] - before["VmRSS"] <= PEAK_LIMIT_KIB, (before, after)
        assert after["VmRSS"] - before["VmRSS"] <= RSS_GROWTH_LIMIT_KIB, (before, after)
        assert stopped_in < 5, f"stopping the floods took {stopped_in:.1f} s"
        doc = fleet.status()
        for name, instance in healthy.items():
            assert servers_of(doc)[name]["instance"] == instance
        assert fleet.status_file.stat().st_size < 200_000
        print(
            f"flood: before {before}, after {after} KiB, floods failed and restarted in"
            f" {took:.1f} s, stopped in {stopped_in:.1f} s"
        )
        assert stop(ctl) == 0
