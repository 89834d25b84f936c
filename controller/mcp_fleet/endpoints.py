"""The endpoint table: what the controller publishes and the router follows.

The controller owns servers; the router owns client sessions. Between them
sits this table: for every server that is Ready, how to reach it. The router
subscribes to changes and rebuilds its routing table aside when the set of
endpoints changes; the controller publishes after each reconcile pass.

Endpoints come in three kinds:

- ``StreamEndpoint``: an in-process message stream (a child process of the
  controller, or a container attached by the controller in the same process).
  ``open()`` hands out the stream; only one holder uses it at a time.
- ``DockerAttachEndpoint``: a container whose stdio a router in another
  process attaches to through the Docker API.
- ``HttpEndpoint``: a server reached over streamable HTTP or SSE (remote
  servers, containers and pods that serve HTTP, stdio bridges).

On-demand servers (``lifecycle: on-demand``) add a channel going the other
way. The controller publishes every enabled on-demand server
(``publish_on_demand``), warm or cold, so the router keeps advertising a cold
one from its list cache. ``Demand`` carries what only the router knows back
to the controller: a call is waiting for a cold server (``want`` wakes the
controller's loop), which servers have calls in flight and when each was
last used (``activity``, read when the controller plans), and whether an
idle server may go now (``retire``: the router agrees only with no call in
flight, and routes later calls to the next instance). The controller never
reaches into the router, the router never starts anything (but the
instances of ``sessions: per-client`` servers, see ``router.session_launcher``):
both only talk through this table, in one process, so every check-and-mark is atomic on
the event loop. When they run as two processes (``mcp-fleet controller``
and ``mcp-fleet router --dir``), ``reconcile.demand_ipc`` carries the same three
questions over a socket: the controller's source is then a
``RemoteDemandSource``, whose answers take a round trip (``refresh``
before planning, ``retire_async`` before a stop). ``mcp-fleet up`` has both:
its own router (``serve``) and routers of other processes on its socket
(``serve_remote``); their activity is merged, and an idle server stops only
when every router agrees (the others first, then, atomically, the own).

Replacements are make-before-break, as a rolling update with readiness and
connection draining is: the controller publishes the new instance as soon
as it is Ready, the router attaches it beside the old one, switches to it
once it is listed and closes the old one when its calls have drained; only
then does the controller stop the old instance. What the controller waits
for is the routers' word that nobody uses the old instance any more: each
router declares the instances it holds (``holding``: attached, attaching
or draining), and ``wait_released`` returns once no router of this process
holds the instance (at once when none does, so a controller without a
router never waits), bounded by its timeout. Routers of other processes
are asked over the demand socket (``ReleaseSource``, the same wait on
their side).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from mcp_fleet.model import ServerSpec, frozen_map
from mcp_fleet.transport import MessageStream


@dataclass(frozen=True, eq=False)
class StreamEndpoint:
    """A server whose stdio this process holds (process runtime, or docker in ``up``)."""

    server: str
    instance_id: str
    open: Callable[[], Awaitable[MessageStream]]


@dataclass(frozen=True)
class DockerAttachEndpoint:
    """A container attached to through the Docker API by whoever routes to it."""

    server: str
    instance_id: str
    container_id: str


@dataclass(frozen=True)
class HttpEndpoint:
    """A server that speaks MCP over HTTP."""

    server: str
    instance_id: str
    url: str
    transport: str = "streamable-http"  # or "sse"
    headers: Mapping[str, str] = field(default_factory=frozen_map)


Endpoint = StreamEndpoint | DockerAttachEndpoint | HttpEndpoint


@dataclass(frozen=True)
class EndpointEntry:
    """One routable server: its spec (for prefixes, allow-lists, timeouts) and endpoint."""

    spec: ServerSpec
    endpoint: Endpoint


@dataclass(frozen=True, slots=True)
class Activity:
    """How one on-demand server is being used, as the router sees it right now."""

    #: Seconds since a call to it last began or was last seen in flight.
    idle_seconds: float
    #: Calls forwarded to it and not answered yet.
    inflight: int = 0
    #: Calls (or a first listing) waiting for it to start.
    waiting: int = 0


class DemandSource(Protocol):
    """What the router offers the controller through ``Demand``."""

    def activity(self) -> Mapping[str, Activity]:
        """Use of every on-demand server the router holds or waits for."""

    def retire(self, server: str) -> bool:
        """Agree to the stop of an idle server: False when a call needs it."""


@runtime_checkable
class ReleaseSource(Protocol):
    """Routers in other processes that can say when they have let an instance go."""

    async def wait_released(self, server: str, instance_id: str, *, timeout: float) -> bool:
        """True once none of them holds ``instance_id`` of ``server`` (False: timed out)."""


@runtime_checkable
class RemoteDemandSource(DemandSource, Protocol):
    """A ``DemandSource`` in another process: its answers need a round trip.

    ``activity`` returns what the last ``refresh`` learned; ``retire`` (sync)
    cannot ask and only answers for the case with nobody to ask.
    """

    async def refresh(self) -> None:
        """Ask for fresh activity (bounded: an unanswering peer keeps its last answer)."""

    async def retire_async(self, server: str) -> bool:
        """``retire`` with the round trip: True only when every peer agrees."""


class Demand:
    """The router-to-controller channel for on-demand servers (see the module docstring)."""

    def __init__(self) -> None:
        self._wakers: list[Callable[[], None]] = []
        self._want_listeners: list[Callable[[str], None]] = []
        self._source: DemandSource | None = None
        self._remote: DemandSource | None = None
        #: Routers of this process -> the (server, instance id) pairs each holds.
        self._holders: dict[object, frozenset[tuple[str, str]]] = {}
        self._release_waiters: dict[tuple[str, str], list[asyncio.Future[None]]] = {}

    def subscribe(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever a cold server is wanted (the controller's loop)."""
        self._wakers.append(wake)

    def on_want(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(server)`` whenever a cold server is wanted (a link to a controller
        in another process, which needs the name)."""
        self._want_listeners.append(listener)

    @property
    def source(self) -> DemandSource | None:
        """The router of this process (``serve``), else the others' (``serve_remote``)."""
        return self._source if self._source is not None else self._remote

    @property
    def remote(self) -> DemandSource | None:
        return self._remote

    def serve(self, source: DemandSource | None) -> None:
        """Install (or, with None, remove) the router that answers ``activity`` and ``retire``."""
        self._source = source

    def serve_remote(self, source: DemandSource | None) -> None:
        """Install (None: remove) the routers of other processes, beside ``serve``'s."""
        self._remote = source

    def _sources(self) -> list[DemandSource]:
        return [s for s in (self._remote, self._source) if s is not None]

    def want(self, server: str) -> None:
        """A call is waiting for ``server``: wake whoever starts servers."""
        for wake in list(self._wakers):
            wake()
        for listener in list(self._want_listeners):
            listener(server)

    def activity(self) -> Mapping[str, Activity]:
        sources = self._sources()
        if len(sources) == 1:
            return sources[0].activity()
        return merge_activity(s.activity() for s in sources)

    def retire(self, server: str) -> bool:
        """May an idle ``server`` be stopped now? Always yes when no router is attached."""
        return all(s.retire(server) for s in self._sources())

    async def refresh(self) -> None:
        """Before planning: let a source in another process fetch fresh activity
        (nothing to do, and no suspension, for a router in this process)."""
        for source in self._sources():
            if isinstance(source, RemoteDemandSource):
                await source.refresh()

    async def retire_async(self, server: str) -> bool:
        """``retire`` as the controller's executor asks it: with a round trip for a source
        in another process, synchronously (check-and-mark atomic) for one in this process.

        With both, a busy router of this process says no before anyone is asked;
        then the others are asked, and this process's router last, with no
        suspension between its yes and the caller's stop.
        """
        sources = self._sources()
        remote = [s for s in sources if isinstance(s, RemoteDemandSource)]
        local = [s for s in sources if not isinstance(s, RemoteDemandSource)]
        if remote and any(_busy(s.activity().get(server)) for s in local):
            return False
        for source in remote:
            if not await source.retire_async(server):
                return False
        return all(s.retire(server) for s in local)

    # -- releases: which instances routers still use (make-before-break) ----------

    def holding(self, holder: object, instances: Iterable[tuple[str, str]]) -> None:
        """``holder`` (a router of this process) now uses exactly these (server, instance id)
        pairs: attached, being attached, or draining. An empty set forgets the holder."""
        held = frozenset(instances)
        if held:
            self._holders[holder] = held
        else:
            self._holders.pop(holder, None)
        self._wake_release_waiters()

    def released(self, server: str, instance_id: str, *, holder: object | None = None) -> None:
        """``holder`` (None: every router of this process) no longer uses ``instance_id``."""
        key = (server, instance_id)
        for who in [holder] if holder is not None else list(self._holders):
            held = self._holders.get(who)
            if held is not None and key in held:
                self.holding(who, held - {key})

    def held(self, server: str, instance_id: str) -> bool:
        """Does a router of this process still use ``instance_id`` of ``server``?"""
        key = (server, instance_id)
        return any(key in held for held in self._holders.values())

    async def wait_released(
        self, server: str, instance_id: str, *, timeout: float, remote: bool = True
    ) -> bool:
        """Wait until no router holds ``instance_id`` of ``server``: those of this process
        and, with ``remote``, those of other processes (``serve_remote``, when it is a
        ``ReleaseSource``). True when released, False when ``timeout`` ran out first.
        Returns at once when nobody holds it (no router: nobody to wait for)."""
        waits = [self._wait_local_release(server, instance_id, timeout)]
        source = self._remote if remote else None
        if isinstance(source, ReleaseSource):
            waits.append(source.wait_released(server, instance_id, timeout=timeout))
        results = await asyncio.gather(*waits)
        return all(results)

    async def _wait_local_release(self, server: str, instance_id: str, timeout: float) -> bool:
        key = (server, instance_id)
        if not self.held(*key):
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._release_waiters.setdefault(key, []).append(future)
        try:
            async with asyncio.timeout(timeout):
                await future
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._release_waiters.get(key)
            if waiters is not None and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._release_waiters[key]

    def _wake_release_waiters(self) -> None:
        for key in [k for k in self._release_waiters if not self.held(*k)]:
            for future in self._release_waiters.pop(key):
                if not future.done():
                    future.set_result(None)


def _busy(activity: Activity | None) -> bool:
    return activity is not None and bool(activity.inflight or activity.waiting)


def merge_activity(parts: Iterable[Mapping[str, Activity]]) -> dict[str, Activity]:
    """Several routers' activity as one: the least idle, the calls of all of them."""
    out: dict[str, Activity] = {}
    for part in parts:
        for name, a in part.items():
            seen = out.get(name)
            out[name] = (
                a
                if seen is None
                else Activity(
                    idle_seconds=min(seen.idle_seconds, a.idle_seconds),
                    inflight=seen.inflight + a.inflight,
                    waiting=seen.waiting + a.waiting,
                )
            )
    return out


class EndpointTable:
    """The current set of routable servers, swapped whole and watched by the router.

    ``publish`` replaces the table atomically; ``wait_changed`` lets the router
    sleep until the table differs from the version it last saw. Endpoints are
    compared by ``(server, instance_id)``: a replaced server has a new instance
    id, so the router re-attaches. ``publish_on_demand`` and ``demand`` are
    the on-demand additions described in the module docstring.
    """

    def __init__(self) -> None:
        self._entries: Mapping[str, EndpointEntry] = MappingProxyType({})
        self._version = 0
        self._changed = asyncio.Condition()
        self._on_demand: Mapping[str, ServerSpec] = MappingProxyType({})
        #: Where the router keeps each on-demand server's lists between runs.
        self.cache_dir: Path | None = None
        self.demand = Demand()

    @property
    def version(self) -> int:
        return self._version

    def snapshot(self) -> Mapping[str, EndpointEntry]:
        return self._entries

    async def publish(self, entries: Mapping[str, EndpointEntry]) -> None:
        """Swap in a new table; wakes waiters only when something really changed."""
        if _identity(entries) == _identity(self._entries) and all(
            entries[k].spec == self._entries[k].spec for k in entries
        ):
            return
        self._entries = MappingProxyType(dict(entries))
        self._version += 1
        async with self._changed:
            self._changed.notify_all()

    def on_demand(self) -> Mapping[str, ServerSpec]:
        """Every enabled on-demand server, whether an instance runs or not."""
        return self._on_demand

    async def publish_on_demand(
        self, specs: Mapping[str, ServerSpec], *, cache_dir: Path | None = None
    ) -> None:
        """Swap in the set of on-demand servers; wakes waiters only when it changed."""
        if cache_dir is not None:
            self.cache_dir = cache_dir
        if dict(specs) == dict(self._on_demand):
            return
        self._on_demand = MappingProxyType(dict(specs))
        self._version += 1
        async with self._changed:
            self._changed.notify_all()

    # -- releases (see the module docstring; the router-to-controller half lives in ``Demand``)

    def holding(self, holder: object, instances: Iterable[tuple[str, str]]) -> None:
        """A router declares every (server, instance id) it attaches, uses or drains now."""
        self.demand.holding(holder, instances)

    def released(self, server: str, instance_id: str, *, holder: object | None = None) -> None:
        """A router (None: every router of this process) has let ``instance_id`` go."""
        self.demand.released(server, instance_id, holder=holder)

    def held(self, server: str, instance_id: str) -> bool:
        """Does a router of this process still use ``instance_id`` of ``server``?"""
        return self.demand.held(server, instance_id)

    async def wait_released(self, server: str, instance_id: str, *, timeout: float) -> bool:
        """Before the old instance of a replaced server is stopped: wait (at most
        ``timeout``) until no router, of this process or another, uses it. True once
        released (at once with no router), False when the time ran out."""
        return await self.demand.wait_released(server, instance_id, timeout=timeout)

    async def wait_changed(self, seen_version: int) -> int:
        """Return the new version once it differs from ``seen_version``."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._version != seen_version)
        return self._version


def _identity(entries: Mapping[str, EndpointEntry]) -> set[tuple[str, str]]:
    return {(name, e.endpoint.instance_id) for name, e in entries.items()}
