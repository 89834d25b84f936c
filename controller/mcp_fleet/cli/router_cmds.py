"""``mcp-fleet router`` and ``mcp-fleet client config``.

``router`` runs the router alone: either against a fleet directory whose
containers a controller runs elsewhere (it follows them through Docker), or
in front of servers named on the command line (``--server NAME=COMMAND``),
like a plain MCP proxy. ``client config`` prints, or merges into the right
file, the entry that points a client (Claude Desktop, Claude Code, Codex,
Cursor) at the fleet.

Over HTTP the team gateway fronts the router: once a token exists
(``mcp-fleet token create``) or OIDC is configured, every request needs one;
Host and Origin are checked against DNS rebinding; ``/`` shows the fleet,
``/metrics`` serves Prometheus, ``/healthz`` and ``/readyz`` answer probes.
Listening on anything but loopback without authentication is refused (exit
2) unless ``--allow-unauthenticated`` says it is meant. The gateway's options
(limits, audit log, tracing...) are declared once, in ``gateway_options``.

Over stdio nothing but protocol goes to stdout; everything else goes to
stderr (so ``--audit-log -`` is refused there).
"""

from __future__ import annotations

import contextlib
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mcp_fleet import conventions
from mcp_fleet.cli.common import (
    EXIT_BAD_INPUT,
    CatalogOpt,
    ConfigOpt,
    DirOpt,
    RegistryOpt,
    SecretsOpt,
    ToolsOpt,
    err_console,
    exit_on_error,
    fail,
    fleet_files_from_options,
)
from mcp_fleet.cli.gateway_options import (
    NO_GATEWAY_OPTIONS,
    GatewayOptions,
    with_gateway_options,
)

if TYPE_CHECKING:
    from mcp_fleet.router.router import Router, RouterEvent

_ROUTER = "Router"
_KUBE = "Kubernetes"

#: Seconds a call waits for a cold on-demand server (``router.activator``'s default).
ACTIVATION_TIMEOUT_SECONDS = 30.0
#: The same for ``router --kubernetes``: a pod may first have to pull its image.
KUBERNETES_ACTIVATION_TIMEOUT_SECONDS = 120.0


class TransportChoice(StrEnum):
    STDIO = "stdio"
    STREAMABLE_HTTP = "streamable-http"
    SSE = "sse"


class PrefixChoice(StrEnum):
    COLLISIONS = "collisions"
    ALWAYS = "always"


class ClientChoice(StrEnum):
    CLAUDE_DESKTOP = "claude-desktop"
    CLAUDE_CODE = "claude-code"
    CODEX = "codex"
    CURSOR = "cursor"


class ClientTransportChoice(StrEnum):
    STDIO = "stdio"
    HTTP = "http"


