"""The gateway in front of a tiny inner handler, served by the router's own HTTP server:
auth, rebinding checks, body limits, cookies, start-up rules."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from gateway_support import bearer, make_handler, serve_gateway, status_of
from jwt.algorithms import ECAlgorithm
from mcp_fleet.gateway.audit import AuditSettings
from mcp_fleet.gateway.auth import UnsafeBindError, refuse_unauthenticated_bind
from mcp_fleet.gateway.cookies import COOKIE_NAME
from mcp_fleet.gateway.identity import AllowList
from mcp_fleet.gateway.tokens import create_token, revoke_token

pytestmark = pytest.mark.timeout(30)
INIT = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}'


@pytest.fixture
def token(tmp_path: Path) -> str:
    value, _ = create_token(tmp_path / "tokens.yaml", "alice", allow=AllowList.parse(["time"]))
    return value


async def test_without_tokens_loopback_is_open_and_anonymous(tmp_path: Path) -> None:
    async with serve_gateway(tmp_path) as served, served.client() as http:
        response = await http.post("/mcp", content=INIT)
    assert response.status_code == 200
    assert response.json() == {"path": "/mcp", "identity": "anonymous", "body_bytes": len(INIT)}


async def test_missing_or_bad_token_is_401_with_a_clear_message(tmp_path: Path, token: str) -> None:
    async with serve_gateway(tmp_path) as served, served.client() as http:
        missing = await http.post("/mcp", content=INIT)
        bad = await http.post("/mcp", content=INIT, headers=bearer("mcpf_" + "x" * 43))
        basic = await http.post("/mcp", content=INIT, headers={"authorization": "Basic eDp5"})
        good = await http.post("/mcp", content=INIT, headers=bearer(token))
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="mcp-fleet"'
    assert "Authorization: Bearer" in missing.json()["message"]
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    assert bad.json()["message"] == "unknown or revoked token"
    assert basic.status_code == 401
    assert good.status_code == 200 and good.json()["identity"] == "token:alice"
    for response in (missing, bad, basic):
        assert token not in response.text


async def test_revoking_a_token_locks_it_out_and_the_gateway_stays_closed(
    tmp_path: Path, token: str
) -> None:
    async with serve_gateway(tmp_path) as served, served.client() as http:
        assert served.gateway.auth.tokens is not None
        served.gateway.auth.tokens.check_interval = 0.0
        assert (await http.post("/mcp", content=INIT, headers=bearer(token))).status_code == 200
        revoke_token(tmp_path / "tokens.yaml", "alice")
        assert (await http.post("/mcp", content=INIT, headers=bearer(token))).status_code == 401
        assert (await http.post("/mcp", content=INIT)).status_code == 401, (
            "no token left: still closed"
        )


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"host": "evil.example:{port}"}, "Host"),
        ({"host": "localhost:{other}"}, "Host"),
        ({"origin": "http://evil.example"}, "Origin"),
        ({"origin": "null"}, "Origin"),
        ({"origin": "http://evil.example:{port}"}, "Origin"),
    ],
)
async def test_rebinding_host_and_origin_are_refused(
    tmp_path: Path, token: str, headers: dict[str, str], field: str
) -> None:
    async with serve_gateway(tmp_path) as served, served.client() as http:
        other = served.port + 1 if served.port < 65535 else served.port - 1
        sent = {k: v.format(port=served.port, other=other) for k, v in headers.items()}
        response = await http.post("/mcp", content=INIT, headers={**bearer(token), **sent})
        assert response.status_code == 403
        message = response.json()["message"]
        assert field in message and "DNS rebinding" in message
        assert served.rejections(f"rebinding_{field.lower()}") == 1.0


@pytest.mark.parametrize(
    "headers",
    [
        {"host": "localhost:{port}"},
        {"host": "[::1]:{port}", "origin": "http://[::1]:{port}"},
        {"origin": "http://127.0.0.1:{port}"},
        {"origin": "http://localhost:6274"},
        {"host": "gateway.team.example", "origin": "https://console.team.example"},
    ],
)
async def test_own_and_configured_hosts_and_origins_pass(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    async with (
        serve_gateway(
            tmp_path,
            allowed_hosts=("gateway.team.example",),
            allowed_origins=("https://console.team.example",),
        ) as served,
        served.client() as http,
    ):
        sent = {k: v.format(port=served.port) for k, v in headers.items()}
        response = await http.post("/mcp", content=INIT, headers=sent)
    assert response.status_code == 200


async def test_body_limit_refuses_large_bodies_with_413(tmp_path: Path) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield b"x" * 400

    async with serve_gateway(tmp_path, max_body_bytes=1000) as served, served.client() as http:
        declared = await http.post("/mcp", content=b"x" * 1001)
        streamed = await http.post("/mcp", content=chunks())
        small = await http.post("/mcp", content=b"x" * 1000)
    assert declared.status_code == 413 and "1000 bytes" in declared.text
    assert streamed.status_code == 413, "a chunked body is cut off once it grows past the limit"
    assert small.status_code == 200 and small.json()["body_bytes"] == 1000


async def test_a_stalled_body_is_cut_off_with_408(tmp_path: Path) -> None:
    async with serve_gateway(tmp_path, body_timeout_seconds=0.2) as served:
        started = time.monotonic()
        # 11 bytes of the 100 announced, then nothing: a slow client holding the connection
        answer = await served.raw(
            b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-length: 100\r\n\r\n"
            b'{"jsonrpc":' % served.port
        )
        elapsed = time.monotonic() - started
        async with served.client() as http:
            after = await http.post("/mcp", content=INIT)
    assert status_of(answer) == 408, answer
    assert elapsed < 2, "cut off near the timeout, not when the client gives up"
    assert after.status_code == 200, "the gateway serves on"


async def test_probes_need_no_auth_nor_an_allowed_host(tmp_path: Path, token: str) -> None:
    async with serve_gateway(tmp_path) as served, served.client() as http:
        health = await http.get("/healthz", headers={"host": f"10.0.0.7:{served.port}"})
        ready = await http.get("/readyz")
        status = await http.get("/api/status")
        metrics = await http.get("/metrics")
    assert health.status_code == 200 and health.text == "ok"
    assert ready.status_code == 503 and ready.json() == {"ready": False}
    assert status.status_code == 401 and metrics.status_code == 401


async def test_status_page_sign_in_exchanges_the_token_for_a_read_only_cookie(
    tmp_path: Path, token: str
) -> None:
    async with serve_gateway(tmp_path) as served, served.client() as http:
        assert served.gateway.auth.tokens is not None
        served.gateway.auth.tokens.check_interval = 0.0
        login_page = await http.get("/", headers={"accept": "text/html"})
        assert login_page.status_code == 401 and "<form" in login_page.text
        exchange = await http.get(f"/?token={token}")
        assert exchange.status_code == 303 and exchange.headers["location"] == "/"
        set_cookie = exchange.headers["set-cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        assert token not in set_cookie
        assert COOKIE_NAME in http.cookies, "the client keeps the cookie for what follows"
        page = await http.get("/")
        status = await http.get("/api/status")
        assert page.status_code == 200 and status.status_code == 200
        assert status.json()["identity"] == "token:alice"
        call = await http.post("/mcp", content=INIT)
        assert call.status_code == 401, "the cookie never authorises MCP calls"
        revoke_token(tmp_path / "tokens.yaml", "alice")
        assert (await http.get("/api/status")).status_code == 401, "revoked: cookie dead too"


async def test_login_form_post_sets_the_cookie(tmp_path: Path, token: str) -> None:
    async with serve_gateway(tmp_path) as served, served.client() as http:
        wrong = await http.post("/login", data={"token": "mcpf_nope"})
        right = await http.post("/login", data={"token": token})
        status = await http.get("/api/status")
    assert wrong.status_code == 401 and COOKIE_NAME not in wrong.headers.get("set-cookie", "")
    assert right.status_code == 303 and COOKIE_NAME in right.headers["set-cookie"]
    assert status.status_code == 200


async def test_jwt_from_an_identity_provider_is_accepted(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**public, "kid": "e1"}]}))
    (tmp_path / "oidc.yaml").write_text(
        "issuer: https://idp.test/\naudience: fleet\njwks_file: jwks.json\n"
        "identities:\n  carol: [github]\n"
    )
    claims = {"iss": "https://idp.test/", "aud": "fleet", "sub": "carol", "exp": time.time() + 60}
    good = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "e1"})
    stranger = jwt.encode({**claims, "sub": "dave"}, key, algorithm="ES256", headers={"kid": "e1"})
    expired_jwt = jwt.encode({**claims, "exp": 1}, key, algorithm="ES256", headers={"kid": "e1"})
    async with serve_gateway(tmp_path) as served, served.client() as http:
        assert served.gateway.auth.required, "OIDC alone makes auth mandatory"
        ok = await http.post("/mcp", content=INIT, headers=bearer(good))
        forbidden = await http.post("/mcp", content=INIT, headers=bearer(stranger))
        expired = await http.post("/mcp", content=INIT, headers=bearer(expired_jwt))
    assert ok.status_code == 200 and ok.json()["identity"] == "oidc:carol"
    assert forbidden.status_code == 403 and "dave" in forbidden.json()["message"]
    assert expired.status_code == 401 and "expired" in expired.json()["message"]


async def test_unauthenticated_non_loopback_bind_is_refused(tmp_path: Path, token: str) -> None:
    for host in ("127.0.0.1", "localhost", "::1", "[::1]"):
        refuse_unauthenticated_bind(host, False, False)
    for host in ("0.0.0.0", "::", "192.168.1.10", "gateway.example"):
        with pytest.raises(UnsafeBindError, match="--allow-unauthenticated"):
            refuse_unauthenticated_bind(host, False, False)
        refuse_unauthenticated_bind(host, True, False)
        refuse_unauthenticated_bind(host, False, True)
    await make_handler(tmp_path, host="0.0.0.0").aclose()  # a token exists: fine
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UnsafeBindError):
        make_handler(empty, host="0.0.0.0")
    await make_handler(empty, host="0.0.0.0", allow_unauthenticated=True).aclose()


async def test_closing_flushes_and_closes_the_audit_log(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    async with serve_gateway(tmp_path, audit=AuditSettings(destination=log)) as served:
        audit = served.gateway.audit
        assert audit.enabled
        ticket = served.gateway.guard.begin(None, "s1", "time", "get_current_time")
        ticket.finish(outcome="ok")  # type: ignore[union-attr]
    assert not audit.enabled, "closing the handler closed the audit log"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["server"], line["tool"]) for line in lines] == [("time", "get_current_time")]


async def test_error_bodies_have_one_json_shape(tmp_path: Path, token: str) -> None:
    async with serve_gateway(tmp_path) as served, served.client() as http:
        unauthorized = await http.get("/mcp")
        rebinding = await http.get(
            "/mcp", headers={**bearer(token), "origin": "http://evil.example"}
        )
    for response in (unauthorized, rebinding):
        assert response.headers["content-type"] == "application/json"
        assert set(response.json()) == {"error", "error_description", "message"}


async def test_only_the_exact_asset_paths_skip_auth(tmp_path: Path, token: str) -> None:
    async with serve_gateway(tmp_path) as served, served.client() as http:
        css = await http.get("/static/status.css")
        other = await http.get("/static/other.css")
        foreign = await http.get("/static/status.css", headers={"host": "evil.example"})
        # sent as is: httpx would resolve the dot segments before sending
        sneaky = await served.raw(
            b"POST /static/../mcp HTTP/1.1\r\nhost: 127.0.0.1:%d\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (served.port, len(INIT), INIT)
        )
    assert css.status_code == 200
    assert other.status_code == 401 and status_of(sneaky) == 401
    assert foreign.status_code == 403


async def test_an_answer_to_head_has_no_body(tmp_path: Path) -> None:
    async with serve_gateway(tmp_path) as served:
        for path in (b"/healthz", b"/metrics", b"/api/status"):
            answer = await served.raw(
                b"HEAD %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\nconnection: close\r\n\r\n"
                % (path, served.port)
            )
            head, _, body = answer.partition(b"\r\n\r\n")
            assert status_of(head) == 200 and b"content-length:" in head.lower(), head
            assert body == b"", f"HEAD {path.decode()} answered with a body"
