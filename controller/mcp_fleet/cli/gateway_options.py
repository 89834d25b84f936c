"""The team gateway's command-line options, declared once for ``router`` and ``up``.

Both commands take the same gateway options (authentication, rebinding
checks, audit log, body size, limits, tracing). typer reads a command's
options from its signature, so instead of both signatures repeating a dozen
parameters and both bodies copying them into ``GatewayOptions``, a command
declares one parameter, ``gateway: GatewayOptions = NO_GATEWAY_OPTIONS``, and
``@with_gateway_options`` puts the gateway's parameters (``PARAMETERS``) in
its place in the signature typer sees, then hands the command the
``GatewayOptions`` built from what was given. Adding a gateway option is one
entry in ``PARAMETERS`` and one field of ``GatewayOptions``.

``GatewayOptions.settings`` turns the options into checked
``GatewaySettings``: a bad value stops the command with exit 2 and a message
naming the option, before anything is started.

Limits (``gateway.limits``), each off unless given: calls in flight per
identity and per server (``--max-calls-per-identity N``,
``--max-calls-per-server N``), and call rates as token buckets
(``--rate-per-identity 5/s`` with ``--burst-per-identity 10``, the same
per server). A rate is ``N``, ``N/s``, ``N/m`` or ``N/h``; a burst defaults
to the rate per second rounded up (at least 1).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar

import typer

from mcp_fleet.cli.common import EXIT_BAD_INPUT, exit_on_error, fail

if TYPE_CHECKING:
    from mcp_fleet.gateway.app import GatewaySettings
    from mcp_fleet.gateway.limits import LimitSettings

R = TypeVar("R")

#: Over stdio too: the audit log (to a file), limits and tracing apply to every transport.
GATEWAY_PANEL: Final = "Gateway"
#: Seconds per rate unit: ``5/m`` is 5 calls per 60 seconds.
RATE_UNITS: Final = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
RATE_EXAMPLES: Final = "e.g. 5, 5/s, 30/m or 1000/h"


def parse_rate(text: str) -> float:
    """Calls per second from ``N``, ``N/s``, ``N/m`` or ``N/h`` (``BadParameter`` if not)."""
    number, _, unit = text.strip().partition("/")
    seconds = RATE_UNITS.get(unit.strip().lower())
    try:
        count = float(number)
    except ValueError:
        count = float("nan")
    if seconds is None or count != count or count in (float("inf"), float("-inf")):
        raise typer.BadParameter(f"{text!r} is not a rate ({RATE_EXAMPLES})")
    if count <= 0:
        raise typer.BadParameter(f"{text!r}: a rate must be more than 0 calls ({RATE_EXAMPLES})")
    return count / seconds


OriginOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allowed-origin",
        "--allow-origin",
        help="Browser origin allowed to call the HTTP endpoint besides loopback pages "
        "(e.g. https://console.example.com; * for any); repeatable.",
        rich_help_panel=GATEWAY_PANEL,
        show_default=False,
    ),
]
AllowedHostOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allowed-host",
        help="Host name clients use to reach the router besides loopback and the bound address "
        "(name or name:port; * turns the Host check off); repeatable.",
        rich_help_panel=GATEWAY_PANEL,
        show_default=False,
    ),
]
AllowUnauthenticatedOpt = Annotated[
    bool,
    typer.Option(
        "--allow-unauthenticated",
        help="Serve a non-loopback address with no token or OIDC configured (anyone who can "
        "reach it may call every tool).",
        rich_help_panel=GATEWAY_PANEL,
    ),
]
AuditLogOpt = Annotated[
    str | None,
    typer.Option(
        "--audit-log",
        metavar="PATH|-",
        help="Write one JSON line per call to PATH (rotated, mode 600), or - for stdout "
        "(HTTP transports only).",
        rich_help_panel=GATEWAY_PANEL,
        show_default=False,
    ),
]
AuditArgumentsOpt = Annotated[
    bool,
    typer.Option(
        "--audit-arguments",
        help="Log call arguments in the audit log (secret-looking keys and known secret "
        "values masked).",
        rich_help_panel=GATEWAY_PANEL,
    ),
]
MaxBodyOpt = Annotated[
    int,
    typer.Option(
        "--max-body-bytes",
        min=1024,
        help="Largest HTTP request body accepted (413 beyond).",
        rich_help_panel=GATEWAY_PANEL,
    ),
]
PublicMetricsOpt = Annotated[
    bool,
    typer.Option(
        "--public-metrics",
        help="Serve /metrics without authentication (for an in-cluster Prometheus).",
        rich_help_panel=GATEWAY_PANEL,
    ),
]


def _concurrency(flag: str, scope: str) -> Any:
    return Annotated[
        int | None,
        typer.Option(
            flag,
            min=1,
            metavar="N",
            help=f"Calls in flight at once {scope}; one more is refused at once with a "
            "429-style MCP error (-32029) naming the limit. Default: no limit.",
            rich_help_panel=GATEWAY_PANEL,
            show_default=False,
        ),
    ]


def _rate(flag: str, burst_flag: str, scope: str) -> Any:
    return Annotated[
        float | None,
        typer.Option(
            flag,
            parser=parse_rate,
            metavar="N[/s|/m|/h]",
            help=f"Calls started {scope} per second (N or N/s), minute (N/m) or hour (N/h), "
            "as a token bucket; beyond it a call is refused with -32029 and retryAfter. "
            f"Bursts: {burst_flag}. Default: no limit.",
            rich_help_panel=GATEWAY_PANEL,
            show_default=False,
        ),
    ]


def _burst(flag: str, rate_flag: str) -> Any:
    return Annotated[
        int | None,
        typer.Option(
            flag,
            min=1,
            metavar="N",
            help=f"Calls allowed back to back under {rate_flag} (default: the rate per "
            "second rounded up, at least 1).",
            rich_help_panel=GATEWAY_PANEL,
            show_default=False,
        ),
    ]


_PER_IDENTITY: Final = "per identity (token or user)"
_PER_SERVER: Final = "per server (all identities together)"
MaxCallsPerIdentityOpt = _concurrency("--max-calls-per-identity", _PER_IDENTITY)
MaxCallsPerServerOpt = _concurrency("--max-calls-per-server", _PER_SERVER)
RatePerIdentityOpt = _rate("--rate-per-identity", "--burst-per-identity", _PER_IDENTITY)
BurstPerIdentityOpt = _burst("--burst-per-identity", "--rate-per-identity")
RatePerServerOpt = _rate("--rate-per-server", "--burst-per-server", _PER_SERVER)
BurstPerServerOpt = _burst("--burst-per-server", "--rate-per-server")
OtelOpt = Annotated[
    bool | None,
    typer.Option(
        "--otel/--no-otel",
        help="Trace every call with OpenTelemetry (needs mcp-fleet\\[otel]). Default: on when "
        "OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_ENDPOINT is set; exported as the OTEL_* "
        "variables say (OTLP over HTTP to localhost:4318 unless told otherwise).",
        rich_help_panel=GATEWAY_PANEL,
        show_default=False,
    ),
]


@dataclass(frozen=True)
class GatewayOptions:
    """The gateway's command-line options, shared by ``router`` and ``up``."""

    allow_unauthenticated: bool = False
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    audit_log: str | None = None
    audit_arguments: bool = False
    max_body_bytes: int | None = None
    public_metrics: bool = False
    max_calls_per_identity: int | None = None
    max_calls_per_server: int | None = None
    rate_per_identity: float | None = None
    burst_per_identity: int | None = None
    rate_per_server: float | None = None
    burst_per_server: int | None = None
    otel: bool | None = None

    def settings(self, *, home: Path, host: str, stdio: bool) -> GatewaySettings:
        """Checked ``GatewaySettings``: exits 2 for an unusable audit destination, a burst
        without its rate, ``--otel`` without OpenTelemetry, a broken tokens or OIDC file,
        or a non-loopback address without authentication."""
        from mcp_fleet.gateway.app import GatewaySettings, auth_configured
        from mcp_fleet.gateway.audit import AuditSettings, Destination
        from mcp_fleet.gateway.auth import (
            DEFAULT_MAX_BODY_BYTES,
            UnsafeBindError,
            refuse_unauthenticated_bind,
        )

        destination: Destination | None = None
        if self.audit_log == "-":
            if stdio:
                raise fail(
                    "--audit-log -: over stdio, stdout carries the protocol; "
                    "give the audit log a file (--audit-log PATH)"
                )
            destination = "stdout"
        elif self.audit_log:
            destination = Path(self.audit_log).expanduser()
            if destination.is_dir():
                raise fail(f"--audit-log {self.audit_log}: is a directory; give a file path")
        if self.otel:
            from mcp_fleet.gateway.tracing import TracingUnavailableError, setup

            try:
                setup(True)
            except TracingUnavailableError as exc:
                raise fail(f"--otel: {exc}") from None
        settings = GatewaySettings(
            home=home,
            host=host,
            allow_unauthenticated=self.allow_unauthenticated,
            allowed_hosts=self.allowed_hosts,
            allowed_origins=self.allowed_origins,
            max_body_bytes=self.max_body_bytes or DEFAULT_MAX_BODY_BYTES,
            public_metrics=self.public_metrics,
            audit=AuditSettings(destination=destination, log_arguments=self.audit_arguments),
            limits=self.limits(),
            tracing=self.otel,
        )
        if not stdio:
            with exit_on_error():
                configured = auth_configured(settings)
            try:
                refuse_unauthenticated_bind(host, configured, self.allow_unauthenticated)
            except UnsafeBindError as exc:
                raise fail(str(exc), code=EXIT_BAD_INPUT) from None
        return settings

    def limits(self) -> LimitSettings:
        """The ``LimitSettings``; a burst without its rate exits 2."""
        from mcp_fleet.gateway.limits import LimitSettings

        for burst, rate, name in (
            (self.burst_per_identity, self.rate_per_identity, "identity"),
            (self.burst_per_server, self.rate_per_server, "server"),
        ):
            if burst is not None and rate is None:
                raise fail(
                    f"--burst-per-{name} {burst}: a burst needs a rate; "
                    f"give --rate-per-{name} too ({RATE_EXAMPLES})"
                )
        return LimitSettings(
            identity_concurrency=self.max_calls_per_identity,
            server_concurrency=self.max_calls_per_server,
            identity_rate=self.rate_per_identity,
            identity_burst=self.burst_per_identity,
            server_rate=self.rate_per_server,
            server_burst=self.burst_per_server,
        )


