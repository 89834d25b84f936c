"""/api/status, /readyz and the page's headers, from a StatusProvider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway_support import STATUS, bearer, client, private_metrics
from mcp_fleet.gateway.app import GatewaySettings, build_gateway_app
from mcp_fleet.gateway.identity import AllowList
from mcp_fleet.gateway.tokens import create_token


async def inner(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the status routes never reach the router")


def gateway(home: Path, provider: Any) -> Any:
    return build_gateway_app(
        inner,
        settings=GatewaySettings(home=home),
        status_provider=provider,
        metrics=private_metrics(),
    )


async def test_status_merges_call_stats_and_totals(tmp_path: Path) -> None:
    app = gateway(tmp_path, lambda: STATUS)
    for outcome in ("ok", "ok", "error"):
        ticket = app.guard.begin(None, "s", "time", "get_current_time")
        ticket.finish(outcome=outcome)
    async with client(app) as http:
        response = await http.get("/api/status")
    doc = response.json()
    assert response.status_code == 200 and doc["fleet"] == "demo-1234abcd"
    time_row, github_row = doc["servers"]
    assert time_row["name"] == "time" and time_row["tools"] == ["get_current_time", "convert_time"]
    assert time_row["calls_per_minute"] == 3 and time_row["errors_per_minute"] == 1
    assert github_row["calls_per_minute"] == 0 and github_row["state"] == "Failed"
    assert doc["totals"]["servers"] == 2 and doc["totals"]["ready"] == 1
    assert doc["totals"]["calls_total"] == 3
    assert doc["identity"] == "anonymous"
    assert STATUS["servers"][0].get("calls_per_minute") is None, (
        "the provider's dict is not changed"
    )


async def test_an_identity_sees_only_its_servers(tmp_path: Path) -> None:
    token, _ = create_token(
        tmp_path / "tokens.yaml", "t", allow=AllowList.parse(["time:convert_time"])
    )
    async with client(gateway(tmp_path, lambda: STATUS)) as http:
        doc = (await http.get("/api/status", headers=bearer(token))).json()
    assert [s["name"] for s in doc["servers"]] == ["time"]


async def test_async_provider_and_readiness(tmp_path: Path) -> None:
    state = {"ready": False}

    async def provider() -> dict[str, Any]:
        return {"servers": [], "ready": state["ready"]}

    async with client(gateway(tmp_path, provider)) as http:
        assert (await http.get("/readyz")).status_code == 503
        state["ready"] = True
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        assert (await http.get("/api/status")).json()["servers"] == []


async def test_a_failing_provider_is_503_not_a_crash(tmp_path: Path) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("status file unreadable")

    async with client(gateway(tmp_path, broken)) as http:
        status = await http.get("/api/status")
        ready = await http.get("/readyz")
    assert status.status_code == 503 and status.json() == {"error": "status unavailable"}
    assert ready.status_code == 503


async def test_page_is_self_contained_with_a_strict_policy(tmp_path: Path) -> None:
    async with client(gateway(tmp_path, lambda: STATUS)) as http:
        page = await http.get("/")
        script = await http.get("/static/status.js")
        css = await http.get("/static/status.css")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "http://" not in page.text and "https://" not in page.text, "no external assets"
    for datum in ("demo-1234abcd", "get_current_time", "github"):
        assert datum not in page.text, "data arrives through api/status"
    assert "api/status" in script.text and script.headers["content-type"].startswith(
        "text/javascript"
    )
    assert "innerHTML" not in script.text, "server data is inserted as text only"
    assert css.status_code == 200 and "http" not in css.text
