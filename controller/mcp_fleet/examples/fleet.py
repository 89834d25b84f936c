"""The example fleet ``mcp-fleet init`` writes, rendered for one Python interpreter.

The files live next to this module as templates; ``__PYTHON__`` in the
catalog stands for the interpreter that runs the example servers (the one
mcp-fleet is installed in, ``sys.executable``, so the servers' packages are
importable), written as a quoted YAML string so any path works.
"""

from __future__ import annotations

import json
import sys
from importlib import resources

PYTHON_MARKER = "__PYTHON__"

#: Files of the example fleet, relative to the fleet directory.
FILES = (
    "catalogs/example.yaml",
    "registry.yaml",
    "config.yaml",
    "tools.yaml",
    "secrets.env",
)


def example_files(python: str | None = None) -> dict[str, str]:
    """Relative path -> content of every example file, for ``python`` (default: this one)."""
    interpreter = json.dumps(python or sys.executable)
    root = resources.files("mcp_fleet.examples") / "fleet"
    out: dict[str, str] = {}
    for rel in FILES:
        text = root.joinpath(*rel.split("/")).read_text(encoding="utf-8")
        out[rel] = text.replace(PYTHON_MARKER, interpreter)
    return out
