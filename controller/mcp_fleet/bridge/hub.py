"""One stdio MCP server shared by many HTTP sessions: the bridge's message hub.

A stdio server has exactly one client: its stdin/stdout. The bridge serves
it to several HTTP sessions at once (each router replica holds one, the
operator's readiness probe opens short ones), so the hub multiplexes at the
JSON-RPC message level, as the router does with its backends:

- client requests get a fresh numeric id on the way in and their own id back
  on the way out, so two sessions' ``id: 1`` never collide; progress tokens
  are rewritten the same way, and ``notifications/cancelled`` follows the
  rewritten id, so cancelling a call still stops it in the server;
- progress goes to the session (and the request stream) that asked for it;
- a request from the server (sampling, elicitation, roots) goes to the
  session with the most recent call in flight, on that call's stream, and
  its answer comes back unchanged;
- other notifications (list_changed, log messages, resource updates) go to
  every session.

Every session gets its own outgoing queue and sender task, so a client that
stops reading cannot stall the others. A session that ends has its calls
still in flight cancelled in the server.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
from anyio.streams.memory import MemoryObjectSendStream
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp_types import JSONRPCNotification, JSONRPCRequest, jsonrpc_message_adapter

from mcp_fleet.transport import MAX_MESSAGE_BYTES, MessageStream, NewlineStream, StreamClosed

log = logging.getLogger("mcp_fleet.bridge")

#: Messages queued for one session before it is considered stuck and dropped.
SESSION_QUEUE = 1024
RequestId = int | str
Deliver = Callable[[SessionMessage], Awaitable[None]]


@dataclass
class Backend:
    """The stdio side: a child process, or FIFOs shared with the server's container."""

    stream: MessageStream
    process: asyncio.subprocess.Process | None = None

    async def wait(self) -> int:
        """The server's exit code (FIFO mode: 1; its container's own status tells more)."""
        if self.process is None:
            return 1
        return await self.process.wait()

    async def aclose(self) -> None:
        await self.stream.aclose()
        proc = self.process
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def spawn(argv: Sequence[str]) -> Backend:
    """Start the server as a child process; its stderr goes to ours (the container log)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=MAX_MESSAGE_BYTES,
    )
    assert proc.stdin is not None and proc.stdout is not None
    return Backend(NewlineStream(proc.stdout, proc.stdin), proc)


def make_fifos(directory: Path) -> tuple[Path, Path]:
    """Create ``in`` (server's stdin) and ``out`` (its stdout) in a pod-private directory."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "in", directory / "out")
    for path in paths:
        if not path.exists():
            os.mkfifo(path, 0o600)
        # The server container may run as another uid of the same pod.
        path.chmod(0o666)
    return paths


async def open_fifos(directory: Path) -> Backend:
    """Wait for the server container to open its ends, then talk through the FIFOs.

    The server's shell opens ``in`` then ``out``; we open them in the same
    order, so neither side can deadlock. Blocking opens run in daemon threads
    (not the default executor) so a shutdown never waits for a server that
    never came.
    """
    fifo_in, fifo_out = make_fifos(directory)
    write_fd = await _open_blocking(fifo_in, os.O_WRONLY)
    read_fd = await _open_blocking(fifo_out, os.O_RDONLY)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_MESSAGE_BYTES)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
    )
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()),
        os.fdopen(write_fd, "wb", buffering=0),
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    return Backend(NewlineStream(reader, writer))


async def _open_blocking(path: Path, flags: int) -> int:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()

    def opener() -> None:
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            loop.call_soon_threadsafe(_settle, done, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, done, fd, None)

    threading.Thread(target=opener, name=f"open-{path.name}", daemon=True).start()
    return await done


def _settle(fut: asyncio.Future[int], fd: int | None, exc: BaseException | None) -> None:
    if fut.cancelled():
        if fd is not None:
            os.close(fd)
    elif exc is not None:
        fut.set_exception(exc)
    else:
        assert fd is not None
        fut.set_result(fd)


@dataclass
class _Session:
    queue: MemoryObjectSendStream[SessionMessage]
    #: Original ids of this session's calls in flight, oldest first.
    in_flight: list[RequestId] = field(default_factory=list)


@dataclass
class _Pending:
    session: str
    original_id: RequestId
    progress_token: Any = None
    #: Ends the caller's HTTP stream when the call is cancelled (servers send no answer then).
    unanswered: Callable[[], Awaitable[None]] | None = None


