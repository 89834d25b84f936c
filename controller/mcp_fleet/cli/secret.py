"""``mcp-fleet secret set|ls|rm``: manage secrets.env without ever showing a value.

``set NAME`` without ``=VALUE`` reads the value from the terminal without
echo (or from stdin when piped), which keeps it out of shell history. The
file is written atomically with mode 600 (fixing a looser mode on the way).
``ls`` prints names, whether each is set, and which servers use it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from mcp_fleet.cli.common import (
    CatalogOpt,
    ConfigOpt,
    DirOpt,
    JsonOpt,
    RegistryOpt,
    SecretsOpt,
    ToolsOpt,
    console,
    err_console,
    exit_on_error,
    fail,
    fleet_files_from_options,
    load_state,
    print_json,
)
from mcp_fleet.cli.views import secret_usage

if TYPE_CHECKING:
    from mcp_fleet.model import DesiredState, FleetFiles

secret_app = typer.Typer(
    help="Set, list and remove secrets in secrets.env (values are never printed). "
    "secrets.env must be private (mode 600): a file group or others can read is refused, "
    "and the servers needing its secrets do not start until you chmod 600 it.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def _state_or_none(files: FleetFiles) -> DesiredState | None:
    """The fleet, for hints only: a broken fleet file must not block secret edits."""
    from mcp_fleet.errors import FleetConfigError

    try:
        return load_state(files)
    except FleetConfigError:
        return None


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        value: str = typer.prompt(f"Value for {name}", hide_input=True, prompt_suffix=": ")
        return value
    data = sys.stdin.read()
    if data.endswith("\r\n"):
        return data[:-2]
    return data[:-1] if data.endswith("\n") else data


@secret_app.command("set")
def set_(
    assignment: Annotated[
        str,
        typer.Argument(
            metavar="NAME[=VALUE]",
            help="NAME=VALUE, or NAME alone to type the value without echo (or pipe it in).",
            show_default=False,
        ),
    ],
    dir: DirOpt = None,
    catalog: CatalogOpt = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    tools_config: ToolsOpt = None,
    secrets: SecretsOpt = None,
) -> None:
    """Set a secret in secrets.env (atomic write, mode 600).

    Giving only NAME keeps the value out of your shell history: it is read
    without echo from the terminal, or from stdin when piped (one trailing
    newline removed).

    [bold]Examples[/bold]

      mcp-fleet secret set PANOS_API_KEY
      mcp-fleet secret set PANOS_HOST=firewall.example.com
      pass show panos | mcp-fleet secret set PANOS_API_KEY
    """
    from mcp_fleet.config.secrets import check_name, set_secret, too_open

    files = fleet_files_from_options(dir, catalog, registry, config, tools_config, secrets)
    name, has_value, value = assignment.partition("=")
    with exit_on_error():
        check_name(name)
        if not has_value:
            value = _read_value(name)
        if value == "":
            raise fail(
                f"empty value for {name}; to delete a secret use: mcp-fleet secret rm {name}"
            )
        loose = files.secrets.exists() and too_open(files.secrets.stat().st_mode)
        existed = set_secret(files.secrets, name, value)
    console.print(f"{'updated' if existed else 'set'} {name} in {files.secrets}", markup=False)
    if loose:
        console.print(f"{files.secrets} was readable by others; it is now mode 600", markup=False)
    state = _state_or_none(files)
    if state is not None and name not in secret_usage(state):
        err_console.print(
            f"note: no server in the registry uses a secret called {name}",
            style="yellow",
            markup=False,
        )


@secret_app.command("ls")
def ls(
    dir: DirOpt = None,
    catalog: CatalogOpt = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    tools_config: ToolsOpt = None,
    secrets: SecretsOpt = None,
    json: JsonOpt = False,
) -> None:
    """List secret names: set or missing, and the servers that use each (never values).

    [bold]Examples[/bold]

      mcp-fleet secret ls
      mcp-fleet secret ls --json
    """
    from mcp_fleet.config.secrets import secret_names, too_open

    files = fleet_files_from_options(dir, catalog, registry, config, tools_config, secrets)
    with exit_on_error():
        names = set(secret_names(files.secrets))
    state = _state_or_none(files)
    usage = secret_usage(state) if state is not None else {}
    rows: list[dict[str, Any]] = []
    for name in sorted(names | set(usage)):
        users = usage.get(name, [])
        rows.append(
            {
                "name": name,
                "set": name in names,
                "used_by": [
                    {"server": server, "enabled": enabled, "required": required}
                    for server, enabled, required in users
                ],
            }
        )
    if json:
        print_json(rows)
        return
    if files.secrets.exists() and too_open(files.secrets.stat().st_mode):
        err_console.print(
            f"warning: {files.secrets} is readable by group or others; its secrets are not "
            f"used until you run: chmod 600 {files.secrets}",
            style="yellow",
            markup=False,
        )
    table = Table(title=f"Secrets in {files.secrets}", title_justify="left")
    for column in ("NAME", "SET", "USED BY"):
        table.add_column(column, overflow="fold")
    for row in rows:
        missing_required = not row["set"] and any(
            u["required"] and u["enabled"] for u in row["used_by"]
        )
        status = "yes" if row["set"] else ("[red]missing[/red]" if missing_required else "no")
        used = ", ".join(
            u["server"] + ("" if u["enabled"] else " (disabled)") for u in row["used_by"]
        )
        table.add_row(row["name"], status, used or "-")
    console.print(table)


@secret_app.command("rm")
def rm(
    name: Annotated[str, typer.Argument(help="Secret name.", show_default=False)],
    dir: DirOpt = None,
    secrets: SecretsOpt = None,
) -> None:
    """Remove a secret from secrets.env (atomic write, mode 600).

    [bold]Examples[/bold]

      mcp-fleet secret rm PANOS_API_KEY
    """
    from mcp_fleet.config.secrets import remove_secret

    files = fleet_files_from_options(dir, secrets=secrets)
    with exit_on_error():
        removed = remove_secret(files.secrets, name)
    if not removed:
        raise fail(f"{name} is not set in {files.secrets}")
    console.print(f"removed {name} from {files.secrets}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(secret_app, name="secret")
