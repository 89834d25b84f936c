"""JSON-RPC helpers and the URI template matcher, checked against the SDK where it has the same."""

from __future__ import annotations

import orjson
import pytest
from mcp.shared.uri_template import UriTemplate
from mcp_fleet.router import jsonrpc
from mcp_fleet.router.uri_match import matches
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION


def test_handshake_versions_match_the_sdk() -> None:
    assert jsonrpc.HANDSHAKE_PROTOCOL_VERSIONS == HANDSHAKE_PROTOCOL_VERSIONS
    assert jsonrpc.LATEST_HANDSHAKE_VERSION == LATEST_HANDSHAKE_VERSION


@pytest.mark.parametrize(
    "raw",
    [
        b'{"jsonrpc":"2.0","id":17,"result":{"content":[]}}',
        b'{"jsonrpc":"2.0","id":"abc","result":{}}',
        b'{"jsonrpc": "2.0", "id": 17, "error": {"code": -1, "message": "x"}}',
        b'{"id":17,"jsonrpc":"2.0","result":{}}',
        b'{"jsonrpc":"2.0","id":1,"result":{},"id":17}',
    ],
)
@pytest.mark.parametrize("new_id", [5, "client-7", 0])
def test_splice_id_replaces_exactly_the_id(raw: bytes, new_id: int | str) -> None:
    parsed = jsonrpc.parse(raw)
    expected = {**orjson.loads(raw), "id": new_id}
    assert orjson.loads(jsonrpc.splice_id(raw, dict(parsed), new_id)) == expected


def test_parse_rejects_non_objects_and_bad_json() -> None:
    with pytest.raises(jsonrpc.InvalidMessage):
        jsonrpc.parse(b"[1,2]")
    with pytest.raises(jsonrpc.InvalidMessage):
        jsonrpc.parse(b"{nope")


def test_valid_ids() -> None:
    assert jsonrpc.valid_id(0) and jsonrpc.valid_id("x")
    assert not jsonrpc.valid_id(True) and not jsonrpc.valid_id(1.5) and not jsonrpc.valid_id(None)


CASES = [
    (
        "feature://item/{id}",
        ["feature://item/5", "feature://item/abc", "feature://item/5/6", "feature://items/5"],
    ),
    ("file:///{+path}", ["file:///a/b/c.txt", "file:///", "http:///a"]),
    ("db://{table}/{id}{?fields}", ["db://users/7", "db://users/7?fields=a,b", "db://users"]),
    ("docs://{/section}", ["docs:///intro", "docs:///a/b"]),
    ("static://readme", ["static://readme", "static://readme2"]),
]


@pytest.mark.parametrize(("template", "uris"), CASES)
def test_uri_matcher_agrees_with_the_sdk(template: str, uris: list[str]) -> None:
    sdk = UriTemplate.parse(template)
    for uri in uris:
        assert matches(template, uri) == (sdk.match(uri) is not None), uri


def test_unbalanced_template_matches_nothing() -> None:
    assert not matches("bad://{oops", "bad://{oops")
