"""Signed session ids: what one replica mints, another restores; nothing else passes."""

from __future__ import annotations

import base64

import orjson
import pytest
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.router.jsonrpc import LATEST_HANDSHAKE_VERSION
from mcp_fleet.router.router import Router
from mcp_fleet.router.session import RouterSession
from mcp_fleet.router.session_token import (
    TOKEN_PREFIX,
    ForeignSession,
    InvalidSessionToken,
    SessionClaims,
    SessionKeyError,
    SessionSigner,
    capability_flags,
    restore,
)

KEY = b"k" * 32
INIT = {
    "protocolVersion": "2025-06-18",
    "capabilities": {
        "roots": {"listChanged": True},
        "sampling": {},
        "elicitation": {"form": {}, "url": {"deep": {"deeper": 1}}},
        "experimental": {"x": "not kept", "y": True},
    },
    "clientInfo": {"name": "claude-code", "version": "2.0"},
}


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_claims_follow_the_routers_negotiation() -> None:
    claims = SessionClaims.from_initialize(INIT)
    assert claims.protocol_version == "2025-06-18"
    assert claims.client_name == "claude-code"
    assert dict(claims.capabilities) == {
        "roots": {"listChanged": True},
        "sampling": {},
        "elicitation": {"form": {}, "url": {}},
        "experimental": {"y": True},
    }
    unknown = SessionClaims.from_initialize({"protocolVersion": "1999-01-01"})
    assert unknown.protocol_version == LATEST_HANDSHAKE_VERSION
    assert unknown.client_name == "" and dict(unknown.capabilities) == {}
    assert SessionClaims.from_initialize(None).protocol_version == LATEST_HANDSHAKE_VERSION


def test_capabilities_are_bounded() -> None:
    many = {f"cap{i}": {f"k{j}": True for j in range(100)} for i in range(100)}
    flags = capability_flags(many)
    assert len(flags) == 32 and all(len(v) == 32 for v in flags.values())
    assert capability_flags(["not", "a", "dict"]) == {}


def test_another_replica_with_the_same_key_restores_the_session() -> None:
    a, b = SessionSigner([KEY]), SessionSigner([KEY])
    sid = a.mint(SessionClaims.from_initialize(INIT), owner="alice")
    assert sid.startswith(TOKEN_PREFIX)
    assert all(0x21 <= ord(ch) <= 0x7E for ch in sid)  # visible ASCII, as MCP requires
    claims = b.verify(sid, owner="alice")
    assert claims.protocol_version == "2025-06-18"
    assert claims.client_name == "claude-code"
    assert "sampling" in claims.capabilities and "roots" in claims.capabilities
    assert b"alice" not in base64.urlsafe_b64decode(sid.split(".")[1] + "==")


def test_every_id_is_new() -> None:
    signer = SessionSigner([KEY])
    claims = SessionClaims.from_initialize(INIT)
    assert len({signer.mint(claims, owner="a") for _ in range(50)}) == 50


def test_another_key_a_forged_body_or_garbage_is_refused() -> None:
    sid = SessionSigner([KEY]).mint(SessionClaims.from_initialize(INIT), owner="alice")
    with pytest.raises(InvalidSessionToken, match="bad signature"):
        SessionSigner([b"x" * 32]).verify(sid, owner="alice")
    prefix, body, mac = sid.split(".")
    forged = orjson.loads(base64.urlsafe_b64decode(body + "=="))
    forged["p"] = "2024-11-05"
    forged_body = base64.urlsafe_b64encode(orjson.dumps(forged)).rstrip(b"=").decode()
    with pytest.raises(InvalidSessionToken, match="bad signature"):
        SessionSigner([KEY]).verify(f"{prefix}.{forged_body}.{mac}", owner="alice")
    for bad in ["", "0" * 32, TOKEN_PREFIX, f"{TOKEN_PREFIX}abc", f"{TOKEN_PREFIX}a.b!c", sid[:-3]]:
        with pytest.raises(InvalidSessionToken):
            SessionSigner([KEY]).verify(bad, owner="alice")


def test_another_identity_may_not_use_the_session() -> None:
    signer = SessionSigner([KEY])
    sid = signer.mint(SessionClaims.from_initialize(INIT), owner="alice")
    with pytest.raises(ForeignSession):
        signer.verify(sid, owner="bob")


def test_ids_expire_and_future_ids_beyond_the_skew_are_refused() -> None:
    clock = Clock()
    signer = SessionSigner([KEY], max_age=3600, clock=clock)
    sid = signer.mint(SessionClaims.from_initialize(INIT), owner="a")
    clock.now += 3599
    assert signer.verify(sid, owner="a").issued_at == 1_800_000_000.0
    clock.now += 2
    with pytest.raises(InvalidSessionToken, match="expired"):
        signer.verify(sid, owner="a")
    clock.now = 1_800_000_000.0 - 3600  # the verifying replica's clock is an hour behind
    with pytest.raises(InvalidSessionToken, match="expired"):
        signer.verify(sid, owner="a")


def test_keys_rotate_first_signs_all_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    old = SessionSigner([b"o" * 32])
    sid_old = old.mint(SessionClaims.from_initialize(INIT), owner="a")
    monkeypatch.setenv("MCP_FLEET_SESSION_KEY", f"{'n' * 32}, {'o' * 32}")
    rotated = SessionSigner.from_env()
    assert rotated is not None
    assert rotated.verify(sid_old, owner="a").client_name == "claude-code"
    sid_new = rotated.mint(SessionClaims.from_initialize(INIT), owner="a")
    with pytest.raises(InvalidSessionToken):
        old.verify(sid_new, owner="a")
    assert SessionSigner([b"n" * 32]).verify(sid_new, owner="a").client_name == "claude-code"


def test_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MCP_FLEET_SESSION_KEY", raising=False)
    assert SessionSigner.from_env() is None
    monkeypatch.setenv("MCP_FLEET_SESSION_KEY", "short")
    with pytest.raises(SessionKeyError, match=r"\$MCP_FLEET_SESSION_KEY: .*at least 16 bytes"):
        SessionSigner.from_env()
    with pytest.raises(SessionKeyError):
        SessionSigner([])
    eph = SessionSigner.ephemeral()
    sid = eph.mint(SessionClaims.from_initialize(INIT), owner="a")
    assert eph.verify(sid, owner="a").protocol_version == "2025-06-18"


class Channel:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes, *, related: object = None, final: bool = False) -> None:
        self.sent.append(data)


async def test_a_restored_session_is_initialized_as_on_the_first_replica() -> None:
    router = Router(EndpointTable())
    first = RouterSession(router, Channel())
    first.handle_message({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT})
    first.handle_message({"jsonrpc": "2.0", "method": "notifications/initialized"})
    signer = SessionSigner([KEY])
    sid = signer.mint(SessionClaims.from_initialize(INIT), owner="a")
    second = RouterSession(router, Channel(), session_id=sid)
    restore(second, signer.verify(sid, owner="a"))
    assert second.initialized and second.protocol_version == first.protocol_version
    assert second.client_info["name"] == first.client_info["name"]
    for cap in ("roots", "sampling", "elicitation", "experimental"):
        assert second.has_capability(cap) == first.has_capability(cap) is True
    assert not second.has_capability("tasks")
