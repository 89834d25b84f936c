"""The backend lifecycle: which backends the router holds, from attach to release.

The router follows the controller's ``EndpointTable`` level-triggered, like
the controller follows its files: after every change it hands what is
published to ``BackendLifecycle.follow``, which compares it with what it is
attached to (one ``Attachment`` per published server), attaches new servers
(one ``BackendSession`` each: initialize, then every page of tools, prompts,
resources and templates) and detaches removed ones. A backend that drops is
detached at once (its calls fail, naming it) and retried with backoff while
it stays published. A server published with a new instance id is switched
make-before-break (``switchover``).

The lifecycle declares to the table which instances it holds (attached,
attaching or draining: ``EndpointTable.holding``); the controller stops an
old instance only once it is let go.

A backend's ``list_changed`` reads that list again (``refresh``); the
router rebuilds its routing table whenever the lists of an attached server
change (``LifecycleHost.rebuild``).

On-demand servers (``OnDemandHooks``, the ``activator``): such a backend is
handed to waiting calls right after its ``initialize``; its lists are read
afterwards and only update what is advertised if they changed. An idle one
is let go on the activator's word (``release_backend``) and attached again
when a call wants it (``reattach``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from mcp_fleet import conventions
from mcp_fleet.endpoints import EndpointEntry, EndpointTable
from mcp_fleet.router.activator import RETIRED_GRACE_SECONDS
from mcp_fleet.router.attach import (
    call_timeout,
    connect_endpoint,
    describe,
    failure_reason,
    fetch_list,
)
from mcp_fleet.router.attachment import (
    Attachment,
    Connector,
    RouterEvent,
    closed_on_failure,
    lists_for,
    open_backend,
    read_lists,
)
from mcp_fleet.router.backend import BackendError, BackendListener, BackendSession
from mcp_fleet.router.clients import quietly
from mcp_fleet.router.jsonrpc import JsonObject
from mcp_fleet.router.switchover import Switchover
from mcp_fleet.router.table import Kind, ServerLists

log = logging.getLogger(__name__)


class LifecycleHost(BackendListener, Protocol):
    """What the lifecycle needs of the router (``Router`` provides it).

    The host is the listener of every backend it attaches, and hands
    ``backend_closed`` to ``BackendLifecycle.closed``.
    """

    async def restore_client_state(self, backend: BackendSession) -> None:
        """Give a (re-)attached backend the log level and subscriptions clients hold."""

    def rebuild(self) -> None:
        """The lists of an attached server changed: build the routing table again."""


class OnDemandHooks(Protocol):
    """What the lifecycle tells the activator about on-demand servers (``Activator``)."""

    def __contains__(self, server: object) -> bool:
        """Is ``server`` on demand (calls may wait for it)?"""

    def attached(self, server: str, backend: BackendSession) -> None:
        """``server`` runs: let the calls waiting for it go."""

    def learned(self, server: str, lists: ServerLists) -> None:
        """Fresh lists of ``server``: advertise them while it is cold, and cache them."""


class BackendLifecycle:
    """The published servers' backends: attach, switch, drain, retry, refresh, release."""

    def __init__(
        self,
        host: LifecycleHost,
        endpoints: EndpointTable,
        *,
        on_demand: OnDemandHooks,
        connect: Connector | None = None,
        attach_timeout: float = conventions.DEFAULT_PROBE_TIMEOUT_SECONDS,
        on_event: Callable[[RouterEvent, str, str], None] | None = None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.host = host
        self.endpoints = endpoints
        self.on_demand = on_demand
        self.attach_timeout = attach_timeout
        self._connect = connect or connect_endpoint
        self._on_event = on_event
        self._wake = wake
        self._attached: dict[str, Attachment] = {}
        self._chores: set[asyncio.Task[None]] = set()
        self.switchover = Switchover(self)

    # -- what the router reads ---------------------------------------------------------

    def backend(self, server: str) -> BackendSession | None:
        """The backend serving ``server`` now, if one does."""
        att = self._attached.get(server)
        return att.backend if att is not None else None

    def backends(self) -> list[BackendSession]:
        return [a.backend for a in self._attached.values() if a.backend is not None]

    def lists(self) -> dict[str, ServerLists]:
        """What each attached server offers, by name (as advertised: naming inputs applied)."""
        return {
            name: a.lists
            for name, a in self._attached.items()
            if a.backend is not None and a.lists is not None
        }

    def attaching(self) -> bool:
        """Is an attach of a published server under way (successors not counted)?"""
        return any(a.attaching() for a in self._attached.values())

    def first_attaches(self) -> list[asyncio.Task[None]]:
        """The attaches under way of published servers never attached yet (not on demand):
        a call for a name no attached server offers may be for one of them."""
        return [
            a.task
            for name, a in self._attached.items()
            if a.backend is None and not a.failures and a.task is not None and not a.task.done()
            and name not in self.on_demand
        ]  # fmt: skip

    def next_retry_in(self) -> float:
        """Seconds until the next retry is due (5 when none is scheduled)."""
        due = [a.retry_at for a in self._attached.values() if a.backend is None and a.retry_at]
        due += [
            a.successor.retry_at
            for a in self._attached.values()
            if a.successor is not None and a.successor.retry_at
        ]
        if not due:
            return 5.0
        return max(0.01, min(due) - time.monotonic())

    def describe(self) -> JsonObject:
        """Each published server: attached or not, its instance, its last error, its calls."""
        return {
            name: {
                "attached": att.backend is not None,
                "instance": att.instance_id,
                "error": att.last_error or None,
                "pending": att.backend.pending_count if att.backend is not None else 0,
            }
            for name, att in sorted(self._attached.items())
        }

    # -- following the endpoint table ---------------------------------------------------

    async def follow(self, published: Mapping[str, EndpointEntry]) -> None:
        """Attach, switch and detach so that exactly ``published`` is served."""
        for name in list(self._attached):
            att = self._attached[name]
            entry = published.get(name)
            if entry is None:
                await self._detach(name, "removed from the fleet")
            elif entry.endpoint.instance_id != att.instance_id:
                if att.backend is not None and not att.backend.closed:
                    self.switchover.follow(att, entry)  # make-before-break
                else:
                    await self._detach(name, "replaced")  # nothing serves: nothing to keep
            else:
                if att.successor is not None:  # back to the instance it runs
                    self.switchover.drop(att)
                if entry is not att.entry:
                    att.entry = entry  # same instance, new spec: naming inputs may change
                    if att.lists is not None:
                        att.lists = lists_for(entry.spec, att.lists)
                    if att.backend is not None:
                        att.backend.call_timeout = call_timeout(entry)
        for name, entry in sorted(published.items()):
            if name not in self._attached:
                att = Attachment(entry)
                self._attached[name] = att
                self._start_attach(att)
        self.declare_holds()

    def retry_due(self) -> None:
        """Start the attaches whose backoff has passed (of servers and of new instances)."""
        now = time.monotonic()
        for att in self._attached.values():
            if att.backend is None and att.due(now):
                self._start_attach(att)
            succ = att.successor
            if succ is not None and succ.due(now):
                self.switchover.start(att, succ)

    def _start_attach(self, att: Attachment) -> None:
        att.retry_at = 0.0
        att.task = asyncio.create_task(self._attach(att), name=f"attach:{att.name}")
        att.task.add_done_callback(lambda _t: self.wake())

    async def _attach(self, att: Attachment) -> None:
        name = att.name
        endpoint = att.entry.endpoint
        backend: BackendSession | None = None
        early = name in self.on_demand  # on demand: calls may be waiting for it
        try:
            backend = await open_backend(
                att.entry, self._connect, self.host, timeout=self.attach_timeout
            )
            if early and not await self._take(att, backend):
                return
            lists = await read_lists(backend, timeout=self.attach_timeout)
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
                delay = att.failed(reason)
                log.warning(
                    "server %s: cannot attach (%s); retrying in %.1f s", name, reason, delay
                )
                self.emit("failed", name, reason)
            return
        if early:
            if att.backend is not backend:
                return  # let go (scaled down, replaced) while its lists were read
            self.on_demand.learned(name, lists)
        elif not await self._take(att, backend):
            return
        att.lists = lists_for(att.entry.spec, lists)
        self.host.rebuild()
        self.emit("attached", name, describe(endpoint))

    async def _take(self, att: Attachment, backend: BackendSession) -> bool:
        """Make ``backend`` the attachment's session (False, and closed, when superseded)."""
        name = backend.name
        if self._attached.get(name) is not att or att.backend is not None:
            await backend.aclose("superseded")
            return False
        att.backend = backend
        att.succeeded()
        await self.host.restore_client_state(backend)
        if att.backend is backend:
            self.on_demand.attached(name, backend)
        return att.backend is backend

    async def _detach(self, name: str, reason: str) -> None:
        att = self._attached.pop(name, None)
        if att is None:
            return
        if att.task is not None and not att.task.done():
            att.task.cancel()
        att.stop_refresh()
        self.switchover.drop(att)
        if att.backend is not None:
            await att.backend.aclose(f"{reason}")
            self.emit("detached", name, reason)
        self.declare_holds()

    # -- what a switchover needs (``SwitchHost``) ----------------------------------------

    def current(self, server: str) -> Attachment | None:
        return self._attached.get(server)

    async def open_listed(self, entry: EndpointEntry) -> tuple[BackendSession, ServerLists]:
        backend = await open_backend(entry, self._connect, self.host, timeout=self.attach_timeout)
        async with closed_on_failure(backend):
            lists = await read_lists(backend, timeout=self.attach_timeout)
            await self.host.restore_client_state(backend)
        return backend, lists

    def took(self, att: Attachment, backend: BackendSession, lists: ServerLists) -> None:
        name = backend.name
        att.succeeded()
        att.lists = lists_for(att.entry.spec, lists)
        if name in self.on_demand:
            self.on_demand.learned(name, lists)
            self.on_demand.attached(name, backend)
        self.declare_holds()
        self.host.rebuild()
        self.emit("attached", name, describe(att.entry.endpoint))

    def declare_holds(self) -> None:
        """Tell the table every instance attached, being attached or draining now."""
        held = {(n, iid) for n, a in self._attached.items() for iid in a.instance_ids()}
        held.update(self.switchover.draining)
        self.endpoints.holding(self, held)

    def emit(self, event: RouterEvent, server: str, detail: str) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event, server, detail)
            except Exception:
                log.exception("router event callback failed")

    def wake(self) -> None:
        if self._wake is not None:
            self._wake()

    # -- on-demand servers ------------------------------------------------------------------

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
        att.stop_refresh()
        task = asyncio.get_running_loop().create_task(
            quietly(backend.aclose("idle: scaled to zero"))
        )
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)
        self.emit("detached", server, "idle: scaled to zero")
        return True

    # -- what backends report -------------------------------------------------------------

    def closed(self, backend: BackendSession, reason: str) -> None:
        """``backend``'s stream ended: its successor takes over, or it is retried later."""
        att = self._attached.get(backend.name)
        if att is None or att.backend is not backend:
            return  # superseded, or a replaced one draining (its drain sees it closed)
        log.warning("server %s: connection lost (%s)", backend.name, reason)
        succ = att.successor
        if succ is not None:
            # Its successor is being attached: that one takes its place when it is ready.
            att.successor = None
            att.stop_refresh()
            self._attached[backend.name] = succ
            self.declare_holds()
        else:
            att.backend = None
            att.lists = None
            att.failed(reason)
        self.emit("detached", backend.name, reason)
        self.host.rebuild()
        self.wake()

    def refresh(self, backend: BackendSession, kinds: tuple[Kind, ...]) -> None:
        """Read these lists of ``backend`` again (it said they changed)."""
        att = self._attached.get(backend.name)
        if att is None or att.backend is not backend:
            return
        att.dirty.update(kinds)
        if att.refresher is None or att.refresher.done():
            att.refresher = asyncio.get_running_loop().create_task(self._refresh(att, backend))

    async def _refresh(self, att: Attachment, backend: BackendSession) -> None:
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
            self.host.rebuild()

    # -- shutdown ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Detach everything, close what drains, and hold no instance any more."""
        for name in list(self._attached):
            await self._detach(name, "router stopped")
        await self.switchover.aclose()
        self.endpoints.holding(self, ())