TransportOpt = Annotated[
    TransportChoice,
    typer.Option("--transport", help="How clients reach the router.", rich_help_panel=_ROUTER),
]
HostOpt = Annotated[
    str, typer.Option("--host", help="Address to listen on (HTTP).", rich_help_panel=_ROUTER)
]
PortOpt = Annotated[
    int, typer.Option("--port", help="Port to listen on (HTTP).", rich_help_panel=_ROUTER)
]
PrefixOpt = Annotated[
    PrefixChoice,
    typer.Option(
        "--prefix",
        help="Prefix tool and prompt names with their server: only on collisions "
        "(default, names as the servers give them), or always (names that never change).",
        rich_help_panel=_ROUTER,
    ),
]
ToolPatternsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--tools",
        help="Expose only these tools: server:tool, server:* or tool (Docker's syntax); "
        "repeatable.",
        rich_help_panel=_ROUTER,
        show_default=False,
    ),
]
PageSizeOpt = Annotated[
    int,
    typer.Option(
        "--page-size",
        min=1,
        help="Items per page of tools/list and the other lists.",
        rich_help_panel=_ROUTER,
    ),
]
ActivationTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--activation-timeout",
        metavar="SECONDS",
        min=0.1,
        help="How long a call waits for a cold on-demand server to start before it fails.",
        rich_help_panel=_ROUTER,
    ),
]
RouterActivationTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--activation-timeout",
        metavar="SECONDS",
        min=0.1,
        help="How long a call waits for a cold on-demand server to start before it fails "
        f"(default: {ACTIVATION_TIMEOUT_SECONDS:g}; {KUBERNETES_ACTIVATION_TIMEOUT_SECONDS:g} "
        "with --kubernetes, where a pod may first pull its image).",
        rich_help_panel=_ROUTER,
        show_default=False,
    ),
]
KubernetesOpt = Annotated[
    bool,
    typer.Option(
        "--kubernetes",
        help="Serve the Ready MCPServers of a cluster (in a pod: its service account; "
        "else $KUBECONFIG). With $MCP_FLEET_ROUTER_TOKEN set, every request needs it.",
        rich_help_panel=_KUBE,
    ),
]
NamespaceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--namespace",
        help="Namespace whose MCPServers to serve (repeatable; default: the pod's own).",
        rich_help_panel=_KUBE,
        show_default=False,
    ),
]
AllNamespacesOpt = Annotated[
    bool,
    typer.Option(
        "--all-namespaces", help="Serve MCPServers of every namespace.", rich_help_panel=_KUBE
    ),
]
SelectorOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--selector",
        help="Serve only MCPServers with this label, key=value (repeatable).",
        rich_help_panel=_KUBE,
        show_default=False,
    ),
]
SessionKeyEnvOpt = Annotated[
    str,
    typer.Option(
        "--session-key-env",
        metavar="VAR",
        help="Environment variable holding the key that signs session ids, so that every "
        "replica serves every session (comma-separated keys: the first signs, all verify).",
        rich_help_panel=_KUBE,
    ),
]


def backend_metrics(event: RouterEvent, server: str, detail: str) -> None:
    """Mirror the router's view of its servers into the metrics (``router`` without a
    controller in the process: what it can reach is what it can tell)."""
    from mcp_fleet.gateway import metrics
    from mcp_fleet.status import ServerState

    if event == "attached":
        metrics.backend_state(server, ServerState.READY.value)
    elif event == "failed":
        metrics.backend_state(server, ServerState.FAILED.value)
    elif event == "detached":
        metrics.backend_state(server, ServerState.PENDING.value)


def register(app: typer.Typer) -> None:
    app.command("router")(router_command)
    client = typer.Typer(help="Point an MCP client at the fleet.", no_args_is_help=True)
    client.command("config")(client_config_command)
    app.add_typer(client, name="client")


