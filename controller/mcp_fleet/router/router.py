"""The Router: follows the endpoint table and serves the whole fleet as one MCP server.

The controller publishes an ``EndpointTable`` (every Ready server and how to
reach it); the router follows it level-triggered, like the controller follows
its files: after every change it compares what is published with what it is
attached to, attaches new servers (one ``BackendSession`` each: initialize,
then every page of tools, prompts, resources and templates) and detaches
removed ones. A backend that drops is detached at once (its calls fail,
naming it) and retried with backoff while it stays published.

A server published with a new instance id (a replaced container or process)
is switched make-before-break, as a rolling update with readiness and
connection draining is: the new instance is attached beside the old one
while calls still go to the old one; once it is initialized and listed,
the server's backend is swapped in one step (clients get ``list_changed``
only if its lists differ), new calls go to the new instance, and the old
backend is closed once its calls in flight have been answered (at most its
call timeout). The router declares to the table which instances it holds
(attached, attaching or draining: ``EndpointTable.holding``), and the
controller stops the old instance only once it is let go. A new instance
that cannot be attached is retried with backoff while the old one serves.

After each attach or detach the routing table is rebuilt aside
(``table.build_table``), checked, and swapped whole; clients get
``notifications/*/list_changed`` only for the kinds whose advertised lists
really changed.

The router also keeps what is shared between client sessions and one backend
session: resource subscriptions (one backend subscription per URI, however
many clients hold it), the log level sent to backends (the most verbose any
client asked for; each client still gets only what it asked for), and the
routing of server-to-client requests to the client whose call caused them.

On-demand servers are followed through the table's ``on_demand`` set and
the ``activator``: their lists are advertised while they are cold, a call
for a cold one waits for it to start, and the activator answers the
controller's questions about activity through ``EndpointTable.demand``.
Such a backend is handed to waiting calls right after its ``initialize``;
its lists are read afterwards and only update what is advertised if they
changed.

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
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from mcp_fleet import __version__ as _fleet_version
from mcp_fleet import conventions
from mcp_fleet.endpoints import (
    Endpoint,
    EndpointEntry,
    EndpointTable,
    StreamEndpoint,
)
from mcp_fleet.model import ServerSpec
from mcp_fleet.router.activator import DEFAULT_ACTIVATION_TIMEOUT, RETIRED_GRACE_SECONDS, Activator
from mcp_fleet.router.attach import (
    LIST_KINDS,
    call_timeout,
    connect_endpoint,
    describe,
    failure_reason,
    fetch_list,
)
from mcp_fleet.router.backend import BackendError, BackendSession
from mcp_fleet.router.clients import ClientHub, quietly
from mcp_fleet.router.jsonrpc import JsonObject
from mcp_fleet.router.per_client import PerClient, is_per_client
from mcp_fleet.router.session import ClientChannel, RouterSession
from mcp_fleet.router.session_launcher import DEFAULT_MAX_INSTANCES, SessionLauncher
from mcp_fleet.router.table import (
    Kind,
    PrefixMode,
    Rename,
    ServerLists,
    build_table,
    check_table,
)
from mcp_fleet.transport import MessageStream

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE: Final = 500
RETRY_INITIAL_SECONDS: Final = 0.5
RETRY_MAX_SECONDS: Final = 30.0
#: How often a replaced backend is checked for calls still in flight.
DRAIN_POLL_SECONDS: Final = 0.02
#: A replaced backend is closed at most this long after its call timeout.
DRAIN_SLACK_SECONDS: Final = 1.0
_CHANGED_NOTIFICATION: Final[dict[Kind, str]] = {
    "tools": "notifications/tools/list_changed",
    "prompts": "notifications/prompts/list_changed",
    "resources": "notifications/resources/list_changed",
    "resourceTemplates": "notifications/resources/list_changed",
}
Connector = Callable[[Endpoint], Awaitable[MessageStream]]
RouterEvent = Literal["attached", "detached", "failed", "renamed"]


@dataclass
class _Attachment:
    """What the router knows of one published server."""

    entry: EndpointEntry
    backend: BackendSession | None = None
    lists: ServerLists | None = None
    task: asyncio.Task[None] | None = None
    failures: int = 0
    last_error: str = ""
    retry_at: float = 0.0
    dirty: set[Kind] = field(default_factory=set)
    refresher: asyncio.Task[None] | None = None
    #: ``time.monotonic()`` when an idle on-demand backend was let go (0: never).
    retired_at: float = 0.0
    #: A new instance being attached beside ``backend`` (make-before-break).
    successor: _Attachment | None = None


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
        self._connect = connect or connect_endpoint
        #: Set by whoever publishes once the first complete table is out (``up``:
        #: after the controller's first pass); lists wait for it and the attaches.
        self._published = published
        self._on_event = on_event
        self.table = build_table(())
        self._attached: dict[str, _Attachment] = {}
        #: Replaced backends still answering their calls: (server, instance id) -> backend.
        self._draining: dict[tuple[str, str], BackendSession] = {}
        self._drains: set[asyncio.Task[None]] = set()
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
                self._retry_due()
                if (
                    not self.settled.is_set()
                    and (self._published is None or self._published.is_set())
                    and all(a.task is None or a.task.done() for a in self._attached.values())
                    and not self.activator.discovering()
                    and not self.per_client.discovering()
                ):
                    self.settled.set()
                self._wake.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancel
                # that arrives with the wake-up, and the router would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._next_retry_in()):
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

    def _next_retry_in(self) -> float:
        due = [a.retry_at for a in self._attached.values() if a.backend is None and a.retry_at]
        due += [
            a.successor.retry_at
            for a in self._attached.values()
            if a.successor is not None and a.successor.retry_at
        ]
        if not due:
            return 5.0
        return max(0.01, min(due) - time.monotonic())

    async def _reconcile(self, published: Mapping[str, EndpointEntry]) -> None:
        on_demand = self.endpoints.on_demand()
        own = {n: s for n, s in on_demand.items() if is_per_client(s)}
        own_published = {n: e for n, e in published.items() if is_per_client(e.spec)}
        if own or own_published or len(self.per_client):
            on_demand = {n: s for n, s in on_demand.items() if n not in own}
            published = {n: e for n, e in published.items() if n not in own_published}
        await self.activator.update(on_demand, self.endpoints.cache_dir)
        await self.per_client.update(own, own_published, self.endpoints.cache_dir)
        for name in list(self._attached):
            att = self._attached[name]
            entry = published.get(name)
            if entry is None:
                await self._detach(name, "removed from the fleet")
            elif entry.endpoint.instance_id != att.entry.endpoint.instance_id:
                if att.backend is not None and not att.backend.closed:
                    self._follow_successor(att, entry)  # make-before-break
                else:
                    await self._detach(name, "replaced")  # nothing serves: nothing to keep
            else:
                if att.successor is not None:  # back to the instance it runs
                    self._drop_successor(att)
                if entry is not att.entry:
                    att.entry = entry  # same instance, new spec: naming inputs may change
                    if att.lists is not None:
                        att.lists = self._lists_for(entry.spec, att.lists)
                    if att.backend is not None:
                        att.backend.call_timeout = call_timeout(entry)
        for name, entry in sorted(published.items()):
            if name not in self._attached:
                att = _Attachment(entry)
                self._attached[name] = att
                self._start_attach(att)
        self._declare_holds()
        self._rebuild()

    def _start_attach(self, att: _Attachment) -> None:
        att.retry_at = 0.0
        att.task = asyncio.create_task(self._attach(att), name=f"attach:{att.entry.spec.name}")
        att.task.add_done_callback(lambda _t: self._wake.set())

    def _retry_due(self) -> None:
        now = time.monotonic()
        for att in self._attached.values():
            idle = att.task is None or att.task.done()
            if att.backend is None and att.retry_at and att.retry_at <= now and idle:
                self._start_attach(att)
            succ = att.successor
            due = succ is not None and bool(succ.retry_at) and succ.retry_at <= now
            if succ is not None and due and (succ.task is None or succ.task.done()):
                self._start_successor(att, succ)

    async def _attach(self, att: _Attachment) -> None:
        name = att.entry.spec.name
        endpoint = att.entry.endpoint
        backend: BackendSession | None = None
        early = name in self.activator  # on demand: calls may be waiting for it
        try:
            stream = await asyncio.wait_for(self._connect(endpoint), timeout=self.attach_timeout)
            backend = self._new_backend(att.entry, stream)
            await backend.start(timeout=self.attach_timeout)
            if early and not await self._take(att, backend):
                return
            lists = await self._fetch_lists(backend)
        except asyncio.CancelledError:
            if backend is not None and att.backend is not backend:
                await backend.aclose("attach cancelled")
            raise
        except Exception as exc:
            reason = failure_reason(exc)
            if backend is not None and att.backend is backend:
                # On demand, already serving calls: only its lists could not be read.
                log.warning(
                    "server %s: listing failed (%s); keeping the cached lists", name, reason
                )
                return
            if backend is not None:
                await backend.aclose(reason)
            if self._attached.get(name) is att:
                att.failures += 1
                att.last_error = reason
                delay = min(RETRY_MAX_SECONDS, RETRY_INITIAL_SECONDS * 2 ** (att.failures - 1))
                att.retry_at = time.monotonic() + delay
                log.warning(
                    "server %s: cannot attach (%s); retrying in %.1f s", name, reason, delay
                )
                self._emit("failed", name, reason)
            return
        if early:
            if att.backend is not backend:
                return  # let go (scaled down, replaced) while its lists were read
            self.activator.learned(name, lists)
        elif not await self._take(att, backend):
            return
        att.lists = self._lists_for(att.entry.spec, lists)
        self._rebuild()
        self._emit("attached", name, describe(endpoint))

    def _new_backend(self, entry: EndpointEntry, stream: MessageStream) -> BackendSession:
        endpoint = entry.endpoint
        return BackendSession(
            entry.spec.name,
            stream,
            self,
            instance_id=endpoint.instance_id,
            call_timeout=call_timeout(entry),
            client_version=_fleet_version,
            close_stream=not isinstance(endpoint, StreamEndpoint),
        )

    async def _fetch_lists(self, backend: BackendSession) -> ServerLists:
        fetched = {
            kind: await fetch_list(backend, kind, timeout=self.attach_timeout)
            for kind in LIST_KINDS
        }
        return ServerLists(
            server=backend.name,
            tools=fetched["tools"],
            prompts=fetched["prompts"],
            resources=fetched["resources"],
            templates=fetched["resourceTemplates"],
        )

    # -- make-before-break: a new instance of an attached server -----------------------

    def _follow_successor(self, att: _Attachment, entry: EndpointEntry) -> None:
        """``entry`` names a new instance of a served server: attach it beside the old one."""
        succ = att.successor
        if succ is not None and succ.entry.endpoint.instance_id == entry.endpoint.instance_id:
            succ.entry = entry  # the same new instance, perhaps a new spec
            return
        if succ is not None:
            self._drop_successor(att)
        att.successor = _Attachment(entry)
        log.info(
            "server %s: new instance %s; attaching it beside %s",
            entry.spec.name, entry.endpoint.instance_id, att.entry.endpoint.instance_id,
        )  # fmt: skip
        self._start_successor(att, att.successor)

    def _start_successor(self, att: _Attachment, succ: _Attachment) -> None:
        succ.retry_at = 0.0
        name = succ.entry.spec.name
        succ.task = asyncio.create_task(self._attach_successor(att, succ), name=f"attach:{name}")
        succ.task.add_done_callback(lambda _t: self._wake.set())

    def _drop_successor(self, att: _Attachment) -> None:
        succ, att.successor = att.successor, None
        if succ is not None and succ.task is not None and not succ.task.done():
            succ.task.cancel()  # the attach closes what it opened

    async def _attach_successor(self, att: _Attachment, succ: _Attachment) -> None:
        """Attach and list the new instance while the old one serves, then switch to it."""
        name = succ.entry.spec.name
        backend: BackendSession | None = None
        try:
            stream = await asyncio.wait_for(
                self._connect(succ.entry.endpoint), timeout=self.attach_timeout
            )
            backend = self._new_backend(succ.entry, stream)
            await backend.start(timeout=self.attach_timeout)
            lists = await self._fetch_lists(backend)
            await self._restore_client_state(backend)
        except asyncio.CancelledError:
            if backend is not None:
                await backend.aclose("attach cancelled")
            raise
        except Exception as exc:
            reason = failure_reason(exc)
            if backend is not None:
                await backend.aclose(reason)
            ours = att.successor is succ and self._attached.get(name) is att
            if ours or self._attached.get(name) is succ:
                succ.failures += 1
                succ.last_error = reason
                delay = min(RETRY_MAX_SECONDS, RETRY_INITIAL_SECONDS * 2 ** (succ.failures - 1))
                succ.retry_at = time.monotonic() + delay
                log.warning(
                    "server %s: cannot attach its new instance (%s); retrying in %.1f s",
                    name, reason, delay,
                )  # fmt: skip
                self._emit("failed", name, reason)
            return
        if self._attached.get(name) is att and att.successor is succ:
            self._switch(att, succ, backend, lists)
        elif self._attached.get(name) is succ and succ.backend is None:
            # The old instance went away meanwhile and this one took its place.
            succ.backend = backend
            self._took(succ, backend, lists)
        else:
            await backend.aclose("superseded")

    def _switch(
        self, att: _Attachment, succ: _Attachment, backend: BackendSession, lists: ServerLists
    ) -> None:
        """In one step (no await): the new backend serves; the old one drains, then closes."""
        old_backend, old_id = att.backend, att.entry.endpoint.instance_id
        if att.refresher is not None:
            att.refresher.cancel()
            att.refresher = None
        att.dirty.clear()
        att.entry, att.backend, att.successor = succ.entry, backend, None
        att.task = succ.task
        if old_backend is not None:
            self._drain(backend.name, old_id, old_backend)
        self._took(att, backend, lists)

    def _took(self, att: _Attachment, backend: BackendSession, lists: ServerLists) -> None:
        name = backend.name
        att.failures, att.last_error, att.retry_at, att.retired_at = 0, "", 0.0, 0.0
        att.lists = self._lists_for(att.entry.spec, lists)
        if name in self.activator:
            self.activator.learned(name, lists)
            self.activator.attached(name, backend)
        self._declare_holds()
        self._rebuild()
        self._emit("attached", name, describe(att.entry.endpoint))

    def _drain(self, name: str, instance_id: str, backend: BackendSession) -> None:
        self._draining[(name, instance_id)] = backend
        task = asyncio.get_running_loop().create_task(
            self._drain_then_close(name, instance_id, backend), name=f"drain:{name}"
        )
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _drain_then_close(self, name: str, instance_id: str, backend: BackendSession) -> None:
        """Close a replaced backend once its calls are answered (or past their timeout),
        then tell the table the old instance is let go."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + backend.call_timeout + DRAIN_SLACK_SECONDS
        try:
            # Polled: a drain is rare and short, and an event would cost every reply a check.
            while backend.pending_count and not backend.closed and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(DRAIN_POLL_SECONDS)
            left = backend.pending_count
            await backend.aclose("replaced" if not left else "replaced; past its call timeout")
            log.info("server %s: instance %s drained and let go", name, instance_id)
        finally:
            if self._draining.get((name, instance_id)) is backend:
                del self._draining[(name, instance_id)]
            self._declare_holds()

    def _declare_holds(self) -> None:
        """Tell the table every instance this router attaches, uses or drains now."""
        held = {(n, a.entry.endpoint.instance_id) for n, a in self._attached.items()}
        held.update(
            (n, a.successor.entry.endpoint.instance_id)
            for n, a in self._attached.items()
            if a.successor is not None
        )
        held.update(self._draining)
        self.endpoints.holding(self, held)

    async def _take(self, att: _Attachment, backend: BackendSession) -> bool:
        """Make ``backend`` the attachment's session (False, and closed, when superseded)."""
        name = backend.name
        if self._attached.get(name) is not att or att.backend is not None:
            await backend.aclose("superseded")
            return False
        att.backend = backend
        att.retired_at = 0.0
        att.failures = 0
        att.last_error = ""
        await self._restore_client_state(backend)
        if att.backend is backend:
            self.activator.attached(name, backend)
        return att.backend is backend

    def _lists_for(self, spec: ServerSpec, lists: ServerLists) -> ServerLists:
        prefix = spec.entry.prefix if spec.entry is not None else None
        return ServerLists(
            server=lists.server,
            tools=lists.tools,
            prompts=lists.prompts,
            resources=lists.resources,
            templates=lists.templates,
            prefix=prefix or None,
            tools_allow=spec.tools_allow,
        )

    async def _detach(self, name: str, reason: str) -> None:
        att = self._attached.pop(name, None)
        if att is None:
            return
        if att.task is not None and not att.task.done():
            att.task.cancel()
        if att.refresher is not None:
            att.refresher.cancel()
        self._drop_successor(att)
        if att.backend is not None:
            await att.backend.aclose(f"{reason}")
            self._emit("detached", name, reason)
        self._declare_holds()

    # -- the routing table ---------------------------------------------------------

    def _rebuild(self) -> None:
        current = {
            name: a.lists
            for name, a in self._attached.items()
            if a.backend is not None and a.lists is not None
        }
        for spec, cold in self.activator.advertised():
            if spec.name not in current:
                current[spec.name] = self._lists_for(spec, cold)
        for spec, own in self.per_client.advertised():
            current.setdefault(spec.name, self._lists_for(spec, own))
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
                self._emit("renamed", rename.server, str(rename))
        self._known_renames = set(table.renames)
        notices = {_CHANGED_NOTIFICATION[kind] for kind in table.changed_kinds(old)}
        for method in sorted(notices):
            for session in list(self.sessions):
                if session.initialized:
                    session.notify(method)

    def backend(self, server: str) -> BackendSession | None:
        att = self._attached.get(server)
        return att.backend if att is not None else None

    def backend_for(self, session: RouterSession, server: str) -> BackendSession | None:
        """Where a call of ``session`` for ``server`` goes now: the shared backend, or the
        session's own running instance of a per-client server (None: neither runs)."""
        att = self._attached.get(server)
        if att is not None and att.backend is not None:
            return att.backend
        if server in self.per_client:
            return self.per_client.ready(session, server)
        return None

    def starts_on_call(self, server: str) -> bool:
        """Is ``server`` started by a call (a cold on-demand server, or a per-client one)?"""
        return server in self.activator or server in self.per_client

    # -- on-demand servers (``ActivatorHost``) -------------------------------------

    def reattach(self, server: str) -> None:
        """Attach to a published on-demand server now, if nothing is attaching it.

        A backend let go because it was idle is not re-attached while its stop
        is under way (its successor will be published), unless it is still
        published after ``RETIRED_GRACE_SECONDS``: then its stop failed.
        """
        att = self._attached.get(server)
        if att is None or att.backend is not None or (att.task and not att.task.done()):
            return
        if att.retired_at and time.monotonic() - att.retired_at < RETIRED_GRACE_SECONDS:
            return
        self._start_attach(att)

    def release_backend(self, server: str) -> bool:
        """Let an idle on-demand backend go, unless a call is in flight (the controller
        then stops its instance); later calls wait for the next instance."""
        att = self._attached.get(server)
        if att is None or att.backend is None:
            return True
        backend = att.backend
        if backend.pending_count:
            return False
        att.backend = None
        att.retired_at = time.monotonic()
        att.retry_at = 0.0
        if att.refresher is not None:
            att.refresher.cancel()
        self._in_background(backend.aclose("idle: scaled to zero"))
        self._emit("detached", server, "idle: scaled to zero")
        return True

    async def wait_backend(self, session: RouterSession, server: str) -> BackendSession:
        """The backend a call of ``session`` for ``server`` goes to once it runs: the session's
        own instance of a per-client server, else the (cold) on-demand server's."""
        if server in self.per_client:
            return await self.per_client.backend_for(session, server)
        return await self.activator.wait(server)

    def _per_client_changed(self) -> None:
        self._rebuild()
        self._wake.set()

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

    def open_session(self, channel: ClientChannel, *, session_id: str = "") -> RouterSession:
        """A new client session (a frontend calls this per client)."""
        session = RouterSession(self, channel, session_id=session_id)
        self.sessions.add(session)
        return session

    def backends(self) -> list[BackendSession]:
        return [a.backend for a in self._attached.values() if a.backend is not None]

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
                await asyncio.sleep(min(DRAIN_POLL_SECONDS, remaining))
                continue
            attaching = self.first_attaches()
            if not attaching:
                return
            await asyncio.wait(attaching, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)

    def first_attaches(self) -> list[asyncio.Task[None]]:
        """The attaches under way of published servers never attached yet (not on demand):
        a call for a name no attached server offers may be for one of them."""
        return [
            a.task
            for name, a in self._attached.items()
            if a.backend is None and not a.failures and a.task is not None and not a.task.done()
            and name not in self.activator
        ]  # fmt: skip

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
            f"{name}: {att.backend.instructions}"
            for name, att in sorted(self._attached.items())
            if att.backend is not None and att.backend.instructions
        ]
        if texts:
            result["instructions"] = "\n\n".join(texts)
        return result

    def status(self) -> JsonObject:
        """What the router is attached to, what failed, and every rename (for status output)."""
        return {
            "sessions": len(self.sessions),
            "servers": {
                name: {
                    "attached": att.backend is not None,
                    "instance": att.entry.endpoint.instance_id,
                    "error": att.last_error or None,
                    "pending": att.backend.pending_count if att.backend is not None else 0,
                }
                for name, att in sorted(self._attached.items())
            },
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

    def _emit(self, event: RouterEvent, server: str, detail: str) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event, server, detail)
            except Exception:
                log.exception("router event callback failed")

    def backend_closed(self, backend: BackendSession, reason: str) -> None:
        att = self._attached.get(backend.name)
        if att is None or att.backend is not backend:
            return  # superseded, or a replaced one draining (its drain sees it closed)
        log.warning("server %s: connection lost (%s)", backend.name, reason)
        succ = att.successor
        if succ is not None:
            # Its successor is being attached: that one takes its place when it is ready.
            att.successor = None
            if att.refresher is not None:
                att.refresher.cancel()
            self._attached[backend.name] = succ
            self._declare_holds()
            self._emit("detached", backend.name, reason)
            self._rebuild()
            self._wake.set()
            return
        att.backend = None
        att.lists = None
        att.failures += 1
        att.last_error = reason
        att.retry_at = time.monotonic() + min(
            RETRY_MAX_SECONDS, RETRY_INITIAL_SECONDS * 2 ** (att.failures - 1)
        )
        self._emit("detached", backend.name, reason)
        self._rebuild()
        self._wake.set()

    def _schedule_refresh(self, backend: BackendSession, kinds: tuple[Kind, ...]) -> None:
        att = self._attached.get(backend.name)
        if att is None or att.backend is not backend:
            return
        att.dirty.update(kinds)
        if att.refresher is None or att.refresher.done():
            att.refresher = asyncio.get_running_loop().create_task(self._refresh(att, backend))

    async def _refresh(self, att: _Attachment, backend: BackendSession) -> None:
        while att.dirty and att.backend is backend and att.lists is not None:
            kinds, att.dirty = set(att.dirty), set()
            try:
                fetched = {
                    kind: await fetch_list(backend, kind, timeout=self.attach_timeout)
                    for kind in sorted(kinds)
                }
            except BackendError as exc:
                log.warning("server %s: refreshing lists failed: %s", backend.name, exc)
                return
            if att.backend is not backend or att.lists is None:
                return
            lists = att.lists
            att.lists = ServerLists(
                server=lists.server,
                tools=fetched.get("tools", lists.tools),
                prompts=fetched.get("prompts", lists.prompts),
                resources=fetched.get("resources", lists.resources),
                templates=fetched.get("resourceTemplates", lists.templates),
                prefix=lists.prefix,
                tools_allow=lists.tools_allow,
            )
            self._rebuild()

    # -- shutdown ------------------------------------------------------------------

    async def aclose(self) -> None:
        await self.activator.aclose()
        for session in list(self.sessions):
            session.close()
        await self.per_client.aclose()
        for name in list(self._attached):
            await self._detach(name, "router stopped")
        draining = list(self._draining.values())
        for task in list(self._drains):
            task.cancel()
        for backend in draining:
            await backend.aclose("router stopped")
        self._draining.clear()
        self.endpoints.holding(self, ())
