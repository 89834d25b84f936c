"""Helpers shared by the loader tests (types and small functions; fixtures live in conftest)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

from mcp_fleet.model import DesiredState

WriteFleet = Callable[..., Path]
Load = Callable[[Path], DesiredState]


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")
