"""``mcp-fleet init``: write a working example fleet to start from.

The example runs on the process runtime (no Docker needed): mcp-server-time
and two small servers shipped in ``mcp_fleet.examples.servers``. An existing
fleet is never clobbered by accident: without ``--force`` init refuses; with
it, the example files replace the old ones, each kept as ``<file>.bak``, and
an existing secrets.env is never touched.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mcp_fleet import conventions
from mcp_fleet.cli.common import DirOpt, console, exit_on_error, fail

HELP = """Write a working example fleet (three small servers run as local processes).

Writes catalogs/example.yaml, registry.yaml, config.yaml, tools.yaml and an
empty secrets.env (mode 600) into the fleet directory. Refuses to touch an
existing fleet unless --force is given; then the replaced files are kept as
*.bak, and an existing secrets.env is always left as it is.

[bold]Examples[/bold]

  mcp-fleet init
  mcp-fleet init --dir ./my-fleet
  MCP_FLEET_HOME=/srv/fleet mcp-fleet init --force
"""


def init(
    dir: DirOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing fleet's files (backups kept).")
    ] = False,
) -> None:
    from mcp_fleet.config.atomic import atomic_write
    from mcp_fleet.config.resolve import default_catalogs
    from mcp_fleet.config.secrets import SECRETS_MODE
    from mcp_fleet.examples.fleet import example_files

    home = conventions.fleet_home(dir)
    existing = [
        p for p in (home / conventions.REGISTRY_FILE, *default_catalogs(home)) if p.exists()
    ]
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise fail(
            f"{home} already holds a fleet ({names}); use --force to replace it with the "
            "example (the old files are kept as .bak)"
        )
    with exit_on_error():
        for rel, text in example_files().items():
            path = home / rel
            if rel == conventions.SECRETS_FILE:
                if path.exists():
                    console.print(f"  kept     {path}", markup=False)
                    continue
                atomic_write(path, text, mode=SECRETS_MODE)
            else:
                backup = atomic_write(path, text, mode=0o644, backup=force)
                if backup is not None:
                    console.print(f"  backup   {backup}", markup=False)
            console.print(f"  wrote    {path}", markup=False)
    console.print(f"\nExample fleet ready in {home}.", markup=False)
    dir_flag = f" --dir {dir}" if dir else ""
    console.print(
        "Next:\n"
        f"  mcp-fleet catalog show{dir_flag}   # the servers and what runs them\n"
        f"  mcp-fleet up{dir_flag}             # run the fleet",
        markup=False,
    )


def register(app: typer.Typer) -> None:
    app.command("init", help=HELP)(init)
