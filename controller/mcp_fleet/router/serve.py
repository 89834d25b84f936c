"""Run a Router with one frontend: what ``mcp-fleet router`` and ``mcp-fleet up`` share.

The router follows its endpoint table in one task while the frontend serves
clients in another. Over stdio the run ends when the client closes our
stdin (the client owns our lifetime, as with any stdio server); over HTTP it
runs until cancelled.

Over HTTP the team gateway always fronts the router (``http_service``):
authentication once a token exists or OIDC is configured, DNS-rebinding
checks, the status page, probes and ``/metrics``. The endpoint is opened
(settings checked, port bound) before ``on_listening`` is called, which is
where ``up`` starts the fleet's servers: nothing starts for a port in use.
Over stdio the client launched us, so nobody needs authenticating; the
per-call guard still runs when an audit log or limits are asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal

from mcp_fleet import conventions
from mcp_fleet.router.frontend_stdio import serve_stdio
from mcp_fleet.router.http_service import HttpService
from mcp_fleet.router.router import Router

if TYPE_CHECKING:
    from mcp_fleet.gateway.app import GatewaySettings
    from mcp_fleet.gateway.guard import CallGuard
    from mcp_fleet.gateway.metrics import FleetMetrics
    from mcp_fleet.gateway.web import StatusProvider
    from mcp_fleet.router.session_token import SessionSigner

Transport = Literal["stdio", "streamable-http", "sse"]


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (a faster event loop), else on asyncio's.

    Everything imported so far lives as long as the process: ``gc.freeze``
    moves it out of the collector's way, and a higher first threshold lets
    the short-lived dictionaries of forwarded messages die young without a
    collection every few hundred calls.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


TRANSPORTS: tuple[Transport, ...] = ("stdio", "streamable-http", "sse")


def stdio_guard(settings: GatewaySettings) -> tuple[CallGuard | None, Callable[[], None]]:
    """The per-call guard for a stdio client (None when audit, limits and tracing are all
    off), and how to close it (flushes the audit log)."""
    from mcp_fleet.gateway.tracing import setup as setup_tracing

    tracer = setup_tracing(settings.tracing, transport="pipe")
    if settings.audit.destination is None and not settings.limits.active and tracer is None:
        return None, lambda: None
    from mcp_fleet.gateway.audit import AuditLog
    from mcp_fleet.gateway.guard import CallGuard
    from mcp_fleet.gateway.limits import Limiter
    from mcp_fleet.gateway.metrics import default_metrics

    audit = AuditLog(settings.audit)
    guard = CallGuard(
        metrics=default_metrics(), limiter=Limiter(settings.limits), audit=audit, tracer=tracer
    )
    return guard, audit.close


async def serve(
    router: Router,
    *,
    transport: Transport = "stdio",
    host: str = conventions.DEFAULT_HTTP_HOST,
    port: int = conventions.DEFAULT_HTTP_PORT,
    path: str = conventions.DEFAULT_HTTP_PATH,
    allowed_origins: list[str] | None = None,
    gateway: GatewaySettings | None = None,
    status_provider: StatusProvider | None = None,
    metrics: FleetMetrics | None = None,
    on_listening: Callable[[], None] | None = None,
    on_ready: Callable[[str], None] | None = None,
    session_signer: SessionSigner | None = None,
) -> None:
    """Serve ``router`` on ``transport`` until the client leaves (stdio) or we are cancelled.

    ``gateway`` configures the team gateway (HTTP) or the stdio audit log;
    None: no tokens file, loopback and ``allowed_origins`` only.
    ``on_listening`` runs once clients can connect, before ``on_ready``.
    """
    from mcp_fleet.gateway.app import GatewaySettings

    settings = gateway or GatewaySettings(
        home=None, host=host, allowed_origins=tuple(allowed_origins or ())
    )
    service: HttpService | None = None
    close_guard: Callable[[], None] = lambda: None  # noqa: E731
    if transport == "stdio":
        guard, close_guard = stdio_guard(settings)
        frontend_work: Coroutine[Any, Any, None] = serve_stdio(router, guard=guard)
        where = "stdio"
    else:
        service = await HttpService.open(
            router, host=host, port=port, path=path, settings=settings,
            status_provider=status_provider, metrics=metrics, session_signer=session_signer,
        )  # fmt: skip
        frontend_work = service.serve()
        where = service.url.replace(path, "/sse") if transport == "sse" else service.url
    follower = asyncio.create_task(router.run(), name="router")
    frontend = asyncio.create_task(frontend_work, name=f"frontend-{transport}")
    try:
        if on_listening is not None:
            on_listening()
        if on_ready is not None:
            on_ready(where)
        done, _ = await asyncio.wait({follower, frontend}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # re-raise a crash of either side
    finally:
        for pending in (frontend, follower):
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
        close_guard()