#: The defaults, as a command's ``gateway`` parameter default.
NO_GATEWAY_OPTIONS: Final = GatewayOptions()

#: The gateway's parameters as typer sees them: (name = ``GatewayOptions`` field, option).
PARAMETERS: Final[tuple[tuple[str, Any], ...]] = (
    ("allow_unauthenticated", AllowUnauthenticatedOpt),
    ("allowed_hosts", AllowedHostOpt),
    ("allowed_origins", OriginOpt),
    ("audit_log", AuditLogOpt),
    ("audit_arguments", AuditArgumentsOpt),
    ("max_body_bytes", MaxBodyOpt),
    ("public_metrics", PublicMetricsOpt),
    ("max_calls_per_identity", MaxCallsPerIdentityOpt),
    ("max_calls_per_server", MaxCallsPerServerOpt),
    ("rate_per_identity", RatePerIdentityOpt),
    ("burst_per_identity", BurstPerIdentityOpt),
    ("rate_per_server", RatePerServerOpt),
    ("burst_per_server", BurstPerServerOpt),
    ("otel", OtelOpt),
)
#: Defaults shown by ``--help`` that differ from the field's (the body limit's actual value).
_SHOWN_DEFAULTS: Final[dict[str, Any]] = {"max_body_bytes": 32 * 1024 * 1024}


