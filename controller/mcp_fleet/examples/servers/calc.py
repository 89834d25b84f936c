"""A dependency-free MCP calculator over stdio, starting in tens of milliseconds.

Why not the SDK: importing the ``mcp`` package costs about 1.5 s of CPU, and
the scale tests and benchmarks start a hundred servers on two cores. This
server speaks the small part of MCP a tool server needs, with the standard
library only: newline-delimited JSON-RPC 2.0 on stdin/stdout, ``initialize``
(answering the client's protocol version when it is a handshake-era one),
``ping``, ``tools/list`` and ``tools/call``; anything else gets "method not
found" (so a client probing ``server/discover`` falls back to initialize).
Requests are answered in order; notifications are ignored.

Run with ``python -m mcp_fleet.examples.servers.calc``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
SERVER_INFO = {"name": "calc", "title": "Calculator", "version": "1.0.0"}

_NUMBER_PAIR = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
}
TOOLS: list[dict[str, Any]] = [
    {"name": "add", "description": "a + b", "inputSchema": _NUMBER_PAIR},
    {"name": "subtract", "description": "a - b", "inputSchema": _NUMBER_PAIR},
    {"name": "multiply", "description": "a * b", "inputSchema": _NUMBER_PAIR},
    {"name": "divide", "description": "a / b (b must not be 0)", "inputSchema": _NUMBER_PAIR},
    {
        "name": "echo",
        "description": "Return the text unchanged.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
]


def _number(args: dict[str, Any], key: str) -> float:
    value = args.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    return value


def call_tool(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one tool; a bad argument is a tool error (``isError``), not a protocol error."""
    try:
        if name == "echo":
            text = args.get("text")
            if not isinstance(text, str):
                raise ValueError("text must be a string")
            return {"content": [{"type": "text", "text": text}], "isError": False}
        a, b = _number(args, "a"), _number(args, "b")
        if name == "add":
            result = a + b
        elif name == "subtract":
            result = a - b
        elif name == "multiply":
            result = a * b
        elif name == "divide":
            if b == 0:
                raise ValueError("division by zero")
            result = a / b
        else:
            raise KeyError(name)
    except ValueError as exc:
        return {"content": [{"type": "text", "text": str(exc)}], "isError": True}
    text = str(int(result)) if float(result).is_integer() else repr(result)
    return {
        "content": [{"type": "text", "text": text}],
        "structuredContent": {"result": result},
        "isError": False,
    }


def handle(message: dict[str, Any]) -> dict[str, Any] | None:
    """The response to one JSON-RPC message (None for notifications)."""
    method = message.get("method")
    msg_id = message.get("id")
    if msg_id is None:
        return None
    params = message.get("params") or {}
    if method == "initialize":
        asked = params.get("protocolVersion")
        version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[-1]
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": SERVER_INFO,
        }
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        name = params.get("name")
        if not isinstance(name, str) or name not in {t["name"] for t in TOOLS}:
            return _error(msg_id, -32602, f"unknown tool: {name}")
        result = call_tool(name, params.get("arguments") or {})
    else:
        return _error(msg_id, -32601, f"method not found: {method}")
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def _error(msg_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}


def main() -> None:
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            reply: dict[str, Any] | None = _error(None, -32700, "parse error")
        else:
            reply = (
                handle(message)
                if isinstance(message, dict)
                else _error(None, -32600, "invalid request")
            )
        if reply is not None:
            out.write(json.dumps(reply, separators=(",", ":")) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
