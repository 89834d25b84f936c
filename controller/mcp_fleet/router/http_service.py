"""The router's HTTP endpoint as a service: the team gateway around the HTTP frontend.

``HttpFrontend`` speaks MCP's HTTP transports; ``mcp_fleet.gateway`` decides
who may make a request (DNS-rebinding checks, bearer tokens, OIDC) and
serves the status pages, probes and ``/metrics``. ``HttpService`` puts them
together for the router's own callback HTTP server: the gateway's handler
in front, the frontend behind it receiving each request's ``Identity``, and
the gateway's per-call guard given to every session's ``CallPolicy``.

Opening is separate from serving so that everything that can refuse to
start does so first: a broken tokens or OIDC file, an unauthenticated
non-loopback address, a port in use. ``mcp-fleet up`` opens the service
before it starts the fleet's servers, so a taken port fails at once instead
of after every server has been started.

The gateway screens every request on its head (``GatewayHandler.screen``),
so a request refused for its Host, Origin or credential is answered
without the router holding its body; ``http_server`` bounds the rest of
what clients can hold (headers, bodies in flight, connections, time), and
what it refuses on its own is counted with the gateway's refusals
(``mcp_fleet_http_rejections_total``, by ``REFUSAL_REASONS``).
Opening raises the process's soft descriptor limit (to 65,536, or the hard limit)
so the connection cap is not needlessly low; connections stay capped below
it, leaving descriptors to the controller in the same process. Two
variables tune the caps: ``MCP_FLEET_MAX_CONNECTIONS`` (default
``http_limits.MAX_CONNECTIONS``, and never more than the descriptor limit
allows) and ``MCP_FLEET_MAX_CONNECTIONS_PER_CLIENT`` (one address's
connections; default ``http_limits.MAX_CONNECTIONS_PER_PEER``).

``router_status`` is the status document the gateway's pages show: a
controller's status (or the router's own view of its servers) with each
server's advertised tools and whether the router has settled (``/readyz``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from mcp_fleet import conventions
from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.router.frontend_http import SSE_KEEPALIVE_SECONDS, HttpFrontend
from mcp_fleet.router.http_limits import MAX_CONNECTIONS, MAX_CONNECTIONS_PER_PEER, raise_fd_limit
from mcp_fleet.router.http_messages import Request, Responder
from mcp_fleet.router.http_server import HttpConnection, OnRefused, start_server
from mcp_fleet.router.router import Router
from mcp_fleet.status import ServerState

if TYPE_CHECKING:
    from mcp_fleet.gateway.app import Gateway, GatewaySettings
    from mcp_fleet.gateway.callback import GatewayHandler
    from mcp_fleet.gateway.metrics import FleetMetrics
    from mcp_fleet.gateway.web import StatusProvider
    from mcp_fleet.router.session_token import SessionSigner


#: Connections the router's HTTP server holds at once, at most (see the module docstring).
ENV_MAX_CONNECTIONS = "MCP_FLEET_MAX_CONNECTIONS"
#: Connections from one client address at once, at most.
ENV_MAX_CONNECTIONS_PER_CLIENT = "MCP_FLEET_MAX_CONNECTIONS_PER_CLIENT"
#: The rejection metric's reason for each status the HTTP server refuses with on its own
#: (a 500, the screen failing, is no refusal of the client's).
REFUSAL_REASONS: Final = {
    400: "malformed",
    408: "body_timeout",
    413: "body_too_large",
    414: "headers_too_large",
    431: "headers_too_large",
    503: "busy",
}


def _env_count(name: str, default: int) -> int:
    """A positive whole number from the environment variable ``name`` (``default``: unset)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise RuntimeFailure(f"{name} must be a positive whole number, not {text!r}")
    return int(text)


def count_refusals(gateway: Gateway) -> OnRefused:
    """The HTTP server's ``on_refused`` for ``gateway``: each refusal of the server's own is
    a rejection (``gate.reject``, so ``mcp_fleet_http_rejections_total``) by its reason."""
    reject = gateway.gate.reject

    def on_refused(status: int) -> None:
        reason = REFUSAL_REASONS.get(status)
        if reason is not None:
            reject(reason)

    return on_refused


