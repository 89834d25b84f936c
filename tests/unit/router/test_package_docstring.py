"""The router package's docstring names every module of the package (a map that stays true)."""

from __future__ import annotations

from pathlib import Path

import mcp_fleet.router as package


def test_every_module_of_the_router_package_is_named_in_its_docstring() -> None:
    folder = Path(package.__file__).parent
    modules = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    doc = package.__doc__ or ""
    assert [m for m in modules if f"``{m}``" not in doc] == []
