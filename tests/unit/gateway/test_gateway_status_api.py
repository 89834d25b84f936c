"""/api/status, /readyz and the page's headers from a StatusProvider; who sees what, /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from gateway_support import STATUS, Served, bearer, serve_gateway
from mcp_fleet.gateway.identity import AllowList, Identity
from mcp_fleet.gateway.tokens import create_token
from mcp_fleet.logsetup import redactor
from mcp_fleet.router.http_server import Request, Responder

pytestmark = pytest.mark.timeout(30)


def inner(request: Request, responder: Responder, identity: Identity) -> None:
    raise AssertionError("the status routes never reach the router")


def gateway(home: Path, provider: Any, **settings: Any) -> AbstractAsyncContextManager[Served]:
    """The gateway served with ``provider``, around a router that must not be reached."""
    return serve_gateway(home, inner=inner, status_provider=provider, **settings)


async def test_status_merges_call_stats_and_totals(tmp_path: Path) -> None:
    async with gateway(tmp_path, lambda: STATUS) as served, served.client() as http:
        for outcome in ("ok", "ok", "error"):
            ticket = served.gateway.guard.begin(None, "s", "time", "get_current_time")
            ticket.finish(outcome=outcome)  # type: ignore[union-attr]
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
    async with gateway(tmp_path, lambda: STATUS) as served, served.client() as http:
        doc = (await http.get("/api/status", headers=bearer(token))).json()
    assert [s["name"] for s in doc["servers"]] == ["time"]


async def test_async_provider_and_readiness(tmp_path: Path) -> None:
    state = {"ready": False}

    async def provider() -> dict[str, Any]:
        return {"servers": [], "ready": state["ready"]}

    async with gateway(tmp_path, provider) as served, served.client() as http:
        assert (await http.get("/readyz")).status_code == 503
        state["ready"] = True
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        assert (await http.get("/api/status")).json()["servers"] == []


async def test_a_failing_provider_is_503_not_a_crash(tmp_path: Path) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("status file unreadable")

    async with gateway(tmp_path, broken) as served, served.client() as http:
        status = await http.get("/api/status")
        ready = await http.get("/readyz")
    assert status.status_code == 503 and status.json() == {"error": "status unavailable"}
    assert ready.status_code == 503


async def test_page_is_self_contained_with_a_strict_policy(tmp_path: Path) -> None:
    async with gateway(tmp_path, lambda: STATUS) as served, served.client() as http:
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


# -- what a viewer may see ----------------------------------------------------------------

PASTED = "pasted-secret-" + "9f3a7c1e5b2d"
FLEET_STATUS: dict[str, Any] = {
    **STATUS,
    "home": "/home/me/.mcp-fleet",
    "controller_pid": 4242,
    "file_errors": [
        {"severity": "error", "file": "/home/me/.mcp-fleet/registry.yaml", "line": 3,
         "field": "enabled", "server": "github", "message": f'expected a boolean, got "{PASTED}"',
         "text": f'registry.yaml:3: enabled: expected a boolean, got "{PASTED}"'},
        {"severity": "error", "file": "/home/me/.mcp-fleet/registry.yaml", "line": 9,
         "field": "env", "server": "time", "message": "expected a mapping",
         "text": "registry.yaml:9: env: expected a mapping"},
        {"severity": "error", "file": "/home/me/.mcp-fleet/config.yaml", "line": 1,
         "field": None, "server": None, "message": "not YAML", "text": "config.yaml:1: not YAML"},
    ],
    "warnings": [{"severity": "warning", "server": "github", "text": "github: deprecated key"}],
    "runtime_errors": {"docker": "cannot reach /var/run/docker.sock for github"},
    "pending": [
        "create      server:github                            (enabled) runtime=docker",
        "remove      server:time/pid:12:34                    (stale)",
    ],
}  # fmt: skip


@pytest.fixture
def masking() -> Iterator[None]:
    redactor().set_secrets([PASTED])
    try:
        yield
    finally:
        redactor().set_secrets([])


async def test_secret_values_are_masked_for_everyone(tmp_path: Path, masking: None) -> None:
    """An in-memory status (``mcp-fleet up``) is not masked yet: the page masks it."""
    admin, _ = create_token(tmp_path / "tokens.yaml", "admin", allow=AllowList.all())
    async with gateway(tmp_path, lambda: FLEET_STATUS) as served, served.client() as http:
        response = await http.get("/api/status", headers=bearer(admin))
    assert response.status_code == 200
    assert PASTED not in response.text
    doc = response.json()
    assert doc["file_errors"][0]["message"] == 'expected a boolean, got "***"'
    assert doc["home"] == "/home/me/.mcp-fleet" and doc["controller_pid"] == 4242
    assert doc["runtime_errors"] == FLEET_STATUS["runtime_errors"]
    assert len(doc["pending"]) == 2 and len(doc["file_errors"]) == 3


async def test_a_restricted_viewer_sees_only_its_servers_problems(
    tmp_path: Path, masking: None
) -> None:
    token, _ = create_token(tmp_path / "tokens.yaml", "t", allow=AllowList.parse(["time"]))
    async with gateway(tmp_path, lambda: FLEET_STATUS) as served, served.client() as http:
        response = await http.get("/api/status", headers=bearer(token))
    doc = response.json()
    assert response.status_code == 200 and PASTED not in response.text
    assert "github" not in response.text, "nothing about a server it may not see"
    assert "home" not in doc and "controller_pid" not in doc
    assert "/home/me" not in response.text
    assert [s["name"] for s in doc["servers"]] == ["time"]
    assert [d["text"] for d in doc["file_errors"]] == [
        "registry.yaml:9: env: expected a mapping",
        "2 other errors in the fleet files (shown to a token that may use every server)",
    ]
    assert doc["file_errors"][0]["file"] == "registry.yaml"
    assert [d["text"] for d in doc["warnings"]] == [
        "1 other warning in the fleet files (shown to a token that may use every server)"
    ]
    assert list(doc["runtime_errors"]) == ["docker"]
    assert "sock" not in doc["runtime_errors"]["docker"]
    assert doc["pending"] == [FLEET_STATUS["pending"][1]]
    assert doc["identity"] == "token:t"


async def test_metrics_need_a_token_that_may_use_every_server(tmp_path: Path) -> None:
    restricted, _ = create_token(tmp_path / "tokens.yaml", "t", allow=AllowList.parse(["time"]))
    admin, _ = create_token(tmp_path / "tokens.yaml", "admin", allow=AllowList.all())
    async with gateway(tmp_path, lambda: STATUS) as served, served.client() as http:
        served.gateway.guard.begin(None, "s", "github", "create_issue").finish(outcome="ok")  # type: ignore[union-attr]
        refused = await http.get("/metrics", headers=bearer(restricted))
        allowed = await http.get("/metrics", headers=bearer(admin))
        anonymous = await http.get("/metrics")
    assert refused.status_code == 403 and "github" not in refused.text
    assert refused.json()["error"] == "forbidden"
    assert "token:t may not read /metrics" in refused.json()["message"]
    assert allowed.status_code == 200 and 'server="github"' in allowed.text
    assert anonymous.status_code == 401


async def test_public_metrics_stay_public(tmp_path: Path) -> None:
    create_token(tmp_path / "tokens.yaml", "t", allow=AllowList.parse(["time"]))
    async with (
        gateway(tmp_path, lambda: STATUS, public_metrics=True) as served,
        served.client() as http,
    ):
        assert (await http.get("/metrics")).status_code == 200
