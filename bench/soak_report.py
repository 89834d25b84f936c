"""The figures of bench/soak.py: the client tallies and the fleet samples, summed up and judged.

Kept apart from the orchestrator so that what is measured (bench/soak.py,
bench/soak_client.py) and how it is judged (here: which errors fall into a
replacement window, the invariants, the summary printed) can each be read
on their own. ``summarise`` returns the JSON document written to
bench/results/soak-<runtime>.json; ``report`` the few lines printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from soak_client import tool_of


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def error_kind(message: str, servers: list[str]) -> str:
    """An error message with the server and tool names taken out, to count errors by kind."""
    for name in sorted(servers, key=len, reverse=True):
        message = message.replace(tool_of(name), "<tool>").replace(name, "<server>")
    return message


def summarise(opts: argparse.Namespace, servers: list[str], tmp: Path, **m: Any) -> dict[str, Any]:
    """The result document: ``tmp`` holds the workers' tallies, ``m`` what the fleet showed."""
    """The result document: ``tmp`` holds the workers' tallies, ``m`` what the fleet showed."""
    tallies = []
    for i in range(opts.workers):
        path = tmp / f"w{i}.json"
        if not path.exists():
            log = (tmp / f"w{i}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"client worker {i} wrote no result:\n{log}")
        tallies.append(json.loads(path.read_text()))
    latencies = [x for t in tallies for x in t["latencies"]]
    errors = sorted(e for t in tallies for e in t["errors"])
    lost = sorted(e for t in tallies for e in t["lost"])
    misrouted = sorted(e for t in tallies for e in t["misrouted"])
    reconnects = sorted(e for t in tallies for e in t["reconnects"])
    per_second: Counter[int] = Counter()
    replies: Counter[str] = Counter()
    for t in tallies:
        per_second.update({int(k): v for k, v in t["per_second"].items()})
        replies.update(t["replies"])
    seconds = range(int(m["start_at"]) + 1, int(m["until"]) - 1)
    rates = [per_second.get(s, 0) for s in seconds] or [0]
    windows = [
        (e["at"], e["at"] + (e["converged_s"] or opts.edit_interval) + 2.0) for e in m["edits"]
    ]
    in_window = [e for e in errors if any(a <= e[0] <= b for a, b in windows)]
    outside = [e for e in errors if e not in in_window]
    outages: list[float] = []  # per replaced server: first to last error it caused
    for edit, (a, b) in zip(m["edits"], windows, strict=True):
        mine = [e for e in errors if a <= e[0] <= b]
        edit["errors"] = len(mine)
        for server in servers:
            times = [e[0] for e in mine if e[1] == server]
            outages.append(max(times) - min(times) if times else 0.0)
    kinds = Counter(error_kind(e[2], servers) for e in errors)
    steady = [per_second.get(s, 0) for s in seconds if not any(a <= s <= b for a, b in windows)]
    start_at = m["start_at"]

    def relative(events: list[list[Any]]) -> list[list[Any]]:
        return [[round(e[0] - start_at, 2), *e[1:]] for e in events[:10]]

    ok = sum(t["ok"] for t in tallies)
    generations = {tuple(k.split()[:2]) for k in replies}  # (server, gen) seen answering
    warm, end, before, after = m["warm"], m["end"], m["before"], m["after"]
    rss_growth = (end["rss_kib"] - warm["rss_kib"]) / warm["rss_kib"]
    check_rss = opts.duration >= opts.warmup + 60 and not opts.no_rss_check
    left = m["left"]
    checks = {
        "no lost call": not lost,
        "no misrouted response": not misrouted,
        "no error outside a replacement window": not outside,
        "no error at all (--strict-replacements)": not (opts.strict_replacements and errors),
        "every edit converged": all(e["converged_s"] is not None for e in m["edits"]),
        "RSS at end within tolerance of warm-up": (not check_rss)
        or rss_growth <= opts.rss_tolerance,
        "no fd leak (idle before vs after)": after["fds"] <= before["fds"] + opts.fd_slack,
        "one backend per server at the end": after["backends"] == len(servers),
        "nothing left after stop": not left.get("containers_after_down")
        and not left.get("processes_after_stop"),
    }
    if not m["edits"]:
        checks["every edit converged"] = False
    return {
        "runtime": opts.runtime,
        "sessions": opts.sessions,
        "workers": opts.workers,
        "duration_s": opts.duration,
        "edit_interval_s": opts.edit_interval,
        "think_s": opts.think,
        "servers": servers,
        "cpus": os.cpu_count(),
        "fleet_ready_s": round(m["boot"], 2),
        "calls": {
            "ok": ok,
            "mcp_errors": len(errors),
            "mcp_errors_in_replacement_windows": len(in_window),
            "mcp_errors_outside_windows": len(outside),
            "lost": len(lost),
            "misrouted": len(misrouted),
            "session_reconnects": len(reconnects),
            "mcp_error_kinds": dict(kinds),
        },
        "replacement_outage_s": {  # per server and edit: first to last error it caused
            "median": round(statistics.median(outages or [0.0]), 3),
            "p90": round(pct(outages, 0.9), 3),
            "max": round(max(outages, default=0.0), 3),
            "replacements_without_an_error": outages.count(0.0),
        },
        "router_counted": m["router_metrics"],
        "throughput_calls_per_s": {
            "mean": round(statistics.fmean(rates), 1),
            "min_1s": min(rates),
            "max_1s": max(rates),
            "mean_outside_replacement_windows": round(statistics.fmean(steady or [0]), 1),
        },
        "latency_ms": {
            "p50": pct(latencies, 0.5),
            "p99": pct(latencies, 0.99),
            "max": max(latencies, default=0.0),
        },
        "edits": [{k: v for k, v in e.items() if k != "at"} for e in m["edits"]],
        "replacements_observed": m["replaced"],
        "echo_generations_answering": len(generations),
        "rss_kib": {
            "idle_before": before["rss_kib"],
            "after_warmup": warm["rss_kib"],
            "end_of_load": end["rss_kib"],
            "idle_after": after["rss_kib"],
            "growth_warmup_to_end": round(rss_growth, 4),
            "checked": check_rss,
        },
        "fds": {
            "idle_before": before["fds"],
            "sessions_open": m["opened"]["fds"],
            "after_warmup": warm["fds"],
            "end_of_load": end["fds"],
            "idle_after": after["fds"],
        },
        "backends": {
            "before": before["backends"],
            "end_of_load": end["backends"],
            "idle_after": after["backends"],
            **left,
        },
        "samples": m["samples"],
        "examples": {  # [seconds since the load started, server, message]
            "errors_outside_windows": relative(outside),
            "errors": relative(errors),
            "lost": relative(lost),
            "misrouted": relative(misrouted),
            "reconnects": relative(reconnects),
        },
        "checks": checks,
        "passed": all(checks.values()),
    }


def report(result: dict[str, Any]) -> str:
    c, lat, thr = result["calls"], result["latency_ms"], result["throughput_calls_per_s"]
    rss, fds, b = result["rss_kib"], result["fds"], result["backends"]
    conv = [e["converged_s"] for e in result["edits"] if e["converged_s"] is not None]
    servers, edits = len(result["servers"]), len(result["edits"])
    median = statistics.median(conv) if conv else float("nan")
    lines = [
        f"soak, {result['runtime']} runtime: {result['sessions']} sessions x "
        f"{result['duration_s']:.0f} s, {edits} edits every {result['edit_interval_s']:.0f} s "
        f"({servers} servers replaced by each)",
        f"  calls ok {c['ok']}, lost {c['lost']}, misrouted {c['misrouted']}, MCP errors "
        f"{c['mcp_errors']} ({c['mcp_errors_in_replacement_windows']} in replacement windows), "
        f"session reconnects {c['session_reconnects']}",
        f"  throughput {thr['mean']} calls/s (1 s min {thr['min_1s']}, max {thr['max_1s']}); "
        f"latency p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms",
        f"  replacements observed {result['replacements_observed']}; edit -> all Ready: "
        f"median {median:.2f} s, max {max(conv, default=float('nan')):.2f} s",
        f"  RSS {rss['after_warmup'] / 1024:.1f} MiB after warm-up, "
        f"{rss['end_of_load'] / 1024:.1f} MiB at end ({rss['growth_warmup_to_end']:+.1%}); "
        f"fds idle {fds['idle_before']} -> {fds['idle_after']}; "
        f"backends {b['before']} -> {b['idle_after']}",
    ]
    lines += [f"  [{'ok' if good else 'FAIL'}] {name}" for name, good in result["checks"].items()]
    return "\n".join(lines)
