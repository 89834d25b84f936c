"""Client messages nested deeper than ``jsonrpc.MAX_DEPTH`` are refused as they are parsed.

orjson reads 1,024 levels but serialises only 254, and a forwarded call is
serialised again; so a message deeper than the limit (128) gets a parse error
at once, on every wire, and never reaches the code that would choke on it.
A backend's messages are parsed without the limit (they are forwarded as
they came); one that cannot be serialised again becomes an error naming the
server (tests/security/test_security_review_info.py runs both for real).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.router import jsonrpc
from mcp_fleet.router.router import Router

TOO_DEEP = f"arrays and objects nested deeper than {jsonrpc.MAX_DEPTH} levels"


def nested(depth: int, *, opener: str = "{") -> bytes:
    """A message ``depth`` levels deep (the message itself is level 1)."""
    inner = depth - 2  # below the message and its params: arguments and what it holds
    if opener == "{":
        value = '{"a":' * inner + "1" + "}" * inner
    else:
        value = '{"a":' + "[" * (inner - 1) + "]" * (inner - 1) + "}"
    text = (
        '{"jsonrpc":"2.0","id":7,"method":"tools/call",'
        f'"params":{{"name":"echo","arguments":{value}}}}}'
    )
    return text.encode()


def depth_of(value: Any) -> int:
    """Levels of arrays and objects in ``value`` (walked without recursion)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            items = node.values() if isinstance(node, dict) else node
            todo.extend((child, depth + 1) for child in items)
    return deepest


@pytest.mark.parametrize("opener", ["{", "["])
def test_the_limit_is_exact(opener: str) -> None:
    ok = nested(jsonrpc.MAX_DEPTH, opener=opener)
    assert depth_of(jsonrpc.parse(ok)) == jsonrpc.MAX_DEPTH
    assert jsonrpc.dumps(jsonrpc.parse(ok))  # what is accepted can be forwarded
    with pytest.raises(jsonrpc.InvalidMessage, match=TOO_DEEP):
        jsonrpc.parse(nested(jsonrpc.MAX_DEPTH + 1, opener=opener))


@pytest.mark.parametrize("depth", [255, 1000, 1024, 1025, 100_000])
def test_deeper_messages_get_the_same_refusal_whatever_orjson_makes_of_them(depth: int) -> None:
    raw = nested(depth)
    with pytest.raises(jsonrpc.InvalidMessage, match=TOO_DEEP):
        jsonrpc.parse(raw)
    with pytest.raises(jsonrpc.InvalidMessage, match=TOO_DEEP):
        jsonrpc.parse(raw.decode())
    with pytest.raises(jsonrpc.InvalidMessage, match=TOO_DEEP):
        jsonrpc.parse(memoryview(raw))


def test_many_brackets_side_by_side_are_not_depth() -> None:
    wide = {"items": [{"k": [1, {"z": []}]} for _ in range(5000)], "text": "[[[[{{{{" * 100}
    raw = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": wide})
    assert jsonrpc.parse(raw)["params"] == wide


def test_a_backend_message_may_be_as_deep_as_orjson_reads() -> None:
    deep = nested(1000)
    assert depth_of(jsonrpc.parse(deep, max_depth=None)) == 1000


def test_the_stdio_wire_answers_a_parse_error_and_goes_on() -> None:
    sent: list[dict[str, Any]] = []

    class Channel:
        def send(self, data: bytes, *, related: Any = None, final: bool = False) -> None:
            sent.append(orjson.loads(data))

    router = Router(EndpointTable())
    router.settled.set()
    session = router.open_session(Channel(), session_id="stdio")
    session.handle(nested(1000))
    session.handle(b'{"jsonrpc":"2.0","id":8,"method":"ping"}')
    assert sent == [
        {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": jsonrpc.PARSE_ERROR, "message": f"Parse error: {TOO_DEEP}"},
        },
        {"jsonrpc": "2.0", "id": 8, "result": {}},
    ]