@with_gateway_options
def router_command(
    server: Annotated[
        list[str] | None,
        typer.Option(
            "--server",
            "-s",
            help="Front this command instead of a fleet: NAME=COMMAND (shell-quoted); repeatable.",
            show_default=False,
        ),
    ] = None,
    call_timeout: Annotated[
        float,
        typer.Option(
            "--call-timeout",
            help="Seconds a --server (or --kubernetes) call may take before it fails.",
        ),
    ] = conventions.DEFAULT_CALL_TIMEOUT_SECONDS,
    transport: TransportOpt = TransportChoice.STDIO,
    host: HostOpt = conventions.DEFAULT_HTTP_HOST,
    port: PortOpt = conventions.DEFAULT_HTTP_PORT,
    prefix: PrefixOpt = PrefixChoice.COLLISIONS,
    tools: ToolPatternsOpt = None,
    page_size: PageSizeOpt = 500,
    activation_timeout: RouterActivationTimeoutOpt = None,
    gateway: GatewayOptions = NO_GATEWAY_OPTIONS,
    kubernetes: KubernetesOpt = False,
    namespace: NamespaceOpt = None,
    all_namespaces: AllNamespacesOpt = False,
    selector: SelectorOpt = None,
    session_key_env: SessionKeyEnvOpt = "MCP_FLEET_SESSION_KEY",
    dir: DirOpt = None,
    catalog: CatalogOpt = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    tools_config: ToolsOpt = None,
    secrets: SecretsOpt = None,
) -> None:
    """Run the router alone: in front of a fleet's containers, of --server commands, or of
    a cluster's MCPServers (--kubernetes)."""
    import asyncio

    from mcp_fleet.router.http_service import router_status
    from mcp_fleet.router.router import Router
    from mcp_fleet.router.serve import run, serve
    from mcp_fleet.sources.adhoc import AdhocFleet, adhoc_spec, parse_server_option
    from mcp_fleet.sources.docker_fleet import follow_docker_fleet

    stdio = transport is TransportChoice.STDIO
    gateway_options = gateway
    if kubernetes:
        if server:
            raise fail("--kubernetes and --server exclude each other", code=EXIT_BAD_INPUT)
        kubernetes_router(
            gateway_options, namespace=namespace, all_namespaces=all_namespaces,
            selector=selector, session_key_env=session_key_env, transport=transport,
            host=host, port=port, prefix=prefix, tools=tools, page_size=page_size,
            call_timeout=call_timeout,
            activation_timeout=activation_timeout or KUBERNETES_ACTIVATION_TIMEOUT_SECONDS,
        )  # fmt: skip
        return
    activation = activation_timeout or ACTIVATION_TIMEOUT_SECONDS
    with exit_on_error():
        adhoc = [parse_server_option(s) for s in server or ()]
        files = (
            None
            if adhoc
            else fleet_files_from_options(dir, catalog, registry, config, tools_config, secrets)
        )
    home = files.home if files is not None else conventions.fleet_home(dir)
    settings = gateway_options.settings(home=home, host=host, stdio=stdio)

    def on_ready(where: str) -> None:
        if not stdio:
            err_console.print(f"mcp-fleet router listening on {where}", markup=False)

    def fleet_status(router: Router) -> dict[str, object]:
        from mcp_fleet.reconcile.statusfile import read_status, status_path

        snapshot = None
        if files is not None:
            try:
                snapshot = read_status(status_path(files.state_dir))
            except (OSError, ValueError):
                snapshot = None
        return router_status(router, snapshot.to_json() if snapshot is not None else None)

    async def main() -> None:
        if adhoc:
            async with AdhocFleet() as fleet:
                for name, argv in adhoc:
                    await fleet.start(
                        adhoc_spec(name, argv, call_timeout=call_timeout), publish=False
                    )
                await fleet.publish()
                router = Router(
                    fleet.table, prefix=prefix.value, tools=tools or (), page_size=page_size,
                    on_event=backend_metrics, activation_timeout=activation,
                )  # fmt: skip
                await serve(
                    router, transport=transport.value, host=host, port=port, gateway=settings,
                    status_provider=lambda: fleet_status(router), on_ready=on_ready,
                )  # fmt: skip
            return
        assert files is not None
        from mcp_fleet.endpoints import EndpointTable
        from mcp_fleet.sources.demand_client import DemandClient

        table = EndpointTable()
        follower = asyncio.create_task(follow_docker_fleet(files, table))
        # On-demand servers: wants and activity go to the fleet's controller (another process).
        demand_link = asyncio.create_task(DemandClient(files.state_dir, table.demand).run())
        try:
            router = Router(
                table, prefix=prefix.value, tools=tools or (), page_size=page_size,
                on_event=backend_metrics, activation_timeout=activation,
            )  # fmt: skip
            await serve(
                router, transport=transport.value, host=host, port=port, gateway=settings,
                status_provider=lambda: fleet_status(router), on_ready=on_ready,
            )  # fmt: skip
        finally:
            follower.cancel()
            demand_link.cancel()

    try:
        with exit_on_error():
            run(main())
    except KeyboardInterrupt:
        pass


