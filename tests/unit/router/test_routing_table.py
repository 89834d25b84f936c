"""The routing table: deterministic names, collisions, allow-lists, resources and templates."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from mcp_fleet import conventions
from mcp_fleet.router.table import ServerLists, build_table, check_table, clean_name


def tools(*names: str) -> tuple[dict[str, Any], ...]:
    return tuple({"name": n, "inputSchema": {"type": "object"}} for n in names)


def names(table: Any) -> list[str]:
    return [t["name"] for t in table.tools]


def test_unique_names_stay_and_colliding_names_get_their_server() -> None:
    table = build_table(
        [
            ServerLists("beta", tools=tools("echo", "beta_only")),
            ServerLists("alpha", tools=tools("echo", "add")),
        ]
    )
    assert names(table) == ["alpha__echo", "add", "beta__echo", "beta_only"]
    assert table.tool_routes["alpha__echo"].server == "alpha"
    assert table.tool_routes["beta__echo"].name == "echo"
    assert table.tool_routes["add"].server == "alpha"
    assert [str(r) for r in table.renames] == [
        "tool 'echo' of alpha is 'alpha__echo': also offered by beta",
        "tool 'echo' of beta is 'beta__echo': also offered by alpha",
    ]
    assert check_table(table) == []


def test_prompts_collide_like_tools() -> None:
    table = build_table(
        [
            ServerLists("a", prompts=({"name": "greet"},)),
            ServerLists("b", prompts=({"name": "greet"},)),
        ]
    )
    assert [p["name"] for p in table.prompts] == ["a__greet", "b__greet"]


def test_catalog_prefix_replaces_the_server_name() -> None:
    table = build_table(
        [
            ServerLists("github-official", tools=tools("search"), prefix="gh"),
            ServerLists("web", tools=tools("search")),
        ]
    )
    assert names(table) == ["gh__search", "web__search"]


def test_prefix_always_prefixes_every_name() -> None:
    table = build_table([ServerLists("time", tools=tools("now"))], prefix_mode="always")
    assert names(table) == ["time__now"]


def test_invalid_and_long_names_are_made_valid_and_unique() -> None:
    long = "x" * 80
    table = build_table(
        [ServerLists("s", tools=tools("get.weather", "has space", long, long + "y"))]
    )
    assert names(table)[:2] == ["get_weather", "has_space"]
    assert all(conventions.TOOL_NAME_RE.match(n) for n in names(table))
    assert len(set(names(table))) == 4
    assert table.tool_routes[names(table)[2]].name == long


def test_a_name_listed_twice_by_one_server_is_kept_once() -> None:
    table = build_table([ServerLists("s", tools=tools("a", "a"))])
    assert names(table) == ["a"]


def test_allow_list_and_tool_patterns_filter_what_is_exposed() -> None:
    servers = [
        ServerLists("fs", tools=tools("read", "write", "delete"), tools_allow=("read", "write")),
        ServerLists("time", tools=tools("now", "convert")),
    ]
    assert names(build_table(servers)) == ["read", "write", "now", "convert"]
    assert names(build_table(servers, tool_patterns=["fs:*", "time:now"])) == [
        "read",
        "write",
        "now",
    ]
    assert names(build_table(servers, tool_patterns=["now,write"])) == ["write", "now"]


def test_resources_keep_their_uri_first_server_wins_and_templates_route() -> None:
    table = build_table(
        [
            ServerLists(
                "b",
                resources=({"uri": "file:///x", "name": "x"},),
                templates=({"uriTemplate": "db://{table}/{id}", "name": "row"},),
            ),
            ServerLists(
                "a", resources=({"uri": "file:///x", "name": "x"}, {"uri": "mem://1", "name": "1"})
            ),
        ]
    )  # fmt: skip
    assert [r["uri"] for r in table.resources] == ["file:///x", "mem://1"]
    assert table.resource_server("file:///x") == "a"
    assert table.shadowed == ("resource file:///x of b (owned by a)",)
    assert table.resource_server("db://users/7") == "b"
    assert table.resource_server("nowhere://") is None
    assert table.template_owner("db://{table}/{id}") == "b"


def test_changed_kinds_compare_what_is_advertised() -> None:
    one = build_table([ServerLists("a", tools=tools("x"))])
    same = build_table([ServerLists("a", tools=tools("x"))])
    more = build_table(
        [ServerLists("a", tools=tools("x")), ServerLists("b", prompts=({"name": "p"},))]
    )
    assert one.changed_kinds(same) == []
    assert more.changed_kinds(one) == ["prompts"]
    assert build_table([]).changed_kinds(build_table(())) == []


server_names = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
tool_names = st.text(min_size=1, max_size=70)


@given(st.dictionaries(server_names, st.lists(tool_names, max_size=6), max_size=5))
def test_any_fleet_gets_valid_unique_deterministic_names(fleet: dict[str, list[str]]) -> None:
    servers = [ServerLists(s, tools=tools(*ts)) for s, ts in fleet.items()]
    table = build_table(servers)
    again = build_table(list(reversed(servers)))
    assert names(table) == names(again)
    assert len(set(names(table))) == len(names(table))
    assert check_table(table) == []
    for advertised, route in table.tool_routes.items():
        assert route.name in fleet[route.server]
        assert conventions.TOOL_NAME_RE.match(advertised)


def test_clean_name_keeps_valid_names() -> None:
    assert clean_name("get_current-time") == "get_current-time"
