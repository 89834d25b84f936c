"""``mcp-fleet server ls|enable|disable``: registry edits through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from cli_support import Invoke


def test_ls_json(home: Path, cli: Invoke) -> None:
    result = cli("server", "ls", "--json", "--dir", str(home))
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [(r["name"], r["enabled"], r["usable"], r["catalog"]) for r in rows] == [
        ("calc", True, True, "example"),
        ("notes", True, True, "example"),
        ("time", True, True, "example"),
    ]
    assert rows[0]["problems"] == []


def test_ls_shows_problems(home: Path, cli: Invoke) -> None:
    with (home / "registry.yaml").open("a") as fh:
        fh.write("  ghost: {}\n")
    result = cli("server", "ls", "--dir", str(home))
    assert result.exit_code == 0
    assert "not in any catalog" in result.stdout
    rows = json.loads(cli("server", "ls", "--json", "--dir", str(home)).stdout)
    ghost = next(r for r in rows if r["name"] == "ghost")
    assert not ghost["usable"] and ghost["problems"][0]["line"] == 14


def test_disable_then_enable_keeps_comments(home: Path, cli: Invoke) -> None:
    registry = home / "registry.yaml"
    original = registry.read_text()
    result = cli("server", "disable", "notes", "--dir", str(home))
    assert result.exit_code == 0, result.output
    assert f"disabled notes in {registry}" in result.stdout
    assert registry.read_text() == original.replace(
        "  notes:\n    catalog: example\n    enabled: true",
        "  notes:\n    catalog: example\n    enabled: false",
    )
    assert "was already disabled" in cli("server", "disable", "notes", "--dir", str(home)).stdout
    assert cli("server", "enable", "notes", "--dir", str(home)).exit_code == 0
    assert registry.read_text() == original


def test_enable_unknown_server_is_exit_2_with_a_suggestion(home: Path, cli: Invoke) -> None:
    before = (home / "registry.yaml").read_text()
    result = cli("server", "enable", "note", "--dir", str(home))
    assert result.exit_code == 2
    assert "server 'note' is not in any catalog" in result.stderr
    assert "did you mean notes" in result.stderr
    assert (home / "registry.yaml").read_text() == before


def test_enable_from_a_named_catalog(home: Path, cli: Invoke) -> None:
    (home / "catalogs" / "custom.yaml").write_text(
        "registry:\n  fw:\n    image: fw:1\n    secrets: [{name: FW_KEY, env: FW_KEY}]\n"
    )
    assert cli("server", "enable", "fw", "--from", "nope", "--dir", str(home)).exit_code == 2
    assert cli("server", "enable", "time", "--from", "custom", "--dir", str(home)).exit_code == 2
    result = cli("server", "enable", "fw", "--from", "custom", "--dir", str(home))
    assert result.exit_code == 0, result.output
    assert "  fw:\n    catalog: custom\n    enabled: true\n" in (home / "registry.yaml").read_text()
    # enabled, and told why it cannot run yet
    assert "fw cannot run yet" in result.stdout
    assert "required secret FW_KEY is not set" in result.stderr


def test_disable_unknown_and_not_registered(home: Path, cli: Invoke) -> None:
    (home / "catalogs" / "more.yaml").write_text("registry:\n  idle: {image: i}\n")
    result = cli("server", "disable", "idle", "--dir", str(home))
    assert result.exit_code == 0 and "already off" in result.stdout
    assert cli("server", "disable", "nobody", "--dir", str(home)).exit_code == 2


def test_broken_registry_is_exit_2_and_untouched(home: Path, cli: Invoke) -> None:
    (home / "registry.yaml").write_text("registry:\n  time: {enabled: sure}\n")
    result = cli("server", "disable", "time", "--dir", str(home))
    assert result.exit_code == 2
    assert (
        'registry.yaml:2: registry.time.enabled: expected true/false, got "sure"' in result.stderr
    )
    assert (home / "registry.yaml").read_text() == "registry:\n  time: {enabled: sure}\n"


def test_custom_registry_flag(home: Path, tmp_path: Path, cli: Invoke) -> None:
    other = tmp_path / "other-registry.yaml"
    result = cli("server", "enable", "calc", "--dir", str(home), "--registry", str(other))
    assert result.exit_code == 0, result.output
    assert other.read_text() == "registry:\n  calc:\n    enabled: true\n"
