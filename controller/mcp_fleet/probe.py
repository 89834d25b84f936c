"""The readiness probe: a real MCP ``initialize`` handshake over a message stream.

A running process is not a working server: it may still be importing, may
have printed a banner on stdout, or may be waiting for a secret it will never
get. A server is Ready only once it has answered ``initialize`` the way the
protocol says, so the probe speaks the protocol: send ``initialize`` (asking
for ``conventions.MCP_PROTOCOL_VERSION``), wait for the answer with the
probe's id, then send ``notifications/initialized``.

It runs over the same ``MessageStream`` the router later takes over (servers
answer a second ``initialize`` on the same stream normally). Every way it can
go wrong ends in one ``ProbeError`` whose message says which: no answer in
time, the stream ended (the server exited), something that is not JSON-RPC,
or an error answer.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

import orjson

from mcp_fleet import __version__, conventions
from mcp_fleet.transport import MessageStream, StreamClosed

_ids = itertools.count(1)
#: Notifications and stray lines tolerated before the answer (log messages...).
_MAX_SKIPPED = 1000


class ProbeError(Exception):
    """The server did not complete an MCP initialize handshake; the message says why."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What the server said about itself."""

    protocol_version: str
    server_name: str
    server_version: str
    capabilities: dict[str, Any]


async def initialize(stream: MessageStream, *, timeout: float) -> ProbeResult:
    """Perform the handshake within ``timeout`` seconds; raise ``ProbeError`` otherwise."""
    request_id = f"mcp-fleet-probe-{next(_ids)}"
    request = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": conventions.MCP_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": conventions.CLIENT_INFO_NAME, "version": __version__},
        },
    }
    try:
        async with asyncio.timeout(timeout):
            await stream.send(orjson.dumps(request))
            result = await _await_answer(stream, request_id)
            await stream.send(
                orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
            )
    except TimeoutError:
        raise ProbeError(f"no answer to initialize within {timeout:g} s") from None
    except StreamClosed as exc:
        raise ProbeError(f"the server closed its output before answering initialize ({exc})") from (
            None
        )
    return result


async def _await_answer(stream: MessageStream, request_id: str) -> ProbeResult:
    for _ in range(_MAX_SKIPPED):
        raw = await stream.receive()
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProbeError(
                f"the server wrote something that is not JSON-RPC: {_excerpt(raw)}"
            ) from None
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise ProbeError(f"the server wrote something that is not JSON-RPC: {_excerpt(raw)}")
        if message.get("id") != request_id or "method" in message:
            continue  # a notification or a request of its own: not our answer
        if "error" in message:
            error = message["error"] if isinstance(message["error"], dict) else {}
            raise ProbeError(
                f"initialize failed: {error.get('code', '?')} {error.get('message', '')}".rstrip()
            )
        result = message.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("protocolVersion"), str):
            raise ProbeError(f"initialize answer without a protocolVersion: {_excerpt(raw)}")
        info = result.get("serverInfo") if isinstance(result.get("serverInfo"), dict) else {}
        assert isinstance(info, dict)
        caps = result.get("capabilities")
        return ProbeResult(
            protocol_version=result["protocolVersion"],
            server_name=str(info.get("name", "")),
            server_version=str(info.get("version", "")),
            capabilities=caps if isinstance(caps, dict) else {},
        )
    raise ProbeError(f"no answer to initialize among the first {_MAX_SKIPPED} messages")


def _excerpt(raw: bytes, limit: int = 80) -> str:
    text = raw[:limit].decode("utf-8", errors="replace")
    return repr(text + ("..." if len(raw) > limit else ""))
