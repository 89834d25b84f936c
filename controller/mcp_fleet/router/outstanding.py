"""What one client session has outstanding, each way.

A ``RouterSession`` decides where a call goes (and whether it may go at
all: its admission); ``ClientCalls`` keeps track of it from then on:

- **In flight** (``inflight``): forwarded to a backend, by the client's id,
  with the backend and the backend's id, so that ``notifications/cancelled``
  reaches the right backend with the right id and the session's end cancels
  every call still running.
- **Held** (``waiting``): a call that waits before it is forwarded, as a task
  a cancel of the call cancels: for its server to start (a cold on-demand
  server, or the session's first call of a per-client one), or for its name
  to be routed (the start-up fleet has not settled, a server is on its first
  attach). A call held for its name is handled again once routed, so it
  passes the session's admission then, as every call does before it is
  forwarded.

The other way, ``ServerRequests`` keeps the server-to-client requests
(sampling, elicitation, roots) sent to the client under ids of the session's
own, until the client answers them, a server gives up on one, or the session
ends (then each is answered with an error).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from mcp_fleet.router import jsonrpc
from mcp_fleet.router.backend import BackendError, BackendSession, CallSink
from mcp_fleet.router.jsonrpc import JsonObject, RequestId

log = logging.getLogger(__name__)

#: Handles a request again once it is routed: (client id, message, held=True).
Rehandle = Callable[..., None]


class CallOwner(CallSink, Protocol):
    """What ``ClientCalls`` needs of its session (``RouterSession`` provides it)."""

    @property
    def closed(self) -> bool:
        """Has the client gone away? Then nothing held is forwarded any more."""

    def error_response(self, mid: RequestId, error: JsonObject) -> None:
        """Answer the call ``mid`` with the JSON-RPC error object ``error`` (its final answer)."""


class ClientCalls:
    """One session's calls in flight at a backend or held before it (module docstring)."""

    def __init__(self, owner: CallOwner) -> None:
        self.owner = owner
        #: Calls forwarded and not answered yet: client id -> (backend, backend id).
        self.inflight: dict[RequestId, tuple[BackendSession, int]] = {}
        #: Calls held before they are forwarded: client id -> task.
        self.waiting: dict[RequestId, asyncio.Task[None]] = {}
        self._held: set[asyncio.Task[None]] = set()

    def __contains__(self, mid: object) -> bool:
        """Is a call with this id in flight or held (a new one may not reuse it)?"""
        return mid in self.inflight or mid in self.waiting

    def forward(self, backend: BackendSession, mid: RequestId, msg: JsonObject) -> None:
        """Forward the call to ``backend`` now (a refusal of the backend answers it)."""
        try:
            bid = backend.forward(self.owner, mid, msg)
        except BackendError as exc:
            self.owner.error_response(mid, exc.to_error())
            return
        self.inflight[mid] = (backend, bid)

    def answered(self, mid: RequestId) -> None:
        self.inflight.pop(mid, None)

    def forward_when_started(
        self, mid: RequestId, msg: JsonObject, started: Callable[[], Awaitable[BackendSession]]
    ) -> None:
        """Hold the call until its backend runs (``started()``), then forward it; a start
        that fails answers it with the error."""

        async def wait_then_forward() -> None:
            try:
                backend = await started()
            except BackendError as exc:
                self.owner.error_response(mid, exc.to_error())
                return
            if not self.owner.closed:
                self.forward(backend, mid, msg)

        self._hold(mid, wait_then_forward())

    def handle_when_routed(
        self,
        mid: RequestId,
        msg: JsonObject,
        routed: Callable[[], Awaitable[None]],
        handler: Rehandle,
    ) -> None:
        """Hold the call until ``routed()`` (its name is known, or nothing more can come),
        then handle it again with ``held=True``: routed, admitted and forwarded, or
        failed as unknown."""

        async def when_routed() -> None:
            await routed()
            if self.owner.closed:
                return
            try:
                handler(mid, msg, held=True)
            except Exception:  # as in ``handle_message``: the request fails, not the session
                log.exception("failed to handle %s from a client", msg.get("method"))
                text = f"Internal error handling {msg['method']}"
                self.owner.error_response(mid, jsonrpc.error_obj(jsonrpc.INTERNAL_ERROR, text))

        self._hold(mid, when_routed())

    def _hold(self, mid: RequestId, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` for the call ``mid`` as a task a cancel of the call cancels."""
        task = asyncio.get_running_loop().create_task(work)
        self._held.add(task)
        self.waiting[mid] = task

        def done(t: asyncio.Task[None]) -> None:
            self._held.discard(t)
            if self.waiting.get(mid) is t:
                del self.waiting[mid]

        task.add_done_callback(done)

    def cancel(self, rid: RequestId, reason: str | None) -> None:
        """The client cancelled the call ``rid``: a held one never reaches its server, one
        in flight is cancelled at its backend under the backend's id."""
        entry = self.inflight.pop(rid, None)
        held = self.waiting.pop(rid, None)
        if held is not None:
            held.cancel()  # still waiting for its server: it never reaches it
        if entry is not None:
            backend, bid = entry
            backend.cancel(bid, reason)

    def close(self) -> None:
        """The client went away: cancel every call in flight at its backend, and every held one."""
        for backend, bid in self.inflight.values():
            backend.cancel(bid, "client disconnected")
        self.inflight.clear()
        for task in self._held:
            task.cancel()


class ServerRequests:
    """Server-to-client requests sent to one client and not answered yet (module docstring)."""

    def __init__(self, owner: object) -> None:
        #: The session, as backends record it (``BackendSession.server_requests``).
        self.owner = owner
        #: Our id -> (backend, the backend's id).
        self.pending: dict[int, tuple[BackendSession, RequestId]] = {}
        self._next = 0

    def add(self, backend: BackendSession, msg: JsonObject, related: RequestId | None) -> None:
        """Give the backend's request ``msg`` an id of ours (in place) and remember whose
        it is; ``related`` is the client call it was given to."""
        self._next += 1
        rid = self._next
        backend_id = msg["id"]
        self.pending[rid] = (backend, backend_id)
        backend.server_requests[backend_id] = (self.owner, rid, related)
        msg["id"] = rid

    def drop(self, rid: int) -> bool:
        """Forget ``rid`` (its server gave up on it); False when it was not pending."""
        return self.pending.pop(rid, None) is not None

    def answer(self, mid: Any, msg: JsonObject) -> None:
        """The client's response ``msg`` to our request ``mid``: pass it to its server."""
        entry = self.pending.pop(mid, None) if type(mid) is int else None
        if entry is None:
            return
        backend, backend_id = entry
        if "result" not in msg and not isinstance(msg.get("error"), dict):
            backend.respond_error(
                backend_id, jsonrpc.INTERNAL_ERROR, "client sent an invalid response"
            )
            return
        backend.respond(backend_id, msg)

    def progress(self, params: Any) -> None:
        """Progress the client reports on a server-to-client request (token passed as is)."""
        if not isinstance(params, dict):
            return
        for backend, _ in {id(b): (b, r) for b, r in self.pending.values()}.values():
            backend.notify("notifications/progress", params)

    def close(self) -> None:
        """The client went away: answer every pending request with an error."""
        for backend, backend_id in self.pending.values():
            backend.respond_error(backend_id, jsonrpc.INTERNAL_ERROR, "client disconnected")
        self.pending.clear()
