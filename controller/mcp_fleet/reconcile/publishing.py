"""Publishing endpoints after each pass, and handing a replaced server over.

The controller's side of the ``EndpointTable`` that routers follow::

    publisher = Publisher(endpoints, runtimes, state_dir=files.state_dir,
                          desired=lambda: controller.desired, memory=controller_memory,
                          flying=lambda: servers_in_flight)
    await publisher.publish(desired, observed, snapshot)  # after every pass
    await publisher.hand_over(replace_action, new)        # the executor's ``handover``
    await publisher.withdraw()                            # the controller stops

- **After every pass** ``publish`` puts one ``EndpointEntry(spec, endpoint)``
  per Ready server into the table (remote servers too, as
  ``HttpEndpoint``), and the set of on-demand servers
  (``publish_on_demand``: the router lists them while they are cold; its
  cached lists go to ``.state/cache``).
- **A replacement does not wait for the end of a pass.** As soon as the new
  instance answers its probe, ``hand_over`` publishes its endpoint in place
  of the old one, then waits until every router has let the old instance
  go (``EndpointTable.wait_released``: the router attaches the new
  instance, switches to it and drains the old one's calls; at most
  ``release_timeout``, or the server's call timeout if longer); only then
  does the executor stop the old instance. Until that flight has landed and
  been observed (``flying``), each pass publishes the new endpoint for the
  server, whatever an older observation says.

Imports no runtime implementation: runtimes are handed in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from mcp_fleet.endpoints import EndpointEntry, EndpointTable, HttpEndpoint
from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.logsetup import log_event
from mcp_fleet.model import DesiredState, RuntimeKind, ServerSpec
from mcp_fleet.reconcile.actions import Replace
from mcp_fleet.reconcile.memory import Memory
from mcp_fleet.reconcile.plan import prepare
from mcp_fleet.reconcile.snapshot import ServerStatus, StatusSnapshot
from mcp_fleet.runtimes.base import Instance, ObservedState, Runtime
from mcp_fleet.status import ServerState

log = logging.getLogger("mcp_fleet.controller")

#: Under the state directory: the router's cached lists of on-demand servers.
ON_DEMAND_CACHE_DIR = "cache"
#: At most this long (or the server's call timeout, if longer) a replaced server's old
#: instance keeps running after the new one is published, while routers drain it.
DEFAULT_RELEASE_TIMEOUT_SECONDS = 30.0


class Publisher:
    """Keeps ``endpoints`` in line with what runs (see the module docstring)."""

    def __init__(
        self,
        endpoints: EndpointTable,
        runtimes: Mapping[RuntimeKind, Runtime],
        *,
        state_dir: Path,
        desired: Callable[[], DesiredState | None],
        memory: Callable[[], Memory],
        flying: Callable[[], Iterable[str]],
        release_timeout: float = DEFAULT_RELEASE_TIMEOUT_SECONDS,
    ) -> None:
        self.endpoints = endpoints
        self.runtimes = runtimes
        self.release_timeout = release_timeout
        self._cache_dir = state_dir / ON_DEMAND_CACHE_DIR
        #: The last DesiredState that loaded; what the controller remembers now; the
        #: servers whose actions are in flight (or were when the runtimes were last listed).
        self._desired, self._memory, self._flying = desired, memory, flying
        #: Replaced servers whose new endpoint is out before their flight has landed.
        self._handovers: dict[str, EndpointEntry] = {}

    async def publish(
        self, desired: DesiredState | None, observed: ObservedState, snapshot: StatusSnapshot
    ) -> None:
        """Publish the on-demand servers, then an endpoint per Ready server of ``snapshot``
        (nothing before the fleet files have loaded once)."""
        if desired is None:
            return
        prepared = prepare(desired, self._memory())
        await self.endpoints.publish_on_demand(
            {
                name: spec
                for name, spec in desired.servers.items()
                if spec.enabled and prepared[name].on_demand and prepared[name].problem is None
            },
            cache_dir=self._cache_dir,
        )
        by_id = {i.instance_id: i for i in observed.instances}
        entries: dict[str, EndpointEntry] = {}
        for st in snapshot.servers:
            spec = desired.servers.get(st.name)
            if spec is None or st.state is not ServerState.READY:
                continue
            if st.runtime == RuntimeKind.REMOTE.value:
                remote = _remote_entry(spec, st)
                if remote is not None:
                    entries[st.name] = remote
                continue
            entry = await self._entry(st.name, spec, by_id.get(st.instance or ""))
            if entry is not None:
                entries[st.name] = entry
        self._hand_overs_into(desired, entries)
        await self.endpoints.publish(entries)

    async def withdraw(self) -> None:
        """Publish nothing any more (the controller stops)."""
        await self.endpoints.publish({})
        await self.endpoints.publish_on_demand({})

    async def _entry(
        self, name: str, spec: ServerSpec, inst: Instance | None
    ) -> EndpointEntry | None:
        runtime = self.runtimes.get(inst.runtime) if inst else None
        if inst is None or runtime is None:
            return None
        try:
            return EndpointEntry(spec, await runtime.endpoint(inst))
        except (RuntimeFailure, OSError) as exc:
            log_event(log, logging.WARNING, "no endpoint", server=name, error=str(exc))
            return None

    def _hand_overs_into(self, desired: DesiredState, entries: dict[str, EndpointEntry]) -> None:
        """Keep the endpoint of a replacement published early until its flight has landed
        and an observation since has seen the outcome (an older one may still name the
        old instance, being stopped)."""
        flying = set(self._flying())
        for name, entry in list(self._handovers.items()):
            spec = desired.servers.get(name)
            if name not in flying:
                del self._handovers[name]
            elif spec is not None and spec.enabled:
                entries[name] = entry if entry.spec == spec else EndpointEntry(spec, entry.endpoint)

    async def hand_over(self, action: Replace, new: Instance) -> None:
        """The executor's ``handover``: the new instance of ``action`` is Ready; publish it
        now and wait (bounded) until no router uses the old one any more."""
        server, old = action.server, action.old
        runtime = self.runtimes.get(new.runtime)
        try:
            endpoint = await runtime.endpoint(new) if runtime is not None else None
        except (RuntimeFailure, OSError) as exc:
            log_event(log, logging.WARNING, "no endpoint", server=server, error=str(exc))
            endpoint = None
        if endpoint is not None:
            current = self._desired()
            desired = current.servers.get(server) if current else None
            spec = desired if desired is not None and desired.enabled else action.spec
            entry = EndpointEntry(spec, endpoint)
            self._handovers[server] = entry
            await self.endpoints.publish({**self.endpoints.snapshot(), server: entry})
        remote = self.endpoints.demand.remote
        if remote is None and not self.endpoints.held(server, old.instance_id):
            return  # no router uses it: nothing to wait for
        timeout = max(self.release_timeout, _call_timeout(action.spec))
        started = time.monotonic()
        released = await self.endpoints.wait_released(server, old.instance_id, timeout=timeout)
        log_event(
            log, logging.INFO if released else logging.WARNING,
            "old instance released" if released else "old instance still in use; stopping it",
            server=server, instance=old.instance_id,
            seconds=round(time.monotonic() - started, 3),
        )  # fmt: skip


def _remote_entry(spec: ServerSpec, st: ServerStatus) -> EndpointEntry | None:
    """A remote server's URL as an endpoint (nothing runs for it)."""
    remote = spec.entry.remote if spec.entry else None
    if remote is None:
        return None
    return EndpointEntry(spec, HttpEndpoint(
        server=st.name, instance_id=f"remote:{st.config_hash}", url=remote.url,
        transport=remote.transport_type, headers=remote.headers,
    ))  # fmt: skip


def _call_timeout(spec: ServerSpec) -> float:
    """The server's own call timeout, when its catalog entry sets one (else 0)."""
    entry = spec.entry
    return float(entry.call_timeout_seconds or 0) if entry is not None else 0.0
