"""The Router: follows the endpoint table and serves the whole fleet as one MCP server.

The controller publishes an ``EndpointTable`` (every Ready server and how to
reach it); the router follows it level-triggered, like the controller follows
its files: after every change it hands what is published to its
``BackendLifecycle`` (``lifecycle``), which attaches new servers, detaches
removed ones, retries failed ones with backoff and switches a replaced one
make-before-break (``switchover``).

After each attach or detach the routing table is rebuilt aside
(``table.build_table``), checked, and swapped whole; clients get
``notifications/*/list_changed`` only for the kinds whose advertised lists
really changed.

The router also keeps what is shared between client sessions and one backend
session (``ClientHub``, its base): resource subscriptions (one backend
subscription per URI, however many clients hold it), the log level sent to
backends (the most verbose any client asked for; each client still gets only
what it asked for), and the routing of server-to-client requests to the
client whose call caused them. A client session sees the router only through
``session.SessionHost``.

On-demand servers are followed through the table's ``on_demand`` set and
the ``activator``: their lists are advertised while they are cold, a call
for a cold one waits for it to start, and the activator answers the
controller's questions about activity through ``EndpointTable.demand``.

``sessions: per-client`` servers (``per_client``) are never attached as
shared backends: their lists are advertised like a cold on-demand server's,
and each client session's calls go to an instance of its own, started on
its first call (through ``launcher``, under ``mcp-fleet up``) and stopped
when the session ends. Subscriptions, log levels and roots of such a
server are the session's own, sent to its instance directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from mcp_fleet import __version__ as _fleet_version
from mcp_fleet import conventions
from mcp_fleet.endpoints import EndpointEntry, EndpointTable
from mcp_fleet.router.activator import DEFAULT_ACTIVATION_TIMEOUT, Activator
from mcp_fleet.router.attachment import Connector, RouterEvent, lists_for
from mcp_fleet.router.backend import BackendSession
from mcp_fleet.router.clients import ClientHub, quietly
from mcp_fleet.router.jsonrpc import JsonObject
from mcp_fleet.router.lifecycle import BackendLifecycle
from mcp_fleet.router.per_client import PerClient, is_per_client
from mcp_fleet.router.session import ClientChannel, RouterSession
from mcp_fleet.router.session_launcher import DEFAULT_MAX_INSTANCES, SessionLauncher
from mcp_fleet.router.table import Kind, PrefixMode, Rename, build_table, check_table

__all__ = ["DEFAULT_PAGE_SIZE", "Connector", "Router", "RouterEvent"]

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE: Final = 500
#: How often a call held for a name checks whether a table change has been followed.
TABLE_POLL_SECONDS: Final = 0.02
_CHANGED_NOTIFICATION: Final[dict[Kind, str]] = {
    "tools": "notifications/tools/list_changed",
    "prompts": "notifications/prompts/list_changed",
    "resources": "notifications/resources/list_changed",
    "resourceTemplates": "notifications/resources/list_changed",
}


class Router(ClientHub):
    """One MCP endpoint for every Ready server of an ``EndpointTable``."""

    def __init__(
        self,
        endpoints: EndpointTable,
        *,
        prefix: PrefixMode = "collisions",
        tools: Iterable[str] = (),
        page_size: int = DEFAULT_PAGE_SIZE,
        attach_timeout: float = conventions.DEFAULT_PROBE_TIMEOUT_SECONDS,
        settle_timeout: float = 10.0,
        connect: Connector | None = None,
        on_event: Callable[[RouterEvent, str, str], None] | None = None,
        published: asyncio.Event | None = None,
        activation_timeout: float = DEFAULT_ACTIVATION_TIMEOUT,
        launcher: SessionLauncher | None = None,
        max_session_instances: int = DEFAULT_MAX_INSTANCES,
    ) -> None:
        self.endpoints = endpoints
        self.prefix_mode: PrefixMode = prefix
        self.tool_patterns = tuple(tools)
        self.page_size = page_size
        self.attach_timeout = attach_timeout
        self.settle_timeout = settle_timeout
        #: Set by whoever publishes once the first complete table is out (``up``:
        #: after the controller's first pass); lists wait for it and the attaches.
        self._published = published
        self.table = build_table(())
        #: The table version the last reconcile followed (while ``run`` runs).
        self._seen_version = -1
        self._running = False
        #: Set once every server published at start has been attached or has failed.
        self.settled = asyncio.Event()
        #: ``loop.time()`` after which nobody waits for ``settled`` (set on first use).
        self._settle_by: float | None = None
        self._wake = asyncio.Event()
        self._known_renames: set[Rename] = set()
        #: On-demand servers: cold lists, calls waiting for a start, activity.
        self.activator = Activator(
            self, endpoints.demand, timeout=activation_timeout, on_discovered=self._wake.set
        )
        #: Shared backends: attach, make-before-break switch, drain, retry, refresh, release.
        self.lifecycle = BackendLifecycle(
            self, endpoints, on_demand=self.activator, connect=connect,
            attach_timeout=attach_timeout, on_event=on_event, wake=self._wake.set,
        )  # fmt: skip
        #: ``sessions: per-client`` servers: an instance per client session.
        self.per_client = PerClient(
            launcher=launcher, max_instances=max_session_instances, timeout=activation_timeout,
            attach_timeout=attach_timeout, on_change=self._per_client_changed,
        )  # fmt: skip
        ClientHub.__init__(self)

    # -- following the endpoint table -------------------------------------------

    async def run(self) -> None:
        """Follow the endpoint table until cancelled; detaches everything on the way out."""
        version = -1
        if self._settle_by is None:
            self._settle_by = asyncio.get_running_loop().time() + self.settle_timeout
        watcher = asyncio.create_task(self._watch_table(), name="router-watch")
        self.endpoints.demand.serve(self.activator)
        self.per_client.start()
        self._running = True
        try:
            while True:
                if self.endpoints.version != version:
                    version = self.endpoints.version
                    await self._reconcile(self.endpoints.snapshot())
                    self._seen_version = version
                self.lifecycle.retry_due()
                if (
                    not self.settled.is_set()
                    and (self._published is None or self._published.is_set())
                    and not self.lifecycle.attaching()
                    and not self.activator.discovering()
                    and not self.per_client.discovering()
                ):
                    self.settled.set()
                self._wake.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancel
                # that arrives with the wake-up, and the router would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.lifecycle.next_retry_in()):
                        await self._wake.wait()
        finally:
            self._running = False
            watcher.cancel()
            if self.endpoints.demand.source is self.activator:
                self.endpoints.demand.serve(None)
            await self.aclose()

    async def _watch_table(self) -> None:
        if self._published is not None and not self._published.is_set():
            gate = asyncio.create_task(self._published.wait())
            gate.add_done_callback(lambda _t: self._wake.set())
        seen = self.endpoints.version
        while True:
            seen = await self.endpoints.wait_changed(seen)
            self._wake.set()

    async def _reconcile(self, published: Mapping[str, EndpointEntry]) -> None:
        on_demand = self.endpoints.on_demand()
        own = {n: s for n, s in on_demand.items() if is_per_client(s)}
        own_published = {n: e for n, e in published.items() if is_per_client(e.spec)}
        if own or own_published or len(self.per_client):
            on_demand = {n: s for n, s in on_demand.items() if n not in own}
            published = {n: e for n, e in published.items() if n not in own_published}
        await self.activator.update(on_demand, self.endpoints.cache_dir)
        await self.per_client.update(own, own_published, self.endpoints.cache_dir)
        await self.lifecycle.follow(published)
        self.rebuild()

    # -- the routing table ---------------------------------------------------------

    def rebuild(self) -> None:
        """Build the routing table aside from every advertised list, check it and swap it
        whole; tell clients which kinds of lists changed (``LifecycleHost``)."""
        current = self.lifecycle.lists()
        for spec, cold in self.activator.advertised():
            if spec.name not in current:
                current[spec.name] = lists_for(spec, cold)
        for spec, own in self.per_client.advertised():
            current.setdefault(spec.name, lists_for(spec, own))
        lists = list(current.values())
        table = build_table(lists, prefix_mode=self.prefix_mode, tool_patterns=self.tool_patterns)
        problems = check_table(table)
        if problems:
            log.error("routing table rejected, keeping the previous one: %s", "; ".join(problems))
            return
        old, self.table = self.table, table
        for rename in table.renames:
            if rename not in self._known_renames:
                log.info("%s", rename)
                self.lifecycle.emit("renamed", rename.server, str(rename))
        self._known_renames = set(table.renames)
        notices = {_CHANGED_NOTIFICATION[kind] for kind in table.changed_kinds(old)}
        for method in sorted(notices):
            for session in list(self.sessions):
                if session.initialized:
                    session.notify(method)

    def backend(self, server: str) -> BackendSession | None:
        return self.lifecycle.backend(server)

    def backends(self) -> list[BackendSession]:
        return self.lifecycle.backends()

    def backend_for(self, session: RouterSession, server: str) -> BackendSession | None:
        """Where a call of ``session`` for ``server`` goes now: the shared backend, or the
        session's own running instance of a per-client server (None: neither runs)."""
        backend = self.lifecycle.backend(server)
        if backend is not None:
            return backend
        if server in self.per_client:
            return self.per_client.ready(session, server)
        return None

    def starts_on_call(self, server: str) -> bool:
        """Is ``server`` started by a call (a cold on-demand server, or a per-client one)?"""
        return server in self.activator or server in self.per_client

    # -- backends (``BackendListener``; notifications and requests are ``ClientHub``'s) --

    def backend_closed(self, backend: BackendSession, reason: str) -> None:
        self.lifecycle.closed(backend, reason)

    def lists_changed(self, backend: BackendSession, kinds: tuple[Kind, ...]) -> None:
        self.lifecycle.refresh(backend, kinds)

    # -- on-demand servers (``ActivatorHost``) -------------------------------------

    def reattach(self, server: str) -> None:
        self.lifecycle.reattach(server)

    def release_backend(self, server: str) -> bool:
        return self.lifecycle.release_backend(server)

    async def wait_backend(self, session: RouterSession, server: str) -> BackendSession:
        """The backend a call of ``session`` for ``server`` goes to once it runs: the session's
        own instance of a per-client server, else the (cold) on-demand server's."""
        if server in self.per_client:
            return await self.per_client.backend_for(session, server)
        return await self.activator.wait(server)

    def _per_client_changed(self) -> None:
        self.rebuild()
        self._wake.set()

    # -- client sessions (``SessionHost``) -------------------------------------------

    def open_session(self, channel: ClientChannel, *, session_id: str = "") -> RouterSession:
        """A new client session (a frontend calls this per client)."""
        session = RouterSession(self, channel, session_id=session_id)
        self.sessions.add(session)
        return session

    async def subscribe(self, session: RouterSession, server: str, uri: str) -> JsonObject:
        if server in self.per_client:  # the session's own instance holds its subscriptions
            backend = await self.per_client.backend_for(session, server)
            await backend.call("resources/subscribe", {"uri": uri})
            return {}
        if self.backend(server) is None and server in self.activator:
            await self.activator.wait(server)
        return await ClientHub.subscribe(self, session, server, uri)

    async def unsubscribe(self, session: RouterSession, server: str, uri: str) -> JsonObject:
        if server in self.per_client:
            backend = self.per_client.ready(session, server)
            if backend is not None:
                await backend.call("resources/unsubscribe", {"uri": uri})
            return {}
        return await ClientHub.unsubscribe(self, session, server, uri)

    async def set_log_level(self, session: RouterSession, level: str) -> JsonObject:
        result = await ClientHub.set_log_level(self, session, level)
        own = [b for b in self.per_client.backends_of(session) if "logging" in b.capabilities]
        await asyncio.gather(*(quietly(b.call("logging/setLevel", {"level": level})) for b in own))
        return result

    def roots_changed(self, session: RouterSession) -> None:
        ClientHub.roots_changed(self, session)
        for backend in self.per_client.backends_of(session):
            backend.notify("notifications/roots/list_changed")

    def session_closed(self, session: RouterSession) -> None:
        ClientHub.session_closed(self, session)
        self.per_client.session_ended(session)

    async def wait_settled(self, *, timeout: float | None = None) -> None:
        """Wait until ``settled``, but no later than ``settle_timeout`` after the router
        started (``timeout``, if given, may cut that short): however many requests
        wait for it, one slow server delays a client once, not once per request."""
        loop = asyncio.get_running_loop()
        if self._settle_by is None:
            self._settle_by = loop.time() + self.settle_timeout
        limit = self._settle_by - loop.time()
        if timeout is not None:
            limit = min(limit, timeout)
        if self.settled.is_set() or limit <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.settled.wait(), timeout=limit)

    def may_attach_soon(self) -> bool:
        """Could a name that no attached server offers now still appear soon? While the
        start-up fleet has not settled, a table change is not followed yet, or a server
        is on its first attach."""
        if not self.settled.is_set():
            return True
        if self._running and self.endpoints.version != self._seen_version:
            return True
        return bool(self.first_attaches())

    async def wait_routable(self, known: Callable[[], bool]) -> None:
        """Wait until ``known()`` or nothing is left that could make it so: the start-up
        settle (``wait_settled``), then at most ``attach_timeout`` for table changes to be
        followed and first attaches to end."""
        await self.wait_settled()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.attach_timeout
        while not known():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            if self._running and self.endpoints.version != self._seen_version:
                await asyncio.sleep(min(TABLE_POLL_SECONDS, remaining))
                continue
            attaching = self.first_attaches()
            if not attaching:
                return
            await asyncio.wait(attaching, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)

    def first_attaches(self) -> list[asyncio.Task[None]]:
        """The attaches under way of published servers never attached yet (not on demand):
        a call for a name no attached server offers may be for one of them."""
        return self.lifecycle.first_attaches()

    def initialize_result(self, protocol_version: str) -> JsonObject:
        result: JsonObject = {
            "protocolVersion": protocol_version,
            "capabilities": {
                "tools": {"listChanged": True},
                "prompts": {"listChanged": True},
                "resources": {"subscribe": True, "listChanged": True},
                "logging": {},
                "completions": {},
            },
            "serverInfo": {"name": conventions.CLIENT_INFO_NAME, "version": _fleet_version},
        }
        texts = [
            f"{backend.name}: {backend.instructions}"
            for backend in sorted(self.lifecycle.backends(), key=lambda b: b.name)
            if backend.instructions
        ]
        if texts:
            result["instructions"] = "\n\n".join(texts)
        return result

    def status(self) -> JsonObject:
        """What the router is attached to, what failed, and every rename (for status output)."""
        return {
            "sessions": len(self.sessions),
            "servers": self.lifecycle.describe(),
            "on_demand": {
                name: self.activator.describe(name)
                for name in sorted(self.endpoints.on_demand())
                if name in self.activator
            },
            "per_client": self.per_client.describe(),
            "tools": len(self.table.tools),
            "prompts": len(self.table.prompts),
            "resources": len(self.table.resources),
            "renames": [str(r) for r in self.table.renames],
            "shadowed": list(self.table.shadowed),
        }

    # -- shutdown ------------------------------------------------------------------

    async def aclose(self) -> None:
        await self.activator.aclose()
        for session in list(self.sessions):
            session.close()
        await self.per_client.aclose()
        await self.lifecycle.aclose()
