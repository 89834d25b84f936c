"""How the router reaches one backend: open its stream, and read everything it offers.

Kept apart from the ``Router`` (which decides *when* to attach) so the
mechanics of *how* are in one place: each endpoint kind has its connector
(a stream handed out by this process's runtime, an HTTP client, or an attach
through the Docker API), and each list is read page by page until the
server's last cursor.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from mcp_fleet import conventions
from mcp_fleet.endpoints import (
    DockerAttachEndpoint,
    Endpoint,
    EndpointEntry,
    HttpEndpoint,
    StreamEndpoint,
)
from mcp_fleet.router import jsonrpc
from mcp_fleet.router.backend import BackendError, BackendSession
from mcp_fleet.router.jsonrpc import JsonObject
from mcp_fleet.router.table import Kind
from mcp_fleet.transport import MessageStream

#: How many pages of one list we follow from a backend before giving up on it.
MAX_LIST_PAGES: Final = 1000

LIST_METHODS: Final[dict[Kind, tuple[str, str]]] = {
    "tools": ("tools/list", "tools"),
    "prompts": ("prompts/list", "prompts"),
    "resources": ("resources/list", "resources"),
    "resourceTemplates": ("resources/templates/list", "resourceTemplates"),
}
CAPABILITY_OF: Final[dict[Kind, str]] = {
    "tools": "tools",
    "prompts": "prompts",
    "resources": "resources",
    "resourceTemplates": "resources",
}
LIST_KINDS: Final[tuple[Kind, ...]] = tuple(LIST_METHODS)


async def fetch_list(
    backend: BackendSession, kind: Kind, *, timeout: float
) -> tuple[JsonObject, ...]:
    """Every item of one list the backend offers (empty when it lacks the capability)."""
    if CAPABILITY_OF[kind] not in backend.capabilities:
        return ()
    method, key = LIST_METHODS[kind]
    items: list[JsonObject] = []
    cursor: Any = None
    for _ in range(MAX_LIST_PAGES):
        params = {"cursor": cursor} if cursor is not None else None
        try:
            result = await backend.call(method, params, timeout=timeout)
        except BackendError as exc:
            if exc.code == jsonrpc.METHOD_NOT_FOUND:
                return ()
            raise
        page = result.get(key)
        if isinstance(page, list):
            items.extend(item for item in page if isinstance(item, dict))
        cursor = result.get("nextCursor")
        if not cursor:
            break
    return tuple(items)


async def connect_endpoint(endpoint: Endpoint) -> MessageStream:
    """Open a message stream to ``endpoint`` (the default connector)."""
    if isinstance(endpoint, StreamEndpoint):
        return await endpoint.open()
    if isinstance(endpoint, HttpEndpoint):
        from mcp_fleet.router.http_backend import open_http_stream

        return await open_http_stream(
            endpoint.url, transport=endpoint.transport, headers=endpoint.headers
        )
    if isinstance(endpoint, DockerAttachEndpoint):
        import docker

        from mcp_fleet.docker_attach import open_attach_stream

        api = await asyncio.to_thread(lambda: docker.from_env().api)
        return await open_attach_stream(api, endpoint.container_id)
    raise TypeError(f"unknown endpoint type {type(endpoint).__name__}")


def call_timeout(entry: EndpointEntry) -> float:
    spec_entry = entry.spec.entry
    if spec_entry is not None and spec_entry.call_timeout_seconds:
        return float(spec_entry.call_timeout_seconds)
    return conventions.DEFAULT_CALL_TIMEOUT_SECONDS


def describe(endpoint: Endpoint) -> str:
    if isinstance(endpoint, HttpEndpoint):
        return endpoint.url
    if isinstance(endpoint, DockerAttachEndpoint):
        return f"container {endpoint.container_id[:12]}"
    return f"instance {endpoint.instance_id}"


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, BackendError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
