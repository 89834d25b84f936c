"""Types shared by the CLI tests (fixtures live in conftest)."""

from __future__ import annotations

from collections.abc import Callable

from click.testing import Result

Invoke = Callable[..., Result]
