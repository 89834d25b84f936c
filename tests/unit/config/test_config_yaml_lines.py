"""Reading YAML with line numbers, and every way a file can be broken."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp_fleet.config import yamlsource
from mcp_fleet.config.yamlsource import parse_yaml, read_yaml
from mcp_fleet.errors import FleetConfigError

P = Path("/x/registry.yaml")


def error_text(raw: str | bytes) -> str:
    with pytest.raises(FleetConfigError) as info:
        parse_yaml(raw, P)
    return str(info.value)


def test_lines_are_recorded_for_keys_and_list_items() -> None:
    doc = parse_yaml("a:\n  b: 1\n  c:\n    - x\n    - y\n", P)
    assert doc.data == {"a": {"b": 1, "c": ["x", "y"]}}
    assert doc.line(("a",)) == 1
    assert doc.line(("a", "b")) == 2
    assert doc.line(("a", "c")) == 3
    assert doc.line(("a", "c", 1)) == 5
    # a path not in the file falls back to its nearest ancestor
    assert doc.line(("a", "b", "missing")) == 2


def test_yaml_typing_rules_are_yamls() -> None:
    doc = parse_yaml("a: yes\nb: '1'\nc: 1.5\nd: ~\n", P)
    assert doc.data == {"a": True, "b": "1", "c": 1.5, "d": None}


def test_keys_are_always_strings() -> None:
    assert parse_yaml("1: a\ntrue: b\n", P).data == {"1": "a", "true": "b"}


def test_merge_keys_are_resolved() -> None:
    doc = parse_yaml("base: &b {x: 1}\nitem:\n  <<: *b\n  y: 2\n", P)
    assert doc.data["item"] == {"x": 1, "y": 2}


def test_empty_file_is_none() -> None:
    assert parse_yaml("# only a comment\n", P).data is None


def test_syntax_error_names_file_and_line() -> None:
    assert error_text("registry:\n  a: 1\n b: [\n").startswith("registry.yaml:")
    text = error_text("a: 1\nb: 2\n  c: 3\n")
    assert text.startswith("registry.yaml:3: invalid YAML:")


def test_duplicate_keys_are_an_error_naming_both_lines() -> None:
    text = error_text("registry:\n  a: {}\n  a: {}\n")
    assert text == "registry.yaml:3: registry.a: duplicate key 'a' (first at line 2)"


def test_several_documents_are_an_error() -> None:
    assert "expected one YAML document" in error_text("a: 1\n---\nb: 2\n")


def test_recursive_alias_is_an_error_not_a_hang() -> None:
    assert "recursive alias" in error_text("a: &x [*x]\n")


def test_alias_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsource, "MAX_NODES", 5000)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    assert "document too large" in error_text("\n".join(lines) + "\n")


def test_not_utf8_names_the_line() -> None:
    assert error_text(b"a: 1\nb: \xff\xfe\n") == "registry.yaml:2: not valid UTF-8 text"


def test_nul_byte_is_refused() -> None:
    assert error_text("a: 1\nb: \x00\n") == "registry.yaml:2: not a text file (NUL byte)"


def test_unknown_tag_is_an_error() -> None:
    assert "invalid" in error_text("a: !!python/object:os.system x\n")


def test_deep_nesting_is_an_error() -> None:
    assert "invalid YAML" in error_text("[" * 3000 + "]" * 3000)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FleetConfigError, match="file not found"):
        read_yaml(tmp_path / "nope.yaml")
