"""``mcp-fleet server ls|enable|disable``: what the registry runs.

Enabling checks the catalogs first (a typo is exit 2 with suggestions, not a
registry entry for a server that does not exist); both edits go through
``mcp_fleet.config.registry_edit``: atomic, other entries and comments kept.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mcp_fleet import conventions
from mcp_fleet.cli.common import (
    CatalogOpt,
    ConfigOpt,
    DirOpt,
    JsonOpt,
    RegistryOpt,
    SecretsOpt,
    ToolsOpt,
    console,
    exit_on_error,
    fail,
    fleet_files_from_options,
    load_state,
    print_diagnostics,
    print_json,
)
from mcp_fleet.cli.views import runs, server_rows

if TYPE_CHECKING:
    from mcp_fleet.model import FleetFiles

server_app = typer.Typer(
    help="List, enable and disable servers in registry.yaml.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

NameArg = Annotated[str, typer.Argument(help="Server name, as in the catalog.", show_default=False)]


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


@server_app.command("ls")
def ls(
    dir: DirOpt = None,
    catalog: CatalogOpt = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    tools_config: ToolsOpt = None,
    secrets: SecretsOpt = None,
    json: JsonOpt = False,
) -> None:
    """List the registry's servers: enabled, catalog, what runs them, problems.

    A server with problems (not in any catalog, missing secret, ...) cannot
    run; the others are not affected.

    [bold]Examples[/bold]

      mcp-fleet server ls
      mcp-fleet server ls --json
    """
    from mcp_fleet.errors import Severity

    files = fleet_files_from_options(dir, catalog, registry, config, tools_config, secrets)
    with exit_on_error():
        state = load_state(files)
    rows = server_rows(state)
    if json:
        print_json(rows)
        return
    print_diagnostics(d for d in state.diagnostics if d.severity is Severity.WARNING)
    table = Table(title=f"Servers in {files.registry} ({len(rows)})", title_justify="left")
    for column in ("SERVER", "ENABLED", "CATALOG", "RUNS", "PROBLEMS"):
        table.add_column(column, overflow="fold")
    for row in rows:
        problems = "; ".join(p["message"] for p in row["problems"])
        table.add_row(
            row["name"],
            "yes" if row["enabled"] else "no",
            row["catalog"] or "-",
            runs(state.servers[row["name"]].entry, short=True),
            f"[red]{escape(problems)}[/red]" if problems else "ok",
        )
    console.print(table)


@server_app.command("enable")
def enable(
    name: NameArg,
    catalog_name: Annotated[
        str | None,
        typer.Option(
            "--from",
            "-c",
            help="Catalog the server comes from (its file stem); written as catalog: in the "
            "registry.",
            show_default=False,
        ),
    ] = None,
    dir: DirOpt = None,
    catalog: CatalogOpt = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    tools_config: ToolsOpt = None,
    secrets: SecretsOpt = None,
) -> None:
    """Enable a catalog server in registry.yaml (atomic edit, comments kept).

    The server must exist in a loaded catalog (in --from's catalog when given),
    otherwise nothing is written and the exit code is 2. If the server still
    cannot run (a missing secret, say), it is enabled and the reason printed.

    [bold]Examples[/bold]

      mcp-fleet server enable time
      mcp-fleet server enable cisco-asa --from custom
    """
    from mcp_fleet.config.catalogs import load_catalogs
    from mcp_fleet.config.registry_edit import set_enabled

    if not conventions.SERVER_NAME_RE.match(name):
        raise fail(
            f"invalid server name {name!r}: use letters, digits, '.', '_' or '-' "
            "(at most 63, starting and ending with a letter or digit)"
        )
    files = fleet_files_from_options(dir, catalog, registry, config, tools_config, secrets)
    with exit_on_error():
        layered = load_catalogs(files.catalogs)
        if catalog_name is not None:
            source = layered.by_catalog_name(catalog_name)
            if source is None:
                loaded = ", ".join(c.name for c in layered.files) or "none"
                raise fail(f"catalog {catalog_name!r} is not loaded (loaded: {loaded})")
            if name not in source.entries:
                raise fail(
                    f"server {name!r} is not in catalog {catalog_name!r} ({source.path})"
                    + _suggest(name, sorted(source.entries))
                )
        elif name not in layered.merged:
            where = ", ".join(str(p) for p in files.catalogs) or "no catalog files"
            raise fail(
                f"server {name!r} is not in any catalog ({where})"
                + _suggest(name, sorted(layered.merged))
            )
        edit = set_enabled(files.registry, name, True, catalog=catalog_name)
    if edit.changed:
        console.print(f"enabled {name} in {files.registry}", markup=False)
    else:
        console.print(f"{name} was already enabled in {files.registry}", markup=False)
    _report_problems(files, name)


def _report_problems(files: FleetFiles, name: str) -> None:
    from mcp_fleet.errors import FleetConfigError

    try:
        state = load_state(files)
    except FleetConfigError as exc:
        print_diagnostics(exc.diagnostics)
        return
    spec = state.servers.get(name)
    if spec is not None and spec.problems:
        console.print(f"{name} cannot run yet:", style="yellow", markup=False)
        print_diagnostics(spec.problems)


@server_app.command("disable")
def disable(
    name: NameArg,
    dir: DirOpt = None,
    catalog: CatalogOpt = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    tools_config: ToolsOpt = None,
    secrets: SecretsOpt = None,
) -> None:
    """Disable a server in registry.yaml (enabled: false; its entry and comments are kept).

    A server the registry does not list is already off (exit 0); a name that
    neither the registry nor any catalog knows is exit 2.

    [bold]Examples[/bold]

      mcp-fleet server disable notes
    """
    from mcp_fleet.config.catalogs import load_catalogs
    from mcp_fleet.config.registry import load_registry
    from mcp_fleet.config.registry_edit import set_enabled

    files = fleet_files_from_options(dir, catalog, registry, config, tools_config, secrets)
    with exit_on_error():
        reg = load_registry(files.registry)
        if name not in reg.entries:
            layered = load_catalogs(files.catalogs)
            if name in layered.merged:
                console.print(f"{name} is not in {files.registry}: already off", markup=False)
                return
            known = sorted({*reg.entries, *layered.merged})
            raise fail(
                f"server {name!r} is neither in {files.registry} nor in any catalog"
                + _suggest(name, known)
            )
        edit = set_enabled(files.registry, name, False)
    if edit.changed:
        console.print(f"disabled {name} in {files.registry}", markup=False)
    else:
        console.print(f"{name} was already disabled in {files.registry}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(server_app, name="server")
