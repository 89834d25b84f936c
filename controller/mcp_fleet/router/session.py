"""One client session of the router: the MCP server side a client talks to.

A frontend (stdio, streamable HTTP, legacy SSE) turns bytes from one client
into ``RouterSession.handle`` calls and gives the session a ``ClientChannel``
to answer through. The session answers what the router knows itself
(initialize, ping, the aggregated lists with pagination: ``listing``) and
forwards the rest to the backend that owns the name or URI, rewriting the
name back to the server's own and the request id to the backend's. All it
uses of the router is ``SessionHost``.

Every ``tools/call``, ``prompts/get`` and ``resources/read`` passes the
session's ``admission`` (the gateway's policy, ``_admitted``) once routed,
right before it is forwarded or held for its server to start; a call held
until its name is routed passes it when it is handled again.

``handle`` never awaits: forwarding writes to the backend without waiting, the
reply comes back through ``reply`` from the backend's reader. The few requests
that need a round trip of the router's own (subscriptions, log levels, lists
asked for before the fleet has settled) run as tasks.

A call for a tool, prompt or resource that no attached server offers yet is
held, not failed, while it may still appear: the start-up fleet has not
settled, a table change is not followed yet, or a server is on its first
attach (``Router.may_attach_soon``). It waits, bounded, for that
(``Router.wait_routable``) and is then handled again, failing with "Unknown
tool" only if the name is still unknown. So a client that calls right after
``initialize`` sees the same over HTTP as over stdio (where the start-up
gate also holds ``initialize`` itself). Known names never take this path.

Per-client state lives here: the negotiated protocol version and client
capabilities (which decide who may receive sampling or elicitation
requests), the log level, and what is outstanding each way (``outstanding``):
calls in flight (so ``notifications/cancelled`` reaches the right backend
with the right id), calls held until their server starts or their name is
routed (a task each, cancelled with the call) and server-to-client requests
awaiting this client's answer. When the client goes away (``close``), each
call still in flight is cancelled at its backend with
``notifications/cancelled`` under the backend's id.

A session may carry the gateway's ``Identity`` of its client: messages that
belong to no call of the client (log messages, resource updates, other
notifications, server-to-client requests nobody's call caused) reach it only
from servers its allow-list names (``sees``); without one it sees every
server, as a stdio client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, Protocol

from mcp_fleet.router import jsonrpc
from mcp_fleet.router.backend import BackendError, BackendSession
from mcp_fleet.router.jsonrpc import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    LATEST_HANDSHAKE_VERSION,
    JsonObject,
    RequestId,
)
from mcp_fleet.router.listing import LIST_METHODS, InvalidCursor, list_page
from mcp_fleet.router.outstanding import ClientCalls, Rehandle, ServerRequests
from mcp_fleet.router.table import RoutingTable

if TYPE_CHECKING:
    from mcp_fleet.gateway.identity import Identity

log = logging.getLogger(__name__)

LOG_LEVELS: Final = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)
LOG_RANK: Final = {name: i for i, name in enumerate(LOG_LEVELS)}


class ClientChannel(Protocol):
    """How a session's messages reach its client (implemented by each frontend)."""

    def send(self, data: bytes, *, related: RequestId | None = None, final: bool = False) -> None:
        """Send one message to the client.

        ``related`` is the client request the message belongs to (its
        response, a progress notification, a request the call caused);
        ``final`` marks the response that ends that request.
        """


