"""Follow a Docker fleet run by a controller elsewhere, for ``mcp-fleet router --dir``.

The router alone has no controller to publish endpoints, so it derives them
the way the controller would: read the fleet files (for the specs: prefixes,
allow-lists, timeouts), observe the containers that carry this fleet's
labels, and publish a ``DockerAttachEndpoint`` for each running container
whose config hash matches its enabled server's spec (a container of an
outdated spec is about to be replaced, and the replacement gets its own id).
Level-triggered like the controller: a full pass on every Docker event and
on a short period, and a broken fleet file keeps the last good state. The
fleet files are read off the event loop, and only when their fingerprint
(a ``stat`` of each) changed (``FleetReader``): a big catalog or a slow disk
never stalls the router's clients, and an unchanged fleet costs a few stats.

On-demand servers are published too (``publish_on_demand``, with the
fleet's list cache), so the router advertises a cold one from its cached
lists or the catalog's ``tools`` as under ``mcp-fleet up``. Only those the
controller runs in Docker: an entry with only ``process:`` runs as the
controller's child, which a router in another process cannot reach. The
calls that wait for one reach the controller through ``demand_client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from mcp_fleet.config import load_fleet
from mcp_fleet.config.fingerprint import FileStamp, fleet_fingerprint
from mcp_fleet.endpoints import DockerAttachEndpoint, EndpointEntry, EndpointTable
from mcp_fleet.errors import FleetConfigError, RuntimeFailure
from mcp_fleet.model import DesiredState, FleetFiles, RuntimeKind, ServerSpec
from mcp_fleet.reconcile.demand import is_on_demand
from mcp_fleet.reconcile.loop import ON_DEMAND_CACHE_DIR
from mcp_fleet.runtimes.base import ObservedState
from mcp_fleet.runtimes.select import place

log = logging.getLogger(__name__)

RESYNC_SECONDS: Final = 2.0
_DOCKER_FLEET: Final = frozenset({RuntimeKind.DOCKER, RuntimeKind.PROCESS})


def on_demand_specs(desired: DesiredState) -> dict[str, ServerSpec]:
    """Enabled, usable on-demand servers that the controller runs as containers."""
    return {
        spec.name: spec
        for spec in desired.enabled()
        if spec.usable
        and is_on_demand(spec)
        and place(spec, preferred=RuntimeKind.DOCKER, available=_DOCKER_FLEET).kind
        is RuntimeKind.DOCKER
    }


def endpoints_for(desired: DesiredState, observed: ObservedState) -> dict[str, EndpointEntry]:
    """The routable servers: enabled, usable, with a running container of the current spec."""
    out: dict[str, EndpointEntry] = {}
    by_server = observed.by_server()
    for spec in desired.enabled():
        if not spec.usable:
            continue
        wanted = spec.config_hash()
        running = [i for i in by_server.get(spec.name, []) if i.running and i.config_hash == wanted]
        if not running:
            continue
        newest = max(running, key=lambda i: i.started_at)
        out[spec.name] = EndpointEntry(
            spec,
            DockerAttachEndpoint(
                server=spec.name, instance_id=newest.instance_id, container_id=newest.instance_id
            ),
        )
    return out


class FleetReader:
    """The fleet as last read, re-read (in a worker thread) only when its files changed."""

    def __init__(self, files: FleetFiles) -> None:
        self.files = files
        #: The last good read (a broken edit keeps it).
        self.desired: DesiredState | None = None
        self._seen: tuple[FileStamp, ...] | None = None

    async def read(self) -> DesiredState | None:
        """The current desired state; logs (once per change) a broken fleet file."""
        return await asyncio.to_thread(self._read)

    def _read(self) -> DesiredState | None:
        stamps = fleet_fingerprint(self.files)
        if stamps == self._seen:
            return self.desired
        self._seen = stamps
        try:
            self.desired = load_fleet(self.files)
        except FleetConfigError as exc:
            log.warning("fleet files invalid, keeping the last good state: %s", exc)
        return self.desired


async def follow_docker_fleet(
    files: FleetFiles, table: EndpointTable, *, interval: float = RESYNC_SECONDS
) -> None:
    """Keep ``table`` equal to the fleet's running containers until cancelled."""
    from mcp_fleet import conventions
    from mcp_fleet.runtimes.docker import DockerRuntime

    runtime = DockerRuntime(fleet=conventions.fleet_name(files.home), in_process_endpoints=False)
    reader = FleetReader(files)
    wake = asyncio.Event()

    async def events() -> None:
        with contextlib.suppress(Exception):
            async for _ in runtime.events():
                wake.set()

    watcher = asyncio.create_task(events())
    try:
        while True:
            desired = await reader.read()
            if desired is not None:
                try:
                    observed = await runtime.observe()
                except RuntimeFailure as exc:
                    log.warning("cannot observe containers: %s", exc)
                else:
                    await table.publish_on_demand(
                        on_demand_specs(desired),
                        cache_dir=files.state_dir / ON_DEMAND_CACHE_DIR,
                    )
                    await table.publish(endpoints_for(desired, observed))
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=interval)
    finally:
        watcher.cancel()
        await runtime.aclose()