def kubernetes_router(
    gateway_options: GatewayOptions,
    *,
    namespace: list[str] | None,
    all_namespaces: bool,
    selector: list[str] | None,
    session_key_env: str,
    transport: TransportChoice,
    host: str,
    port: int,
    prefix: PrefixChoice,
    tools: list[str] | None,
    page_size: int,
    call_timeout: float,
    activation_timeout: float = KUBERNETES_ACTIVATION_TIMEOUT_SECONDS,
) -> None:
    """``router --kubernetes``: follow the cluster's MCPServers (``router.kube_router``)."""
    import asyncio

    from mcp_fleet.endpoints import EndpointTable
    from mcp_fleet.router.router import Router
    from mcp_fleet.router.serve import run, serve
    from mcp_fleet.sources.kube_follow import parse_selector
    from mcp_fleet.sources.kube_router import (
        env_tokens_file,
        resolve_namespaces,
        run_kubernetes,
        session_signer,
    )

    stdio = transport is TransportChoice.STDIO
    with contextlib.ExitStack() as stack:
        try:
            namespaces = resolve_namespaces(namespace, all_namespaces=all_namespaces)
            labels = parse_selector(selector or ())
            signer = None if stdio else session_signer(session_key_env)
            # A token from the environment is hashed into a private fleet directory.
            tokens_file = stack.enter_context(env_tokens_file())
        except ValueError as exc:
            raise fail(str(exc), code=EXIT_BAD_INPUT) from None
        home = tokens_file.parent if tokens_file is not None else conventions.fleet_home(None)
        settings = gateway_options.settings(home=home, host=host, stdio=stdio)

        def on_ready(where: str) -> None:
            if not stdio:
                err_console.print(f"mcp-fleet router listening on {where}", markup=False)

        def make_router(table: EndpointTable, published: asyncio.Event) -> Router:
            return Router(
                table, prefix=prefix.value, tools=tools or (), page_size=page_size,
                on_event=backend_metrics, published=published,
                activation_timeout=activation_timeout,
            )  # fmt: skip

        async def serve_router(router: Router) -> None:
            await serve(
                router, transport=transport.value, host=host, port=port, gateway=settings,
                on_ready=on_ready, session_signer=signer,
            )  # fmt: skip

        main = run_kubernetes(
            make_router, serve_router, namespaces=namespaces, selector=labels,
            call_timeout=call_timeout,
        )  # fmt: skip
        try:
            with exit_on_error():
                run(main)
        except KeyboardInterrupt:
            pass


def client_config_command(
    client: Annotated[ClientChoice, typer.Argument(help="Which client to configure.")],
    transport: Annotated[
        ClientTransportChoice,
        typer.Option(
            "--transport",
            help="stdio: the client starts mcp-fleet; http: it connects to a running one.",
        ),
    ] = ClientTransportChoice.STDIO,
    write: Annotated[
        bool,
        typer.Option("--write", help="Merge the entry into the client's file (a .bak is kept)."),
    ] = False,
    url: Annotated[
        str | None,
        typer.Option("--url", help="The router's URL for --transport http.", show_default=False),
    ] = None,
    name: Annotated[
        str, typer.Option("--name", help="Name of the entry in the client's file.")
    ] = "mcp-fleet",
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="Write to this file instead of the client's usual one.",
            show_default=False,
        ),
    ] = None,
    dir: DirOpt = None,
) -> None:
    """Print (or --write) the config entry that points CLIENT at this fleet."""
    from mcp_fleet.cli import client_config as cc

    fleet_dir = conventions.fleet_home(dir).expanduser().resolve()
    default_url = f"http://{conventions.DEFAULT_HTTP_HOST}:{conventions.DEFAULT_HTTP_PORT}{conventions.DEFAULT_HTTP_PATH}"
    cfg = cc.client_config(
        client.value,
        transport=transport.value,
        fleet_dir=fleet_dir,
        url=url or default_url,
        entry_name=name,
        path=file,
    )
    if not write:
        sys.stdout.write(cfg.snippet())
        sys.stdout.flush()
        err_console.print(f"# add this to {cfg.path} (or run again with --write)", markup=False)
        return
    with exit_on_error():
        backup = cc.write(cfg)
    err_console.print(
        f"wrote {cfg.path}" + (f" (previous version kept as {backup})" if backup else ""),
        markup=False,
    )
    if client is ClientChoice.CLAUDE_DESKTOP and transport is ClientTransportChoice.HTTP:
        err_console.print(
            "Claude Desktop reaches HTTP servers through mcp-remote (needs Node.js).", markup=False
        )
