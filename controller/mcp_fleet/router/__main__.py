"""``python -m mcp_fleet.router``: the ``mcp-fleet router`` command on its own.

Handy where the console script is not on PATH (a client config pointing at a
virtualenv's interpreter, the benchmark, the tests).
"""

from __future__ import annotations

import typer

from mcp_fleet.cli.common import setup_logging
from mcp_fleet.cli.router_cmds import router_command


def main() -> None:
    setup_logging(verbose=0)
    typer.run(router_command)


if __name__ == "__main__":
    main()