def router_status(router: Router, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The gateway's status document (``gateway.web``): ``base``, a controller's status
    (``StatusSnapshot.to_json()``), or else the router's own view of its servers; with each
    server's advertised tools and ``ready`` (the router has settled)."""
    tools: dict[str, list[str]] = {}
    for advertised, route in router.table.tool_routes.items():
        tools.setdefault(route.server, []).append(advertised)
    if base is not None:
        doc = dict(base)
        servers = [dict(s) for s in base.get("servers") or () if isinstance(s, Mapping)]
    else:
        attached = router.status().get("servers") or {}
        servers = []
        for name, info in attached.items():
            error = info.get("error")
            state = ServerState.READY if info.get("attached") else ServerState.PENDING
            servers.append(
                {
                    "name": name,
                    "state": (ServerState.FAILED if error and not info.get("attached") else state),
                    "reason": "Attached" if info.get("attached") else "NotAttached",
                    "message": error or "",
                }
            )
        doc = {"servers": servers, "all_ready": all(s["state"] == "Ready" for s in servers)}
    for server in servers:
        server["tools"] = sorted(tools.get(str(server.get("name")), ()))
    doc["servers"] = servers
    doc.setdefault("ready", router.settled.is_set())
    return doc


class HttpService:
    """The router's HTTP endpoint behind the team gateway, bound before it serves.

    ``open`` builds the gateway (a broken tokens or OIDC file is a
    ``FleetConfigError``, an unauthenticated non-loopback address an
    ``UnsafeBindError``) and binds the port (in use: ``RuntimeFailure``), so
    a caller can fail before starting anything else; ``serve`` then runs
    until cancelled and closes everything on the way out.
    """

    def __init__(
        self,
        frontend: HttpFrontend,
        handler: GatewayHandler[Request, Responder],
        server: asyncio.AbstractServer,
        connections: set[HttpConnection],
        url: str,
    ) -> None:
        self.frontend = frontend
        self.handler = handler
        self.server = server
        self.connections = connections
        self.url = url

    @property
    def gateway(self) -> Gateway:
        """The gateway's parts (guard, metrics, audit, auth)."""
        return self.handler.gateway

    @classmethod
    async def open(
        cls,
        router: Router,
        *,
        host: str = conventions.DEFAULT_HTTP_HOST,
        port: int = conventions.DEFAULT_HTTP_PORT,
        path: str = conventions.DEFAULT_HTTP_PATH,
        settings: GatewaySettings | None = None,
        status_provider: StatusProvider | None = None,
        metrics: FleetMetrics | None = None,
        session_signer: SessionSigner | None = None,
    ) -> HttpService:
        """Build the gateway around a frontend for ``router`` and listen on ``host:port``.

        ``session_signer`` signs session ids so any replica restores them (``session_token``).
        """
        from mcp_fleet.gateway.app import Gateway, GatewaySettings
        from mcp_fleet.gateway.callback import GatewayHandler

        settings = settings or GatewaySettings(home=None, host=host)
        gateway = Gateway(
            settings=settings,
            status_provider=status_provider or (lambda: router_status(router)),
            metrics=metrics,
        )
        frontend = HttpFrontend(
            router, path=path, guard=gateway.guard, session_signer=session_signer
        )
        handler: GatewayHandler[Request, Responder] = GatewayHandler(frontend.handle, gateway)
        try:
            max_connections = _env_count(ENV_MAX_CONNECTIONS, MAX_CONNECTIONS)
            per_client = _env_count(ENV_MAX_CONNECTIONS_PER_CLIENT, MAX_CONNECTIONS_PER_PEER)
        except RuntimeFailure:
            await gateway.aclose()
            raise
        raise_fd_limit()
        try:
            server, connections = await start_server(
                handler.handle,
                host=host,
                port=port,
                max_body_bytes=settings.max_body_bytes,
                request_timeout=settings.body_timeout_seconds,
                screen=handler.screen,
                max_connections=max_connections,
                max_connections_per_peer=per_client,
                on_refused=count_refusals(gateway),
            )
        except OSError as exc:
            await gateway.aclose()
            raise RuntimeFailure(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        bound = port
        for sock in server.sockets:
            bound = sock.getsockname()[1]
        handler.server = (host, bound)
        shown = f"[{host}]" if ":" in host else host
        return cls(frontend, handler, server, connections, f"http://{shown}:{bound}{path}")

    async def serve(self) -> None:
        """Serve until cancelled (keeping SSE streams alive, closing idle sessions), then close."""
        try:
            while True:
                await asyncio.sleep(SSE_KEEPALIVE_SECONDS)
                self.frontend.sweep()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the sessions (their open calls are audited as cancelled), the listener and
        the gateway (the audit log is flushed)."""
        self.frontend.aclose()
        self.server.close()
        for conn in list(self.connections):
            conn.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), timeout=2)
        await self.handler.aclose()


async def serve_http(
    router: Router,
    *,
    host: str = conventions.DEFAULT_HTTP_HOST,
    port: int = conventions.DEFAULT_HTTP_PORT,
    path: str = conventions.DEFAULT_HTTP_PATH,
    allowed_origins: Iterable[str] | None = None,
    settings: GatewaySettings | None = None,
    status_provider: StatusProvider | None = None,
    metrics: FleetMetrics | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``router`` over HTTP until cancelled; ``ready`` gets the URL once listening.

    Without ``settings`` the gateway runs with no tokens file (no authentication) and the
    rebinding checks on, allowing ``allowed_origins`` besides the loopback ones.
    """
    if settings is None:
        from mcp_fleet.gateway.app import GatewaySettings

        settings = GatewaySettings(
            home=None, host=host, allowed_origins=tuple(allowed_origins or ())
        )
    service = await HttpService.open(
        router,
        host=host,
        port=port,
        path=path,
        settings=settings,
        status_provider=status_provider,
        metrics=metrics,
    )
    if ready is not None:
        ready(service.url)
    await service.serve()
