"""Per-call policy at the router's edge: allow-lists, limits, metrics and audit per client session.

The gateway (``mcp_fleet.gateway``) decides who an HTTP request comes from;
this module applies what that identity may do to the MCP messages of one
client session, beside the session rather than inside it, so the session's
dispatch stays as it is and a frontend without a gateway pays nothing:

- A ``tools/call``, ``prompts/get`` or ``resources/read`` is admitted by
  the session itself, at the one place it has resolved where the call goes
  and is about to forward it (``RouterSession.admission``, answered by
  ``admit_call``): the route the guard sees is the route the call takes,
  whether the call is forwarded at once or was held while its server was
  starting, restarting or being replaced. ``CallGuard.begin`` then decides;
  a refusal (outside the allow-list: answered as an unknown name would be,
  see ``unknown_error``; over a limit: -32029) is answered and the call
  never reaches a server; an admitted call's ticket
  (its permit, audit line and metrics) is kept under its request id.
  Admitting before the session had resolved the route let a call for a
  server not routable yet slip past the allow-list and the audit once it
  was held and forwarded later. ``admit`` (before the session handles a
  message) only notes the size, identity and headers of the request, so a
  held call is judged as the request that brought it.
- When the session's final answer to that id goes out, ``reply`` finishes
  the ticket with the outcome read from the answer (the session never sends
  a refusal of a duplicate request id as a final answer, so a duplicate
  cannot finish, and so release, the permit of the call it duplicates): ok, a tool error
  (``isError``), or a JSON-RPC error (the router's timeout and unavailable
  codes have outcomes of their own). A ``notifications/cancelled`` from the
  client finishes it as cancelled, and so does the end of the session.
- An identity that may not use every server gets the lists (tools,
  prompts, resources, templates) with only what it may use, filtered page by
  page (a page may come out shorter; its cursor stays valid), and its
  completions and subscriptions for other servers are refused; the
  ``initialize`` answer carries only its servers' instructions.

It sits on every message, so it is cheap: one dict lookup for a message it
does not care about; for a reply, two substring searches unless the reply
carries an error, which is then parsed to tell which.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import orjson

from mcp_fleet.gateway.identity import FORBIDDEN, Identity
from mcp_fleet.router import jsonrpc
from mcp_fleet.router.jsonrpc import JsonObject, RequestId
from mcp_fleet.router.table import Kind, RoutingTable

if TYPE_CHECKING:
    from mcp_fleet.gateway.guard import CallGuard, CallTicket
    from mcp_fleet.router.backend import BackendSession
    from mcp_fleet.router.session import ClientChannel


class PolicyHost(Protocol):
    """What the policy reads of the router: where names go, and who is attached."""

    @property
    def table(self) -> RoutingTable: ...

    def backends(self) -> list[BackendSession]: ...


#: Methods that are calls: audited, counted, limited.
_CALLS: Final = frozenset({"tools/call", "prompts/get", "resources/read"})
_LISTS: Final[dict[str, Kind]] = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}
#: Requests about one server that are not calls: only the allow-list applies.
_SCOPED: Final = frozenset({"completion/complete", "resources/subscribe", "resources/unsubscribe"})
#: How most tool results end (the SDKs write ``isError`` last): ok without looking further.
_OK_RESULT_END: Final = b'"isError":false}}'
_OK: Final = ("ok", None)


def _tool_error(data: bytes) -> bool:
    """Does the answer say ``"isError": true``? (The last such key: a result's own comes
    after its content; a key inside text content is escaped, so it never matches.)"""
    at = data.rfind(b'"isError"')
    return at >= 0 and data[at + 9 : at + 24].lstrip(b" \t\r\n:").startswith(b"true")


def reply_outcome(data: bytes) -> tuple[str, str | None]:
    """``(outcome, error message)`` of a final answer, parsing it only when it is not ok."""
    if data.endswith(_OK_RESULT_END) or (b'"error"' not in data and not _tool_error(data)):
        return _OK
    from mcp_fleet.gateway.guard import outcome_of  # only here: keeps metrics off the import path

    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "error", "unreadable answer"
    if not isinstance(msg, dict):
        return "error", "unreadable answer"
    outcome = str(outcome_of(msg))
    error = msg.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    return outcome, message if isinstance(message, str) else None


def unknown_error(method: str, params: Any) -> JsonObject:
    """What the session answers for a name nobody offers, for a call it may not make.

    A call outside an identity's allow-list is refused (and audited as
    forbidden) with the answer an unknown name gets, so a restricted token
    cannot learn which tools, prompts and resources other servers have: it
    is never shown them either.
    """
    params = params if type(params) is dict else {}
    if method == "tools/call":
        return {"code": jsonrpc.INVALID_PARAMS, "message": f"Unknown tool: {params.get('name')}"}
    if method == "prompts/get":
        return {"code": jsonrpc.INVALID_PARAMS, "message": f"Unknown prompt: {params.get('name')}"}
    if method == "completion/complete":
        ref = params.get("ref")
        ref = ref if type(ref) is dict else {}
        if ref.get("type") == "ref/prompt":
            return {"code": jsonrpc.INVALID_PARAMS, "message": f"Unknown prompt: {ref.get('name')}"}
        uri = ref.get("uri")
        return {"code": jsonrpc.INVALID_PARAMS, "message": f"Unknown resource template: {uri}"}
    uri = params.get("uri")
    return {
        "code": jsonrpc.RESOURCE_NOT_FOUND, "message": f"Resource not found: {uri}",
        "data": {"uri": uri},
    }  # fmt: skip


def _server_of(table: RoutingTable, method: str, params: JsonObject) -> str | None:
    """The server a completion or (un)subscription is about."""
    if method == "completion/complete":
        ref = params.get("ref")
        if not isinstance(ref, dict):
            return None
        if ref.get("type") == "ref/prompt":
            name = ref.get("name")
            route = table.prompt_routes.get(name) if isinstance(name, str) else None
            return route.server if route is not None else None
        uri = ref.get("uri")
        if not isinstance(uri, str):
            return None
        return table.template_owner(uri) or table.resource_server(uri)
    uri = params.get("uri")
    return table.resource_server(uri) if isinstance(uri, str) else None


class CallPolicy:
    """The guard applied to one client session (see the module docstring)."""

    __slots__ = (
        "everything", "guard", "headers", "identity", "lists", "pending", "router", "session_id",
        "tickets",
    )  # fmt: skip

    def __init__(
        self,
        guard: CallGuard,
        router: PolicyHost,
        *,
        session_id: str | None,
        identity: Identity | None = None,
    ) -> None:
        self.guard = guard
        self.router = router
        self.session_id = session_id
        self.identity: Identity | None = None
        #: The HTTP headers of the request being handled (its trace context, when tracing).
        self.headers: Mapping[str, str] | None = None
        self.everything = True
        self.tickets: dict[RequestId, CallTicket] = {}
        #: Calls seen by ``admit`` and not admitted (nor answered) yet: request id ->
        #: (request bytes, identity, headers) of the request that brought the call.
        self.pending: dict[RequestId, tuple[int, Identity | None, Mapping[str, str] | None]] = {}
        #: Lists (and ``initialize``) asked for by a restricted identity, by id: their
        #: answers are filtered on the way out.
        self.lists: dict[RequestId, Kind | Literal["initialize"]] = {}
        self.use(identity)

    def use(self, identity: Identity | None, headers: Mapping[str, str] | None = None) -> None:
        """The identity (and headers) of the request being handled (HTTP: each brings its own)."""
        self.headers = headers
        if identity is not self.identity:
            self.identity = identity
            self.everything = identity is None or identity.allow.everything

    # -- client to router --------------------------------------------------------------

    def admit(self, msg: JsonObject, size: int, channel: ClientChannel) -> bool:
        """Check one client message before the session handles it.

        False: it was refused and answered through ``channel``; do not pass it on.
        """
        method = msg.get("method")
        if type(method) is not str or method not in _CALLS:  # {} or [] would not hash
            if method == "notifications/cancelled":
                self._cancelled(msg.get("params"))
            elif not self.everything and type(method) is str:
                mid = msg.get("id")
                if jsonrpc.valid_id(mid):
                    kind = _LISTS.get(method)
                    if kind is not None:
                        self.lists[mid] = kind
                    elif method == "initialize":
                        self.lists[mid] = "initialize"
                    elif method in _SCOPED:
                        return self._scoped(method, mid, msg.get("params"), channel)
            return True
        mid = msg.get("id")
        if jsonrpc.valid_id(mid):
            self.pending[mid] = (size, self.identity, self.headers)
        return True

    def admit_call(
        self, mid: RequestId, method: str, server: str, tool: str | None, msg: JsonObject
    ) -> JsonObject | None:
        """The session is about to forward call ``mid`` to ``server`` (``tool``: the
        server's own name): admit it (None) or return the JSON-RPC error to answer with.

        The request's size, identity and headers are those ``admit`` noted when it
        arrived: a call held a while is judged (and audited) as the request it was.
        """
        noted = self.pending.pop(mid, None)
        size, identity, headers = noted if noted is not None else (0, self.identity, self.headers)
        params = msg.get("params")
        arguments = params.get("arguments") if type(params) is dict else None
        ticket = self.guard.begin(
            identity,
            self.session_id,
            server,
            tool,
            method=method,
            request_bytes=size,
            arguments=arguments if type(arguments) is dict else None,
            message=msg,
            headers=headers,
        )
        if isinstance(ticket, dict):
            return unknown_error(method, params) if ticket.get("code") == FORBIDDEN else ticket
        previous = self.tickets.get(mid)
        if previous is not None:  # a reused id whose answer never went out
            previous.finish(outcome="error", error="request id reused while in flight")
        self.tickets[mid] = ticket
        return None

    def _scoped(self, method: str, mid: RequestId, params: Any, channel: ClientChannel) -> bool:
        if type(params) is not dict or self.identity is None:
            return True
        server = _server_of(self.router.table, method, params)
        if server is None or self.identity.allows(server, None):
            return True
        err = unknown_error(method, params)
        channel.send(
            jsonrpc.dumps({"jsonrpc": "2.0", "id": mid, "error": err}), related=mid, final=True
        )
        return False

    def _cancelled(self, params: Any) -> None:
        rid = params.get("requestId") if type(params) is dict else None
        if not jsonrpc.valid_id(rid):
            return
        self.pending.pop(rid, None)  # a call cancelled while held is never admitted
        ticket = self.tickets.pop(rid, None)
        if ticket is not None:
            ticket.finish(outcome="cancelled", error="cancelled by the client")

    # -- router to client ----------------------------------------------------------------

    def reply(self, related: RequestId, data: bytes) -> bytes:
        """The session's final answer to request ``related``; returns what to send."""
        if self.pending:
            self.pending.pop(related, None)  # answered without being admitted (unknown name)
        if self.tickets:
            ticket = self.tickets.pop(related, None)
            if ticket is not None:
                outcome, error = reply_outcome(data)
                ticket.finish(outcome=outcome, response_bytes=len(data), error=error, reply=data)
                return data
        if self.lists:
            kind = self.lists.pop(related, None)
            if kind is not None:
                return self._filtered(kind, data)
        return data

    def _filtered(self, kind: Kind | Literal["initialize"], data: bytes) -> bytes:
        identity = self.identity
        if identity is None:
            return data
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
        result = msg.get("result") if isinstance(msg, dict) else None
        if not isinstance(result, dict):
            return data
        if kind == "initialize":
            return self._initialized(identity, msg, result)
        items = result.get(kind)
        if not isinstance(items, list):
            return data
        table = self.router.table
        kept = [i for i in items if isinstance(i, dict) and _visible(table, identity, kind, i)]
        if len(kept) == len(items):
            return data
        result[kind] = kept
        return orjson.dumps(msg)

    def _initialized(self, identity: Identity, msg: JsonObject, result: JsonObject) -> bytes:
        """The ``initialize`` answer with only the instructions of servers ``identity`` sees."""
        texts = [
            f"{b.name}: {b.instructions}"
            for b in sorted(self.router.backends(), key=lambda b: b.name)
            if b.instructions and identity.sees(b.name)
        ]
        if texts:
            result["instructions"] = "\n\n".join(texts)
        else:
            result.pop("instructions", None)
        return orjson.dumps(msg)

    def close(self) -> None:
        """The session ended: its calls still open end as cancelled."""
        tickets, self.tickets = self.tickets, {}
        for ticket in tickets.values():
            ticket.finish(outcome="cancelled", error="session closed")
        self.lists.clear()
        self.pending.clear()


def _visible(table: RoutingTable, identity: Identity, kind: Kind, item: JsonObject) -> bool:
    """May ``identity`` use this advertised item? (Unknown items are hidden.)"""
    if kind == "tools" or kind == "prompts":
        name = item.get("name")
        routes = table.tool_routes if kind == "tools" else table.prompt_routes
        route = routes.get(name) if isinstance(name, str) else None
        if route is None:
            return False
        return identity.allows(route.server, route.name if kind == "tools" else None)
    if kind == "resources":
        uri = item.get("uri")
        server = table.resource_routes.get(uri) if isinstance(uri, str) else None
        return server is not None and identity.allows(server, None)
    text = item.get("uriTemplate")
    owner = table.template_owner(text) if isinstance(text, str) else None
    return owner is not None and identity.allows(owner, None)


class GuardedChannel:
    """A ``ClientChannel`` that passes final answers through a ``CallPolicy`` (stdio)."""

    __slots__ = ("inner", "policy")

    def __init__(self, inner: ClientChannel, policy: CallPolicy) -> None:
        self.inner = inner
        self.policy = policy

    def send(self, data: bytes, *, related: RequestId | None = None, final: bool = False) -> None:
        if final and related is not None:
            data = self.policy.reply(related, data)
        self.inner.send(data, related=related, final=final)
