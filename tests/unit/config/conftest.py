"""Helpers for the loader tests: write a small fleet directory from YAML snippets."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_support import Load, WriteFleet, dedent
from mcp_fleet.config import load_fleet, resolve_files
from mcp_fleet.model import DesiredState


@pytest.fixture
def write_fleet(tmp_path: Path) -> WriteFleet:
    """``write_fleet(catalogs={"custom": "..."}, registry="...", secrets="...")`` -> home."""

    def write(
        *,
        catalogs: dict[str, str] | None = None,
        registry: str | None = None,
        config: str | None = None,
        tools: str | None = None,
        secrets: str | None = None,
        secrets_mode: int = 0o600,
    ) -> Path:
        home = tmp_path / "fleet"
        (home / "catalogs").mkdir(parents=True, exist_ok=True)
        for name, text in (catalogs or {}).items():
            (home / "catalogs" / f"{name}.yaml").write_text(dedent(text))
        for filename, text in (
            ("registry.yaml", registry),
            ("config.yaml", config),
            ("tools.yaml", tools),
        ):
            if text is not None:
                (home / filename).write_text(dedent(text))
        if secrets is not None:
            path = home / "secrets.env"
            path.write_text(dedent(secrets))
            path.chmod(secrets_mode)
        return home

    return write


@pytest.fixture
def load() -> Load:
    def _load(home: Path) -> DesiredState:
        return load_fleet(resolve_files(home))

    return _load
