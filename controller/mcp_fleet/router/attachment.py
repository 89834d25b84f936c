"""What the router knows of one published server, and the rules every attach follows.

An ``Attachment`` is the record the backend lifecycle (``lifecycle``) keeps
per published server: the entry it follows, the backend serving it (if
any), the lists it reported, the attach under way, failures and when to
retry, the list refresh under way, and the new instance being attached
beside it during a make-before-break switch (``switchover``).

The helpers here are shared by every attach: ``open_backend`` (connect and
initialize, bounded), ``read_lists`` (every page of every list), ``backoff``
(the retry delay after a failure) and ``lists_for`` (the naming inputs of a
spec put on the lists a server reported). How each endpoint kind is
connected and how one list is paged is in ``attach``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from mcp_fleet import __version__ as _fleet_version
from mcp_fleet.endpoints import Endpoint, EndpointEntry, StreamEndpoint
from mcp_fleet.model import ServerSpec
from mcp_fleet.router.attach import LIST_KINDS, call_timeout, failure_reason, fetch_list
from mcp_fleet.router.backend import BackendListener, BackendSession
from mcp_fleet.router.table import Kind, ServerLists
from mcp_fleet.transport import MessageStream

RETRY_INITIAL_SECONDS: Final = 0.5
RETRY_MAX_SECONDS: Final = 30.0

#: Opens a message stream to an endpoint (``attach.connect_endpoint`` unless a test says).
Connector = Callable[[Endpoint], Awaitable[MessageStream]]
#: What ``Router(on_event=...)`` hears about, with the server and a detail.
RouterEvent = Literal["attached", "detached", "failed", "renamed"]


def backoff(failures: int) -> float:
    """Seconds to wait before the next attach after ``failures`` failures in a row."""
    # The exponent is capped: 2.0 ** 1024 overflows (after ~8 hours of failures), and
    # 2 ** 64 is past any maximum anyway.
    return min(RETRY_MAX_SECONDS, RETRY_INITIAL_SECONDS * 2.0 ** min(failures - 1, 64))


@dataclass
class Attachment:
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
    successor: Attachment | None = None

    @property
    def name(self) -> str:
        return self.entry.spec.name

    @property
    def instance_id(self) -> str:
        return self.entry.endpoint.instance_id

    def attaching(self) -> bool:
        """Is an attach of this instance under way?"""
        return self.task is not None and not self.task.done()

    def due(self, now: float) -> bool:
        """Is a retry due (a failed attach whose backoff has passed, none under way)?"""
        return bool(self.retry_at) and self.retry_at <= now and not self.attaching()

    def failed(self, reason: str) -> float:
        """Count a failure and schedule the retry; returns the delay until it."""
        self.failures += 1
        self.last_error = reason
        delay = backoff(self.failures)
        self.retry_at = time.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        """An attach made it: forget failures, retries and an idle release."""
        self.failures, self.last_error, self.retry_at, self.retired_at = 0, "", 0.0, 0.0

    def stop_refresh(self) -> None:
        if self.refresher is not None:
            self.refresher.cancel()

    def instance_ids(self) -> list[str]:
        """The instances this attachment holds: its own, and a successor's being attached."""
        ids = [self.instance_id]
        if self.successor is not None:
            ids.append(self.successor.instance_id)
        return ids


def lists_for(spec: ServerSpec, lists: ServerLists) -> ServerLists:
    """``lists`` with the naming inputs of ``spec`` (catalog prefix, tools allow-list)."""
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


async def open_backend(
    entry: EndpointEntry, connect: Connector, listener: BackendListener, *, timeout: float
) -> BackendSession:
    """Connect to ``entry``'s endpoint and initialize a backend session, each bounded by
    ``timeout``; a backend that fails to initialize is closed before the error goes on."""
    endpoint = entry.endpoint
    stream = await asyncio.wait_for(connect(endpoint), timeout=timeout)
    backend = BackendSession(
        entry.spec.name,
        stream,
        listener,
        instance_id=endpoint.instance_id,
        call_timeout=call_timeout(entry),
        client_version=_fleet_version,
        close_stream=not isinstance(endpoint, StreamEndpoint),
    )
    async with closed_on_failure(backend):
        await backend.start(timeout=timeout)
    return backend


@contextlib.asynccontextmanager
async def closed_on_failure(backend: BackendSession) -> AsyncIterator[None]:
    """Close ``backend`` when the block fails (the reason: the failure, or a cancelled
    attach), then let the failure go on."""
    try:
        yield
    except asyncio.CancelledError:
        await backend.aclose("attach cancelled")
        raise
    except Exception as exc:
        await backend.aclose(failure_reason(exc))
        raise


async def read_lists(backend: BackendSession, *, timeout: float) -> ServerLists:
    """Every item of every list ``backend`` offers (each call bounded by ``timeout``)."""
    fetched = {kind: await fetch_list(backend, kind, timeout=timeout) for kind in LIST_KINDS}
    return ServerLists(
        server=backend.name,
        tools=fetched["tools"],
        prompts=fetched["prompts"],
        resources=fetched["resources"],
        templates=fetched["resourceTemplates"],
    )
