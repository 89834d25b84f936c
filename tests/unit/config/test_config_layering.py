"""Where files are read from, and several catalogs layered in order."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_support import Load, WriteFleet
from mcp_fleet import conventions
from mcp_fleet.config import load_fleet, resolve_files
from mcp_fleet.errors import FleetConfigError, Severity


def test_default_layout(tmp_path: Path) -> None:
    home = tmp_path / "f"
    (home / "catalogs").mkdir(parents=True)
    for name in ("b.yaml", "a.yml", "notes.txt", ".hidden.yaml"):
        (home / "catalogs" / name).write_text("")
    files = resolve_files(home)
    assert files.home == home
    assert files.catalogs == (home / "catalogs" / "a.yml", home / "catalogs" / "b.yaml")
    assert files.registry == home / "registry.yaml"
    assert files.config == home / "config.yaml"
    assert files.tools == home / "tools.yaml"
    assert files.secrets == home / "secrets.env"


def test_home_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(conventions.ENV_HOME, str(tmp_path))
    assert resolve_files().home == tmp_path


def test_docker_flags_override_single_files(tmp_path: Path) -> None:
    files = resolve_files(
        tmp_path,
        catalogs=[Path("/mcp/catalogs/custom.yaml"), Path("/mcp/catalogs/docker-mcp.yaml")],
        registry=Path("/mcp/registry.yaml"),
        config=Path("/mcp/config.yaml"),
        tools=Path("/mcp/tools.yaml"),
        secrets=Path("/mcp/secrets.env"),
    )
    assert files.catalogs == (
        Path("/mcp/catalogs/custom.yaml"),
        Path("/mcp/catalogs/docker-mcp.yaml"),
    )
    assert (files.registry, files.config, files.tools, files.secrets) == (
        Path("/mcp/registry.yaml"),
        Path("/mcp/config.yaml"),
        Path("/mcp/tools.yaml"),
        Path("/mcp/secrets.env"),
    )


def test_empty_directory_is_an_empty_fleet(tmp_path: Path) -> None:
    state = load_fleet(resolve_files(tmp_path / "nothing-here"))
    assert state.catalog == {} and state.servers == {} and state.diagnostics == ()
    assert state.fleet == conventions.fleet_name(tmp_path / "nothing-here")


def test_fleet_name_can_be_given(tmp_path: Path) -> None:
    assert load_fleet(resolve_files(tmp_path), fleet="prod").fleet == "prod"


def test_explicit_catalog_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(FleetConfigError, match=r"^gone\.yaml: file not found$"):
        load_fleet(resolve_files(tmp_path, catalogs=[tmp_path / "gone.yaml"]))


def test_later_catalog_wins_with_a_warning_naming_both(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(
        catalogs={
            "10-upstream": "registry:\n  time:\n    image: upstream/time\n  other: {image: o}\n",
            "20-inhouse": "version: '2'\nregistry:\n  time:\n    image: inhouse/time\n",
        },
        registry="registry: {time: {}}\n",
    )
    state = load(home)
    assert state.catalog["time"].image == "inhouse/time"
    assert state.catalog["other"].image == "o"
    [warning] = state.diagnostics
    assert warning.severity is Severity.WARNING
    upstream = home / "catalogs" / "10-upstream.yaml"
    assert str(warning) == (
        f"20-inhouse.yaml:3: registry.time: overrides the entry from 10-upstream.yaml:2 "
        f"({upstream})"
    )


def test_flag_order_decides_who_wins(write_fleet: WriteFleet) -> None:
    home = write_fleet(
        catalogs={"a": "registry: {s: {image: from-a}}\n", "b": "registry: {s: {image: from-b}}\n"}
    )
    a, b = home / "catalogs" / "a.yaml", home / "catalogs" / "b.yaml"
    assert load_fleet(resolve_files(home, catalogs=[b, a])).catalog["s"].image == "from-a"
    assert load_fleet(resolve_files(home, catalogs=[a, b])).catalog["s"].image == "from-b"


def test_registry_catalog_field_picks_that_catalog(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(
        catalogs={
            "custom": "registry: {s: {image: from-custom}}\n",
            "zz": "name: official\nregistry: {s: {image: from-zz}, t: {image: t}}\n",
        },
        registry="""
        registry:
          s: {catalog: custom}
          t: {catalog: official}
          u: {catalog: custom}
          v: {catalog: nowhere}
        """,
    )
    state = load(home)
    s = state.servers["s"]
    assert s.usable and s.entry is not None and s.entry.image == "from-custom"
    assert state.servers["t"].usable  # a catalog's own `name:` is accepted too
    assert [str(p) for p in state.servers["u"].problems] == [
        f"registry.yaml:4: registry.u.catalog: server 'u' is not in catalog 'custom' "
        f"({home / 'catalogs' / 'custom.yaml'})"
    ]
    assert [str(p) for p in state.servers["v"].problems] == [
        "registry.yaml:5: registry.v.catalog: catalog 'nowhere' is not loaded "
        "(loaded catalogs: custom, zz)"
    ]


def test_a_catalog_rewritten_in_place_is_read_again(write_fleet: WriteFleet, load: Load) -> None:
    """Parsed catalogs are reused only for identical content, however fast the edit."""
    home = write_fleet(catalogs={"c": "registry: {a: {image: x}}\n"})
    assert load(home).catalog["a"].image == "x"
    (home / "catalogs" / "c.yaml").write_text("registry: {a: {image: y}}\n")  # same size
    assert load(home).catalog["a"].image == "y"


def test_catalog_flag_may_name_a_catalog_of_the_home(tmp_path: Path) -> None:
    (tmp_path / "catalogs").mkdir()
    (tmp_path / "catalogs" / "docker-mcp.yaml").write_text("registry: {}\n")
    files = resolve_files(tmp_path, catalogs=[Path("docker-mcp"), Path("./missing.yaml")])
    assert files.catalogs == (tmp_path / "catalogs" / "docker-mcp.yaml", Path("missing.yaml"))
