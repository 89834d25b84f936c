"""Server messages that belong to no call reach only the sessions allowed to see their server.

Three client sessions share one router: one without an identity (stdio:
sees everything), one whose token is limited to server ``x``, one allowed a
single tool of ``y``. Backend sessions for ``x`` and ``y`` (real
``BackendSession`` objects over a stream that records what the router
writes) hand the router log messages, resource updates, other notifications
and a sampling request, as their readers would.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.gateway.identity import AllowList, Identity
from mcp_fleet.router.backend import BackendSession
from mcp_fleet.router.router import Router
from mcp_fleet.router.session import RouterSession


class Channel:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, data: bytes, *, related: Any = None, final: bool = False) -> None:
        self.sent.append(orjson.loads(data))


class Wire:
    """The backend's stream: records what the router sends it."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_nowait(self, data: bytes) -> int:
        self.sent.append(orjson.loads(data))
        return 0

    async def send(self, data: bytes) -> None:
        self.send_nowait(data)

    async def receive(self) -> bytes:
        raise AssertionError("not read in these tests")

    async def aclose(self) -> None:
        pass


def identity(name: str, *patterns: str) -> Identity:
    return Identity(name=name, kind="token", allow=AllowList.parse(patterns))


@pytest.fixture
def router() -> Router:
    return Router(EndpointTable())


def session(router: Router, who: Identity | None, *, sampling: bool = False) -> RouterSession:
    s = router.open_session(Channel())
    s.identity = who
    s.initialized = True
    s.client_capabilities = {"sampling": {}} if sampling else {}
    return s


def heard(s: RouterSession) -> list[dict[str, Any]]:
    channel = s.channel
    assert isinstance(channel, Channel)
    return channel.sent


def backend(router: Router, name: str) -> tuple[BackendSession, Wire]:
    wire = Wire()
    return BackendSession(name, wire, router), wire


def log(text: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "method": "notifications/message",
        "params": {"level": "info", "data": text},
    }


async def test_log_messages_and_other_notifications_respect_the_allow_list(router: Router) -> None:
    everyone = session(router, None)
    only_x = session(router, identity("xonly", "x"))
    one_tool_of_y = session(router, identity("ytool", "y:t"))
    bx, _ = backend(router, "x")
    by, _ = backend(router, "y")
    router.backend_notification(bx, "notifications/message", log("from x"))
    router.backend_notification(by, "notifications/message", log("from y"))
    custom = {"jsonrpc": "2.0", "method": "notifications/custom", "params": {}}
    router.backend_notification(by, "notifications/custom", custom)
    texts = {
        s: [m.get("params", {}).get("data", m["method"]) for m in heard(s)]
        for s in (everyone, only_x, one_tool_of_y)
    }
    assert texts[everyone] == ["from x", "from y", "notifications/custom"]
    assert texts[only_x] == ["from x"]
    assert texts[one_tool_of_y] == ["from y", "notifications/custom"]


async def test_resource_updates_skip_a_holder_no_longer_allowed_the_server(router: Router) -> None:
    everyone = session(router, None)
    only_x = session(router, identity("xonly", "x"))
    by, _ = backend(router, "y")
    router._subscriptions[("y", "y://doc")] = {everyone, only_x}
    updated = {
        "jsonrpc": "2.0",
        "method": "notifications/resources/updated",
        "params": {"uri": "y://doc"},
    }
    router.backend_notification(by, "notifications/resources/updated", updated)
    assert [m["params"]["uri"] for m in heard(everyone)] == ["y://doc"]
    assert heard(only_x) == []


async def test_a_server_request_nobody_caused_never_goes_to_a_session_that_cannot_see_it(
    router: Router,
) -> None:
    only_x = session(router, identity("xonly", "x"), sampling=True)
    by, wire = backend(router, "y")
    ask = {"jsonrpc": "2.0", "id": 5, "method": "sampling/createMessage", "params": {}}
    router.backend_request(by, ask)
    assert heard(only_x) == []
    assert wire.sent[-1]["id"] == 5 and "sampling" in wire.sent[-1]["error"]["message"]
    sees_y = session(router, identity("ytool", "y:t"), sampling=True)
    router.backend_request(by, dict(ask, id=6))
    assert [m["method"] for m in heard(sees_y)] == ["sampling/createMessage"]
    assert heard(only_x) == []
