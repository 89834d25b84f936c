"""One backend session: id rewriting, progress tokens, garbage, timeouts and crashes.

The test plays the server over an in-memory message stream, so every odd
thing a real server might do (garbage, a bad response, silence, dying) can
be done on cue.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from mcp_fleet.router import jsonrpc
from mcp_fleet.router.backend import BackendError, BackendSession
from mcp_fleet.transport import NewlineStream, StreamClosed

_EOF = b""


class MemoryStream:
    """The router's end of an in-memory connection; the test holds the other end."""

    def __init__(self) -> None:
        self.to_server: asyncio.Queue[bytes] = asyncio.Queue()
        self.to_router: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed = False

    async def send(self, message: bytes) -> None:
        if self.closed:
            raise StreamClosed("closed")
        self.to_server.put_nowait(message)

    async def receive(self) -> bytes:
        data = await self.to_router.get()
        if data == _EOF:
            raise StreamClosed("end of stream")
        return data

    async def aclose(self) -> None:
        self.closed = True

    # the server's side
    async def next(self) -> dict[str, Any]:
        return orjson.loads(await asyncio.wait_for(self.to_server.get(), 5))

    def write(self, msg: dict[str, Any] | bytes) -> None:
        self.to_router.put_nowait(msg if isinstance(msg, bytes) else orjson.dumps(msg))


class Listener:
    def __init__(self) -> None:
        self.notifications: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[dict[str, Any]] = []
        self.closed: list[str] = []

    def backend_notification(self, backend: Any, method: str, msg: dict[str, Any]) -> None:
        self.notifications.append((method, msg))

    def backend_request(self, backend: Any, msg: dict[str, Any]) -> None:
        self.requests.append(msg)

    def backend_closed(self, backend: Any, reason: str) -> None:
        self.closed.append(reason)


class Sink:
    def __init__(self) -> None:
        self.replies: asyncio.Queue[tuple[Any, dict[str, Any]]] = asyncio.Queue()
        self.progressed: list[tuple[Any, dict[str, Any]]] = []

    def reply(self, client_id: Any, data: bytes) -> None:
        self.replies.put_nowait((client_id, orjson.loads(data)))

    def progress(self, client_id: Any, data: bytes) -> None:
        self.progressed.append((client_id, orjson.loads(data)))

    async def next(self) -> tuple[Any, dict[str, Any]]:
        return await asyncio.wait_for(self.replies.get(), 5)


async def started(*, call_timeout: float = 30.0) -> tuple[BackendSession, MemoryStream, Listener]:
    stream, listener = MemoryStream(), Listener()
    backend = BackendSession("srv", stream, listener, call_timeout=call_timeout)
    start = asyncio.create_task(backend.start(timeout=5))
    init = await stream.next()
    assert init["method"] == "initialize"
    assert set(init["params"]["capabilities"]) == {"sampling", "elicitation", "roots"}
    stream.write(
        {
            "jsonrpc": "2.0",
            "id": init["id"],
            "result": {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "s", "version": "1"},
            },
        }
    )
    await start
    assert (await stream.next())["method"] == "notifications/initialized"
    return backend, stream, listener


