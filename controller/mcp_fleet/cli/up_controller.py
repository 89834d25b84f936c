"""What ``mcp-fleet up`` adds to the controller's passes, beside its router in one process.

``up`` runs the reconcile loop (``reconcile.loop.Controller``) as it is and
attaches ``UpHooks`` to it (``amend_status`` and an ``after_pass`` hook),
so that the loop itself knows nothing of routers or metrics::

    hooks = UpHooks(published=published)
    hooks.attach(controller)
    hooks.sessions = lambda: session_counts(router)   # once the router exists

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
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from mcp_fleet.reconcile.loop import Controller, PassResult
from mcp_fleet.reconcile.snapshot import StatusSnapshot, with_session_instances
from mcp_fleet.status import ServerState

if TYPE_CHECKING:
    from mcp_fleet.router.router import Router

#: Seconds between looks at the router's per-client instance counts.
SESSIONS_POLL_SECONDS = 1.0
_STARTING = (ServerState.PENDING, ServerState.STARTING)

SessionCounts = Callable[[], Mapping[str, int]]


class UpHooks:
    """The controller hooks of ``mcp-fleet up`` (see the module docstring)."""

    def __init__(
        self,
        *,
        published: asyncio.Event | None = None,
        sessions: SessionCounts | None = None,
    ) -> None:
        #: Set once the fleet as it starts is known (see the module docstring).
        self.published = published if published is not None else asyncio.Event()
        #: Per-client session instances by server (set once the router exists).
        self.sessions = sessions
        #: Servers of the last pass, to tell the metrics which are gone.
        self._known: set[str] = set()

    def attach(self, controller: Controller) -> None:
        """Make ``controller`` call these hooks at each pass."""
        controller.amend_status = self.amend_status
        controller.after_pass.append(self.after_pass)

    def amend_status(self, snapshot: StatusSnapshot) -> StatusSnapshot:
        """The router's session counts, as of now, merged into ``snapshot``."""
        if self.sessions is None:
            return snapshot
        return with_session_instances(snapshot, dict(self.sessions()))

    def after_pass(self, result: PassResult) -> None:
        """Metrics of the pass; the start-up signal once nothing is starting any more."""
        from mcp_fleet.gateway import metrics

        snapshot = result.snapshot
        if snapshot is None:
            metrics.reconcile_error("pass")
            self.published.set()  # a pass that fails says nothing more about the start
            return
        if not any(s.state in _STARTING for s in snapshot.servers):
            self.published.set()
        metrics.reconcile_pass(seconds=result.seconds)
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
