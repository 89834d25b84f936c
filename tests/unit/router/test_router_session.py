"""What the router answers itself: initialize, discovery, pagination, bad input."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.router import jsonrpc
from mcp_fleet.router.router import Router
from mcp_fleet.router.table import ServerLists, build_table


class Channel:
    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, Any], Any, bool]] = []

    def send(self, data: bytes, *, related: Any = None, final: bool = False) -> None:
        self.sent.append((orjson.loads(data), related, final))

    def last(self) -> dict[str, Any]:
        return self.sent[-1][0]


@pytest.fixture
def router() -> Router:
    r = Router(EndpointTable(), page_size=3)
    r.table = build_table([ServerLists("s", tools=tuple({"name": f"t{i}"} for i in range(7)))])
    r.settled.set()
    return r


def request(mid: Any, method: str, params: dict[str, Any] | None = None) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": mid, "method": method}
    if params is not None:
        msg["params"] = params
    return orjson.dumps(msg)


@pytest.mark.parametrize(
    ("asked", "agreed"), [("2025-03-26", "2025-03-26"), ("1999-01-01", "2025-11-25")]
)
async def test_initialize_negotiates_a_version(router: Router, asked: str, agreed: str) -> None:
    channel = Channel()
    session = router.open_session(channel)
    session.handle(
        request(
            1,
            "initialize",
            {
                "protocolVersion": asked,
                "capabilities": {"sampling": {}},
                "clientInfo": {"name": "c", "version": "1"},
            },
        )
    )
    result = channel.last()["result"]
    assert result["protocolVersion"] == agreed
    assert result["capabilities"]["tools"] == {"listChanged": True}
    assert result["serverInfo"]["name"] == "mcp-fleet"
    assert channel.sent[-1][1:] == (1, True)
    assert session.has_capability("sampling") and not session.has_capability("elicitation")


async def test_discover_is_refused_so_clients_fall_back_to_initialize(router: Router) -> None:
    channel = Channel()
    router.open_session(channel).handle(request(1, "server/discover", {}))
    assert channel.last()["error"]["code"] == jsonrpc.METHOD_NOT_FOUND


async def test_lists_are_paginated_with_opaque_cursors(router: Router) -> None:
    channel = Channel()
    session = router.open_session(channel)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        session.handle(request(pages, "tools/list", {"cursor": cursor} if cursor else None))
        result = channel.last()["result"]
        seen += [t["name"] for t in result["tools"]]
        pages += 1
        cursor = result.get("nextCursor")
        if cursor is None:
            break
    assert seen == [f"t{i}" for i in range(7)] and pages == 3
    for rid, bad in enumerate(["garbage", "mcp-fleet:-3", "mcp-fleet: 3", "mcp-fleet:1_0"], 9):
        session.handle(request(rid, "tools/list", {"cursor": bad}))
        assert channel.last()["error"]["code"] == jsonrpc.INVALID_PARAMS, bad


async def test_calls_to_unknown_or_absent_servers_fail_cleanly(router: Router) -> None:
    channel = Channel()
    session = router.open_session(channel)
    session.handle(request(1, "tools/call", {"name": "nope", "arguments": {}}))
    assert channel.last()["error"] == {
        "code": jsonrpc.INVALID_PARAMS,
        "message": "Unknown tool: nope",
    }
    session.handle(request(2, "tools/call", {"name": "t1", "arguments": {}}))
    err = channel.last()["error"]
    assert err["code"] == jsonrpc.BACKEND_UNAVAILABLE and err["data"] == {
        "server": "s",
        "reason": "not connected",
    }
    session.handle(request(3, "resources/read", {"uri": "x://y"}))
    assert channel.last()["error"]["code"] == jsonrpc.RESOURCE_NOT_FOUND


async def test_malformed_messages_get_json_rpc_errors(router: Router) -> None:
    channel = Channel()
    session = router.open_session(channel)
    session.handle(b"{not json")
    assert channel.last()["error"]["code"] == jsonrpc.PARSE_ERROR and channel.last()["id"] is None
    session.handle(request(1.5, "ping"))
    assert channel.last()["error"]["code"] == jsonrpc.INVALID_REQUEST
    session.handle(request(2, "no/such/method"))
    assert channel.last()["error"]["code"] == jsonrpc.METHOD_NOT_FOUND
    session.handle(orjson.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": [1]}))
    assert channel.last()["error"]["code"] == jsonrpc.INVALID_PARAMS
    session.handle(request(4, "logging/setLevel", {"level": "loud"}))
    assert channel.last()["error"]["code"] == jsonrpc.INVALID_PARAMS
    count = len(channel.sent)
    session.handle(orjson.dumps({"jsonrpc": "2.0", "method": "notifications/whatever"}))
    session.handle(orjson.dumps({"jsonrpc": "2.0", "id": 99, "result": {}}))
    assert len(channel.sent) == count
    session.handle(request(5, "ping"))
    assert channel.last() == {"jsonrpc": "2.0", "id": 5, "result": {}}
