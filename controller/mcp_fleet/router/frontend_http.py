"""The HTTP frontend: streamable HTTP on ``/mcp`` and legacy SSE on ``/sse`` + ``/messages``.

Built on ``http_server`` (httptools parsing, answers written from callbacks)
rather than an ASGI framework: every forwarded call is one POST, and
bench/router_bench.py measured uvicorn's per-request work at about half of
the router's CPU per call. Here a POST is parsed, handed to the client's
``RouterSession``, and its answer written by whichever callback produces it
(the backend's reader, for a forwarded call): no task per request.

Streamable HTTP (MCP 2025-03-26 and later): ``initialize`` creates a session
and returns its ``Mcp-Session-Id``; each later POST carries that header.
Every session is its own ``RouterSession`` with its own state, so many
clients share the router without seeing each other's calls, logs or
server-to-client requests. A POST carrying a request is answered lazily: if
the first thing that comes back for it is its response, the answer is plain
``application/json``; if a progress notification or a server-to-client
request comes first, the answer becomes an SSE stream that carries those and
ends with the response. A GET opens the session's standalone SSE stream for
messages that belong to no request (list changes, log messages, resource
updates); without one, such messages ride on a request stream still open,
or wait (bounded) for the next GET.

With a ``SessionSigner`` (``session_token``), a session id is a signed
token carrying what the session needs from its ``initialize``; an id this
replica does not know but another replica signed restores the session here,
so several router replicas serve one Service without session affinity.

Legacy SSE (2024-11-05): GET ``/sse`` opens a stream whose first event names
the URL to POST messages to; every answer goes on that stream. The two kinds
of session do not mix: a legacy session's id at ``/mcp`` (whose POST would
wait for an answer that goes to the SSE stream), or a streamable session's
id at ``/messages``, gets a 400 naming the right place.

A client that goes away cancels its calls at the backend. A POST whose
connection closes before its answer is finished is taken as the client's
``notifications/cancelled`` for that request, whether the answer was still
pending (JSON) or had become an SSE stream: the router offers no stream
resumption (no event ids, no ``Last-Event-ID``), so a closed request stream
means nobody is left to receive the result, and a backend should not keep
working for no one. Ending a session (DELETE, expiry, the legacy stream
closing) cancels every call it still has in flight the same way.

Who may do what is the team gateway's business (``mcp_fleet.gateway``):
``HttpService`` puts its request gate (Host and Origin checks against DNS
rebinding, bearer tokens or OIDC) in front of ``HttpFrontend.handle``, which
receives the caller's ``Identity`` with every request. A session belongs to
the identity that initialized it: another identity presenting its id is
refused. Each session's ``CallPolicy`` applies the identity's allow-list,
the limits, the metrics and the audit log to its calls and lists. Started
through ``HttpService``, the port is bound (and the gateway's settings
checked) before anything else starts, so a port in use fails at once.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qs

from mcp_fleet import conventions
from mcp_fleet.gateway.identity import ANONYMOUS, Identity
from mcp_fleet.router import jsonrpc
from mcp_fleet.router.callpolicy import CallPolicy
from mcp_fleet.router.http_server import Request, Responder
from mcp_fleet.router.jsonrpc import HANDSHAKE_PROTOCOL_VERSIONS, JsonObject, RequestId
from mcp_fleet.router.router import Router
from mcp_fleet.router.session import RouterSession
from mcp_fleet.router.session_token import (
    ForeignSession,
    InvalidSessionToken,
    SessionClaims,
    SessionSigner,
    restore,
)

if TYPE_CHECKING:
    from mcp_fleet.gateway.guard import CallGuard

log = logging.getLogger(__name__)

SESSION_IDLE_SECONDS: Final = 3600.0
#: Open sessions one identity may hold. A client that never sends DELETE (most
#: do not) would otherwise pile sessions up until the idle sweep; past the cap
#: its least recently used idle session is closed (a client still holding it
#: gets 404 and initializes again, as the spec says), and only when every one
#: is busy is a new session refused.
MAX_SESSIONS_PER_IDENTITY: Final = 256
SSE_KEEPALIVE_SECONDS: Final = 20.0
#: Messages kept for a client whose streams are all closed, before dropping the oldest.
MAX_PARKED: Final = 1000

_JSON: Final = [(b"content-type", b"application/json")]
_TEXT: Final = [(b"content-type", b"text/plain; charset=utf-8")]
_SSE: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


def _event(data: bytes) -> bytes:
    return b"event: message\ndata: " + data + b"\n\n"


class _Exchange:
    """The answer to one POSTed request, written as its messages arrive."""

    __slots__ = ("done", "responder", "sid")

    def __init__(self, responder: Responder, sid: bytes) -> None:
        self.responder = responder
        self.sid = sid
        self.done = False

    def push(self, data: bytes, final: bool) -> None:
        r = self.responder
        if final:
            self.done = True
        if not r.started:
            if final:
                r.respond(200, [*_JSON, (b"mcp-session-id", self.sid)], data)
                return
            r.start_stream(200, [*_SSE, (b"mcp-session-id", self.sid)])
        r.write(_event(data))
        if final:
            r.end()


class HttpSession:
    """One HTTP client: its router session and where its messages go (a ``ClientChannel``)."""

    def __init__(
        self,
        router: Router,
        session_id: str,
        *,
        legacy: bool = False,
        owner: str = ANONYMOUS.owner,
        policy: CallPolicy | None = None,
    ) -> None:
        self.id = session_id
        self.sid = session_id.encode()
        self.legacy = legacy
        #: The identity (``Identity.owner``: its label and credential) that initialized the
        #: session: the only one that may use it.
        self.owner = owner
        self.policy = policy
        self.exchanges: dict[RequestId, _Exchange] = {}
        #: The standalone SSE stream (GET), or the legacy connection's stream.
        self.stream: Responder | None = None
        self.parked: deque[bytes] = deque(maxlen=MAX_PARKED)
        self.last_seen = time.monotonic()
        self.session: RouterSession = router.open_session(self, session_id=session_id)
        self.session.admission = policy

    def send(self, data: bytes, *, related: RequestId | None = None, final: bool = False) -> None:
        if final and self.policy is not None and related is not None:
            data = self.policy.reply(related, data)
        if related is not None and not self.legacy:
            exchange = self.exchanges.get(related)
            if exchange is not None:
                if final:
                    del self.exchanges[related]
                exchange.push(data, final)
                return
        stream = self.stream
        if stream is not None and not stream.closed:
            stream.write(_event(data))
            return
        for exchange in reversed(self.exchanges.values()):
            if not exchange.done and not exchange.responder.closed:
                exchange.push(data, False)
                return
        self.parked.append(data)

    def handle_notification(self, msg: JsonObject) -> None:
        """A notification (or response) from the client; a call it cancels gets its POST
        answered with ``REQUEST_CANCELLED``, as this wire ends a request only with a response
        (left open, the POST would hang and keep the session from being swept)."""
        params = msg.get("params")
        rid = params.get("requestId") if isinstance(params, dict) else None
        session = self.session
        if msg.get("method") != "notifications/cancelled" or not jsonrpc.valid_id(rid):
            session.handle_message(msg)
            return
        running = rid in session.inflight or rid in session.waiting
        session.handle_message(msg)
        exchange = self.exchanges.get(rid) if running else None
        if exchange is not None and rid not in session.inflight and rid not in session.waiting:
            del self.exchanges[rid]
            exchange.push(jsonrpc.error(rid, jsonrpc.REQUEST_CANCELLED, "Request cancelled"), True)

    def close(self) -> None:
        self.session.close()
        if self.policy is not None:
            self.policy.close()
        err = b'{"code":-32600,"message":"session terminated"}'
        exchanges, self.exchanges = self.exchanges, {}
        for rid, exchange in exchanges.items():
            exchange.push(
                b'{"jsonrpc":"2.0","id":' + jsonrpc.dumps(rid) + b',"error":' + err + b"}", True
            )
        if self.stream is not None:
            self.stream.end()
            self.stream = None


_NOT_YOURS: Final = "Forbidden: this session belongs to another identity"


def _cancel_abandoned(hs: HttpSession, mid: RequestId) -> None:
    """Cancel request ``mid`` of ``hs``, whose client is no longer there to read its answer."""
    if hs.session.closed:
        return
    msg: JsonObject = {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": mid, "reason": "client disconnected"},
    }
    if hs.policy is None or hs.policy.admit(msg, 0, hs):
        hs.session.handle_message(msg)


def _parse_post(body: bytes, responder: Responder) -> JsonObject | None:
    """The one JSON-RPC message of a POST body; else answers 400 and returns None."""
    try:
        msg = jsonrpc.parse(body)
    except jsonrpc.InvalidMessage as exc:
        if body.lstrip()[:1] == b"[":
            _error(responder, 400, jsonrpc.INVALID_REQUEST, "batches are not supported")
        else:
            _error(responder, 400, jsonrpc.PARSE_ERROR, f"Parse error: {exc}")
        return None
    if msg.get("method") is not None and type(msg["method"]) is not str:  # not a 202
        rid = msg.get("id")
        err = jsonrpc.error(rid if jsonrpc.valid_id(rid) else None, jsonrpc.INVALID_REQUEST,
                            "method must be a string")  # fmt: skip
        responder.respond(400, _JSON, err)
        return None
    return msg


def _error(send_to: Responder, status: int, code: int, message: str) -> None:
    send_to.respond(status, _JSON, jsonrpc.error(None, code, message))


class HttpFrontend:
    """Serves a ``Router`` over HTTP: the inner handler of the gateway (``HttpService``)."""

    def __init__(
        self,
        router: Router,
        *,
        path: str = conventions.DEFAULT_HTTP_PATH,
        sse_path: str = "/sse",
        messages_path: str = "/messages",
        guard: CallGuard | None = None,
        idle_seconds: float = SESSION_IDLE_SECONDS,
        session_signer: SessionSigner | None = None,
        max_sessions_per_identity: int | None = None,
    ) -> None:
        self.router = router
        self.max_sessions_per_identity = max_sessions_per_identity or MAX_SESSIONS_PER_IDENTITY
        self.path = path.rstrip("/") or "/"
        self.sse_path = sse_path
        self.messages_path = messages_path
        #: The gateway's per-call guard (None: calls go through unchecked and uncounted).
        self.guard = guard
        self.idle_seconds = idle_seconds
        #: Signs session ids so that any replica restores them (None: random ids).
        self.session_signer = session_signer
        self.sessions: dict[str, HttpSession] = {}

    def handle(
        self, request: Request, responder: Responder, identity: Identity = ANONYMOUS
    ) -> None:
        path = request.path
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        method = request.method
        if path == self.path:
            if method == "POST":
                self._post(request, responder, identity)
            elif method == "GET":
                self._get(request, responder, identity)
            elif method == "DELETE":
                self._delete(request, responder, identity)
            else:
                responder.respond(
                    405, [*_TEXT, (b"allow", b"GET, POST, DELETE")], b"Method Not Allowed"
                )
        elif path == self.sse_path and method == "GET":
            self._legacy_sse(responder, identity)
        elif path == self.messages_path and method == "POST":
            self._legacy_post(request, responder, identity)
        elif path == "/healthz" and method == "GET":
            responder.respond(200, _TEXT, b"ok")
        else:
            responder.respond(404, _TEXT, b"Not Found")

    def _new_session(
        self,
        identity: Identity,
        *,
        legacy: bool = False,
        params: object = None,
        sid: str | None = None,
    ) -> HttpSession:
        """A new session: ``params`` are its initialize's (signed into the id when a signer
        is set); ``sid`` is given when a session begun elsewhere is restored."""
        if sid is None:
            signer = None if legacy else self.session_signer
            if signer is not None:
                sid = signer.mint(SessionClaims.from_initialize(params), owner=identity.owner)
            else:
                sid = secrets.token_hex(16)
        policy = None
        if self.guard is not None:
            policy = CallPolicy(self.guard, self.router, session_id=sid, identity=identity)
        hs = HttpSession(self.router, sid, legacy=legacy, owner=identity.owner, policy=policy)
        hs.session.identity = identity
        self.sessions[sid] = hs
        return hs

    # -- streamable HTTP -------------------------------------------------------------

    def _post(self, request: Request, responder: Responder, identity: Identity) -> None:
        msg = _parse_post(request.body, responder)
        if msg is None:
            return
        headers = request.headers
        mid = msg.get("id")
        if mid is not None and msg.get("method") == "initialize":
            if not self._make_room(identity):
                _error(responder, 429, jsonrpc.INVALID_REQUEST, _too_many(self, identity))
                return
            hs = self._new_session(identity, params=msg.get("params"))
        else:
            found = self._posted_session(headers, identity, responder)
            if found is None:
                return
            hs = found
        hs.last_seen = time.monotonic()
        hs.session.identity = identity  # same owner; its grants may have been changed
        policy = hs.policy
        if policy is not None:
            policy.use(identity, headers)
        if mid is None or msg.get("method") is None:  # a notification, or a response
            if policy is None or policy.admit(msg, len(request.body), hs):
                hs.handle_notification(msg)
            responder.respond(202)
            return
        if not jsonrpc.valid_id(mid) or mid in hs.exchanges:
            why = "duplicate request id" if jsonrpc.valid_id(mid) else "invalid request id"
            _error(responder, 400, jsonrpc.INVALID_REQUEST, why)
            return
        exchange = _Exchange(responder, hs.sid)
        hs.exchanges[mid] = exchange

        def gone() -> None:
            # The client hung up before its answer: nobody can receive it (no resumption),
            # so the call is cancelled as if the client had said so.
            if hs.exchanges.get(mid) is exchange:
                del hs.exchanges[mid]
                _cancel_abandoned(hs, mid)

        responder.on_close.append(gone)
        if policy is not None and not policy.admit(msg, len(request.body), hs):
            return
        hs.session.handle_message(msg)

    def _posted_session(
        self, headers: Mapping[str, str], identity: Identity, responder: Responder
    ) -> HttpSession | None:
        """The streamable session a POST names, if ``identity`` may use it; else answers
        400 (no id, a legacy session's id, an unsupported version), 403 or 404."""
        sid = headers.get("mcp-session-id")
        if sid is None:
            _error(responder, 400, jsonrpc.INVALID_REQUEST, "missing Mcp-Session-Id header")
            return None
        try:
            found = self.sessions.get(sid) or self._restore(sid, identity)
        except ForeignSession:
            _error(responder, 403, jsonrpc.INVALID_REQUEST, _NOT_YOURS)
            return None
        if found is None:
            _error(responder, 404, jsonrpc.INVALID_REQUEST, "Session not found")
            return None
        if found.owner != identity.owner:
            _error(responder, 403, jsonrpc.INVALID_REQUEST, _NOT_YOURS)
            return None
        if found.legacy:  # its answers go to its SSE stream: this POST would never end
            _error(responder, 400, jsonrpc.INVALID_REQUEST, self._legacy_mistake(found))
            return None
        version = headers.get("mcp-protocol-version")
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            _error(responder, 400, jsonrpc.INVALID_REQUEST, f"Unsupported version: {version}")
            return None
        return found

    def _owned(
        self, sid: str | None, identity: Identity, responder: Responder
    ) -> HttpSession | None:
        """The session ``sid`` if ``identity`` owns it; else answers 400, 403 or 404."""
        try:
            hs = (self.sessions.get(sid) or self._restore(sid, identity)) if sid else None
        except ForeignSession:
            responder.respond(403, _TEXT, _NOT_YOURS.encode())
            return None
        if hs is None:
            responder.respond(400 if sid is None else 404, _TEXT, b"Session not found")
            return None
        if hs.owner != identity.owner:
            responder.respond(403, _TEXT, _NOT_YOURS.encode())
            return None
        if hs.legacy:  # a GET would take its stream over, a DELETE end it under its client
            responder.respond(400, _TEXT, self._legacy_mistake(hs).encode())
            return None
        return hs

    def _legacy_mistake(self, hs: HttpSession) -> str:
        return (
            f"Mcp-Session-Id names a legacy SSE session: post its messages to "
            f"{self.messages_path}?session_id={hs.id}, not to {self.path}"
        )

    def _restore(self, sid: str, identity: Identity) -> HttpSession | None:
        """The session another replica began under ``sid``, restored here (None: not one).

        Raises ``ForeignSession`` when ``sid`` was signed for another identity.
        """
        signer = self.session_signer
        if signer is None:
            return None
        try:
            claims = signer.verify(sid, owner=identity.owner)
        except ForeignSession:
            raise  # signed for another identity: the caller answers 403
        except InvalidSessionToken:
            return None
        hs = self._new_session(identity, sid=sid)
        restore(hs.session, claims)
        log.info("restored session of %s begun on another replica", identity.label)
        return hs

    def _get(self, request: Request, responder: Responder, identity: Identity) -> None:
        if "text/event-stream" not in request.headers.get("accept", ""):
            responder.respond(406, _TEXT, b"Not Acceptable: expects text/event-stream")
            return
        hs = self._owned(request.headers.get("mcp-session-id"), identity, responder)
        if hs is None:
            return
        if hs.stream is not None and not hs.stream.closed:
            responder.respond(409, _TEXT, b"Conflict: a stream is already open for this session")
            return
        responder.start_stream(200, [*_SSE, (b"mcp-session-id", hs.sid)])
        hs.stream = responder
        hs.last_seen = time.monotonic()
        while hs.parked:
            responder.write(_event(hs.parked.popleft()))

        def gone() -> None:
            if hs.stream is responder:
                hs.stream = None
            hs.last_seen = time.monotonic()

        responder.on_close.append(gone)

    def _delete(self, request: Request, responder: Responder, identity: Identity) -> None:
        hs = self._owned(request.headers.get("mcp-session-id"), identity, responder)
        if hs is None:
            return
        self.sessions.pop(hs.id, None)
        hs.close()
        responder.respond(200)

    # -- legacy SSE -------------------------------------------------------------------

    def _legacy_sse(self, responder: Responder, identity: Identity) -> None:
        if not self._make_room(identity):
            responder.respond(429, _TEXT, _too_many(self, identity).encode())
            return
        hs = self._new_session(identity, legacy=True)
        hs.stream = responder
        responder.start_stream(200, _SSE)
        endpoint = f"{self.messages_path}?session_id={hs.id}".encode()
        responder.write(b"event: endpoint\ndata: " + endpoint + b"\n\n")

        def gone() -> None:
            self.sessions.pop(hs.id, None)
            hs.stream = None
            hs.close()

        responder.on_close.append(gone)

    def _legacy_post(self, request: Request, responder: Responder, identity: Identity) -> None:
        sid = (parse_qs(request.query).get("session_id") or [""])[0]
        hs = self.sessions.get(sid)
        if hs is None or (not hs.legacy and hs.owner != identity.owner):
            responder.respond(404, _TEXT, b"Session not found")
            return
        if hs.owner != identity.owner:
            responder.respond(403, _TEXT, _NOT_YOURS.encode())
            return
        if not hs.legacy:
            why = (
                f"session_id names a streamable HTTP session: post its messages to {self.path}"
                " with an Mcp-Session-Id header"
            )
            responder.respond(400, _TEXT, why.encode())
            return
        hs.last_seen = time.monotonic()
        hs.session.identity = identity
        responder.respond(202, _TEXT, b"Accepted")
        policy = hs.policy
        if policy is None:
            hs.session.handle(request.body)
            return
        try:
            msg = jsonrpc.parse(request.body)
        except jsonrpc.InvalidMessage:
            hs.session.handle(request.body)  # answers the parse error
            return
        policy.use(identity, request.headers)
        if policy.admit(msg, len(request.body), hs):
            hs.session.handle_message(msg)

    # -- housekeeping -------------------------------------------------------------------

    def _make_room(self, identity: Identity) -> bool:
        """Room for one more session of ``identity``: False when all of its are busy."""
        own = [hs for hs in self.sessions.values() if hs.owner == identity.owner]
        if len(own) < self.max_sessions_per_identity:
            return True
        idle = [hs for hs in own if not hs.exchanges and (hs.stream is None or hs.stream.closed)]
        if not idle:
            return False
        oldest = min(idle, key=lambda hs: hs.last_seen)
        log.info(
            "%s holds %d sessions: closing its least recently used one",
            identity.label,
            len(own),
        )
        self.sessions.pop(oldest.id, None)
        oldest.close()
        return True

    def sweep(self) -> None:
        """Close sessions idle for longer than ``idle_seconds``; keep SSE streams alive."""
        cutoff = time.monotonic() - self.idle_seconds
        for sid, hs in list(self.sessions.items()):
            stream = hs.stream
            if stream is not None and not stream.closed:
                stream.write(b": keepalive\n\n")
                continue
            if hs.last_seen < cutoff and not hs.exchanges:
                del self.sessions[sid]
                hs.close()

    def aclose(self) -> None:
        for hs in list(self.sessions.values()):
            hs.close()
        self.sessions.clear()


def _too_many(frontend: HttpFrontend, identity: Identity) -> str:
    return (
        f"too many open sessions for {identity.label} "
        f"({frontend.max_sessions_per_identity}, all busy): end one with DELETE first"
    )
