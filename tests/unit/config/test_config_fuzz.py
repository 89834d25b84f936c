"""Random bytes and random YAML into the loaders: only ``FleetConfigError`` ever comes out."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp_fleet.config import load_fleet, resolve_files
from mcp_fleet.errors import FleetConfigError

FILES = ("catalogs/c.yaml", "registry.yaml", "config.yaml", "tools.yaml", "secrets.env")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
)
keys = st.sampled_from(
    [
        "registry", "version", "image", "secrets", "env", "name", "value", "enabled",
        "catalog", "process", "command", "remote", "url", "config", "tools", "timeout",
        "idleTimeout", "port", "cpus", "lifecycle", "x", "time",
    ]
)  # fmt: skip
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(keys | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)


def check(home: Path) -> None:
    try:
        state = load_fleet(resolve_files(home))
    except FleetConfigError as exc:
        assert exc.diagnostics, "a FleetConfigError always says what is wrong"
        return
    for spec in state.servers.values():
        spec.config_hash()  # every loaded state can be hashed and planned


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=st.sampled_from(FILES), data=st.binary(max_size=300))
def test_random_bytes(tmp_path_factory: pytest.TempPathFactory, target: str, data: bytes) -> None:
    home = tmp_path_factory.mktemp("fuzz")
    path = home / target
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)
    check(home)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=st.sampled_from(FILES[:4]), doc=documents, wrap=st.booleans())
def test_random_yaml(
    tmp_path_factory: pytest.TempPathFactory, target: str, doc: object, wrap: bool
) -> None:
    home = tmp_path_factory.mktemp("fuzz")
    if wrap:  # deeper into the shape the loaders expect
        doc = {"registry": {"s": doc}} if target != "config.yaml" else {"s": doc}
    path = home / target
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    (home / "catalogs").mkdir(exist_ok=True)
    if target != "catalogs/c.yaml":
        (home / "catalogs" / "c.yaml").write_text("registry: {s: {image: i}}\n")
    check(home)


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#\n\t %@`,?~")), max_size=80))
def test_random_yaml_syntax(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    home = tmp_path_factory.mktemp("fuzz")
    (home / "registry.yaml").write_text(text)
    check(home)
