"""Make-before-break: switching a served server to its new instance.

A server published with a new instance id (a replaced container or process)
is switched as a rolling update with readiness and connection draining is:
the new instance is attached beside the old one (``Attachment.successor``)
while calls still go to the old one; once it is initialized, listed and
given the clients' state (log level, subscriptions), the server's backend is
swapped in one step, with no await between (clients get ``list_changed``
only if its lists differ); new calls go to the new instance, and the old
backend is closed once its calls in flight have been answered (at most its
call timeout past). Until then it is *draining*: the backend lifecycle
declares it held (``EndpointTable.holding``), so the controller stops the
old instance only once it is let go.

A new instance that cannot be attached is retried with backoff while the
old one serves; if the old one dies meanwhile, the new one takes its place
as soon as it is ready. Publishing the running instance again drops the one
being attached.

``Switchover`` does the switching for a ``SwitchHost`` (the
``BackendLifecycle``, which owns the attachments and decides when a
switchover starts, is retried or is dropped).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Protocol

from mcp_fleet.endpoints import EndpointEntry
from mcp_fleet.router.attach import failure_reason
from mcp_fleet.router.attachment import Attachment, RouterEvent
from mcp_fleet.router.backend import BackendSession
from mcp_fleet.router.table import ServerLists

log = logging.getLogger(__name__)

#: How often a replaced backend is checked for calls still in flight.
DRAIN_POLL_SECONDS: Final = 0.02
#: A replaced backend is closed at most this long after its call timeout.
DRAIN_SLACK_SECONDS: Final = 1.0


class SwitchHost(Protocol):
    """What a switchover needs of the backend lifecycle that owns the attachments."""

    def current(self, server: str) -> Attachment | None:
        """The attachment that stands for ``server`` now (None: no longer published)."""

    async def open_listed(self, entry: EndpointEntry) -> tuple[BackendSession, ServerLists]:
        """A new backend for ``entry``: initialized, listed and given the clients' state
        (closed again when any of that fails, before the error goes on)."""

    def took(self, att: Attachment, backend: BackendSession, lists: ServerLists) -> None:
        """``backend`` serves ``att`` now: advertise ``lists``, let waiting calls go."""

    def declare_holds(self) -> None:
        """Tell the table again which instances are held (a drain started or ended)."""

    def emit(self, event: RouterEvent, server: str, detail: str) -> None:
        """Report an attach, detach or failure (``Router(on_event=...)``)."""

    def wake(self) -> None:
        """An attach ended: its retry, if any, must be scheduled."""


class Switchover:
    """New instances attached beside the old ones, swapped in, and the old ones drained."""

    def __init__(self, host: SwitchHost) -> None:
        self.host = host
        #: Replaced backends still answering their calls: (server, instance id) -> backend.
        self.draining: dict[tuple[str, str], BackendSession] = {}
        self._drains: set[asyncio.Task[None]] = set()

    def follow(self, att: Attachment, entry: EndpointEntry) -> None:
        """``entry`` names a new instance of a served server: attach it beside the old one."""
        succ = att.successor
        if succ is not None and succ.instance_id == entry.endpoint.instance_id:
            succ.entry = entry  # the same new instance, perhaps a new spec
            return
        if succ is not None:
            self.drop(att)
        att.successor = Attachment(entry)
        log.info(
            "server %s: new instance %s; attaching it beside %s",
            entry.spec.name, entry.endpoint.instance_id, att.instance_id,
        )  # fmt: skip
        self.start(att, att.successor)

    def start(self, att: Attachment, succ: Attachment) -> None:
        """Attach ``succ`` (again, after a failure) beside ``att``."""
        succ.retry_at = 0.0
        succ.task = asyncio.create_task(self._attach(att, succ), name=f"attach:{succ.name}")
        succ.task.add_done_callback(lambda _t: self.host.wake())

    def drop(self, att: Attachment) -> None:
        """Give up the instance being attached beside ``att`` (if any)."""
        succ, att.successor = att.successor, None
        if succ is not None and succ.task is not None and not succ.task.done():
            succ.task.cancel()  # the attach closes what it opened

    async def _attach(self, att: Attachment, succ: Attachment) -> None:
        """Attach and list the new instance while the old one serves, then switch to it."""
        name = succ.name
        try:
            backend, lists = await self.host.open_listed(succ.entry)
        except Exception as exc:
            reason = failure_reason(exc)
            current = self.host.current(name)
            if (att.successor is succ and current is att) or current is succ:
                delay = succ.failed(reason)
                log.warning(
                    "server %s: cannot attach its new instance (%s); retrying in %.1f s",
                    name, reason, delay,
                )  # fmt: skip
                self.host.emit("failed", name, reason)
            return
        current = self.host.current(name)
        if current is att and att.successor is succ:
            self._switch(att, succ, backend, lists)
        elif current is succ and succ.backend is None:
            # The old instance went away meanwhile and this one took its place.
            succ.backend = backend
            self.host.took(succ, backend, lists)
        else:
            await backend.aclose("superseded")

    def _switch(
        self, att: Attachment, succ: Attachment, backend: BackendSession, lists: ServerLists
    ) -> None:
        """In one step (no await): the new backend serves; the old one drains, then closes."""
        old_backend, old_id = att.backend, att.instance_id
        if att.refresher is not None:
            att.refresher.cancel()
            att.refresher = None
        att.dirty.clear()
        att.entry, att.backend, att.successor = succ.entry, backend, None
        att.task = succ.task
        if old_backend is not None:
            self._drain(backend.name, old_id, old_backend)
        self.host.took(att, backend, lists)

    def _drain(self, name: str, instance_id: str, backend: BackendSession) -> None:
        self.draining[(name, instance_id)] = backend
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
            if self.draining.get((name, instance_id)) is backend:
                del self.draining[(name, instance_id)]
            self.host.declare_holds()

    async def aclose(self) -> None:
        """Close every draining backend now (the router is stopping)."""
        draining = list(self.draining.values())
        for task in list(self._drains):
            task.cancel()
        for backend in draining:
            await backend.aclose("router stopped")
        self.draining.clear()
