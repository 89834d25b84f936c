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
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

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


class EndpointTable:
    """The current set of routable servers, swapped whole and watched by the router.

    ``publish`` replaces the table atomically; ``wait_changed`` lets the router
    sleep until the table differs from the version it last saw. Endpoints are
    compared by ``(server, instance_id)``: a replaced server has a new instance
    id, so the router re-attaches.
    """

    def __init__(self) -> None:
        self._entries: Mapping[str, EndpointEntry] = MappingProxyType({})
        self._version = 0
        self._changed = asyncio.Condition()

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

    async def wait_changed(self, seen_version: int) -> int:
        """Return the new version once it differs from ``seen_version``."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._version != seen_version)
        return self._version


def _identity(entries: Mapping[str, EndpointEntry]) -> set[tuple[str, str]]:
    return {(name, e.endpoint.instance_id) for name, e in entries.items()}
