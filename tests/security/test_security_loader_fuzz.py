"""Random bytes and random YAML into every loader: only our validation error, always placed.

Every function that reads a fleet file a user (or an attacker with write
access to one file) controls gets random bytes, random YAML documents of
the right and wrong shapes, and random YAML-ish syntax: each catalog,
registry, config, tools and secrets loader alone, the whole fleet load, a
catalog import (the fuzzed file as the source) and a registry edit (the
fuzzed file as the registry). The only exception allowed out is
``FleetConfigError``; each of its diagnostics names a file, and a line as
well whenever the input parses as YAML (or is a secrets file, which is
read line by line); an edit that fails leaves its file byte-for-byte as it
was. ``MAX_EXAMPLES`` per loader keeps the suite quick; the hypothesis
database replays any failure found before.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from mcp_fleet.config import (
    import_catalog,
    load_catalog,
    load_config,
    load_fleet,
    load_registry,
    load_secrets,
    load_tools,
    resolve_files,
    set_enabled,
)
from mcp_fleet.errors import FleetConfigError

MAX_EXAMPLES = 150
#: The same examples every run, so the suite is green or red for the code, not the dice;
#: MCP_FLEET_FUZZ_EXPLORE=1 draws new ones (and keeps what fails in .hypothesis).
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=not os.environ.get("MCP_FLEET_FUZZ_EXPLORE"),
    database=None if not os.environ.get("MCP_FLEET_FUZZ_EXPLORE") else settings.default.database,
)
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
GOOD_CATALOG = 'version: "2"\nregistry:\n  s:\n    image: example/s\n'

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["..", "../x", "{{s.k}}", "a=b", "*", "&", "~"]),
)  # fmt: skip
keys = st.sampled_from(
    ["registry", "version", "image", "secrets", "env", "name", "value", "enabled", "catalog",
     "process", "command", "cwd", "remote", "url", "headers", "config", "tools", "volumes",
     "memory", "cpus", "lifecycle", "sessions", "network", "type", "readOnly", "s"]
)  # fmt: skip
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(keys | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=30,
)


@st.composite
def yaml_documents(draw: st.DrawFn) -> bytes:
    """A random document, often wrapped into the shape the loaders expect."""
    doc = draw(documents)
    wrap = draw(st.sampled_from(["none", "registry", "entry"]))
    if wrap == "registry":
        doc = {"registry": doc}
    elif wrap == "entry":
        doc = {"version": "2", "registry": {"s": doc}}
    return yaml.dump(doc, Dumper=_Dumper, allow_unicode=True).encode()


entries = st.fixed_dictionaries(
    {"image": st.text(min_size=1, max_size=10)},
    optional={
        "command": st.lists(st.text(max_size=8), max_size=3),
        "env": st.lists(st.fixed_dictionaries({"name": st.text(max_size=6),
                                               "value": st.text(max_size=6)}), max_size=2),
        "volumes": st.lists(st.sampled_from(["../../etc:/x", "/d:/d", "v:/v", "a:b:c"]),
                            max_size=2),
        "secrets": st.lists(st.fixed_dictionaries({"name": st.text(max_size=6)}), max_size=2),
        "process": st.fixed_dictionaries({"command": st.lists(st.text(max_size=6), max_size=2)}),
        "memory": st.sampled_from(["1g", "5m", "lots", "0"]),
    },
)  # fmt: skip
catalogs = st.dictionaries(st.sampled_from(["s", "t", "../x", "a/b", ""]) | st.text(max_size=6),
                           entries, max_size=3).map(
    lambda reg: yaml.dump({"version": "2", "registry": reg}, Dumper=_Dumper).encode()
)  # fmt: skip
secrets_lines = st.lists(
    st.tuples(
        st.sampled_from(["", "export ", "  ", "#"]),
        st.sampled_from(["A", "a.b", "x-y", "1x", "", "a b", "é"]) | st.text(max_size=4),
        st.sampled_from(["=", " = ", ":", "=="]),
        st.sampled_from(["v", '"q\\n"', "'s'", '"open', "'x' y", "a=b", ""]) | st.text(max_size=8),
    ).map("".join),
    max_size=6,
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))
yaml_syntax = st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#\n\t %@`,?~=.")), max_size=80)
inputs = st.one_of(
    st.binary(max_size=400),
    yaml_documents(),
    catalogs,
    yaml_syntax.map(str.encode),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def parses_as_yaml(data: bytes) -> bool:
    try:
        yaml.load(data.decode("utf-8-sig"), Loader=_Loader)  # a C safe loader, for speed
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError, ValueError, OverflowError):
        return False
    return "\x00" not in data.decode("utf-8-sig")


_dirs = itertools.count()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def fresh_home(root: Path) -> Path:
    home = root / f"h{next(_dirs)}"
    (home / "catalogs").mkdir(parents=True)
    return home


def expect_only_placed_errors(
    run: Callable[[], Any], data: bytes, *, line_always: bool = False
) -> None:
    """Run a loader; allow only ``FleetConfigError`` with file (and line) on each diagnostic."""
    try:
        run()
        event("loaded")
    except FleetConfigError as exc:
        event("refused")
        assert exc.diagnostics, "a FleetConfigError always says what is wrong"
        need_line = line_always or parses_as_yaml(data)
        for diag in exc.diagnostics:
            assert diag.file is not None, f"no file: {diag}"
            if need_line:
                assert diag.line is not None, f"no line for a YAML-parsable input: {diag}"


LOADERS: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "catalog": ("catalogs/c.yaml", load_catalog),
    "registry": ("registry.yaml", load_registry),
    "config": ("config.yaml", load_config),
    "tools": ("tools.yaml", load_tools),
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
@FUZZ
@given(data=inputs)
def test_each_yaml_loader(workdir: Path, loader: str, data: bytes) -> None:
    name, load = LOADERS[loader]
    path = fresh_home(workdir) / name
    path.write_bytes(data)
    expect_only_placed_errors(lambda: load(path), data)


@FUZZ
@given(data=st.one_of(inputs, secrets_lines))
def test_secrets_loader(workdir: Path, data: bytes) -> None:
    path = fresh_home(workdir) / "secrets.env"
    path.write_bytes(data)
    path.chmod(0o600)
    expect_only_placed_errors(lambda: load_secrets(path), data, line_always=True)


@FUZZ
@given(target=st.sampled_from(["catalogs/c.yaml", "registry.yaml", "config.yaml",
                                "tools.yaml", "secrets.env"]), data=inputs)  # fmt: skip
def test_whole_fleet_load(workdir: Path, target: str, data: bytes) -> None:
    home = fresh_home(workdir)
    (home / "catalogs" / "good.yaml").write_text(GOOD_CATALOG)
    (home / "registry.yaml").write_text("registry:\n  s: {}\n")
    path = home / target
    path.write_bytes(data)
    path.chmod(0o600)

    def run() -> None:
        state = load_fleet(resolve_files(home))
        for spec in state.servers.values():
            spec.config_hash()  # whatever loaded can be hashed and planned

    expect_only_placed_errors(run, data, line_always=target == "secrets.env")


@FUZZ
@given(data=inputs, overwrite=st.booleans())
# A name YAML 1.1 reads as text and the YAML 1.2 editor as a number: a KeyError once.
@example(data=b"registry:\n  0E0:\n    image: '0'\nversion: '2'\n", overwrite=False)
def test_catalog_import_of_a_random_file(workdir: Path, data: bytes, overwrite: bool) -> None:
    home = fresh_home(workdir)
    source = home / "incoming.yaml"
    source.write_bytes(data)
    target = home / "catalogs" / "c.yaml"
    target.write_text(GOOD_CATALOG)
    before = target.read_bytes()
    report = None

    def run() -> None:
        nonlocal report
        report = import_catalog(source, target, overwrite=overwrite)

    expect_only_placed_errors(run, data)
    event(f"written: {report is not None and report.written}")
    if report is None or not report.written:
        assert target.read_bytes() == before, "a refused import changed the target"
    else:
        load_catalog(target)  # a written target always loads again


@FUZZ
@given(data=inputs, enabled=st.booleans())
# Keys the round-trip constructor took for numbers and crashed on (IndexError, ValueError).
@example(data=b"registry:\n  -_:\n    image: '0'\nversion: '2'\n", enabled=False)
@example(data=b"registry:\n  ._:\n    image: '0'\nversion: '2'\n", enabled=True)
def test_registry_edit_of_a_random_file(workdir: Path, data: bytes, enabled: bool) -> None:
    path = fresh_home(workdir) / "registry.yaml"
    path.write_bytes(data)
    edited = False

    def run() -> None:
        nonlocal edited
        edited = set_enabled(path, "s", enabled).changed

    expect_only_placed_errors(run, data)
    event(f"edited: {edited}")
    if not edited:
        assert path.read_bytes() == data, "a refused edit changed the registry"
    else:
        assert load_registry(path).entries["s"].enabled is enabled
