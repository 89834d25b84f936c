"""JSON-RPC framing helpers for the router's hot path.

The router forwards MCP messages at the JSON-RPC level: each message is parsed
once with orjson, its ``id`` (and, where needed, a name or progress token) is
rewritten, and it is serialised again. Building pydantic models for every
forwarded message would cost more than the whole forward, so the SDK's types
are used at the edges (tests, initialize) and plain dicts here.

Responses from SDK servers start with ``{"jsonrpc":"2.0","id":<id>,``; for
those ``splice_id`` swaps the id in the raw bytes without serialising the
(possibly 10 MB) result again. Anything else is re-serialised.
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeGuard

import orjson

JsonObject = dict[str, Any]
RequestId = int | str

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
#: Implementation-defined band (-32000..-32019): a backend did not answer in time.
REQUEST_TIMEOUT: Final = -32001
#: Implementation-defined band: the backend serving the call is unavailable.
BACKEND_UNAVAILABLE: Final = -32003
#: MCP's "resource not found".
RESOURCE_NOT_FOUND: Final = -32002
#: LSP's RequestCancelled: ends the HTTP answer of a request the client cancelled (the
#: 2025 streamable HTTP wire ends a request's stream only with a response; the SDK's
#: server answers the same).
REQUEST_CANCELLED: Final = -32800

#: Protocol revisions negotiated through ``initialize``, oldest first. The same
#: list as ``mcp_types.version.HANDSHAKE_PROTOCOL_VERSIONS`` (a test keeps them
#: equal), kept here because importing the SDK's types costs the router half a
#: second of start-up, which a client launching us over stdio waits for.
HANDSHAKE_PROTOCOL_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_HANDSHAKE_VERSION: Final = HANDSHAKE_PROTOCOL_VERSIONS[-1]

#: Deepest nesting of arrays and objects in a client's message (the message itself is
#: level 1, ``params`` 2, ``arguments`` 3). Real tools nest arguments a few levels;
#: orjson cannot serialise more than 254 levels (a forwarded call is serialised again)
#: and code walking arguments (redaction) recurses, so a deeper message is refused as
#: it is parsed, with a parse error, before anything else sees it.
MAX_DEPTH: Final = 128

loads = orjson.loads


def dumps(obj: Any) -> bytes:
    """Serialise one message (compact, UTF-8, no trailing newline)."""
    return orjson.dumps(obj)


class InvalidMessage(ValueError):
    """Bytes that are not one JSON-RPC message object."""


def parse(
    data: bytes | bytearray | memoryview | str, *, max_depth: int | None = MAX_DEPTH
) -> JsonObject:
    """Parse one message; raises ``InvalidMessage`` for bad JSON, a non-object, or
    arrays and objects nested deeper than ``max_depth`` (None: as deep as orjson reads,
    for a backend's messages, which are forwarded as they came)."""
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if max_depth is not None and "depth limit" in str(exc):
            raise InvalidMessage(_too_deep(max_depth)) from None
        raise InvalidMessage(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise InvalidMessage(f"expected a JSON object, got {type(msg).__name__}")
    if max_depth is not None and _deeper_than(data, msg, max_depth):
        raise InvalidMessage(_too_deep(max_depth))
    return msg


def _too_deep(limit: int) -> str:
    return f"arrays and objects nested deeper than {limit} levels"


def _deeper_than(data: bytes | bytearray | memoryview | str, msg: JsonObject, limit: int) -> bool:
    """Whether ``msg`` (parsed from ``data``) nests containers deeper than ``limit``.

    Fewer opening brackets than the limit cannot nest that deep: the common
    case costs two counts in C. Otherwise the containers are walked level by
    level (no recursion), stopping at the limit.
    """
    raw = data.tobytes() if isinstance(data, memoryview) else data
    if isinstance(raw, str):
        if raw.count("{") + raw.count("[") <= limit:
            return False
    elif raw.count(b"{") + raw.count(b"[") <= limit:
        return False
    level: list[Any] = [msg]
    for _ in range(limit):
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if type(child) in _CONTAINERS
        ]
        if not level:
            return False
    return True


_CONTAINERS: Final = (dict, list)


def valid_id(value: Any) -> TypeGuard[RequestId]:
    """JSON-RPC ids MCP allows: strings and integers (not bools, floats or null)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def request(req_id: RequestId, method: str, params: JsonObject | None = None) -> bytes:
    msg: JsonObject = {"jsonrpc": "2.0", "id": req_id, "method": method}
    if params is not None:
        msg["params"] = params
    return orjson.dumps(msg)


def notification(method: str, params: JsonObject | None = None) -> bytes:
    msg: JsonObject = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return orjson.dumps(msg)


def result(req_id: RequestId | None, value: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": req_id, "result": value})


def error(req_id: RequestId | None, code: int, message: str, *, data: Any = None) -> bytes:
    err: JsonObject = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return orjson.dumps({"jsonrpc": "2.0", "id": req_id, "error": err})


def error_obj(code: int, message: str, *, data: Any = None) -> JsonObject:
    err: JsonObject = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return err


_PREFIX = re.compile(
    rb'\{\s*"jsonrpc"\s*:\s*"2\.0"\s*,\s*"id"\s*:\s*(-?\d{1,18}|"[^"\\]{0,64}")\s*,'
)


def splice_id(raw: bytes, parsed: JsonObject, new_id: RequestId) -> bytes:
    """``raw`` (whose parse is ``parsed``) with its id replaced by ``new_id``.

    Swaps the id in place when the message starts with the canonical prefix
    and the prefix's id is the parsed one (a duplicate ``id`` key would
    differ); otherwise serialises ``parsed`` again.
    """
    m = _PREFIX.match(raw)
    if m is not None:
        token = m.group(1)
        old = parsed.get("id")
        if (token[:1] == b'"' and token[1:-1].decode() == old) or (
            token[:1] != b'"' and isinstance(old, int) and int(token) == old
        ):
            start, end = m.span(1)
            return b"".join((raw[:start], orjson.dumps(new_id), raw[end:]))
    parsed["id"] = new_id
    return orjson.dumps(parsed)


def describe(data: bytes, limit: int = 120) -> str:
    """A short printable excerpt of a message for logs and error reasons."""
    text = bytes(data[:limit]).decode("utf-8", "replace")
    return text + ("..." if len(data) > limit else "")
