"""Two HTTP front ends with one session key: a session begun on one is served by the other.

Each front end has its own router, as two replicas do; requests are handed
to ``HttpFrontend.handle`` with the identity the gateway would have
authenticated, and answers are collected from a recording responder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import orjson
import pytest
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.gateway.identity import AllowList, Identity
from mcp_fleet.router.frontend_http import HttpFrontend
from mcp_fleet.router.http_server import Request, Responder
from mcp_fleet.router.router import Router
from mcp_fleet.router.session_token import SessionSigner

pytestmark = pytest.mark.timeout(30)

ALICE = Identity(name="alice", kind="token", allow=AllowList.all())
BOB = Identity(name="bob", kind="token", allow=AllowList.all())
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-03-26",
        "capabilities": {"sampling": {}, "roots": {"listChanged": True}},
        "clientInfo": {"name": "inspector", "version": "1"},
    },
}


class Recorder:
    """Stands in for ``Responder``: keeps the status, headers and body written."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.started = False
        self.closed = False
        self.on_close: list[Callable[[], None]] = []

    def respond(self, status: int, headers: Any = (), body: bytes = b"") -> None:
        self.status, self.headers, self.body, self.started = status, dict(headers), body, True

    def start_stream(self, status: int, headers: Any) -> None:
        self.status, self.headers, self.started = status, dict(headers), True

    def write(self, data: bytes) -> None:
        self.body += data

    def end(self) -> None:
        self.closed = True

    def json(self) -> Any:
        return orjson.loads(self.body)


def replica(signer: SessionSigner | None) -> HttpFrontend:
    return HttpFrontend(Router(EndpointTable(), settle_timeout=0.1), session_signer=signer)


def send(
    front: HttpFrontend,
    method: str,
    body: dict[str, Any] | None,
    *,
    identity: Identity = ALICE,
    sid: str | None = None,
    accept: str = "application/json, text/event-stream",
) -> Recorder:
    headers = {"accept": accept, "content-type": "application/json"}
    if sid is not None:
        headers["mcp-session-id"] = sid
    request = Request(
        method=method, path="/mcp", query="", headers=headers, body=orjson.dumps(body or {})
    )
    out = Recorder()
    front.handle(request, cast(Responder, out), identity)
    return out


async def test_a_session_begun_on_a_is_served_by_b() -> None:
    key = [b"shared-key-" * 3]
    a, b = replica(SessionSigner(key)), replica(SessionSigner(key))
    opened = send(a, "POST", INIT)
    assert opened.status == 200
    sid = opened.headers[b"mcp-session-id"].decode()
    assert sid.startswith("mf1.")

    pinged = send(b, "POST", {"jsonrpc": "2.0", "id": 2, "method": "ping"}, sid=sid)
    assert pinged.status == 200 and pinged.json()["result"] == {}
    restored = b.sessions[sid].session
    assert restored.initialized and restored.protocol_version == "2025-03-26"
    assert restored.has_capability("sampling") and restored.client_info["name"] == "inspector"
    assert b.sessions[sid].owner == ALICE.label

    # The restored session is B's own from now on: its GET stream opens there.
    stream = send(b, "GET", None, sid=sid, accept="text/event-stream")
    assert stream.status == 200 and b.sessions[sid].stream is not None


async def test_another_identity_a_foreign_key_or_no_key_cannot_restore() -> None:
    key = [b"shared-key-" * 3]
    a, b = replica(SessionSigner(key)), replica(SessionSigner(key))
    sid = send(a, "POST", INIT).headers[b"mcp-session-id"].decode()
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    assert send(b, "POST", ping, sid=sid, identity=BOB).status == 403
    assert send(b, "DELETE", None, sid=sid, identity=BOB).status == 403
    assert sid not in b.sessions
    assert send(replica(SessionSigner([b"other-key-" * 3])), "POST", ping, sid=sid).status == 404
    assert send(replica(None), "POST", ping, sid=sid).status == 404
    assert send(b, "POST", ping, sid=sid[:-2] + "xx").status == 404


async def test_without_a_key_ids_stay_random_and_local() -> None:
    a = replica(None)
    sid = send(a, "POST", INIT).headers[b"mcp-session-id"].decode()
    assert len(sid) == 32 and not sid.startswith("mf1.")
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    assert send(a, "POST", ping, sid=sid).status == 200