def call(client_id: Any, name: str = "t", *, token: Any = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": {}}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    return {"jsonrpc": "2.0", "id": client_id, "method": "tools/call", "params": params}


async def test_ids_and_progress_tokens_are_rewritten_per_call_and_restored() -> None:
    backend, stream, _ = await started()
    one, two = Sink(), Sink()
    backend.forward(one, 1, call(1, token="tok"))
    backend.forward(two, 1, call(1, token="tok"))
    first, second = await stream.next(), await stream.next()
    assert first["id"] != second["id"]
    assert first["params"]["_meta"]["progressToken"] == first["id"]
    stream.write(
        {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": second["id"], "progress": 1},
        }
    )
    stream.write({"jsonrpc": "2.0", "id": second["id"], "result": {"content": [], "n": 2}})
    stream.write({"jsonrpc": "2.0", "id": first["id"], "result": {"content": [], "n": 1}})
    assert await two.next() == (1, {"jsonrpc": "2.0", "id": 1, "result": {"content": [], "n": 2}})
    assert await one.next() == (1, {"jsonrpc": "2.0", "id": 1, "result": {"content": [], "n": 1}})
    assert two.progressed == [
        (
            1,
            {
                "jsonrpc": "2.0",
                "method": "notifications/progress",
                "params": {"progressToken": "tok", "progress": 1},
            },
        )
    ]
    assert one.progressed == []
    await backend.aclose()


async def test_garbage_is_skipped_and_the_session_goes_on() -> None:
    backend, stream, listener = await started()
    sink = Sink()
    backend.forward(sink, "a", call("a"))
    sent = await stream.next()
    stream.write(b"this is not json")
    stream.write(b"[1, 2, 3]")
    stream.write({"jsonrpc": "2.0", "id": 424242, "result": {}})
    stream.write(
        {
            "jsonrpc": "2.0",
            "method": "notifications/message",
            "params": {"level": "info", "data": "x"},
        }
    )
    stream.write({"jsonrpc": "2.0", "id": sent["id"], "result": {"ok": True}})
    assert (await sink.next())[1]["result"] == {"ok": True}
    assert backend.garbage == 2
    assert listener.notifications[0][0] == "notifications/message"
    await backend.aclose()


async def test_an_invalid_response_becomes_an_error_naming_the_server() -> None:
    backend, stream, _ = await started()
    sink = Sink()
    backend.forward(sink, 9, call(9))
    sent = await stream.next()
    stream.write({"jsonrpc": "2.0", "id": sent["id"], "result": [1, 2]})
    client_id, reply = await sink.next()
    assert client_id == 9 and reply["id"] == 9
    assert "'srv'" in reply["error"]["message"] and reply["error"]["data"]["server"] == "srv"
    await backend.aclose()


async def test_a_call_past_its_deadline_fails_and_is_cancelled_at_the_server() -> None:
    backend, stream, _ = await started(call_timeout=0.1)
    sink = Sink()
    backend.forward(sink, "slow", call("slow"))
    sent = await stream.next()
    client_id, reply = await sink.next()
    assert client_id == "slow"
    assert reply["error"]["code"] == jsonrpc.REQUEST_TIMEOUT
    assert "'srv' did not answer tools/call" in reply["error"]["message"]
    cancel = await stream.next()
    assert cancel["method"] == "notifications/cancelled"
    assert cancel["params"]["requestId"] == sent["id"]
    stream.write({"jsonrpc": "2.0", "id": sent["id"], "result": {}})  # too late: dropped
    await asyncio.sleep(0.05)
    assert sink.replies.empty()
    await backend.aclose()


async def test_a_crash_fails_every_pending_call_with_the_reason() -> None:
    backend, stream, listener = await started()
    sinks = [Sink() for _ in range(3)]
    for i, sink in enumerate(sinks):
        backend.forward(sink, i, call(i))
    internal = asyncio.create_task(backend.call("tools/list"))
    await asyncio.sleep(0.01)
    stream.write(_EOF)
    for i, sink in enumerate(sinks):
        client_id, reply = await sink.next()
        assert client_id == i
        assert reply["error"]["code"] == jsonrpc.BACKEND_UNAVAILABLE
        assert reply["error"]["message"] == "server 'srv' failed: connection lost: end of stream"
    with pytest.raises(BackendError, match="srv"):
        await internal
    assert listener.closed == ["connection lost: end of stream"]
    with pytest.raises(BackendError, match="unavailable"):
        backend.forward(Sink(), 5, call(5))
    await backend.aclose()


async def test_cancel_forgets_the_call_and_tells_the_server() -> None:
    backend, stream, _ = await started()
    sink = Sink()
    bid = backend.forward(sink, 3, call(3))
    await stream.next()
    backend.cancel(bid, "user pressed stop")
    assert await stream.next() == {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": bid, "reason": "user pressed stop"},
    }
    assert backend.pending_count == 0
    await backend.aclose()


async def test_server_requests_and_pings_are_handled() -> None:
    backend, stream, listener = await started()
    stream.write({"jsonrpc": "2.0", "id": "p1", "method": "ping"})
    assert await stream.next() == {"jsonrpc": "2.0", "id": "p1", "result": {}}
    stream.write({"jsonrpc": "2.0", "id": 77, "method": "sampling/createMessage", "params": {}})
    await asyncio.sleep(0.02)
    assert listener.requests[0]["id"] == 77
    backend.respond(77, {"jsonrpc": "2.0", "id": "ignored", "result": {"ok": 1}})
    assert await stream.next() == {"jsonrpc": "2.0", "id": 77, "result": {"ok": 1}}
    await backend.aclose()


class _NullWriter:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


async def test_an_oversized_line_is_skipped_with_bounded_memory() -> None:
    reader = asyncio.StreamReader(limit=1024)
    stream = NewlineStream(reader, _NullWriter())  # type: ignore[arg-type]
    reader.feed_data(b"x" * 5000 + b"\n" + b'{"jsonrpc":"2.0","method":"after"}\n')
    with pytest.raises(StreamClosed, match="exceeds the stream limit"):
        await stream.receive()
    assert await stream.receive() == b'{"jsonrpc":"2.0","method":"after"}'
    reader.feed_eof()
    with pytest.raises(StreamClosed):
        await stream.receive()
