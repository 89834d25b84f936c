"""The readiness probe against scripted peers: success, and each way it fails."""

from __future__ import annotations

import asyncio
import json

import pytest
from mcp_fleet import conventions
from mcp_fleet.probe import ProbeError, initialize
from mcp_fleet.transport import StreamClosed


class ScriptedPeer:
    """A MessageStream whose answers a function computes from each request."""

    def __init__(self, answer) -> None:  # type: ignore[no-untyped-def]
        self.answer = answer
        self.sent: list[dict[str, object]] = []
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def send(self, message: bytes) -> None:
        doc = json.loads(message)
        self.sent.append(doc)
        for reply in self.answer(doc):
            self.inbox.put_nowait(reply)

    async def receive(self) -> bytes:
        item = await self.inbox.get()
        if item is None:
            raise StreamClosed("end of stream")
        return item

    async def aclose(self) -> None:
        return None


def good(doc: dict) -> list[bytes]:  # type: ignore[type-arg]
    if doc.get("method") != "initialize":
        return []
    result = {
        "protocolVersion": doc["params"]["protocolVersion"],
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "echo", "version": "1.0"},
    }
    log = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "hi"}}
    return [json.dumps(log).encode(), json.dumps({"jsonrpc": "2.0", "id": doc["id"],
                                                  "result": result}).encode()]  # fmt: skip


async def test_handshake_succeeds_and_sends_initialized() -> None:
    peer = ScriptedPeer(good)
    result = await initialize(peer, timeout=1)
    assert (result.server_name, result.server_version) == ("echo", "1.0")
    assert result.protocol_version == conventions.MCP_PROTOCOL_VERSION
    assert [m.get("method") for m in peer.sent] == ["initialize", "notifications/initialized"]
    assert peer.sent[0]["params"]["clientInfo"]["name"] == "mcp-fleet"  # type: ignore[index]


async def test_timeout_is_a_clear_error() -> None:
    with pytest.raises(ProbeError, match=r"no answer to initialize within 0.05 s"):
        await initialize(ScriptedPeer(lambda doc: []), timeout=0.05)


async def test_end_of_stream_is_a_clear_error() -> None:
    with pytest.raises(ProbeError, match="closed its output before answering initialize"):
        await initialize(ScriptedPeer(lambda doc: [None]), timeout=1)


async def test_garbage_is_a_clear_error() -> None:
    with pytest.raises(ProbeError, match=r"not JSON-RPC: 'Starting server on port 80\.\.\.'"):
        await initialize(ScriptedPeer(lambda doc: [b"Starting server on port 80..."]), timeout=1)


async def test_error_answer_is_reported() -> None:
    def refuse(doc: dict) -> list[bytes]:  # type: ignore[type-arg]
        err = {"code": -32602, "message": "unsupported protocol"}
        return [json.dumps({"jsonrpc": "2.0", "id": doc["id"], "error": err}).encode()]

    with pytest.raises(ProbeError, match="initialize failed: -32602 unsupported protocol"):
        await initialize(ScriptedPeer(refuse), timeout=1)
