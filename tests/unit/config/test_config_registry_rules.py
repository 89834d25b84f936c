"""registry.yaml, config.yaml, tools.yaml: forms, errors, and per-server problems."""

from __future__ import annotations

import pytest
from config_support import Load, WriteFleet
from mcp_fleet.errors import FleetConfigError

CATALOG = "registry:\n  a: {image: a}\n  b: {image: b}\n  cisco-asa: {image: c}\n"


def test_the_one_line_error_of_the_issue(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(
        catalogs={"custom": CATALOG},
        registry="""
        registry:
          a:
            catalog: custom
            enabled: true
          cisco-asa:
            catalog: custom
            enabled: "yes please"
        """,
    )
    with pytest.raises(FleetConfigError) as info:
        load(home)
    assert str(info.value) == (
        'registry.yaml:7: registry.cisco-asa.enabled: expected true/false, got "yes please"'
    )
    [diag] = info.value.diagnostics
    assert diag.file == home / "registry.yaml"
    assert (diag.line, diag.field) == (7, "registry.cisco-asa.enabled")


def test_enabled_defaults_to_true_and_null_entries_count(
    write_fleet: WriteFleet, load: Load
) -> None:
    home = write_fleet(catalogs={"c": CATALOG}, registry="registry:\n  a:\n  b: {enabled: false}\n")
    state = load(home)
    assert state.servers["a"].enabled and not state.servers["b"].enabled
    assert [s.name for s in state.enabled()] == ["a"]


def test_unknown_server_marks_only_that_server(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(
        catalogs={"c": CATALOG},
        registry="registry:\n  a: {}\n  ghost: {}\n  remote-ref: {ref: 'mcp/thing:1'}\n",
    )
    state = load(home)
    assert state.servers["a"].usable
    ghost = state.servers["ghost"]
    assert not ghost.usable and ghost.entry is None
    assert [str(p) for p in ghost.problems] == [
        "registry.yaml:3: registry.ghost: server 'ghost' is not in any catalog"
    ]
    assert "ref 'mcp/thing:1' is not fetched" in str(state.servers["remote-ref"].problems[0])
    # per-server problems of enabled servers are reported too, but never raise
    assert {d.server for d in state.diagnostics} == {"ghost", "remote-ref"}


def test_invalid_server_name_marks_only_that_server(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(
        catalogs={"c": "registry:\n  'bad name!': {image: x}\n  a: {image: a}\n"},
        registry="registry:\n  'bad name!': {}\n  a: {}\n",
    )
    state = load(home)
    assert state.servers["a"].usable
    assert "invalid server name 'bad name!'" in str(state.servers["bad name!"].problems[0])


def test_disabled_servers_problems_stay_in_the_spec_only(
    write_fleet: WriteFleet, load: Load
) -> None:
    home = write_fleet(catalogs={"c": CATALOG}, registry="registry:\n  ghost: {enabled: false}\n")
    state = load(home)
    assert state.servers["ghost"].problems and state.diagnostics == ()


@pytest.mark.parametrize(
    ("registry", "message"),
    [
        ("- a\n- b\n", "registry.yaml:1: expected a mapping with registry:, got a list"),
        ("registry: [a, b]\n", "registry.yaml:1: registry: expected a mapping, got a list"),
        ("registry:\n  a: true\n", "registry.yaml:2: registry.a: expected a mapping, got true"),
        (
            "registry:\n  a: {catalog: [x]}\n",
            "registry.yaml:2: registry.a.catalog: expected a string, got a list",
        ),
        (
            "registry:\n  a:\n    config: 3\n",
            "registry.yaml:3: registry.a.config: expected a mapping, got 3",
        ),
    ],
)
def test_registry_shape_errors(
    write_fleet: WriteFleet, load: Load, registry: str, message: str
) -> None:
    home = write_fleet(catalogs={"c": CATALOG}, registry=registry)
    with pytest.raises(FleetConfigError) as info:
        load(home)
    assert str(info.value) == message


def test_registry_unknown_keys_warn(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(
        catalogs={"c": CATALOG}, registry="registry:\n  a:\n    enabeld: false\nextra: 1\n"
    )
    assert sorted(str(d) for d in load(home).diagnostics) == [
        "registry.yaml:3: registry.a.enabeld: unknown key, ignored",
        "registry.yaml:4: extra: unknown key, ignored",
    ]


def test_inline_config_merges_over_config_yaml(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(
        catalogs={
            "c": "registry:\n  a:\n    image: a\n"
            "    env: [{name: X, value: '{{a.x}}-{{a.deep.y}}-{{a.deep.z}}'}]\n"
        },
        config="a:\n  x: from-config\n  deep: {y: 1, z: 2}\n",
        registry="registry:\n  a:\n    config: {deep: {z: 3}}\n",
    )
    spec = load(home).servers["a"]
    assert dict(spec.env) == {"X": "from-config-1-3"}
    assert dict(spec.config) == {"x": "from-config", "deep": {"y": 1, "z": 3}}


def test_tools_allow_lists(write_fleet: WriteFleet, load: Load) -> None:
    home = write_fleet(
        catalogs={"c": CATALOG},
        registry="registry: {a: {}, b: {}}\n",
        tools="a: [t1, t2]\nb:\nnot-here: [x]\n",
    )
    state = load(home)
    assert state.servers["a"].tools_allow == ("t1", "t2")
    assert state.servers["b"].tools_allow is None  # no list: every tool
    assert [str(d) for d in state.diagnostics] == [
        "tools.yaml: not-here: tools.yaml lists 'not-here', which the registry does not"
    ]


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("tools", "a: t1\n", 'tools.yaml:1: a: expected a list of tool names, got "t1"'),
        ("tools", "a: [t1, {x: 1}]\n", "tools.yaml:1: a[1]: expected a tool name, got a mapping"),
        ("tools", "[a]\n", "tools.yaml:1: expected a mapping of server: [tools], got a list"),
        ("config", "a: 5\n", "config.yaml:1: a: expected a mapping, got 5"),
        (
            "config",
            "just text\n",
            'config.yaml:1: expected a mapping of server: settings, got "just text"',
        ),
    ],
)
def test_config_and_tools_shape_errors(
    write_fleet: WriteFleet, load: Load, kind: str, text: str, message: str
) -> None:
    home = write_fleet(catalogs={"c": CATALOG}, **{kind: text})
    with pytest.raises(FleetConfigError) as info:
        load(home)
    assert str(info.value) == message


def test_templates_with_missing_keys_mark_only_that_server(
    write_fleet: WriteFleet, load: Load
) -> None:
    home = write_fleet(
        catalogs={
            "c": """
            registry:
              a:
                image: a
                env: [{name: ROOT, value: "{{a.root}}"}]
              b:
                image: b
                env: [{name: ROOT, value: "{{b.root|or:/tmp}}"}, {name: L, value: "{{b.list}}"}]
            """
        },
        config="b:\n  list: [x, y]\n",
        registry="registry: {a: {}, b: {}}\n",
    )
    state = load(home)
    assert dict(state.servers["b"].env) == {"ROOT": "/tmp", "L": "x,y"}
    assert state.servers["b"].usable
    assert [p.message for p in state.servers["a"].problems] == [
        "env ROOT: template {{a.root}} has no value (set root under a: in config.yaml)"
    ]
