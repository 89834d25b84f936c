"""One multiplexed MCP session to one backend server.

A stdio server has exactly one client: the router holds one session per
backend and every client session's calls go through it. This module owns that
session: our own ``initialize`` (declaring sampling, elicitation and roots so
server-to-client requests can be forwarded), request-id rewriting (each
forwarded request gets a fresh backend id; the reply is spliced back to the
client's id), progress tokens (rewritten to the backend id, so tokens of two
clients never clash), per-call deadlines, and failure: when the stream ends,
every pending call gets an error naming the server and the reason.

The hot path is callback-driven: ``forward`` writes without awaiting and the
reply is handed to the caller's ``CallSink`` from the reader loop, so a call
costs no task and no future. Internal calls (listing, subscribing) use
``call``, which awaits a future. Deadlines are checked by one sweeper per
backend instead of a timer per call. The same sweeper keeps
``last_activity`` current while calls are in flight, so the idle clock of an
on-demand server costs the hot path nothing beyond the time stamp ``forward``
takes for the deadline anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol

from mcp_fleet import conventions
from mcp_fleet.router import jsonrpc
from mcp_fleet.router.jsonrpc import JsonObject, RequestId
from mcp_fleet.transport import MessageStream, MessageTooLarge, StreamClosed

log = logging.getLogger(__name__)

#: Bytes buffered towards a backend that stopped reading before calls are refused.
MAX_BACKLOG_BYTES: Final = 64 * 1024 * 1024
#: Where a session's request ids start, drawn at random below this: within the
#: integers every JSON parser keeps exact (2**53), with room to count up.
_ID_SPACE: Final = 1 << 48

#: What the router declares to every backend: it can forward these to clients.
ROUTER_CLIENT_CAPABILITIES: Final[JsonObject] = {
    "sampling": {},
    "elicitation": {"form": {}, "url": {}},
    "roots": {"listChanged": True},
}


class BackendError(Exception):
    """A call to a backend failed: carries a JSON-RPC error object naming the server."""

    def __init__(self, server: str, code: int, message: str, *, data: Any = None) -> None:
        super().__init__(message)
        self.server = server
        self.code = code
        self.message = message
        self.data = data

    def to_error(self) -> JsonObject:
        return jsonrpc.error_obj(self.code, self.message, data=self.data)


class CallSink(Protocol):
    """Where the replies of forwarded calls go (a client session)."""

    def reply(self, client_id: RequestId, data: bytes) -> None:
        """The final response, already carrying ``client_id``."""

    def progress(self, client_id: RequestId, data: bytes) -> None:
        """A progress notification for the call ``client_id``, token already mapped back."""


class BackendListener(Protocol):
    """What the router does with messages that are not replies to a call."""

    def backend_notification(self, backend: BackendSession, method: str, msg: JsonObject) -> None:
        """A notification from the backend (log, list_changed, resource updated...)."""

    def backend_request(self, backend: BackendSession, msg: JsonObject) -> None:
        """A server-to-client request (sampling, elicitation, roots) to route to a client."""

    def backend_closed(self, backend: BackendSession, reason: str) -> None:
        """The backend's stream ended; pending calls have already been failed."""


@dataclass(slots=True)
class _Pending:
    method: str
    deadline: float
    sink: CallSink | None = None
    client_id: RequestId | None = None
    future: asyncio.Future[JsonObject] | None = None
    progress_token: Any = None


