"""Readiness from a real MCP ``initialize`` against a server's Service (or remote URL).

A pod that is Running, even one whose container passed its own probe, is not
a working MCP server: the process may answer HTTP and still fail the
handshake. So the operator does what a client does: it opens a session with
the official SDK client (streamable HTTP, or SSE for legacy servers), sends
``initialize``, lists the tools (for ``status.tools``), and ends the session.
Anything that goes wrong, including a timeout, becomes ``ProbeResult(ok=False,
error=...)`` with a message the status can show as it is.

Two seams keep this testable without a cluster: the probe itself is any
async callable with the ``Probe`` signature, and the URL it dials comes from a
``UrlResolver`` (in-cluster DNS by default; tests map a Service to a local
server on 127.0.0.1 and probe it for real).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import anyio
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import Implementation, PaginatedRequestParams

from mcp_fleet import __version__, conventions
from mcp_fleet.operator.k8s_plan import ServiceAddress
from mcp_fleet.operator.k8s_status import ProbeResult

#: Tool pages read at most (a server that pages forever must not hang the operator).
MAX_TOOL_PAGES = 50

UrlResolver = Callable[[ServiceAddress], str]


class Probe(Protocol):
    """Probe the MCP server at ``url``; never raises, reports failures in the result."""

    async def __call__(self, url: str, *, transport: str, within: float) -> ProbeResult: ...


def cluster_url(address: ServiceAddress) -> str:
    """The default resolver: the Service's cluster DNS name (the operator runs in the cluster)."""
    return address.cluster_url()


async def mcp_probe(url: str, *, transport: str, within: float) -> ProbeResult:
    """Initialize an MCP session at ``url`` and list its tools, within ``within`` seconds."""
    timeout = within
    try:
        with anyio.fail_after(timeout):
            async with _connect(url, transport, timeout) as streams:
                read_stream, write_stream = streams[0], streams[1]
                info = Implementation(name=conventions.CLIENT_INFO_NAME, version=__version__)
                async with ClientSession(read_stream, write_stream, client_info=info) as session:
                    init = await session.initialize()
                    tools = await _tool_names(session) if init.capabilities.tools else ()
        return ProbeResult(
            ok=True,
            server_name=init.server_info.name,
            server_version=init.server_info.version,
            protocol_version=str(init.protocol_version),
            tools=tools,
        )
    except TimeoutError:
        return ProbeResult(ok=False, error=f"no answer from {url} within {timeout:g} s")
    except Exception as exc:  # every failure is a probe result, never a crash of the operator
        return ProbeResult(ok=False, error=f"{url}: {_describe(exc)}")


def _connect(url: str, transport: str, timeout: float) -> AbstractAsyncContextManager[Any]:
    if transport == "sse":
        return sse_client(url, timeout=timeout, sse_read_timeout=timeout)
    return streamable_http_client(url)


async def _tool_names(session: ClientSession) -> tuple[str, ...]:
    names: list[str] = []
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        params = PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        names.extend(t.name for t in page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tuple(names)


def _describe(exc: BaseException) -> str:
    """One line for status: unwrap exception groups down to the first real cause."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
