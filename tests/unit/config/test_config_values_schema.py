"""Settings are checked against the catalog's ``config`` schema, as Docker's gateway does.

A server whose settings miss a required key or have the wrong kind is
unusable with a problem naming the file, the line and the field; the rest of
the fleet is not affected; the value itself is never quoted; a catalog whose
schema is broken only warns.
"""

from __future__ import annotations

from config_support import Load, WriteFleet
from mcp_fleet.errors import Severity

CATALOG = """
registry:
  fs:
    image: mcp/fs
    command: ['{{fs.root}}']
    config:
      - name: fs
        description: Where the server may read
        type: object
        properties:
          root: {type: string}
          depth: {type: integer}
          mode: {enum: [ro, rw]}
        required: [root]
  other:
    image: mcp/other
"""
REGISTRY = "registry:\n  fs: {}\n  other: {}\n"


def test_valid_settings_pass(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(
        catalogs={"c": CATALOG}, registry=REGISTRY, config="fs:\n  root: /data\n  depth: 2\n"
    )
    state = load(home)
    assert state.servers["fs"].usable, [str(p) for p in state.servers["fs"].problems]
    assert state.servers["fs"].entry is not None
    assert state.servers["fs"].entry.command == ("/data",)


def test_missing_required_setting_fails_only_that_server(
    write_fleet: WriteFleet, load: Load
) -> None:
    home = write_fleet(catalogs={"c": CATALOG}, registry=REGISTRY)
    state = load(home)
    fs = state.servers["fs"]
    assert not fs.usable
    texts = [str(p) for p in fs.problems]
    assert any("fs: missing required setting root" in t for t in texts), texts
    assert state.servers["other"].usable


def test_wrong_kind_names_file_line_and_field_but_not_the_value(
    write_fleet: WriteFleet, load: Load
) -> None:
    home = write_fleet(
        catalogs={"c": CATALOG},
        registry=REGISTRY,
        config="fs:\n  root: /data\n  depth: sekrit-looking-value\n  mode: xx-value\n",
    )
    problems = load(home).servers["fs"].problems
    texts = sorted(str(p) for p in problems)
    assert texts == [
        "config.yaml:3: fs.depth: expected integer, got a string",
        "config.yaml:4: fs.mode: expected one of 'ro', 'rw'",
    ]
    assert all(p.server == "fs" and p.severity is Severity.ERROR for p in problems)
    assert not any("sekrit" in t or "xx-value" in t for t in texts)


def test_inline_registry_config_is_checked_and_pointed_at(
    write_fleet: WriteFleet, load: Load
) -> None:
    home = write_fleet(
        catalogs={"c": CATALOG},
        registry="registry:\n  other: {}\n  fs:\n    config:\n      root: 5\n",
    )
    problems = [str(p) for p in load(home).servers["fs"].problems]
    assert problems == ["registry.yaml:3: registry.fs.config.root: expected string, got an integer"]


def test_broken_schema_warns_and_checks_nothing(write_fleet: WriteFleet, load: Load) -> None:
    catalog = (
        "registry:\n  fs:\n    image: mcp/fs\n    config:\n      - name: fs\n        type: 12\n"
    )
    home = write_fleet(catalogs={"c": catalog}, registry="registry:\n  fs: {}\n")
    state = load(home)
    assert state.servers["fs"].usable
    warnings = [str(d) for d in state.diagnostics if d.severity is Severity.WARNING]
    assert any("config schema 'fs' is not valid JSON Schema" in w for w in warnings), warnings


def test_schema_named_after_another_key_reads_that_key(write_fleet: WriteFleet, load: Load) -> None:
    catalog = (
        "registry:\n  fs:\n    image: mcp/fs\n    config:\n      - name: shared\n"
        "        type: object\n        required: [token_file]\n"
    )
    home = write_fleet(
        catalogs={"c": catalog},
        registry="registry:\n  fs: {}\n",
        config="shared:\n  token_file: /run/t\n",
    )
    assert load(home).servers["fs"].usable