class SessionHost(Protocol):
    """What a client session needs of the router: the narrow interface between them.

    ``Router`` provides it; a session never reaches further into the router,
    so the two can change apart (and a test can host sessions on a stub).
    """

    @property
    def table(self) -> RoutingTable:
        """The routing table as of now (swapped whole on every change)."""

    @property
    def settled(self) -> asyncio.Event:
        """Set once the start-up fleet has attached (or the settle time ran out)."""

    @property
    def page_size(self) -> int:
        """Items per page of the aggregated lists."""

    def initialize_result(self, protocol_version: str) -> JsonObject:
        """The router's answer to ``initialize``."""

    def backend_for(self, session: RouterSession, server: str) -> BackendSession | None:
        """The backend a call of ``session`` for ``server`` goes to now, if one runs."""

    def starts_on_call(self, server: str) -> bool:
        """Does a call start ``server`` (on-demand or per-client)? Then the call waits."""

    async def wait_backend(self, session: RouterSession, server: str) -> BackendSession:
        """The backend once ``server`` runs for ``session`` (bounded; BackendError)."""

    def may_attach_soon(self) -> bool:
        """May a name nobody offers yet still appear (start-up, a server attaching)?"""

    async def wait_routable(self, known: Callable[[], bool]) -> None:
        """Wait, bounded, until ``known()`` or nothing more can attach."""

    async def wait_settled(self, *, timeout: float | None = None) -> None:
        """Wait, bounded, for ``settled``."""

    async def subscribe(self, session: RouterSession, server: str, uri: str) -> JsonObject: ...

    async def unsubscribe(self, session: RouterSession, server: str, uri: str) -> JsonObject: ...

    async def set_log_level(self, session: RouterSession, level: str) -> JsonObject: ...

    def roots_changed(self, session: RouterSession) -> None: ...

    def session_closed(self, session: RouterSession) -> None: ...


class CallAdmission(Protocol):
    """Decides, at the moment a call is forwarded, whether it may be (the gateway's policy)."""

    def admit_call(
        self, mid: RequestId, method: str, server: str, tool: str | None, msg: JsonObject
    ) -> JsonObject | None:
        """None: forward the call; else the JSON-RPC error object to answer it with."""


