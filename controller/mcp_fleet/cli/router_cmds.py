"""``mcp-fleet router`` and ``mcp-fleet client config``.

``router`` runs the router alone: either against a fleet directory whose
containers a controller runs elsewhere (it follows them through Docker), or
in front of servers named on the command line (``--server NAME=COMMAND``),
like a plain MCP proxy. ``client config`` prints, or merges into the right
file, the entry that points a client (Claude Desktop, Claude Code, Codex,
Cursor) at the fleet.

Over stdio nothing but protocol goes to stdout; everything else goes to
stderr.
"""

from __future__ import annotations

import asyncio
import sys
from enum import StrEnum
from pathlib import Path
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

_ROUTER = "Router"


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
OriginOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-origin",
        help="Browser origins allowed to call the HTTP endpoint (default: loopback only).",
        rich_help_panel=_ROUTER,
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    app.command("router")(router_command)
    client = typer.Typer(help="Point an MCP client at the fleet.", no_args_is_help=True)
    client.command("config")(client_config_command)
    app.add_typer(client, name="client")


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
        typer.Option("--call-timeout", help="Seconds a --server call may take before it fails."),
    ] = conventions.DEFAULT_CALL_TIMEOUT_SECONDS,
    transport: TransportOpt = TransportChoice.STDIO,
    host: HostOpt = conventions.DEFAULT_HTTP_HOST,
    port: PortOpt = conventions.DEFAULT_HTTP_PORT,
    prefix: PrefixOpt = PrefixChoice.COLLISIONS,
    tools: ToolPatternsOpt = None,
    page_size: PageSizeOpt = 500,
    allow_origin: OriginOpt = None,
    dir: DirOpt = None,
    catalog: CatalogOpt = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    tools_config: ToolsOpt = None,
    secrets: SecretsOpt = None,
) -> None:
    """Run the router alone: in front of a fleet's containers, or of --server commands."""
    from mcp_fleet.router.adhoc import AdhocFleet, adhoc_spec, parse_server_option
    from mcp_fleet.router.follow import follow_docker_fleet
    from mcp_fleet.router.router import Router
    from mcp_fleet.router.serve import run, serve

    with exit_on_error():
        adhoc = [parse_server_option(s) for s in server or ()]
        files = (
            None
            if adhoc
            else fleet_files_from_options(dir, catalog, registry, config, tools_config, secrets)
        )

    def on_ready(where: str) -> None:
        if transport is not TransportChoice.STDIO:
            err_console.print(f"mcp-fleet router listening on {where}", markup=False)

    async def main() -> None:
        if adhoc:
            async with AdhocFleet() as fleet:
                for name, argv in adhoc:
                    await fleet.start(
                        adhoc_spec(name, argv, call_timeout=call_timeout), publish=False
                    )
                await fleet.publish()
                router = Router(
                    fleet.table, prefix=prefix.value, tools=tools or (), page_size=page_size
                )
                await serve(
                    router, transport=transport.value, host=host, port=port,
                    allowed_origins=allow_origin, on_ready=on_ready,
                )  # fmt: skip
            return
        assert files is not None
        from mcp_fleet.endpoints import EndpointTable

        table = EndpointTable()
        follower = asyncio.create_task(follow_docker_fleet(files, table))
        try:
            router = Router(table, prefix=prefix.value, tools=tools or (), page_size=page_size)
            await serve(
                router, transport=transport.value, host=host, port=port,
                allowed_origins=allow_origin, on_ready=on_ready,
            )  # fmt: skip
        finally:
            follower.cancel()

    try:
        with exit_on_error():
            run(main())
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
    from mcp_fleet.router import client_config as cc

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
