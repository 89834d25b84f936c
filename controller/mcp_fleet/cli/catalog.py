"""``mcp-fleet catalog validate|show|import``: look at and extend the catalogs.

``import`` merges (see ``mcp_fleet.config.catalog_import``): it never
silently overwrites an entry that differs; it writes nothing and exits 2
listing them unless ``--overwrite`` is given.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mcp_fleet import conventions
from mcp_fleet.cli.common import (
    EXIT_BAD_INPUT,
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
    print_diagnostics,
    print_json,
)
from mcp_fleet.cli.views import catalog_rows, runs

catalog_app = typer.Typer(
    help="Validate, show and import catalogs (the servers that exist).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@catalog_app.command("validate")
def validate(
    dir: DirOpt = None,
    catalog: CatalogOpt = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    tools_config: ToolsOpt = None,
    secrets: SecretsOpt = None,
) -> None:
    """Check every fleet file and print each problem as file:line: field: message.

    Reads the catalogs, registry.yaml, config.yaml, tools.yaml and secrets.env.
    Exits 2 when a file is invalid or an enabled server cannot run (unknown
    server, missing secret, ...); warnings alone exit 0.

    [bold]Examples[/bold]

      mcp-fleet catalog validate
      mcp-fleet catalog validate --dir ~/.docker/mcp
      mcp-fleet catalog validate --catalog ./custom.yaml --registry ./registry.yaml
    """
    from mcp_fleet.errors import Severity

    files = fleet_files_from_options(dir, catalog, registry, config, tools_config, secrets)
    with exit_on_error():
        state = load_state(files)
    print_diagnostics(state.diagnostics)
    enabled = state.enabled()
    broken = [s for s in enabled if not s.usable]
    warnings = sum(1 for d in state.diagnostics if d.severity is Severity.WARNING)
    summary = (
        f"{len(state.catalog)} catalog entries in {len(files.catalogs)} file(s), "
        f"{len(enabled)} server(s) enabled, {len(broken)} unusable, {warnings} warning(s)"
    )
    if broken:
        err_console.print(f"invalid: {summary}", style="red", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT)
    console.print(f"ok: {summary}", markup=False)


@catalog_app.command("show")
def show(
    dir: DirOpt = None,
    catalog: CatalogOpt = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    tools_config: ToolsOpt = None,
    secrets: SecretsOpt = None,
    json: JsonOpt = False,
) -> None:
    """List every server of the (layered) catalogs and whether the registry enables it.

    Columns: server, title, what runs it (image, process or remote URL), the
    secrets it needs (names only) and enabled (yes, no, or - when the registry
    does not list it). --json prints the same as a stable list of objects.

    [bold]Examples[/bold]

      mcp-fleet catalog show
      mcp-fleet catalog show --json | jq '.[].name'
    """
    from mcp_fleet.errors import Severity

    files = fleet_files_from_options(dir, catalog, registry, config, tools_config, secrets)
    with exit_on_error():
        state = load_state(files)
    rows = catalog_rows(state)
    if json:
        print_json(rows)
        return
    print_diagnostics(d for d in state.diagnostics if d.severity is Severity.WARNING)
    table = Table(title=f"Catalog ({len(rows)} servers)", title_justify="left")
    for column in ("SERVER", "TITLE", "RUNS", "SECRETS", "ENABLED"):
        table.add_column(column, overflow="fold")
    for row in rows:
        enabled = {None: "-", True: "yes", False: "no"}[row["enabled"]]
        table.add_row(
            row["name"],
            row["title"] or "",
            runs(state.catalog[row["name"]], short=True),
            ", ".join(row["secrets"]) or "-",
            enabled,
            end_section=False,
        )
    console.print(table)
    if not rows:
        console.print(
            f"No catalog entries (looked in {files.home / conventions.CATALOGS_DIR}). "
            "Try: mcp-fleet init",
            markup=False,
        )


@catalog_app.command("import")
def import_(
    file: Annotated[
        Path,
        typer.Argument(
            help="Catalog file to merge in (Docker's version 2 format).", show_default=False
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="Target catalog name: catalogs/NAME.yaml (default: FILE's stem)."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace entries that exist with different content.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report only; write nothing.")] = False,
    dir: DirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Merge a catalog file into the fleet's catalogs/NAME.yaml, entry by entry.

    Entries not in the target are added; identical ones are left alone. An
    entry that exists with different content is never replaced silently: the
    import then writes nothing, lists those entries and exits 2, unless
    --overwrite is given. Both files are validated first; the write is atomic
    and the previous file is kept as catalogs/NAME.yaml.bak. Comments of both
    files are kept.

    [bold]Examples[/bold]

      mcp-fleet catalog import ./custom.yaml
      mcp-fleet catalog import ./team.yaml --name custom --dry-run
      mcp-fleet catalog import ./team.yaml --name custom --overwrite
    """
    from mcp_fleet.config.catalog_import import import_catalog

    target_name = name or file.stem
    if not _NAME_RE.match(target_name):
        raise fail(f"invalid catalog name {target_name!r}: use letters, digits, '.', '_' or '-'")
    files = fleet_files_from_options(dir)
    target = files.home / conventions.CATALOGS_DIR / f"{target_name}.yaml"
    with exit_on_error():
        report = import_catalog(file, target, overwrite=overwrite, dry_run=dry_run)
    if json:
        print_json(report.to_json())
    else:
        for label, names in (
            ("added", report.added),
            ("changed", report.changed),
            ("unchanged", report.unchanged),
        ):
            console.print(f"{label + ':':11}{', '.join(names) or '-'}", markup=False)
        if report.written:
            console.print(f"wrote {target}", markup=False)
            if report.backup:
                console.print(f"backup {report.backup}", markup=False)
        elif dry_run and not report.refused:
            console.print(f"dry run: {target} not written", markup=False)
        elif not report.refused:
            console.print(f"nothing to do: {target} already has every entry", markup=False)
    if report.refused:
        raise fail(
            f"{len(report.changed)} entr{'y' if len(report.changed) == 1 else 'ies'} of {target} "
            f"differ from {file} ({', '.join(report.changed)}); nothing written. "
            "Re-run with --overwrite to replace them."
        )


def register(app: typer.Typer) -> None:
    app.add_typer(catalog_app, name="catalog")
