"""Run the Kubernetes commands (``bridge``, ``operator``) exactly as ``mcp-fleet`` registers them.

A minimal typer application built with ``k8s_cmds.register``, the same call
the ``mcp-fleet`` application makes, so tests drive the real command (its
options, its ``--`` handling, its exit code) as a subprocess.
"""

from __future__ import annotations

import logging

import typer
from mcp_fleet.cli.k8s_cmds import register

app = typer.Typer(pretty_exceptions_enable=False)


@app.callback()
def main() -> None:
    logging.basicConfig(level=logging.INFO)


register(app)

if __name__ == "__main__":
    app()
