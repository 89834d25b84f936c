"""The team gateway put together: one ``Gateway`` from settings.

``Gateway`` builds every part from one ``GatewaySettings``: the
authenticator (tokens file, optional OIDC), the request gate (rebinding
checks, authentication), the limiter, the audit log, the per-call guard the
router consults, the status pages and the metrics. Building it enforces the
start-up rules: a broken tokens or OIDC file is a ``FleetConfigError``, and
a non-loopback host without authentication is an ``UnsafeBindError``
unless ``allow_unauthenticated``. Tracing (``tracing``) is set up only when
asked for, by ``settings.tracing`` or the ``OTEL_*`` environment.

It fronts the router through ``callback.GatewayHandler``
(``callback.build_gateway_handler(inner_handler, ...)``): a request handler
for the router's own HTTP server (``router.http_server``), which also
enforces ``max_body_bytes`` and ``body_timeout_seconds``
(``router.http_service`` wires them together).

Routes: ``/healthz`` and ``/readyz`` answer without checks (probes come from
kubelets and load balancers, with other Host headers and no token);
everything else passes the gate, then ``/``, ``/api/status`` and
``/static/*`` go to the status pages, ``/metrics`` to Prometheus (for an
identity that may use every server only, ``gate.FULL_ACCESS_PATHS``: its
series name every server and tool; ``public_metrics=True`` exempts it from
auth, for in-cluster scrapers), and
the rest (``/mcp``, ``/sse``, ``/messages``) to the router, which gets the
caller's ``Identity`` and calls ``gateway.guard`` for each forwarded call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from mcp_fleet import conventions
from mcp_fleet.gateway.audit import AuditLog, AuditSettings
from mcp_fleet.gateway.auth import (
    DEFAULT_BODY_TIMEOUT_SECONDS,
    DEFAULT_MAX_BODY_BYTES,
    refuse_unauthenticated_bind,
)
from mcp_fleet.gateway.cookies import CookieSigner
from mcp_fleet.gateway.credentials import Authenticator
from mcp_fleet.gateway.gate import PUBLIC_PATHS, RequestGate
from mcp_fleet.gateway.guard import CallGuard
from mcp_fleet.gateway.limits import Limiter, LimitSettings
from mcp_fleet.gateway.metrics import FleetMetrics, default_metrics
from mcp_fleet.gateway.oidc import OidcValidator, load_oidc_config
from mcp_fleet.gateway.rebinding import HostPolicy
from mcp_fleet.gateway.tokens import TokenVerifier, tokens_path
from mcp_fleet.gateway.tracing import CallTracer
from mcp_fleet.gateway.tracing import setup as setup_tracing
from mcp_fleet.gateway.web import PATHS as PAGE_PATHS
from mcp_fleet.gateway.web import StatusPages, StatusProvider

#: Paths the gateway answers itself; everything else belongs to the router.
GATEWAY_PATHS = PAGE_PATHS | {"/metrics"}


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything the gateway is configured with (CLI flags map one to one)."""

    #: Fleet directory: ``tokens.yaml`` and ``oidc.yaml`` are read from here (None: no
    #: fleet directory, so no tokens file and no OIDC unless given explicitly).
    home: Path | None
    #: The address the server listens on (decides whether auth is mandatory).
    host: str = conventions.DEFAULT_HTTP_HOST
    tokens_file: Path | None = None
    #: OIDC settings; default ``<home>/oidc.yaml`` when that file exists.
    oidc_file: Path | None = None
    allow_unauthenticated: bool = False
    #: Extra Host names (``name`` or ``name:port``; ``*`` disables the Host check).
    allowed_hosts: tuple[str, ...] = ()
    #: Extra browser origins (``https://console.example.com``; ``*`` allows all).
    allowed_origins: tuple[str, ...] = ()
    rebinding_protection: bool = True
    #: Bytes of a request body, at most (more: 413).
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Seconds a request may take to arrive whole (slower: 408; None: no deadline).
    body_timeout_seconds: float | None = DEFAULT_BODY_TIMEOUT_SECONDS
    public_metrics: bool = False
    audit: AuditSettings = field(default_factory=AuditSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    #: OpenTelemetry tracing: True/False (``--otel``/``--no-otel``), None: as the
    #: ``OTEL_*`` environment says (``tracing.wanted``).
    tracing: bool | None = None
    title: str = "mcp-fleet"
    refresh_seconds: float = 5.0
    cookie_max_age_seconds: int = 12 * 3600

    def tokens_path(self) -> Path | None:
        if self.tokens_file is not None:
            return self.tokens_file
        return tokens_path(self.home) if self.home is not None else None

    def oidc_path(self) -> Path | None:
        if self.oidc_file is not None:
            return self.oidc_file
        if self.home is None:
            return None
        default = self.home / conventions.OIDC_FILE
        return default if default.exists() else None


class Gateway:
    """Every part of the gateway, built from settings (``callback.GatewayHandler`` serves it)."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        status_provider: StatusProvider,
        metrics: FleetMetrics | None = None,
        tracer: CallTracer | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or default_metrics()
        path = settings.tokens_path()
        tokens = TokenVerifier(path) if path is not None else None
        oidc_path = settings.oidc_path()
        oidc = OidcValidator(load_oidc_config(oidc_path)) if oidc_path is not None else None
        self.auth = Authenticator(
            tokens=tokens,
            oidc=oidc,
            cookies=CookieSigner(max_age=settings.cookie_max_age_seconds),
        )
        refuse_unauthenticated_bind(
            settings.host, self.auth.required, settings.allow_unauthenticated
        )
        public = (PUBLIC_PATHS | {"/metrics"}) if settings.public_metrics else PUBLIC_PATHS
        self.gate = RequestGate(
            auth=self.auth,
            hosts=HostPolicy(
                allowed_hosts=settings.allowed_hosts,
                allowed_origins=settings.allowed_origins,
                enabled=settings.rebinding_protection,
            ),
            public_paths=frozenset(public),
            on_reject=self.metrics.rejected,
        )
        self.audit = AuditLog(settings.audit)
        self.limiter = Limiter(settings.limits)
        #: The call tracer (None: tracing off, or OpenTelemetry not installed).
        self.tracer = tracer if tracer is not None else setup_tracing(settings.tracing)
        self.guard = CallGuard(
            metrics=self.metrics, limiter=self.limiter, audit=self.audit, tracer=self.tracer
        )
        self.pages = StatusPages(
            status_provider,
            metrics=self.metrics,
            title=settings.title,
            refresh_seconds=settings.refresh_seconds,
        )

    async def aclose(self) -> None:
        """Flush and close the audit log, close the JWKS client."""
        await asyncio.to_thread(self.audit.close)
        if self.auth.oidc is not None:
            await self.auth.oidc.aclose()


def auth_configured(settings: GatewaySettings) -> bool:
    """Whether a token exists or OIDC is configured (for a CLI's early bind check)."""
    if settings.oidc_path() is not None:
        return True
    path = settings.tokens_path()
    return path is not None and TokenVerifier(path).configured
