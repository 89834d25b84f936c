"""What the router keeps for its clients, and how server messages find them.

One backend session serves every client, so some state is shared and merged
here: a resource subscription is held at the backend once however many
clients hold it (and dropped with the last one); the log level sent to
backends is the most verbose any client asked for, while each client still
receives only the messages at or above its own level. Notifications from a
backend fan out to the clients they concern, never to a client whose
identity's allow-list leaves that server out (``RouterSession.sees``); a
server-to-client request (sampling, elicitation, roots) goes to the client
whose call caused it.

``Router`` builds on this (``ClientHub`` is its base): the hub knows
sessions, the router knows backends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, Final

from mcp_fleet.router import jsonrpc
from mcp_fleet.router.backend import BackendError, BackendSession
from mcp_fleet.router.jsonrpc import JsonObject, RequestId
from mcp_fleet.router.session import LOG_RANK, RouterSession
from mcp_fleet.router.table import Kind

log = logging.getLogger(__name__)

#: Which client capability a server-to-client request needs.
NEEDS: Final[dict[str, str]] = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}
#: Backend notifications that mean a list must be read again.
REFRESH_ON: Final[dict[str, tuple[Kind, ...]]] = {
    "notifications/tools/list_changed": ("tools",),
    "notifications/prompts/list_changed": ("prompts",),
    "notifications/resources/list_changed": ("resources", "resourceTemplates"),
}


class ClientHub:
    """Client sessions, their shared backend state, and delivery of server messages."""

    def __init__(self) -> None:
        self.sessions: set[RouterSession] = set()
        #: (server, uri) -> sessions holding a subscription
        self._subscriptions: dict[tuple[str, str], set[RouterSession]] = {}
        #: The log level each backend was last set to (by server name).
        self._backend_log_levels: dict[str, str] = {}
        self._background: set[asyncio.Task[None]] = set()

    # What the router provides.

    def backend(self, server: str) -> BackendSession | None:
        raise NotImplementedError

    def backends(self) -> list[BackendSession]:
        raise NotImplementedError

    def lists_changed(self, backend: BackendSession, kinds: tuple[Kind, ...]) -> None:
        """``backend`` said these lists changed: read them again."""
        raise NotImplementedError

    # -- backends ------------------------------------------------------------------

    async def restore_client_state(self, backend: BackendSession) -> None:
        """Give a (re-)attached backend the log level and subscriptions clients hold."""
        calls: list[Awaitable[JsonObject]] = []
        level = self._log_level_for(backend.name)
        if level is not None and "logging" in backend.capabilities:
            self._backend_log_levels[backend.name] = level
            calls.append(backend.call("logging/setLevel", {"level": level}))
        for server, uri in self._subscriptions:
            if server == backend.name:
                calls.append(backend.call("resources/subscribe", {"uri": uri}))
        for outcome in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(outcome, BaseException):
                log.warning("server %s: restoring state failed: %s", backend.name, outcome)

    # -- client sessions -----------------------------------------------------------

    def session_closed(self, session: RouterSession) -> None:
        self.sessions.discard(session)
        for key in [k for k, holders in self._subscriptions.items() if session in holders]:
            holders = self._subscriptions[key]
            holders.discard(session)
            if not holders:
                del self._subscriptions[key]
                backend = self.backend(key[0])
                if backend is not None:
                    self._in_background(backend.call("resources/unsubscribe", {"uri": key[1]}))
        if session.log_level is not None:
            self._in_background(self._push_log_level())

    def _in_background(self, work: Awaitable[Any]) -> None:
        task = asyncio.get_running_loop().create_task(quietly(work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def subscribe(self, session: RouterSession, server: str, uri: str) -> JsonObject:
        key = (server, uri)
        holders = self._subscriptions.get(key)
        if holders is None:
            backend = self.backend(server)
            if backend is None:
                raise BackendError(
                    server, jsonrpc.BACKEND_UNAVAILABLE, f"server {server!r} is not connected"
                )
            await backend.call("resources/subscribe", {"uri": uri})
            holders = self._subscriptions.setdefault(key, set())
        holders.add(session)
        return {}

    async def unsubscribe(self, session: RouterSession, server: str, uri: str) -> JsonObject:
        key = (server, uri)
        holders = self._subscriptions.get(key)
        if holders is None or session not in holders:
            return {}
        holders.discard(session)
        if not holders:
            del self._subscriptions[key]
            backend = self.backend(server)
            if backend is not None:
                await backend.call("resources/unsubscribe", {"uri": uri})
        return {}

    async def set_log_level(self, session: RouterSession, level: str) -> JsonObject:
        session.log_level = level
        await self._push_log_level()
        return {}

    def _log_level_for(self, server: str) -> str | None:
        """The most detailed level asked for by a client that sees ``server``.

        Only those: a client restricted to other servers must not turn up what a
        shared server it may not use sends (and the router then filters away).
        """
        levels = [s.log_level for s in self.sessions if s.log_level is not None and s.sees(server)]
        return min(levels, key=LOG_RANK.__getitem__) if levels else None

    async def _push_log_level(self) -> None:
        calls = []
        for backend in self.backends():
            wanted = self._log_level_for(backend.name)
            if "logging" not in backend.capabilities or wanted is None:
                continue
            if self._backend_log_levels.get(backend.name) == wanted:
                continue
            self._backend_log_levels[backend.name] = wanted
            calls.append(quietly(backend.call("logging/setLevel", {"level": wanted})))
        await asyncio.gather(*calls)

    def roots_changed(self, session: RouterSession) -> None:
        """A client's roots changed: tell the shared servers it sees (only those)."""
        for backend in self.backends():
            if session.sees(backend.name):
                backend.notify("notifications/roots/list_changed")

    # -- BackendListener (notifications and requests; Router adds backend_closed) --------

    def backend_notification(self, backend: BackendSession, method: str, msg: JsonObject) -> None:
        params = msg.get("params")
        if method == "notifications/message":
            level = params.get("level") if isinstance(params, dict) else None
            data = jsonrpc.dumps(msg)
            for session in list(self.sessions):
                if session.initialized and session.wants_log(level) and session.sees(backend.name):
                    session.channel.send(data)
        elif method == "notifications/resources/updated":
            uri = params.get("uri") if isinstance(params, dict) else None
            holders = self._subscriptions.get((backend.name, uri)) if isinstance(uri, str) else None
            if holders:
                data = jsonrpc.dumps(msg)
                for session in list(holders):
                    if session.sees(backend.name):
                        session.channel.send(data)
        elif method in REFRESH_ON:
            self.lists_changed(backend, REFRESH_ON[method])
        elif method == "notifications/cancelled":
            rid = params.get("requestId") if isinstance(params, dict) else None
            target = backend.server_requests.pop(rid, None) if jsonrpc.valid_id(rid) else None
            if target is not None:
                session, our_id, _ = target
                session.cancel_outgoing(
                    our_id, params.get("reason") if isinstance(params, dict) else None
                )
        else:
            data = jsonrpc.dumps(msg)
            for session in list(self.sessions):
                if session.initialized and session.sees(backend.name):
                    session.channel.send(data)

    def backend_request(self, backend: BackendSession, msg: JsonObject) -> None:
        method = msg.get("method")
        needed = NEEDS.get(method) if isinstance(method, str) else None
        target, related = self._caller_of(backend, needed)
        if target is None:
            for session in self.sessions:
                if (
                    session.initialized
                    and session.has_capability(needed)
                    and session.sees(backend.name)
                ):
                    target = session
                    break
        if target is None:
            why = f"no connected client supports {needed}" if needed else "no client is connected"
            backend.respond_error(msg["id"], jsonrpc.METHOD_NOT_FOUND, why)
            return
        target.forward_server_request(backend, msg, related=related)

    @staticmethod
    def _caller_of(
        backend: BackendSession, needed: str | None
    ) -> tuple[RouterSession | None, RequestId | None]:
        """The client call a server-to-client request most likely comes from.

        Over HTTP a server says which request a message belongs to; over
        stdio it cannot, so this guesses, exactly whenever only one client
        has calls in flight to the server: the oldest call of a client that
        can answer, preferring calls that have no question outstanding yet
        (servers ask in the order they received the calls). Servers whose
        clients must never share a session run with ``sessions: per-client``.
        """
        asked = {(id(s), rel) for s, _, rel in backend.server_requests.values()}
        fallback: tuple[RouterSession | None, RequestId | None] = (None, None)
        for _, sink, client_id in backend.pending_calls():
            if (
                not isinstance(sink, RouterSession)
                or sink.closed
                or not sink.has_capability(needed)
            ):
                continue
            if (id(sink), client_id) not in asked:
                return sink, client_id
            if fallback[0] is None:
                fallback = (sink, client_id)
        return fallback


async def quietly(work: Awaitable[Any]) -> None:
    """Await ``work``, logging (not raising) a failure: for background chores."""
    try:
        await work
    except Exception as exc:
        log.debug("background call failed: %s", exc)
