"""Observations -> MCPServer.status: every state the operator can report, in the fleet's words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from mcp_fleet.kube.spec import parse_spec
from mcp_fleet.operator.k8s_plan import ChildPlan, PlanOptions, ServerRef, plan_children
from mcp_fleet.operator.k8s_status import (
    ProbeResult,
    WorkloadObservation,
    build_status,
    diagnose_pods,
    status_changed,
)

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
OK = ProbeResult(
    ok=True,
    server_name="mcp-time",
    server_version="1.0",
    protocol_version="2025-06-18",
    tools=("a", "b"),
)


def a_plan(spec: dict[str, Any] | None = None, **ref: Any) -> ChildPlan:
    spec = spec or {"image": "mcp/time", "command": ["mcp-server-time"]}
    server = ServerRef("time", "team-a", "u1", 3, **ref)
    return plan_children(server, parse_spec(spec, name="time"), options=PlanOptions(), now=NOW)


def conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def pod(
    name: str,
    *,
    waiting: dict[str, Any] | None = None,
    last: dict[str, Any] | None = None,
    scheduled: bool = True,
) -> dict[str, Any]:
    cs: dict[str, Any] = {
        "name": "server",
        "state": {"waiting": waiting} if waiting else {"running": {}},
    }
    if last:
        cs["lastState"] = {"terminated": last}
    status: dict[str, Any] = {"containerStatuses": [cs]}
    if not scheduled:
        status = {
            "conditions": [
                {"type": "PodScheduled", "status": "False", "message": "0/3 nodes are available"}
            ]
        }
    return {"metadata": {"name": name}, "status": status}


def test_ready_server() -> None:
    w = WorkloadObservation(desired=1, ready=1, updated=1, current=1, rolled_out=True)
    st = build_status(generation=3, previous={}, now=NOW, plan=a_plan(), workload=w, probe=OK)
    assert st["state"] == "Ready" and st["tools"] == ["a", "b"] and st["observedGeneration"] == 3
    assert conds(st) == {
        "Ready": ("True", "Initialized"),
        "Progressing": ("False", "Initialized"),
        "Degraded": ("False", "Initialized"),
    }
    assert all(
        c["observedGeneration"] == 3 and c["lastTransitionTime"] == "2026-03-01T09:00:00Z"
        for c in st["conditions"]
    )
    assert st["selector"] == "app.kubernetes.io/component=mcp-server,mcp-fleet.dev/server=time"
    assert st["serverInfo"] == {
        "name": "mcp-time",
        "version": "1.0",
        "protocolVersion": "2025-06-18",
    }


def test_starting_rolling_out_and_probe_failures() -> None:
    starting = build_status(
        generation=1,
        previous={},
        now=NOW,
        plan=a_plan(),
        workload=WorkloadObservation(1, 0, 0, 0, False),
    )
    assert starting["state"] == "Starting"
    assert conds(starting)["Progressing"] == ("True", "Starting")
    rolling = build_status(
        generation=2,
        previous={},
        now=NOW,
        plan=a_plan(),
        workload=WorkloadObservation(2, 2, 1, 3, False),
        probe=OK,
    )
    assert rolling["state"] == "Ready" and conds(rolling)["Progressing"] == (
        "True",
        "ConfigChanged",
    )
    assert "rolling out: 1/2 pods updated" in rolling["conditions"][1]["message"]
    refused = ProbeResult(ok=False, error="http://x: ConnectError: refused")
    w = WorkloadObservation(1, 1, 1, 1, True)
    failed = build_status(
        generation=1, previous={}, now=NOW, plan=a_plan(), workload=w, probe=refused
    )
    assert failed["state"] == "Failed"
    assert conds(failed)["Ready"] == ("False", "ProbeFailed") and conds(failed)["Degraded"] == (
        "True",
        "ProbeFailed",
    )
    assert "tools" not in failed  # keep what was last discovered


def test_pod_problems_explain_missing_readiness() -> None:
    cases = {
        "ImageUnavailable": pod("p1", waiting={"reason": "ErrImagePull", "message": "not found"}),
        "MissingSecret": pod(
            "p1",
            waiting={
                "reason": "CreateContainerConfigError",
                "message": 'secret "tokens" not found',
            },
        ),
        "CrashLoopBackOff": pod(
            "p1", waiting={"reason": "CrashLoopBackOff"}, last={"exitCode": 2, "reason": "Error"}
        ),
        "RuntimeError": pod("p1", scheduled=False),
    }
    for reason, p in cases.items():
        problem = diagnose_pods([pod("p0"), p])
        assert problem is not None and problem.reason == reason
        st = build_status(
            generation=1,
            previous={},
            now=NOW,
            plan=a_plan(),
            workload=WorkloadObservation(1, 0, 0, 1, False),
            pods=problem,
        )
        assert conds(st)["Ready"] == ("False", reason) and conds(st)["Degraded"] == ("True", reason)
    crash = diagnose_pods([cases["CrashLoopBackOff"]])
    assert crash is not None and crash.state.value == "CrashLoop"
    assert "last exit code 2" in crash.message and "kubectl logs p1 -c server" in crash.message
    assert diagnose_pods([pod("ok")]) is None


def test_invalid_spec_apply_errors_idle_and_remote() -> None:
    bad = build_status(generation=4, previous={}, now=NOW, spec_problem="spec.port: too big")
    assert bad["state"] == "Failed" and conds(bad)["Degraded"] == ("True", "InvalidSpec")
    assert "endpoint" not in bad  # what runs is left alone, and so is what status says about it
    broken = build_status(
        generation=1,
        previous={},
        now=NOW,
        plan=a_plan(),
        apply_problem="apply Deployment: forbidden",
    )
    assert conds(broken)["Degraded"] == ("True", "RuntimeError")
    spec = {"image": "i", "command": ["c"], "lifecycle": {"mode": "on-demand", "idleTimeout": 60}}
    idle = build_status(
        generation=1,
        previous={},
        now=NOW,
        plan=a_plan(spec, created=NOW - timedelta(hours=1)),
        workload=WorkloadObservation(0, 0, 0, 0, True),
    )
    assert (
        idle["state"] == "Stopped"
        and conds(idle)["Ready"] == ("False", "ScaledToZero")
        and idle["replicas"] == 0
    )
    off = a_plan({"image": "i", "command": ["c"], "replicas": 0})
    none_running = WorkloadObservation(0, 0, 0, 0, True)
    stopped = build_status(generation=1, previous={}, now=NOW, plan=off, workload=none_running)
    assert stopped["state"] == "Stopped" and conds(stopped)["Ready"] == ("False", "Disabled")
    remote = a_plan({"remote": {"url": "https://x/mcp"}})
    up = build_status(generation=1, previous={}, now=NOW, plan=remote, probe=OK)
    down = build_status(
        generation=1,
        previous={},
        now=NOW,
        plan=remote,
        probe=ProbeResult(ok=False, error="timeout"),
    )
    assert (up["state"], down["state"]) == ("Ready", "Failed")
    assert "replicas" not in up and up["endpoint"] == "https://x/mcp"


def test_transition_times_move_only_when_a_condition_flips() -> None:
    w = WorkloadObservation(1, 1, 1, 1, True)
    first = build_status(generation=1, previous={}, now=NOW, plan=a_plan(), workload=w, probe=OK)
    later = NOW + timedelta(minutes=5)
    same = build_status(
        generation=1, previous=first, now=later, plan=a_plan(), workload=w, probe=OK
    )
    assert same == first and not status_changed(same, first)
    down = build_status(
        generation=1,
        previous=first,
        now=later,
        plan=a_plan(),
        workload=w,
        probe=ProbeResult(ok=False, error="x"),
    )
    times = {c["type"]: c["lastTransitionTime"] for c in down["conditions"]}
    assert times["Ready"] == "2026-03-01T09:05:00Z" and times["Degraded"] == "2026-03-01T09:05:00Z"
    assert times["Progressing"] == "2026-03-01T09:00:00Z"
    assert status_changed(down, first)
    assert status_changed({"endpoint": None}, {"endpoint": "x"}) and not status_changed(
        {"endpoint": None}, {}
    )
