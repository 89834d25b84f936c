"""The bridge's hub: many client sessions multiplexed onto one stdio server.

Driven directly with an in-memory server side (the test plays the server:
it reads what the hub sends and answers), so every routing rule is checked
message by message: id rewriting both ways, progress to the asking session
on its request's stream, cancellation following the rewritten id, broadcast
notifications, server requests to the session with a call in flight, and a
session that ends cancelling its calls in the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import orjson
import pytest
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp_fleet.bridge.hub import Backend, Hub
from mcp_fleet.transport import StreamClosed
from mcp_types import jsonrpc_message_adapter

pytestmark = pytest.mark.timeout(20)


class MemoryStream:
    """The server's stdio, in memory: ``sent`` is its stdin, ``reply`` writes its stdout."""

    def __init__(self) -> None:
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def send(self, message: bytes) -> None:
        await self.sent.put(orjson.loads(message))

    async def receive(self) -> bytes:
        item = await self._out.get()
        if item is None:
            raise StreamClosed("end of stream")
        return item

    async def aclose(self) -> None:
        await self._out.put(None)

    def reply(self, message: dict[str, Any] | bytes) -> None:
        self._out.put_nowait(message if isinstance(message, bytes) else orjson.dumps(message))

    async def next_sent(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.sent.get(), 5)


class Client:
    """One session's receiving end: what the HTTP transport would have been handed."""

    def __init__(self) -> None:
        self.got: asyncio.Queue[SessionMessage] = asyncio.Queue()

    async def deliver(self, message: SessionMessage) -> None:
        await self.got.put(message)

    async def next(self) -> tuple[dict[str, Any], Any]:
        msg = await asyncio.wait_for(self.got.get(), 5)
        data = msg.message.model_dump(by_alias=True, exclude_unset=True, mode="json")
        related = (
            msg.metadata.related_request_id
            if isinstance(msg.metadata, ServerMessageMetadata)
            else None
        )
        return data, related


def incoming(data: dict[str, Any], **meta: Any) -> SessionMessage:
    message = jsonrpc_message_adapter.validate_python({"jsonrpc": "2.0", **data}, by_name=False)
    return SessionMessage(message, metadata=ServerMessageMetadata(**meta) if meta else None)


@asynccontextmanager
async def rig() -> AsyncIterator[tuple[Hub, MemoryStream, Client, Client]]:
    """A hub with sessions A and B and its pump running (task groups stay in one task)."""
    stream = MemoryStream()
    hub = Hub(Backend(stream))
    a, b = Client(), Client()
    async with anyio.create_task_group() as tg:
        hub.attach("A", a.deliver, tg)
        hub.attach("B", b.deliver, tg)
        tg.start_soon(hub.pump)
        yield hub, stream, a, b
        tg.cancel_scope.cancel()


async def test_same_ids_from_two_sessions_never_collide() -> None:
    async with rig() as (hub, server, a, b):
        await hub.from_client("A", incoming({"id": 1, "method": "tools/list"}))
        await hub.from_client("B", incoming({"id": 1, "method": "tools/list"}))
        first, second = await server.next_sent(), await server.next_sent()
        assert first["id"] != second["id"]
        server.reply({"jsonrpc": "2.0", "id": second["id"], "result": {"tools": [], "who": "B"}})
        server.reply({"jsonrpc": "2.0", "id": first["id"], "result": {"tools": [], "who": "A"}})
        (got_b, _), (got_a, _) = await b.next(), await a.next()
        assert (got_a["id"], got_a["result"]["who"]) == (1, "A")
        assert (got_b["id"], got_b["result"]["who"]) == (1, "B")


