"""``mcp-fleet token create|ls|revoke``: the router's bearer tokens.

``create NAME`` prints the new token on stdout and nothing else (so
``TOKEN=$(mcp-fleet token create alice)`` works); every other word goes to
stderr. The token is shown once: only its SHA-256 is stored, in
``<fleet dir>/tokens.yaml`` (mode 600). ``ls`` shows names, creation times
and allow-lists, never hashes. Changes reach a running router within a
second, without a restart.

Allow-lists: ``--servers a,b`` grants every tool of servers a and b;
``--tools server:tool,server:*`` uses Docker's ``--tools`` syntax; with
neither, the token may call everything.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

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

if TYPE_CHECKING:
    from mcp_fleet.gateway.identity import AllowList
    from mcp_fleet.model import FleetFiles

token_app = typer.Typer(
    help="Create, list and revoke the router's access tokens (stored hashed).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

ServersOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--servers",
        help="Servers this token may use, comma-separated (all their tools). Repeatable.",
        show_default=False,
    ),
]
ToolPatternsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--tools",
        help="Tools this token may call: server:tool or server:*, comma-separated. Repeatable.",
        show_default=False,
    ),
]


def _split(values: list[str] | None) -> list[str]:
    return [part.strip() for value in values or () for part in value.split(",") if part.strip()]


@token_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Who the token is for (e.g. alice, ci-bot).")],
    servers: ServersOpt = None,
    tools: ToolPatternsOpt = None,
    dir: DirOpt = None,
    catalog: CatalogOpt = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    tools_config: ToolsOpt = None,
    secrets: SecretsOpt = None,
) -> None:
    """Create a token and print it once on stdout (only its hash is kept).

    [bold]Examples[/bold]

      mcp-fleet token create alice
      mcp-fleet token create ci-bot --servers github,time
      mcp-fleet token create reader --tools github:get_issue,time:*
    """
    from mcp_fleet.gateway.identity import ALL, AllowList, PatternError
    from mcp_fleet.gateway.tokens import TokenError, create_token, tokens_path

    files = fleet_files_from_options(dir, catalog, registry, config, tools_config, secrets)
    server_names = _split(servers)
    patterns = [f"{s}:*" if s != ALL else ALL for s in server_names] + _split(tools)
    try:
        allow = AllowList.parse(patterns) if patterns else AllowList.all()
    except PatternError as exc:
        raise fail(f"--servers/--tools: {exc}") from None
    path = tokens_path(files.home)
    with exit_on_error():
        try:
            token, record = create_token(path, name, allow=allow)
        except TokenError as exc:
            raise fail(str(exc)) from None
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    err_console.print(
        f"created token {record.name!r} for {allow.describe()} in {path}; "
        "it is shown only now: store it (clients send it as 'Authorization: Bearer <token>')",
        markup=False,
    )
    _warn_unknown_servers(allow, files)


def _warn_unknown_servers(allow: AllowList, files: FleetFiles) -> None:
    from mcp_fleet.errors import FleetConfigError

    named = sorted(allow.visible)
    if not named:
        return
    try:
        state = load_state(files)
    except FleetConfigError:
        return
    unknown = [s for s in named if s not in state.servers]
    if unknown:
        err_console.print(
            f"note: not in the registry (yet): {', '.join(unknown)}", style="yellow", markup=False
        )


@token_app.command("ls")
def ls(dir: DirOpt = None, json: JsonOpt = False) -> None:
    """List tokens: name, creation time and what each may call (never the token or its hash).

    [bold]Examples[/bold]

      mcp-fleet token ls
      mcp-fleet token ls --json
    """
    from mcp_fleet.gateway.tokens import load_tokens, tokens_path

    path = tokens_path(fleet_files_from_options(dir).home)
    with exit_on_error():
        records = sorted(load_tokens(path).values(), key=lambda r: r.name)
    if json:
        print_json(
            [{"name": r.name, "created": r.created, "allow": r.allow.patterns()} for r in records]
        )
        return
    if not records:
        err_console.print(
            f"no tokens in {path}: the router accepts anyone on loopback. "
            "Create one with: mcp-fleet token create NAME",
            markup=False,
        )
        return
    table = Table(title=f"Tokens in {path}", title_justify="left")
    for column in ("NAME", "CREATED", "ALLOWED"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(r.name, r.created, r.allow.describe())
    console.print(table, markup=False)


@token_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="Name of the token to revoke.")],
    dir: DirOpt = None,
) -> None:
    """Revoke a token: a running router refuses it within a second.

    [bold]Examples[/bold]

      mcp-fleet token revoke alice
    """
    from mcp_fleet.gateway.tokens import revoke_token, tokens_path

    path = tokens_path(fleet_files_from_options(dir).home)
    with exit_on_error():
        removed = revoke_token(path, name)
    if not removed:
        raise fail(f"no token named {name!r} in {path}")
    err_console.print(f"revoked token {name!r}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