class BackendSession:
    """The router's one MCP client session to the server ``name``."""

    def __init__(
        self,
        name: str,
        stream: MessageStream,
        listener: BackendListener,
        *,
        instance_id: str = "",
        call_timeout: float = conventions.DEFAULT_CALL_TIMEOUT_SECONDS,
        client_version: str = "0",
        close_stream: bool = True,
    ) -> None:
        self.name = name
        self.instance_id = instance_id
        self.call_timeout = call_timeout
        #: ``time.monotonic()`` of the last forwarded call, or of the last sweep that
        #: found calls in flight: what the idle rule of on-demand servers reads.
        self.last_activity = time.monotonic()
        self._stream = stream
        self._listener = listener
        self._client_version = client_version
        self._close_stream = close_stream
        self._pending: dict[int, _Pending] = {}
        # Ids start at a random point: a second router attached to the same stdio
        # container (Docker hands its stdout to every attach) or the controller's
        # probe must never take this session's answers for its own.
        self._next_id = secrets.randbelow(_ID_SPACE)
        self._closed = False
        self.close_reason = ""
        self._reader: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._outbox: deque[bytes] = deque()
        self._outbox_bytes = 0
        self._outbox_event = asyncio.Event()
        send_nowait = getattr(stream, "send_nowait", None)
        self._send_nowait = send_nowait if callable(send_nowait) else None
        self.garbage = 0
        self.initialize_result: JsonObject = {}
        #: server-to-client requests in flight:
        #: backend's id -> (client session, id at the client, client call it was given to)
        self.server_requests: dict[RequestId, tuple[Any, RequestId, RequestId | None]] = {}

    # -- lifecycle ---------------------------------------------------------

    async def start(self, *, timeout: float = conventions.DEFAULT_PROBE_TIMEOUT_SECONDS) -> None:
        """Run the reader and do the initialize handshake; raises ``BackendError``."""
        self._reader = asyncio.create_task(self._read_loop(), name=f"backend-read:{self.name}")
        if self._send_nowait is None:
            self._writer = asyncio.create_task(
                self._write_loop(), name=f"backend-write:{self.name}"
            )
        self._sweeper = asyncio.create_task(self._sweep_loop(), name=f"backend-sweep:{self.name}")
        params: JsonObject = {
            "protocolVersion": jsonrpc.LATEST_HANDSHAKE_VERSION,
            "capabilities": ROUTER_CLIENT_CAPABILITIES,
            "clientInfo": {"name": conventions.CLIENT_INFO_NAME, "version": self._client_version},
        }
        result = await self.call("initialize", params, timeout=timeout)
        if not isinstance(result.get("capabilities"), dict):
            raise BackendError(
                self.name, jsonrpc.INVALID_REQUEST, f"server {self.name!r}: bad initialize result"
            )
        self.initialize_result = result
        self.notify("notifications/initialized")

    @property
    def capabilities(self) -> JsonObject:
        caps = self.initialize_result.get("capabilities")
        return caps if isinstance(caps, dict) else {}

    @property
    def instructions(self) -> str | None:
        text = self.initialize_result.get("instructions")
        return text if isinstance(text, str) else None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def pending_calls(self) -> Iterator[tuple[int, CallSink | None, RequestId | None]]:
        """In-flight calls, oldest first: (backend id, sink, client id)."""
        for bid, p in list(self._pending.items()):
            yield bid, p.sink, p.client_id

    async def aclose(self, reason: str = "detached") -> None:
        """Fail pending calls with ``reason``, stop the tasks and close the stream.

        A stream handed out by the process runtime (``close_stream=False``) is
        left open: closing a child's stdin would end the server, and the
        controller, not the router, decides when a server ends.
        """
        self._fail_all(reason)
        for task in (self._reader, self._sweeper, self._writer):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        for task in (self._reader, self._sweeper, self._writer):
            if task is not None and task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._close_stream:
            with contextlib.suppress(Exception):
                await self._stream.aclose()

    # -- sending -----------------------------------------------------------

    def _post(self, data: bytes) -> None:
        """Write one message without waiting; raises ``BackendError`` when we cannot."""
        if self._closed:
            raise self._unavailable(self.close_reason or "not connected")
        if self._send_nowait is not None:
            try:
                buffered = self._send_nowait(data)
            except StreamClosed as exc:
                raise self._unavailable(str(exc) or "stream closed") from None
            if buffered > MAX_BACKLOG_BYTES:
                raise self._unavailable("server is not reading its input")
            return
        if self._outbox_bytes > MAX_BACKLOG_BYTES:
            raise self._unavailable("server is not reading its input")
        self._outbox.append(data)
        self._outbox_bytes += len(data)
        self._outbox_event.set()

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._outbox_event.wait()
                self._outbox_event.clear()
                while self._outbox:
                    data = self._outbox.popleft()
                    self._outbox_bytes -= len(data)
                    await self._stream.send(data)
        except StreamClosed as exc:
            self._fail_all(f"connection lost: {exc}")
            self._listener.backend_closed(self, self.close_reason)

    def _unavailable(self, reason: str) -> BackendError:
        return BackendError(
            self.name,
            jsonrpc.BACKEND_UNAVAILABLE,
            f"server {self.name!r} is unavailable: {reason}",
            data={"server": self.name, "reason": reason},
        )

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def forward(self, sink: CallSink, client_id: RequestId, msg: JsonObject) -> int:
        """Send the client request ``msg`` (mutated: id and progress token) on behalf of ``sink``.

        The reply reaches ``sink.reply`` with ``client_id``. Returns the
        backend id (for cancellation); raises ``BackendError`` when the
        backend cannot take the call.
        """
        bid = self._new_id()
        msg["id"] = bid
        token = None
        params = msg.get("params")
        if params is not None and type(params) is dict:
            meta = params.get("_meta")
            if meta is not None and type(meta) is dict and "progressToken" in meta:
                token = meta["progressToken"]
                meta["progressToken"] = bid
        self._post(jsonrpc.dumps(msg))
        now = self.last_activity = time.monotonic()
        self._pending[bid] = _Pending(
            msg["method"],
            now + self.call_timeout,
            sink=sink,
            client_id=client_id,
            progress_token=token,
        )
        return bid

    async def call(
        self, method: str, params: JsonObject | None = None, *, timeout: float | None = None
    ) -> JsonObject:
        """A request of the router's own; returns the result or raises ``BackendError``."""
        bid = self._new_id()
        fut: asyncio.Future[JsonObject] = asyncio.get_running_loop().create_future()
        self._post(jsonrpc.request(bid, method, params))
        deadline = time.monotonic() + (timeout if timeout is not None else self.call_timeout)
        self._pending[bid] = _Pending(method, deadline, future=fut)
        try:
            return await fut
        finally:
            self._pending.pop(bid, None)

    def notify(self, method: str, params: JsonObject | None = None) -> None:
        """Send a notification; silently dropped when the backend is gone."""
        with contextlib.suppress(BackendError):
            self._post(jsonrpc.notification(method, params))

    def cancel(self, bid: int, reason: str | None = None) -> None:
        """Forget call ``bid`` (its reply will be dropped) and tell the backend to stop it."""
        if self._pending.pop(bid, None) is None:
            return
        params: JsonObject = {"requestId": bid}
        if reason:
            params["reason"] = reason
        self.notify("notifications/cancelled", params)

    def respond(self, backend_request_id: RequestId, msg: JsonObject) -> None:
        """Send a client's response to the server-to-client request ``backend_request_id``."""
        self.server_requests.pop(backend_request_id, None)
        msg["id"] = backend_request_id
        with contextlib.suppress(BackendError):
            self._post(jsonrpc.dumps(msg))

    def respond_error(self, backend_request_id: RequestId, code: int, message: str) -> None:
        self.server_requests.pop(backend_request_id, None)
        with contextlib.suppress(BackendError):
            self._post(jsonrpc.error(backend_request_id, code, message))

    # -- receiving ---------------------------------------------------------

    async def _read_loop(self) -> None:
        reason = "connection closed"
        try:
            while True:
                try:
                    raw = await self._stream.receive()
                except MessageTooLarge as exc:
                    self._garbage(str(exc))
                    continue
                try:
                    self._dispatch(raw)
                except Exception:  # a bug must not kill the session
                    log.exception(
                        "server %s: failed to handle %s", self.name, jsonrpc.describe(raw)
                    )
        except StreamClosed as exc:
            reason = str(exc) or reason
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if not self._closed:
            self._fail_all(f"connection lost: {reason}")
            self._listener.backend_closed(self, self.close_reason)

    def _garbage(self, what: str) -> None:
        self.garbage += 1
        if self.garbage <= 10 or self.garbage % 1000 == 0:
            log.warning(
                "server %s sent an invalid message (#%d): %s", self.name, self.garbage, what
            )

    def _dispatch(self, raw: bytes) -> None:
        try:
            msg = jsonrpc.parse(raw, max_depth=None)  # forwarded as it came
        except jsonrpc.InvalidMessage as exc:
            self._garbage(f"{exc}: {jsonrpc.describe(raw)}")
            return
        method = msg.get("method")
        mid = msg.get("id")
        if method is None:
            self._on_response(raw, msg, mid)
        elif type(method) is not str:
            self._garbage(f"method is not a string: {jsonrpc.describe(raw)}")
        elif mid is None:
            self._on_notification(method, msg)
        elif method == "ping":
            with contextlib.suppress(BackendError):
                self._post(jsonrpc.result(mid, {}))
        else:
            self._listener.backend_request(self, msg)

    def _on_response(self, raw: bytes, msg: JsonObject, mid: Any) -> None:
        p = self._pending.pop(mid, None) if type(mid) is int else None
        if p is None:
            if mid is None and "error" in msg:
                self._garbage(f"error without id: {jsonrpc.describe(raw)}")
            return  # a reply to a call that was cancelled or timed out
        res = msg.get("result")
        ok = type(res) is dict
        if not ok and not (type(msg.get("error")) is dict and "result" not in msg):
            self._garbage(f"invalid response: {jsonrpc.describe(raw)}")
            err = self._invalid_response()
            if p.sink is not None and p.client_id is not None:
                p.sink.reply(
                    p.client_id, jsonrpc.dumps({"jsonrpc": "2.0", "id": p.client_id, "error": err})
                )
            elif p.future is not None and not p.future.done():
                p.future.set_exception(
                    BackendError(self.name, err["code"], err["message"], data=err.get("data"))
                )
            return
        if p.sink is not None and p.client_id is not None:
            try:
                answer = jsonrpc.splice_id(raw, msg, p.client_id)
            except TypeError:  # orjson serialises at most 254 levels of nesting
                self._garbage(f"response nested too deep to forward: {jsonrpc.describe(raw)}")
                answer = jsonrpc.dumps(
                    {"jsonrpc": "2.0", "id": p.client_id, "error": self._invalid_response()}
                )
            p.sink.reply(p.client_id, answer)
        elif p.future is not None and not p.future.done():
            if type(res) is dict:
                p.future.set_result(res)
            else:
                e = msg["error"]
                p.future.set_exception(
                    BackendError(
                        self.name,
                        e.get("code", jsonrpc.INTERNAL_ERROR),
                        str(e.get("message", "")),
                        data=e.get("data"),
                    )
                )

    def _invalid_response(self) -> JsonObject:
        return jsonrpc.error_obj(
            jsonrpc.INTERNAL_ERROR,
            f"server {self.name!r} sent an invalid response",
            data={"server": self.name, "reason": "invalid response"},
        )

    def _on_notification(self, method: str, msg: JsonObject) -> None:
        if method == "notifications/progress":
            params = msg.get("params")
            token = params.get("progressToken") if type(params) is dict else None
            p = self._pending.get(token) if type(token) is int else None
            if p is not None and p.sink is not None and p.client_id is not None:
                assert isinstance(params, dict)
                params["progressToken"] = p.progress_token
                try:
                    data = jsonrpc.dumps(msg)
                except TypeError:  # nested deeper than orjson serialises: not forwarded
                    self._garbage("a progress notification nested too deep to forward")
                    return
                p.sink.progress(p.client_id, data)
            return
        self._listener.backend_notification(self, method, msg)

    # -- deadlines and failure -------------------------------------------

    async def _sweep_loop(self) -> None:
        interval = min(1.0, max(0.02, self.call_timeout / 10))
        while True:
            await asyncio.sleep(interval)
            if not self._pending:
                continue
            now = self.last_activity = time.monotonic()
            expired = [bid for bid, p in self._pending.items() if p.deadline <= now]
            for bid in expired:
                p = self._pending.pop(bid, None)
                if p is None:
                    continue
                reason = (
                    f"server {self.name!r} did not answer {p.method} within {self.call_timeout:g} s"
                )
                self._finish_error(p, jsonrpc.REQUEST_TIMEOUT, reason, "timeout")
                if p.sink is not None:
                    self.notify("notifications/cancelled", {"requestId": bid, "reason": "timeout"})

    def _finish_error(self, p: _Pending, code: int, message: str, reason: str) -> None:
        data = {"server": self.name, "reason": reason}
        if p.sink is not None and p.client_id is not None:
            p.sink.reply(p.client_id, jsonrpc.error(p.client_id, code, message, data=data))
        elif p.future is not None and not p.future.done():
            p.future.set_exception(BackendError(self.name, code, message, data=data))

    def _fail_all(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason
        pending, self._pending = self._pending, {}
        message = f"server {self.name!r} failed: {reason}"
        for p in pending.values():
            self._finish_error(p, jsonrpc.BACKEND_UNAVAILABLE, message, reason)
        self.server_requests.clear()
