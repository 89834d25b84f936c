"""The aggregated lists a page at a time: pages, cursors, and cursors we never gave out."""

from __future__ import annotations

from typing import Any

import pytest
from mcp_fleet.router.listing import CURSOR_PREFIX, LIST_METHODS, InvalidCursor, list_page
from mcp_fleet.router.table import ServerLists, build_table

TOOLS = tuple({"name": f"t{i}", "inputSchema": {"type": "object"}} for i in range(5))
TABLE = build_table(
    [
        ServerLists(
            "s", tools=TOOLS, prompts=({"name": "p"},), templates=({"uriTemplate": "x://{id}"},)
        )
    ]
)


def names(result: dict[str, Any], kind: str = "tools") -> list[str]:
    return [item["name"] for item in result[kind]]


def test_every_list_method_answers_its_kind() -> None:
    assert LIST_METHODS == {
        "tools/list": "tools",
        "prompts/list": "prompts",
        "resources/list": "resources",
        "resources/templates/list": "resourceTemplates",
    }
    assert names(list_page(TABLE, "prompts/list", None, 10), "prompts") == ["p"]
    assert list_page(TABLE, "resources/list", None, 10) == {"resources": ()}
    templates = list_page(TABLE, "resources/templates/list", None, 10)
    assert templates == {"resourceTemplates": ({"uriTemplate": "x://{id}"},)}


def test_pages_follow_each_other_until_the_last_has_no_cursor() -> None:
    first = list_page(TABLE, "tools/list", None, 2)
    assert names(first) == ["t0", "t1"] and first["nextCursor"] == f"{CURSOR_PREFIX}2"
    second = list_page(TABLE, "tools/list", first["nextCursor"], 2)
    assert names(second) == ["t2", "t3"] and second["nextCursor"] == f"{CURSOR_PREFIX}4"
    last = list_page(TABLE, "tools/list", second["nextCursor"], 2)
    assert names(last) == ["t4"] and "nextCursor" not in last


def test_a_page_that_holds_everything_has_no_cursor() -> None:
    assert "nextCursor" not in list_page(TABLE, "tools/list", None, 5)
    assert list_page(TABLE, "tools/list", f"{CURSOR_PREFIX}9", 2) == {"tools": ()}


@pytest.mark.parametrize(
    "cursor", [5, "", "2", "other:2", f"{CURSOR_PREFIX}", f"{CURSOR_PREFIX}-1",
               f"{CURSOR_PREFIX} 1", f"{CURSOR_PREFIX}1_0", f"{CURSOR_PREFIX}\u0661"],
)  # fmt: skip
def test_a_cursor_we_did_not_give_out_is_refused(cursor: Any) -> None:
    with pytest.raises(InvalidCursor) as caught:
        list_page(TABLE, "tools/list", cursor, 2)
    assert str(caught.value) == f"Invalid cursor: {cursor!r}"
