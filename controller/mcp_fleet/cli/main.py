"""The ``mcp-fleet`` application: global options, then one module per command group.

Each command module exposes ``register(app)``; adding a command group is one
entry in ``COMMAND_MODULES``. Modules that need heavy libraries (the Docker
SDK, kopf) should import them inside their command functions so that
``mcp-fleet --help`` and the file commands stay quick.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from mcp_fleet import __version__
from mcp_fleet.cli import (
    catalog,
    controller_cmds,
    init,
    k8s_cmds,
    router_cmds,
    secret,
    server,
    token_cmds,
    up_cmd,
)
from mcp_fleet.cli.common import LogFormat, LogFormatOpt, VerboseOpt, setup_logging

app = typer.Typer(
    name="mcp-fleet",
    help="Run a fleet of MCP servers from one directory of catalogs, a registry and secrets "
    "(Docker MCP Gateway's file formats), as local processes, Docker containers or "
    "Kubernetes pods, behind one router.\n\n"
    "Start with: mcp-fleet init, then mcp-fleet catalog show.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

#: Command modules, each with ``register(app: typer.Typer) -> None``.
COMMAND_MODULES: list[Callable[[typer.Typer], None]] = [
    up_cmd.register,
    init.register,
    catalog.register,
    server.register,
    secret.register,
    controller_cmds.register,
    k8s_cmds.register,
    token_cmds.register,
    router_cmds.register,
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mcp-fleet {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: VerboseOpt = 0,
    log_format: LogFormatOpt = LogFormat.TEXT,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Global options apply to every command."""
    setup_logging(verbose=verbose, log_format=log_format)


for _register in COMMAND_MODULES:
    _register(app)


if __name__ == "__main__":
    app()
