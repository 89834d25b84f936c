"""Metrics and the per-call guard: counters match the calls made, refusals included."""

from __future__ import annotations

from gateway_support import private_metrics, serve_gateway
from mcp_fleet.gateway.guard import CallGuard, CallTicket, outcome_of
from mcp_fleet.gateway.identity import FORBIDDEN, LIMITED, AllowList, Identity
from mcp_fleet.gateway.limits import Limiter, LimitSettings
from mcp_fleet.gateway.metrics import Outcome

ALICE = Identity("alice", "token", AllowList.parse(["time"]))


def value(metrics, name, **labels):  # type: ignore[no-untyped-def]
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_call_counters_latency_and_in_flight() -> None:
    metrics = private_metrics()
    started = [metrics.call_started("time", "get_current_time") for _ in range(3)]
    assert value(metrics, "mcp_fleet_calls_in_flight", server="time") == 3
    metrics.call_finished("time", "get_current_time", outcome="ok", started=started[0])
    metrics.call_finished("time", "get_current_time", outcome="ok", started=started[1])
    metrics.call_finished("time", "get_current_time", outcome="tool_error", started=started[2])
    assert value(metrics, "mcp_fleet_calls_in_flight", server="time") == 0
    labels = {"server": "time", "tool": "get_current_time"}
    assert value(metrics, "mcp_fleet_calls_total", **labels, outcome="ok") == 2
    assert value(metrics, "mcp_fleet_calls_total", **labels, outcome="tool_error") == 1
    assert value(metrics, "mcp_fleet_call_duration_seconds_count", **labels) == 3
    recent = metrics.recent()["time"]
    assert recent == {
        "calls_per_minute": 3,
        "errors_per_minute": 1,
        "calls_total": 3,
        "errors_total": 1,
        "in_flight": 0,
    }


def test_recent_window_forgets_calls_older_than_a_minute() -> None:
    now = [1000.0]
    from mcp_fleet.gateway.metrics import FleetMetrics
    from prometheus_client import CollectorRegistry

    metrics = FleetMetrics(
        registry=CollectorRegistry(), process_collectors=False, clock=lambda: now[0]
    )
    metrics.call_rejected("time", "t", outcome="forbidden")
    now[0] += 30
    metrics.call_rejected("time", "t", outcome="ok")
    assert metrics.recent()["time"]["calls_per_minute"] == 2
    now[0] += 45
    assert metrics.recent()["time"]["calls_per_minute"] == 1
    assert metrics.recent()["time"]["errors_per_minute"] == 0
    assert metrics.recent()["time"]["calls_total"] == 2


def test_fleet_metrics_states_reconcile_and_cold_starts() -> None:
    metrics = private_metrics()
    metrics.backend_state("time", "Ready")
    metrics.backend_state("time", "Stopped")
    metrics.backend_state("odd", "Exploded")
    assert (
        value(metrics, "mcp_fleet_backend_state", server="time", mcp_fleet_backend_state="Stopped")
        == 1
    )
    assert (
        value(metrics, "mcp_fleet_backend_state", server="time", mcp_fleet_backend_state="Ready")
        == 0
    )
    assert (
        value(metrics, "mcp_fleet_backend_state", server="odd", mcp_fleet_backend_state="Unknown")
        == 1
    )
    metrics.backend_removed("time")
    metrics.backend_removed("never-seen")
    assert (
        value(metrics, "mcp_fleet_backend_state", server="time", mcp_fleet_backend_state="Stopped")
        == 0
    )
    metrics.reconcile_pass(seconds=0.01)
    metrics.reconcile_pass(seconds=0.02, errors=2)
    metrics.reconcile_error("files")
    assert value(metrics, "mcp_fleet_reconcile_passes_total") == 2
    assert value(metrics, "mcp_fleet_reconcile_errors_total", kind="action") == 2
    assert value(metrics, "mcp_fleet_reconcile_errors_total", kind="files") == 1
    metrics.cold_start("time", seconds=0.4)
    assert value(metrics, "mcp_fleet_cold_starts_total", server="time") == 1
    assert value(metrics, "mcp_fleet_cold_start_seconds_count", server="time") == 1


def test_guard_admits_refuses_and_counts_every_call() -> None:
    metrics = private_metrics()
    guard = CallGuard(metrics=metrics, limiter=Limiter(LimitSettings(identity_concurrency=1)))
    ticket = guard.begin(ALICE, "s1", "time", "get_current_time", request_bytes=80)
    assert isinstance(ticket, CallTicket)
    forbidden = guard.begin(ALICE, "s1", "github", "create_issue")
    assert isinstance(forbidden, dict) and forbidden["code"] == FORBIDDEN
    limited = guard.begin(ALICE, "s1", "time", "get_current_time")
    assert isinstance(limited, dict) and limited["code"] == LIMITED
    ticket.finish(outcome=outcome_of({"result": {"content": []}}), response_bytes=50)
    ticket.finish(outcome="error")  # counted once
    anonymous = guard.begin(None, None, "github", "create_issue")
    assert isinstance(anonymous, CallTicket), "stdio callers are anonymous, allowed all"
    anonymous.finish(outcome=Outcome.OK)
    assert (
        value(
            metrics, "mcp_fleet_calls_total", server="time", tool="get_current_time", outcome="ok"
        )
        == 1
    )
    assert (
        value(
            metrics,
            "mcp_fleet_calls_total",
            server="github",
            tool="create_issue",
            outcome="forbidden",
        )
        == 1
    )
    assert (
        value(
            metrics,
            "mcp_fleet_calls_total",
            server="time",
            tool="get_current_time",
            outcome="limited",
        )
        == 1
    )
    assert value(metrics, "mcp_fleet_limited_calls_total", limit="identity-concurrency") == 1
    assert value(metrics, "mcp_fleet_calls_in_flight", server="time") == 0


def test_outcome_of_replies() -> None:
    assert outcome_of({"result": {}}) is Outcome.OK
    assert outcome_of({"result": {"isError": True}}) is Outcome.TOOL_ERROR
    assert outcome_of({"error": {"code": -32603, "message": "x"}}) is Outcome.ERROR
    assert outcome_of({"error": {"code": -32001, "message": "timeout"}}) is Outcome.TIMEOUT
    assert outcome_of({"error": {"code": -32003, "message": "down"}}) is Outcome.UNAVAILABLE


async def test_metrics_route_exposes_the_counters(tmp_path) -> None:  # type: ignore[no-untyped-def]
    metrics = private_metrics()
    async with (
        serve_gateway(
            tmp_path, status_provider=dict, metrics=metrics, public_metrics=True
        ) as served,
        served.client() as http,
    ):
        for _ in range(4):
            served.gateway.guard.begin(None, "s", "time", "get_current_time").finish(outcome="ok")  # type: ignore[union-attr]
        response = await http.get("/metrics")
        post = await http.post("/metrics")
    assert response.status_code == 200
    line = 'mcp_fleet_calls_total{outcome="ok",server="time",tool="get_current_time"} 4.0'
    assert line in response.text
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
