"""The aggregated lists, one page at a time: how a session answers ``*/list``.

The router answers ``tools/list``, ``prompts/list``, ``resources/list`` and
``resources/templates/list`` itself, from its routing table, in pages of
``page_size`` items. A cursor is ours: ``mcp-fleet:<offset>``, the index of
the first item of the next page (ASCII digits only: no sign, no spaces, no
``_``); any other cursor is refused as invalid params.
"""

from __future__ import annotations

from typing import Any, Final

from mcp_fleet.router.jsonrpc import JsonObject
from mcp_fleet.router.table import Kind, RoutingTable

#: The list requests a session answers, and the kind each lists.
LIST_METHODS: Final[dict[str, Kind]] = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}
CURSOR_PREFIX: Final = "mcp-fleet:"


class InvalidCursor(ValueError):
    """A cursor the router did not hand out (its message is the client's error message)."""


def list_page(table: RoutingTable, method: str, cursor: Any, page_size: int) -> JsonObject:
    """The result of the list request ``method`` from ``cursor`` (None: the first page),
    with ``nextCursor`` when more follows. Raises ``InvalidCursor``."""
    kind = LIST_METHODS[method]
    items = table.items(kind)
    start = 0 if cursor is None else _offset(cursor)
    page = items[start : start + page_size]
    result: JsonObject = {kind: page}
    if start + page_size < len(items):
        result["nextCursor"] = f"{CURSOR_PREFIX}{start + page_size}"
    return result


def _offset(cursor: Any) -> int:
    if not isinstance(cursor, str) or not cursor.startswith(CURSOR_PREFIX):
        raise InvalidCursor(f"Invalid cursor: {cursor!r}")
    digits = cursor[len(CURSOR_PREFIX) :]
    if not (digits.isascii() and digits.isdigit()):  # no sign, no spaces, no "_"
        raise InvalidCursor(f"Invalid cursor: {cursor!r}")
    return int(digits)
