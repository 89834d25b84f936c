"""The controller as ``mcp-fleet up`` runs it: beside its router, in one process.

``up`` runs the reconcile loop (``reconcile.loop.Controller``) with three
additions, kept here so that the loop itself knows nothing of routers or
metrics:

- **Metrics per pass**: passes, their duration, file and runtime errors and
  every server's state go to the gateway's ``/metrics``.
- **The start-up signal**: ``published`` is set after the first pass that
  leaves no server Pending or Starting (or that fails), so the router's
  lists and a stdio ``initialize`` can stop waiting for the fleet.
- **Per-client session counts**: the controller never runs a shared
  instance of a ``sessions: per-client`` server (status Stopped, reason
  PerClient); the router of the same process starts one per client
  session. ``sessions`` reports how many run, and they are merged into each
  pass's snapshot just before it is stored and written, so the status file
  is still written once per pass and ``controller.status()`` (the status
  page) says the same. ``follow_sessions`` wakes the loop when the counts
  change, so ``mcp-fleet status`` follows sessions coming and going within
  a second instead of at the next resync. The status left behind when
  ``up`` stops counts what its router left running: none.

Imported only when ``up`` runs: it pulls in the controller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.reconcile.snapshot import StatusSnapshot, with_session_instances
from mcp_fleet.status import ServerState

if TYPE_CHECKING:
    from mcp_fleet.router.router import Router

#: Seconds between looks at the router's per-client instance counts.
SESSIONS_POLL_SECONDS = 1.0
_STARTING = (ServerState.PENDING, ServerState.STARTING)

SessionCounts = Callable[[], Mapping[str, int]]


class UpController(Controller):
    """The controller of ``mcp-fleet up`` (see the module docstring)."""

    def __init__(
        self,
        *args: Any,
        published: asyncio.Event | None = None,
        sessions: SessionCounts | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        #: Set once the fleet as it starts is known (see the module docstring).
        self.published = published if published is not None else asyncio.Event()
        #: Per-client session instances by server (set once the router exists).
        self.sessions = sessions
        #: The counts the last status written carries.
        self._counts: Mapping[str, int] | None = None
        self._known: set[str] = set()

    async def reconcile_once(self) -> StatusSnapshot:
        from mcp_fleet.gateway import metrics

        started = time.perf_counter()
        try:
            snapshot = await super().reconcile_once()
        except Exception:
            metrics.reconcile_error("pass")
            self.published.set()  # a pass that fails says nothing more about the start
            raise
        if self._counts is not None:  # what was stored and written, returned too
            snapshot = with_session_instances(snapshot, self._counts)
        if not any(s.state in _STARTING for s in snapshot.servers):
            self.published.set()
        metrics.reconcile_pass(seconds=time.perf_counter() - started)
        if snapshot.file_errors:
            metrics.reconcile_error("files")
        for _ in snapshot.runtime_errors:
            metrics.reconcile_error("runtime")
        names = {s.name for s in snapshot.servers}
        for server in snapshot.servers:
            metrics.backend_state(server.name, server.state.value)
        for gone in self._known - names:
            metrics.backend_removed(gone)
        self._known = names
        return snapshot

    async def _set_status(self, snapshot: StatusSnapshot) -> None:
        # Where each pass's snapshot is stored and written: the counts join it here.
        if self.sessions is not None:
            self._counts = dict(self.sessions())
            snapshot = with_session_instances(snapshot, self._counts)
        await super()._set_status(snapshot)

    async def aclose(self, *, stop_processes: bool = True) -> None:
        # The router has stopped its session instances by now: the last status says so.
        if self.sessions is not None and self._counts is not None:
            self._counts = dict(self.sessions())
            self._snapshot = with_session_instances(self._snapshot, self._counts)
        await super().aclose(stop_processes=stop_processes)


def session_counts(router: Router) -> dict[str, int]:
    """Per-client instances the router runs now, by server (its ``per_client`` view)."""
    servers = router.per_client.describe().get("servers") or {}
    return {str(name): int(info.get("instances", 0)) for name, info in servers.items()}


async def follow_sessions(
    controller: Controller, counts: SessionCounts, *, interval: float = SESSIONS_POLL_SECONDS
) -> None:
    """Wake ``controller`` whenever ``counts`` changes (until cancelled): its next pass
    writes the new counts to the status file."""
    last = dict(counts())
    while True:
        await asyncio.sleep(interval)
        now = dict(counts())
        if now != last:
            last = now
            controller.wake()
