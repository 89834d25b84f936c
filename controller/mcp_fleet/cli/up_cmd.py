"""``mcp-fleet up``: the controller and the router in one process, the gateway in one command.

Run by a person, it serves streamable HTTP on 127.0.0.1:8811 and prints the
URL, each server as it becomes ready, and how to point a client at it. Run
by a client (``--transport stdio``, what ``mcp-fleet client config`` writes),
it prints nothing but protocol on stdout; everything else goes to stderr.

The controller publishes every Ready server into an endpoint table and the
router follows that table, so a server enabled in registry.yaml appears to
connected clients (``notifications/tools/list_changed``) without a restart.
Lists asked for before the fleet has started (every server Ready and
attached, or failed) wait for it, up to the router's settle time, so a
client that lists tools right after ``initialize`` sees the fleet, not an
empty gateway; over stdio the answer to ``initialize`` itself waits (up to
10 s, ``router.startup_gate``), so a call sent right after it works too.

Per-client servers (``sessions: per-client``) get one instance per client
session from ``up``'s router, at most ``--max-session-instances`` at once
(else ``MCP_FLEET_MAX_SESSION_INSTANCES``, else 32); the controller's status
says how many run (``up_controller``).

``up`` also listens on the fleet's demand socket (``reconcile.demand_server``),
as ``mcp-fleet controller`` does: a ``mcp-fleet router --dir`` beside it
(docker runtime) can then start cold on-demand servers too, while ``up``'s
own router keeps its in-process path; ``endpoints.Demand`` merges the two.

Over HTTP the team gateway fronts the router (see ``router_cmds``; its
options, limits and tracing among them, come from ``gateway_options``): tokens
or OIDC, rebinding checks, the status page at ``/`` showing the
controller's view of every server, ``/metrics`` with the controller's
passes and server states, ``/healthz`` and ``/readyz``. The gateway's
settings are checked and the port bound before the controller starts, so a
bad tokens file, an unsafe address or a port in use stop ``up`` before any
server is started.

This module parses the options and handles signals and the console; the
application itself (what starts, in which order, and how it stops) is
``up_app.UpApp``, which a test can run in its own event loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from typing import Annotated

import typer

from mcp_fleet import conventions
from mcp_fleet.cli.common import (
    CatalogOpt,
    ConfigOpt,
    DirOpt,
    RegistryOpt,
    SecretsOpt,
    ToolsOpt,
    err_console,
    exit_on_error,
    fleet_files_from_options,
)
from mcp_fleet.cli.controller_cmds import RuntimeChoice, RuntimeOpt
from mcp_fleet.cli.gateway_options import (
    NO_GATEWAY_OPTIONS,
    GatewayOptions,
    with_gateway_options,
)
from mcp_fleet.cli.router_cmds import (
    ACTIVATION_TIMEOUT_SECONDS,
    ActivationTimeoutOpt,
    HostOpt,
    PageSizeOpt,
    PortOpt,
    PrefixChoice,
    PrefixOpt,
    ToolPatternsOpt,
    TransportChoice,
    TransportOpt,
)

#: What ``--max-session-instances`` falls back to (``MCP_FLEET_MAX_SESSION_INSTANCES``, else this).
DEFAULT_MAX_SESSION_INSTANCES = 32
MaxSessionInstancesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-session-instances",
        metavar="N",
        min=1,
        help="Instances of `sessions: per-client` servers run at once, all client sessions "
        "together; a session's first call beyond it gets MCP error -32029. Default: "
        f"$MCP_FLEET_MAX_SESSION_INSTANCES, else {DEFAULT_MAX_SESSION_INSTANCES}.",
        rich_help_panel="Router",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    app.command("up")(up_command)


@with_gateway_options
def up_command(
    transport: TransportOpt = TransportChoice.STREAMABLE_HTTP,
    host: HostOpt = conventions.DEFAULT_HTTP_HOST,
    port: PortOpt = conventions.DEFAULT_HTTP_PORT,
    runtime: RuntimeOpt = RuntimeChoice.PROCESS,
    prefix: PrefixOpt = PrefixChoice.COLLISIONS,
    tools: ToolPatternsOpt = None,
    page_size: PageSizeOpt = 500,
    activation_timeout: ActivationTimeoutOpt = ACTIVATION_TIMEOUT_SECONDS,
    max_session_instances: MaxSessionInstancesOpt = None,
    gateway: GatewayOptions = NO_GATEWAY_OPTIONS,
    dir: DirOpt = None,
    catalog: CatalogOpt = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    tools_config: ToolsOpt = None,
    secrets: SecretsOpt = None,
) -> None:
    """Run the fleet and serve it to MCP clients: controller and router in one process."""
    import asyncio

    from mcp_fleet.model import RuntimeKind
    from mcp_fleet.router.serve import run
    from mcp_fleet.runtimes.select import build_runtimes

    stdio = transport is TransportChoice.STDIO
    with exit_on_error():
        session_cap = session_instance_limit(max_session_instances)
        files = fleet_files_from_options(dir, catalog, registry, config, tools_config, secrets)
    settings = gateway.settings(home=files.home, host=host, stdio=stdio)
    with exit_on_error():
        kind = RuntimeKind(runtime.value)
        runtimes = build_runtimes(
            kind, fleet=conventions.fleet_name(files.home), state_dir=files.state_dir
        )
    if not stdio:
        logging.getLogger("mcp_fleet.controller").setLevel(logging.WARNING)

    async def main() -> None:
        from mcp_fleet.cli.up_app import UpApp, UpOptions

        options = UpOptions(
            files=files, runtime=kind, transport=transport.value, host=host, port=port,
            prefix=prefix.value, tools=tuple(tools or ()), page_size=page_size,
            activation_timeout=activation_timeout, max_session_instances=session_cap,
            gateway=settings,
        )  # fmt: skip
        app = UpApp(options, runtimes=runtimes, say=_say)
        _cancel_on_signals()
        await app.run()

    try:
        with exit_on_error():
            run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass


def _say(text: str) -> None:
    """Progress for the person who ran ``up`` (stderr; ``UpApp`` says nothing over stdio)."""
    err_console.print(text, markup=False, highlight=False)


def _cancel_on_signals() -> None:
    """SIGTERM and SIGHUP cancel the running task (``up``'s main): it stops the fleet and
    exits 0, as Ctrl-C does."""
    import asyncio

    main_task = asyncio.current_task()
    if main_task is None:
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, main_task.cancel)


def session_instance_limit(option: int | None, environ: Mapping[str, str] | None = None) -> int:
    """The cap on per-client instances: ``--max-session-instances``, else the environment
    variable ``MCP_FLEET_MAX_SESSION_INSTANCES``, else 32.

    Raises ``FleetConfigError`` naming the variable when it is not a positive integer
    (typer itself refuses an option below 1).
    """
    from mcp_fleet.router.session_launcher import max_session_instances

    if option is not None:
        return option
    return max_session_instances(os.environ if environ is None else environ)
