"""Allow-lists in Docker's --tools syntax, and the forbidden error they lead to."""

from __future__ import annotations

import pytest
from mcp_fleet.gateway.identity import (
    FORBIDDEN,
    AllowList,
    Identity,
    PatternError,
    forbidden_error,
    parse_pattern,
)


def test_patterns_parse_like_dockers_tools_flag() -> None:
    assert parse_pattern("github:create_issue") == ("github", "create_issue")
    assert parse_pattern("github:*") == ("github", "*")
    assert parse_pattern("github") == ("github", "*")
    assert parse_pattern("*") == ("*", "*")
    for bad in ("", "Bad Server", "github:bad tool!", ":tool", "a:" + "x" * 65):
        with pytest.raises(PatternError):
            parse_pattern(bad)


def test_allow_checks_tools_servers_and_visibility() -> None:
    allow = AllowList.parse(["time", "github:get_issue", "time:convert_time"])
    assert allow.allows("time", "anything") and allow.allows("time")
    assert allow.allows("github", "get_issue")
    assert not allow.allows("github", "create_issue")
    assert not allow.allows("github"), "one tool does not grant the whole server"
    assert not allow.allows("fetch", "fetch")
    assert allow.sees("github") and allow.sees("time") and not allow.sees("fetch")
    assert allow.patterns() == ["time", "github:get_issue"]
    everything = AllowList.parse(["*", "time"])
    assert everything.allows("any", "thing") and everything.patterns() == ["*"]
    nothing = AllowList.parse([])
    assert not nothing.allows("time", "x") and nothing.describe() == "nothing"


def test_forbidden_error_names_who_and_what() -> None:
    who = Identity("alice", "token", AllowList.parse(["time"]))
    err = forbidden_error(who, "github", "create_issue")
    assert err["code"] == FORBIDDEN
    assert "token:alice" in err["message"] and "'create_issue'" in err["message"]
    assert "'github'" in err["message"]
    assert err["data"]["status"] == 403
