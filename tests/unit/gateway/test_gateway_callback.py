"""The gateway as a handler of the router's own HTTP server, over real sockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import ec
from gateway_support import STATUS, JwksServer, bearer, private_metrics
from jwt.algorithms import ECAlgorithm
from mcp_fleet.gateway.app import GatewaySettings
from mcp_fleet.gateway.callback import GatewayHandler, build_gateway_handler
from mcp_fleet.gateway.identity import AllowList, Identity
from mcp_fleet.gateway.tokens import create_token
from mcp_fleet.router.http_server import Request, Responder, start_server

pytestmark = pytest.mark.timeout(30)
INIT = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}'


def inner(request: Request, responder: Responder, identity: Identity) -> None:
    """Stands in for the router's frontend: answers with who called."""
    body = orjson.dumps({"identity": identity.label, "bytes": len(request.body)})
    responder.respond(200, [(b"content-type", b"application/json")], body)


class Served:
    def __init__(self, handler: GatewayHandler[Request, Responder], url: str) -> None:
        self.handler = handler
        self.url = url


@pytest_asyncio.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    handler = build_gateway_handler(
        inner,
        settings=GatewaySettings(home=tmp_path, max_body_bytes=2000),
        status_provider=lambda: STATUS,
        metrics=private_metrics(),
    )
    server, connections = await start_server(handler.handle, host="127.0.0.1", port=0)
    port = server.sockets[0].getsockname()[1]
    handler.server = ("127.0.0.1", port)
    assert handler.gateway.auth.tokens is not None
    handler.gateway.auth.tokens.check_interval = 0.0  # follow token changes at once
    try:
        yield Served(handler, f"http://127.0.0.1:{port}")
    finally:
        await handler.aclose()
        server.close()
        for conn in list(connections):
            conn.abort()
        await asyncio.wait_for(server.wait_closed(), 5)


def token_for(home: Path, *patterns: str) -> str:
    token, _ = create_token(home / "tokens.yaml", "alice", allow=AllowList.parse(patterns or ["*"]))
    return token


async def test_open_without_tokens_then_closed_with_one(served: Served, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=served.url) as http:
        open_call = await http.post("/mcp", content=INIT)
        assert open_call.status_code == 200 and open_call.json()["identity"] == "anonymous"
        token = token_for(tmp_path)
        missing = await http.post("/mcp", content=INIT)
        good = await http.post("/mcp", content=INIT, headers=bearer(token))
        bad = await http.post("/mcp", content=INIT, headers=bearer(token + "x"))
    assert missing.status_code == 401 and "www-authenticate" in missing.headers
    assert good.status_code == 200 and good.json() == {
        "identity": "token:alice",
        "bytes": len(INIT),
    }
    assert bad.status_code == 401 and bad.json()["message"] == "unknown or revoked token"


async def test_rebinding_and_body_limit(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url) as http:
        evil_host = await http.post("/mcp", content=INIT, headers={"host": "evil.example"})
        evil_origin = await http.post(
            "/mcp", content=INIT, headers={"origin": "http://evil.example"}
        )
        big = await http.post("/mcp", content=b"x" * 2001)
    assert evil_host.status_code == 403 and "Host" in evil_host.json()["message"]
    assert evil_origin.status_code == 403 and "Origin" in evil_origin.json()["message"]
    assert big.status_code == 413


async def test_pages_metrics_and_probes(served: Served, tmp_path: Path) -> None:
    token = token_for(tmp_path, "time")
    admin, _ = create_token(tmp_path / "tokens.yaml", "admin", allow=AllowList.all())
    served.handler.gateway.guard.begin(None, "s", "time", "convert_time").finish(outcome="ok")  # type: ignore[union-attr]
    async with httpx.AsyncClient(base_url=served.url) as http:
        assert (await http.get("/healthz")).text == "ok"
        assert (await http.get("/readyz")).status_code == 503
        assert (await http.get("/api/status")).status_code == 401
        exchange = await http.get(f"/?token={token}")
        assert (
            exchange.status_code == 303 and "mcp_fleet_session=" in exchange.headers["set-cookie"]
        )
        cookie = exchange.headers["set-cookie"].split(";")[0]
        status = await http.get("/api/status", headers={"cookie": cookie})
        page = await http.get("/", headers={"cookie": cookie})
        restricted_metrics = await http.get("/metrics", headers=bearer(token))
        cookie_metrics = await http.get("/metrics", headers={"cookie": cookie})
        metrics = await http.get("/metrics", headers=bearer(admin))
        call = await http.post("/mcp", content=INIT, headers={"cookie": cookie})
    doc: dict[str, Any] = status.json()
    assert [s["name"] for s in doc["servers"]] == ["time"] and doc["servers"][0][
        "calls_per_minute"
    ] == 1
    assert page.status_code == 200 and "content-security-policy" in page.headers
    assert restricted_metrics.status_code == 403 and cookie_metrics.status_code == 403, (
        "/metrics names every server: only for a token that may use them all"
    )
    assert "may use every server" in restricted_metrics.json()["message"]
    assert metrics.status_code == 200
    assert (
        'mcp_fleet_calls_total{outcome="ok",server="time",tool="convert_time"} 1.0' in metrics.text
    )
    assert call.status_code == 401, "the cookie never authorises MCP calls"


async def test_jwt_whose_keys_must_be_fetched_first(
    tmp_path: Path, jwks_server: JwksServer
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwks_server.doc = {"keys": [{**public, "kid": "e1"}]}
    (tmp_path / "oidc.yaml").write_text(
        f"issuer: https://idp.test/\naudience: fleet\njwks_url: {jwks_server.url}\n"
        "identities:\n  carol: ['*']\n"
    )
    claims = {"iss": "https://idp.test/", "aud": "fleet", "sub": "carol", "exp": time.time() + 60}
    handler = build_gateway_handler(
        inner,
        settings=GatewaySettings(home=tmp_path),
        status_provider=dict,
        metrics=private_metrics(),
    )
    server, _ = await start_server(handler.handle, host="127.0.0.1", port=0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            first = await http.post(
                "/mcp",
                content=INIT,
                headers=bearer(jwt.encode(claims, key, "ES256", {"kid": "e1"})),
            )
            stranger = await http.post(
                "/mcp",
                content=INIT,
                headers=bearer(jwt.encode({**claims, "sub": "eve"}, key, "ES256", {"kid": "e1"})),
            )
    finally:
        await handler.aclose()
        server.close()
    assert jwks_server.hits == 1, "keys fetched once, on the first JWT"
    assert first.status_code == 200 and first.json()["identity"] == "oidc:carol"
    assert stranger.status_code == 403 and "'eve' has no access" in stranger.json()["message"]