class RouterSession:
    """The router as one client sees it."""

    def __init__(
        self, router: SessionHost, channel: ClientChannel, *, session_id: str = ""
    ) -> None:
        self.router = router
        self.channel = channel
        self.session_id = session_id
        self.protocol_version = LATEST_HANDSHAKE_VERSION
        self.client_capabilities: JsonObject = {}
        self.client_info: JsonObject = {}
        self.initialized = False
        self.closed = False
        #: Who the client is (the gateway's); None: allowed every server.
        self.identity: Identity | None = None
        #: Asked before every call is forwarded, held or not (None: every call goes).
        self.admission: CallAdmission | None = None
        #: Minimum level of log messages this client wants (None: all, nothing set).
        self.log_level: str | None = None
        #: Calls in flight at a backend or held before it (``outstanding``).
        self.calls = ClientCalls(self)
        #: Calls forwarded and not answered yet: client id -> (backend, backend id).
        self.inflight = self.calls.inflight
        #: Calls held before they are forwarded: client id -> task.
        self.waiting = self.calls.waiting
        #: Server-to-client requests sent to this client and not answered yet.
        self.outgoing = ServerRequests(self)
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, Callable[[RequestId, JsonObject], None]] = {
            "initialize": self._initialize,
            "ping": self._ping,
            "tools/call": self._call_tool,
            "prompts/get": self._get_prompt,
            "resources/read": self._read_resource,
            "resources/subscribe": self._subscribe,
            "resources/unsubscribe": self._unsubscribe,
            "completion/complete": self._complete,
            "logging/setLevel": self._set_level,
        }
        for method in LIST_METHODS:
            self._handlers[method] = self._list

    # -- input ---------------------------------------------------------------

    def handle(self, raw: bytes) -> None:
        """Process one message from the client."""
        try:
            msg = jsonrpc.parse(raw)
        except jsonrpc.InvalidMessage as exc:
            self.channel.send(jsonrpc.error(None, jsonrpc.PARSE_ERROR, f"Parse error: {exc}"))
            return
        self.handle_message(msg)

    def handle_message(self, msg: JsonObject) -> None:
        """Process one parsed message from the client."""
        method = msg.get("method")
        mid = msg.get("id")
        if method is None:
            self.outgoing.answer(mid, msg)
            return
        if type(method) is not str:
            self._error(
                mid if jsonrpc.valid_id(mid) else None,
                jsonrpc.INVALID_REQUEST,
                "method must be a string",
            )
            return
        if mid is None:
            self._on_notification(method, msg)
            return
        if not jsonrpc.valid_id(mid):
            self._error(None, jsonrpc.INVALID_REQUEST, "id must be a string or an integer")
            return
        params = msg.get("params")
        if params is not None and type(params) is not dict:
            self._error(mid, jsonrpc.INVALID_PARAMS, "params must be an object")
            return
        handler = self._handlers.get(method)
        if handler is None:
            self._error(mid, jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method}")
            return
        if mid in self.calls:
            # Its answer could not be told from the other call's, nor could a cancel. Not
            # sent as the final answer to ``mid``: that is the other call's, and its end
            # (its permit, its audit line) must not be taken by this refusal.
            refusal = jsonrpc.error(
                mid, jsonrpc.INVALID_REQUEST, "duplicate request id: still in flight"
            )
            self.channel.send(refusal)
            return
        try:
            handler(mid, msg)
        except Exception:  # a bug costs this request an error, never the client's session
            log.exception("failed to handle %s from a client", method)
            self._error(mid, jsonrpc.INTERNAL_ERROR, f"Internal error handling {method}")

    # -- output ----------------------------------------------------------------

    def reply(self, client_id: RequestId, data: bytes) -> None:
        """A backend's final response to a forwarded call (``CallSink``)."""
        self.calls.answered(client_id)
        self.channel.send(data, related=client_id, final=True)

    def progress(self, client_id: RequestId, data: bytes) -> None:
        """A backend's progress notification for a forwarded call (``CallSink``)."""
        self.channel.send(data, related=client_id)

    def notify(self, method: str, params: JsonObject | None = None) -> None:
        if not self.closed:
            self.channel.send(jsonrpc.notification(method, params))

    def send_raw(self, msg: JsonObject, *, related: RequestId | None = None) -> None:
        if not self.closed:
            self.channel.send(jsonrpc.dumps(msg), related=related)

    def _result(self, mid: RequestId, value: Any) -> None:
        self.channel.send(jsonrpc.result(mid, value), related=mid, final=True)

    def _error(self, mid: RequestId | None, code: int, message: str, *, data: Any = None) -> None:
        self.channel.send(jsonrpc.error(mid, code, message, data=data), related=mid, final=True)

    def error_response(self, mid: RequestId, error: JsonObject) -> None:
        """Answer ``mid`` with the JSON-RPC error object ``error`` (``CallOwner``)."""
        data = jsonrpc.dumps({"jsonrpc": "2.0", "id": mid, "error": error})
        self.channel.send(data, related=mid, final=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests the router answers ----------------------------------------------

    def _initialize(self, mid: RequestId, msg: JsonObject) -> None:
        params = msg.get("params") or {}
        requested = params.get("protocolVersion")
        self.protocol_version = (
            requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
        )
        caps = params.get("capabilities")
        self.client_capabilities = caps if isinstance(caps, dict) else {}
        info = params.get("clientInfo")
        self.client_info = info if isinstance(info, dict) else {}
        self._result(mid, self.router.initialize_result(self.protocol_version))

    def _ping(self, mid: RequestId, msg: JsonObject) -> None:
        self._result(mid, {})

    def _list(self, mid: RequestId, msg: JsonObject) -> None:
        if self.router.settled.is_set():
            self._answer_list(mid, msg)
        else:
            self._spawn(self._list_when_settled(mid, msg))

    async def _list_when_settled(self, mid: RequestId, msg: JsonObject) -> None:
        await self.router.wait_settled()
        self._answer_list(mid, msg)

    def _answer_list(self, mid: RequestId, msg: JsonObject) -> None:
        cursor = (msg.get("params") or {}).get("cursor")
        try:
            page = list_page(self.router.table, msg["method"], cursor, self.router.page_size)
        except InvalidCursor as exc:
            self._error(mid, jsonrpc.INVALID_PARAMS, str(exc))
            return
        self._result(mid, page)

    # -- requests forwarded to a backend --------------------------------------------

    def _forward(self, server: str, mid: RequestId, msg: JsonObject) -> None:
        """Forward an admitted call to ``server``'s backend for this session; when none runs
        but a call starts one (on demand, per client), hold the call until it runs."""
        backend = self.router.backend_for(self, server)
        if backend is not None:
            self.calls.forward(backend, mid, msg)
        elif self.router.starts_on_call(server):
            started = functools.partial(self.router.wait_backend, self, server)
            self.calls.forward_when_started(mid, msg, started)
        else:
            self._error(
                mid,
                jsonrpc.BACKEND_UNAVAILABLE,
                f"server {server!r} is not connected",
                data={"server": server, "reason": "not connected"},
            )

    def _held_until_routed(
        self, mid: RequestId, msg: JsonObject, known: Callable[[], bool], handler: Rehandle
    ) -> bool:
        """A name nobody offers yet, while it may still appear: hold the call until it is
        routed or nothing more can come (bounded), then handle it again. True when held."""
        if not self.router.may_attach_soon():
            return False
        routed = functools.partial(self.router.wait_routable, known)
        self.calls.handle_when_routed(mid, msg, routed, handler)
        return True

    def _call_tool(self, mid: RequestId, msg: JsonObject, *, held: bool = False) -> None:
        params = msg.get("params") or {}
        name = params.get("name")
        route = self.router.table.tool_routes.get(name) if isinstance(name, str) else None
        if route is None:
            if not held and isinstance(name, str):
                known = lambda: name in self.router.table.tool_routes  # noqa: E731
                if self._held_until_routed(mid, msg, known, self._call_tool):
                    return
            self._error(mid, jsonrpc.INVALID_PARAMS, f"Unknown tool: {name}")
            return
        if not self._admitted(mid, msg, route.server, route.name):
            return
        if route.name != name:
            params["name"] = route.name
        self._forward(route.server, mid, msg)

    def _admitted(self, mid: RequestId, msg: JsonObject, server: str, tool: str | None) -> bool:
        """Ask ``admission`` about a call about to be forwarded; answer a refusal. Every
        call passes here, held or not, so none reaches a server unchecked or unaudited."""
        admission = self.admission
        if admission is None:
            return True
        refusal = admission.admit_call(mid, msg["method"], server, tool, msg)
        if refusal is None:
            return True
        self.error_response(mid, refusal)
        return False

    def _get_prompt(self, mid: RequestId, msg: JsonObject, *, held: bool = False) -> None:
        params = msg.get("params") or {}
        name = params.get("name")
        route = self.router.table.prompt_routes.get(name) if isinstance(name, str) else None
        if route is None:
            if not held and isinstance(name, str):
                known = lambda: name in self.router.table.prompt_routes  # noqa: E731
                if self._held_until_routed(mid, msg, known, self._get_prompt):
                    return
            self._error(mid, jsonrpc.INVALID_PARAMS, f"Unknown prompt: {name}")
            return
        if not self._admitted(mid, msg, route.server, None):
            return
        if route.name != name:
            params["name"] = route.name
        self._forward(route.server, mid, msg)

    def _resource_owner(self, mid: RequestId, uri: Any) -> str | None:
        server = self.router.table.resource_server(uri) if isinstance(uri, str) else None
        if server is None:
            self._error(
                mid, jsonrpc.RESOURCE_NOT_FOUND, f"Resource not found: {uri}", data={"uri": uri}
            )
        return server

    def _read_resource(self, mid: RequestId, msg: JsonObject, *, held: bool = False) -> None:
        uri = (msg.get("params") or {}).get("uri")
        server = self.router.table.resource_server(uri) if isinstance(uri, str) else None
        if server is None:
            if not held and isinstance(uri, str):
                known = lambda: self.router.table.resource_server(uri) is not None  # noqa: E731
                if self._held_until_routed(mid, msg, known, self._read_resource):
                    return
            self._resource_owner(mid, uri)  # answers "Resource not found"
            return
        if self._admitted(mid, msg, server, None):
            self._forward(server, mid, msg)

    def _complete(self, mid: RequestId, msg: JsonObject) -> None:
        params = msg.get("params") or {}
        ref = params.get("ref")
        if not isinstance(ref, dict):
            self._error(mid, jsonrpc.INVALID_PARAMS, "completion/complete needs a ref")
            return
        if ref.get("type") == "ref/prompt":
            name = ref.get("name")
            route = self.router.table.prompt_routes.get(name) if isinstance(name, str) else None
            if route is None:
                self._error(mid, jsonrpc.INVALID_PARAMS, f"Unknown prompt: {name}")
                return
            ref["name"] = route.name
            self._forward(route.server, mid, msg)
            return
        uri = ref.get("uri")
        server = None
        if isinstance(uri, str):
            server = self.router.table.template_owner(uri) or self.router.table.resource_server(uri)
        if server is None:
            self._error(mid, jsonrpc.INVALID_PARAMS, f"Unknown resource template: {uri}")
            return
        self._forward(server, mid, msg)

    def _subscribe(self, mid: RequestId, msg: JsonObject) -> None:
        uri = (msg.get("params") or {}).get("uri")
        server = self._resource_owner(mid, uri)
        if server is not None and isinstance(uri, str):
            self._spawn(self._router_call(mid, self.router.subscribe(self, server, uri)))

    def _unsubscribe(self, mid: RequestId, msg: JsonObject) -> None:
        uri = (msg.get("params") or {}).get("uri")
        server = self._resource_owner(mid, uri)
        if server is not None and isinstance(uri, str):
            self._spawn(self._router_call(mid, self.router.unsubscribe(self, server, uri)))

    def _set_level(self, mid: RequestId, msg: JsonObject) -> None:
        level = (msg.get("params") or {}).get("level")
        if not isinstance(level, str) or level not in LOG_RANK:
            self._error(mid, jsonrpc.INVALID_PARAMS, f"Invalid log level: {level!r}")
            return
        self._spawn(self._router_call(mid, self.router.set_log_level(self, level)))

    async def _router_call(self, mid: RequestId, work: Coroutine[Any, Any, JsonObject]) -> None:
        try:
            result = await work
        except BackendError as exc:
            self.error_response(mid, exc.to_error())
            return
        self._result(mid, result)

    # -- notifications and responses from the client ---------------------------------

    def _on_notification(self, method: str, msg: JsonObject) -> None:
        params = msg.get("params")
        if method == "notifications/initialized":
            self.initialized = True
        elif method == "notifications/cancelled":
            rid = params.get("requestId") if isinstance(params, dict) else None
            if jsonrpc.valid_id(rid):
                reason = params.get("reason") if isinstance(params, dict) else None
                self.calls.cancel(rid, reason if isinstance(reason, str) else None)
        elif method == "notifications/roots/list_changed":
            self.router.roots_changed(self)
        elif method == "notifications/progress":
            self.outgoing.progress(params)

    # -- server-to-client traffic -----------------------------------------------------

    def wants_log(self, level: Any) -> bool:
        if self.log_level is None:
            return True
        rank = LOG_RANK.get(level, len(LOG_LEVELS)) if isinstance(level, str) else len(LOG_LEVELS)
        return rank >= LOG_RANK[self.log_level]

    def sees(self, server: str) -> bool:
        """May messages of ``server`` that belong to no call of this client reach it?"""
        identity = self.identity
        return identity is None or identity.sees(server)

    def has_capability(self, name: str | None) -> bool:
        return name is None or name in self.client_capabilities

    def forward_server_request(
        self, backend: BackendSession, msg: JsonObject, *, related: RequestId | None
    ) -> None:
        """Send the backend's request ``msg`` to this client under an id of ours."""
        self.outgoing.add(backend, msg, related)
        self.send_raw(msg, related=related)

    def cancel_outgoing(self, rid: int, reason: Any) -> None:
        """The backend gave up on a request it sent to this client."""
        if not self.outgoing.drop(rid):
            return
        params: JsonObject = {"requestId": rid}
        if isinstance(reason, str):
            params["reason"] = reason
        self.notify("notifications/cancelled", params)

    # -- end ----------------------------------------------------------------------------

    def close(self) -> None:
        """The client went away: stop its calls, answer what servers asked it, drop its state."""
        if self.closed:
            return
        self.closed = True
        self.calls.close()
        self.outgoing.close()
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            self.router.session_closed(self)