async def test_progress_goes_to_the_asking_session_on_its_request_stream() -> None:
    async with rig() as (hub, server, a, b):
        call = {
            "id": "c-7",
            "method": "tools/call",
            "params": {"name": "slow", "_meta": {"progressToken": 5}},
        }
        await hub.from_client("B", incoming(call))
        sent = await server.next_sent()
        token = sent["params"]["_meta"]["progressToken"]
        assert sent["params"]["name"] == "slow"
        server.reply(
            {
                "jsonrpc": "2.0",
                "method": "notifications/progress",
                "params": {"progressToken": token, "progress": 1},
            }
        )
        progress, related = await b.next()
        assert progress["params"] == {"progressToken": 5, "progress": 1} and related == "c-7"
        assert a.got.empty()


async def test_cancellation_follows_the_rewritten_id_and_ends_the_stream() -> None:
    async with rig() as (hub, server, a, _):
        ended: list[bool] = []

        async def unanswered() -> None:
            ended.append(True)

        await hub.from_client(
            "A",
            incoming(
                {"id": 3, "method": "tools/call", "params": {"name": "x"}},
                on_request_unanswered=unanswered,
            ),
        )
        sent = await server.next_sent()
        await hub.from_client(
            "A",
            incoming(
                {"method": "notifications/cancelled", "params": {"requestId": 3, "reason": "user"}}
            ),
        )
        cancel = await server.next_sent()
        assert cancel["method"] == "notifications/cancelled"
        assert cancel["params"] == {"requestId": sent["id"], "reason": "user"}
        assert ended == [True]
        # A late answer to the cancelled call reaches nobody.
        server.reply({"jsonrpc": "2.0", "id": sent["id"], "result": {}})
        await asyncio.sleep(0.05)
        assert a.got.empty()
        # Cancelling something unknown is not forwarded.
        await hub.from_client(
            "A", incoming({"method": "notifications/cancelled", "params": {"requestId": 99}})
        )
        await asyncio.sleep(0.05)
        assert server.sent.empty()


async def test_server_notifications_go_to_every_session() -> None:
    async with rig() as (_, server, a, b):
        server.reply({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        for client in (a, b):
            data, related = await client.next()
            assert data["method"] == "notifications/tools/list_changed" and related is None


async def test_server_requests_go_to_the_session_with_a_call_in_flight() -> None:
    async with rig() as (hub, server, a, b):
        await hub.from_client("A", incoming({"id": 1, "method": "ping"}))
        ping = await server.next_sent()
        server.reply({"jsonrpc": "2.0", "id": ping["id"], "result": {}})
        await a.next()
        await hub.from_client(
            "B", incoming({"id": 9, "method": "tools/call", "params": {"name": "ask"}})
        )
        await server.next_sent()
        sampling = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "sampling/createMessage",
            "params": {"messages": [], "maxTokens": 5},
        }
        server.reply(sampling)
        data, related = await b.next()
        assert data["method"] == "sampling/createMessage" and related == 9
        answer = {
            "id": 0,
            "result": {
                "role": "assistant",
                "content": {"type": "text", "text": "hi"},
                "model": "m",
            },
        }
        await hub.from_client("B", incoming(answer))
        assert (await server.next_sent())["id"] == 0  # answered under the server's own id
        assert a.got.empty()


async def test_a_session_that_ends_has_its_calls_cancelled() -> None:
    async with rig() as (hub, server, _, _):
        await hub.from_client(
            "A", incoming({"id": 4, "method": "tools/call", "params": {"name": "long"}})
        )
        sent = await server.next_sent()
        await hub.detach("A")
        cancel = await server.next_sent()
        assert cancel == {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": sent["id"], "reason": "client session ended"},
        }
        assert hub.session_count == 1


async def test_garbage_from_the_server_is_skipped() -> None:
    async with rig() as (_, server, a, _):
        server.reply(b"this is not json")
        server.reply(b"[1, 2, 3]")
        server.reply(
            {
                "jsonrpc": "2.0",
                "method": "notifications/message",
                "params": {"level": "info", "data": "still here"},
            }
        )
        data, _ = await a.next()
        assert data["params"]["data"] == "still here"