def _options_from(values: dict[str, Any]) -> GatewayOptions:
    """``GatewayOptions`` from the parsed values (repeatable options arrive as lists)."""
    given = {name: values.pop(name) for name, _ in PARAMETERS}
    for name in ("allowed_hosts", "allowed_origins"):
        given[name] = tuple(given[name] or ())
    return GatewayOptions(**given)


def with_gateway_options(command: Callable[..., R]) -> Callable[..., R]:
    """Replace the command's ``gateway`` parameter by the gateway's options (module doc)."""
    hints = typing.get_type_hints(command, include_extras=True)
    signature = inspect.signature(command)
    if "gateway" not in signature.parameters:
        raise TypeError(f"{command.__name__} has no 'gateway' parameter")
    parameters: list[inspect.Parameter] = []
    for param in signature.parameters.values():
        if param.name != "gateway":
            parameters.append(param.replace(annotation=hints[param.name]))
            continue
        for name, annotation in PARAMETERS:
            default = _SHOWN_DEFAULTS.get(name, getattr(NO_GATEWAY_OPTIONS, name))
            if isinstance(default, tuple):
                default = None
            parameters.append(
                inspect.Parameter(name, param.kind, default=default, annotation=annotation)
            )

    @functools.wraps(command)
    def run(**values: Any) -> R:
        gateway = _options_from(values)
        return command(**values, gateway=gateway)

    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    return run