class Hub:
    """Routes JSON-RPC messages between one backend and many client sessions."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._sessions: dict[str, _Session] = {}
        self._pending: dict[int, _Pending] = {}
        self._by_origin: dict[tuple[str, str], int] = {}
        self._server_requests: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._recent: list[str] = []

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def attach(self, session_id: str, deliver: Deliver, task_group: anyio.abc.TaskGroup) -> None:
        """Register a session; ``deliver`` writes to its HTTP transport from a task of its own."""
        send, receive = anyio.create_memory_object_stream[SessionMessage](SESSION_QUEUE)
        self._sessions[session_id] = _Session(send)
        self._touch(session_id)

        async def sender() -> None:
            async with receive:
                async for message in receive:
                    try:
                        await deliver(message)
                    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                        break

        task_group.start_soon(sender)

    async def detach(self, session_id: str) -> None:
        """Forget a session; its calls still running in the server are cancelled there."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        session.queue.close()
        self._recent = [s for s in self._recent if s != session_id]
        for bridge_id, pending in list(self._pending.items()):
            if pending.session == session_id:
                self._forget(bridge_id)
                await self._to_server(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/cancelled",
                        "params": {"requestId": bridge_id, "reason": "client session ended"},
                    }
                )
        for key, owner in list(self._server_requests.items()):
            if owner == session_id:
                del self._server_requests[key]

    async def from_client(self, session_id: str, incoming: SessionMessage) -> None:
        """One message from a client session, on its way to the server."""
        message = incoming.message
        data = message.model_dump(by_alias=True, exclude_unset=True, mode="json")
        data["jsonrpc"] = "2.0"
        if isinstance(message, JSONRPCRequest):
            bridge_id = next(self._ids)
            pending = _Pending(session_id, message.id)
            if isinstance(incoming.metadata, ServerMessageMetadata):
                pending.unanswered = incoming.metadata.on_request_unanswered
            meta = (data.get("params") or {}).get("_meta")
            if isinstance(meta, dict) and "progressToken" in meta:
                pending.progress_token = meta["progressToken"]
                data["params"]["_meta"] = {**meta, "progressToken": bridge_id}
            self._pending[bridge_id] = pending
            self._by_origin[(session_id, _key(message.id))] = bridge_id
            session = self._sessions.get(session_id)
            if session is not None:
                session.in_flight.append(message.id)
            self._touch(session_id)
            data["id"] = bridge_id
        elif isinstance(message, JSONRPCNotification):
            if message.method == "notifications/cancelled":
                params = dict(data.get("params") or {})
                target = self._by_origin.get((session_id, _key(params.get("requestId"))))
                if target is None:
                    return  # already answered, or never ours
                params["requestId"] = target
                data["params"] = params
                unanswered = self._pending[target].unanswered
                self._forget(target)
                await self._to_server(data)
                if unanswered is not None:
                    await unanswered()
                return
        else:  # an answer to a request the server sent this client
            self._server_requests.pop(_key(data.get("id")), None)
        await self._to_server(data)

    async def pump(self) -> None:
        """Deliver the server's messages until its output ends (then return)."""
        while True:
            try:
                raw = await self.backend.stream.receive()
            except StreamClosed:
                return
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                log.warning("server wrote a line that is not JSON: %r", raw[:120])
                continue
            if not isinstance(data, dict):
                log.warning("server wrote JSON that is not a JSON-RPC message")
                continue
            await self._from_server(data)

    async def _from_server(self, data: dict[str, Any]) -> None:
        if "method" not in data:
            await self._answer(data)
            return
        if "id" in data:
            target = self._route_server_request()
            if target is None:
                log.warning("server request %s with no client session to ask", data.get("method"))
                return
            self._server_requests[_key(data["id"])] = target
            session = self._sessions[target]
            related = session.in_flight[-1] if session.in_flight else None
            await self._deliver(target, data, related)
            return
        params = data.get("params") if isinstance(data.get("params"), dict) else {}
        assert isinstance(params, dict)
        if data["method"] == "notifications/progress":
            pending = self._pending.get(params.get("progressToken"))  # type: ignore[arg-type]
            if pending is not None:
                data["params"] = {**params, "progressToken": pending.progress_token}
                await self._deliver(pending.session, data, pending.original_id)
            return
        if data["method"] == "notifications/cancelled":
            owner = self._server_requests.pop(_key(params.get("requestId")), None)
            if owner is not None:
                await self._deliver(owner, data, None)
            return
        for session_id in list(self._sessions):
            await self._deliver(session_id, data, None)

    async def _answer(self, data: dict[str, Any]) -> None:
        bridge_id = data.get("id")
        pending = self._pending.get(bridge_id) if isinstance(bridge_id, int) else None
        if pending is None:
            return  # the caller's session is gone, or it was our own startup handshake
        self._forget(bridge_id)  # type: ignore[arg-type]
        data["id"] = pending.original_id
        await self._deliver(pending.session, data, None)

    def _forget(self, bridge_id: int) -> None:
        pending = self._pending.pop(bridge_id, None)
        if pending is None:
            return
        self._by_origin.pop((pending.session, _key(pending.original_id)), None)
        session = self._sessions.get(pending.session)
        if session is not None and pending.original_id in session.in_flight:
            session.in_flight.remove(pending.original_id)

    def _route_server_request(self) -> str | None:
        busy = [s for s in reversed(self._recent) if self._sessions[s].in_flight]
        if busy:
            return busy[0]
        return self._recent[-1] if self._recent else None

    def _touch(self, session_id: str) -> None:
        self._recent = [s for s in self._recent if s != session_id] + [session_id]

    async def _deliver(
        self, session_id: str, data: dict[str, Any], related: RequestId | None
    ) -> None:
        session = self._sessions.get(session_id)
        if session is None:
            return
        try:
            message = jsonrpc_message_adapter.validate_python(data, by_name=False)
        except ValueError as exc:
            log.warning("dropping a malformed message from the server: %s", exc)
            return
        metadata = (
            ServerMessageMetadata(related_request_id=related) if related is not None else None
        )
        try:
            session.queue.send_nowait(SessionMessage(message, metadata=metadata))
        except anyio.WouldBlock:
            log.warning("session %s is not reading; dropping it", session_id[:12])
            await self.detach(session_id)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            await self.detach(session_id)

    async def _to_server(self, data: dict[str, Any]) -> None:
        try:
            await self.backend.stream.send(orjson.dumps(data))
        except StreamClosed:
            log.debug("server input closed; dropping %s", data.get("method", "an answer"))


def _key(request_id: object) -> str:
    """Ids compare by type and value (``1`` and ``"1"`` are different requests)."""
    return f"{type(request_id).__name__}:{request_id}"
