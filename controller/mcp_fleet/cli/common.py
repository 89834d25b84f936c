"""What every command shares: fleet options, exit codes, diagnostics output, logging.

Commands that read the fleet take the same options, declared once here as
``Annotated`` types so each command lists them in its signature (typer needs
them there to show them in ``--help``) and passes them to
``fleet_files_from_options``:

    def ls(dir: DirOpt = None, catalog: CatalogOpt = None, registry: RegistryOpt = None,
           config: ConfigOpt = None, tools_config: ToolsOpt = None, secrets: SecretsOpt = None):
        files = fleet_files_from_options(dir, catalog, registry, config, tools_config, secrets)

Exit codes are part of the interface: 0 ok, 1 runtime failure, 2 bad input.
``exit_on_error()`` maps ``FleetConfigError`` to 2 (its diagnostics printed
to stderr, one line each) and ``RuntimeFailure``/``OSError`` to 1.

This module is imported by every command module, so by ``mcp-fleet --help``:
it imports nothing heavier than typer and rich at module level. The config
loader (pydantic models, YAML), the error types and the log setup are
imported by the functions that use them; the command modules do the same
with what their commands need (``tests/unit/cli/test_cli_imports.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from mcp_fleet.errors import Diagnostic
    from mcp_fleet.model import DesiredState, FleetFiles

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

_FLEET = "Fleet files"

DirOpt = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        "-d",
        metavar="DIR",
        help="Fleet directory (default: $MCP_FLEET_HOME, else ~/.mcp-fleet). "
        "--dir ~/.docker/mcp reads an existing Docker MCP setup.",
        rich_help_panel=_FLEET,
        show_default=False,
    ),
]
CatalogOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--catalog",
        metavar="FILE",
        help="Catalog file; repeat to layer several (later wins). "
        "Default: every catalogs/*.yaml of the fleet directory.",
        rich_help_panel=_FLEET,
        show_default=False,
    ),
]
RegistryOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        metavar="FILE",
        help="registry.yaml to use instead of the fleet directory's.",
        rich_help_panel=_FLEET,
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="config.yaml to use instead of the fleet directory's.",
        rich_help_panel=_FLEET,
        show_default=False,
    ),
]
ToolsOpt = Annotated[
    Path | None,
    typer.Option(
        "--tools-config",
        metavar="FILE",
        help="tools.yaml to use instead of the fleet directory's.",
        rich_help_panel=_FLEET,
        show_default=False,
    ),
]
SecretsOpt = Annotated[
    Path | None,
    typer.Option(
        "--secrets",
        metavar="FILE",
        help="secrets.env to use instead of the fleet directory's.",
        rich_help_panel=_FLEET,
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print stable JSON instead of a table.")]


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


VerboseOpt = Annotated[
    int,
    typer.Option("--verbose", "-v", count=True, help="More log output (-v info, -vv debug)."),
]
LogFormatOpt = Annotated[
    LogFormat,
    typer.Option("--log-format", help="Log line format on stderr.", case_sensitive=False),
]


def fleet_files_from_options(
    dir: Path | None = None,
    catalog: list[Path] | None = None,
    registry: Path | None = None,
    config: Path | None = None,
    tools_config: Path | None = None,
    secrets: Path | None = None,
) -> FleetFiles:
    """The ``FleetFiles`` the shared options select."""
    from mcp_fleet.config import resolve_files

    return resolve_files(
        dir,
        catalogs=tuple(catalog or ()),
        registry=registry,
        config=config,
        tools=tools_config,
        secrets=secrets,
    )


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before


def load_state(files: FleetFiles) -> DesiredState:
    """``load_fleet`` for commands that print the diagnostics themselves (no double logging)."""
    from mcp_fleet.config import load_fleet

    with _quiet("mcp_fleet.config"):
        return load_fleet(files)


def print_diagnostics(diagnostics: Iterable[Diagnostic]) -> None:
    """One line per diagnostic on stderr, ``error:`` or ``warning:`` first."""
    from mcp_fleet.errors import Severity

    for diag in diagnostics:
        warning = diag.severity is Severity.WARNING
        label, style = ("warning", "yellow") if warning else ("error", "red")
        err_console.print(
            f"{label}: {diag}", style=style, markup=False, soft_wrap=True, highlight=False
        )


def fail(message: str, *, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``error: message`` on stderr and return the ``Exit`` to raise."""
    err_console.print(f"error: {message}", style="red", markup=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Map mcp-fleet's errors to exit codes: bad input 2, runtime failure 1."""
    from mcp_fleet.errors import FleetConfigError, RuntimeFailure

    try:
        yield
    except FleetConfigError as exc:
        print_diagnostics(exc.diagnostics)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except RuntimeFailure as exc:
        raise fail(str(exc), code=EXIT_FAILURE) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise fail(f"{where}{exc.strerror or exc}", code=EXIT_FAILURE) from None


def print_json(data: Any) -> None:
    """Stable JSON on stdout (sorted keys, two-space indent), never through rich."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def setup_logging(*, verbose: int = 0, log_format: LogFormat = LogFormat.TEXT) -> None:
    """Log to stderr through ``mcp_fleet.logsetup``: warnings, ``-v`` info, ``-vv`` debug."""
    from mcp_fleet import logsetup

    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logsetup.setup_logging(fmt=log_format.value, level=level)
