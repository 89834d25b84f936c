"""``mcp-fleet client config``: the right entry, in the right format, merged without loss."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from mcp_fleet.cli import client_config as cc
from mcp_fleet.errors import FleetConfigError

URL = "http://127.0.0.1:8811/mcp"


def config(
    client: cc.ClientName, path: Path, transport: cc.ClientTransport = "stdio"
) -> cc.ClientConfig:
    return cc.client_config(
        client,
        transport=transport,
        fleet_dir=Path("/fleet"),
        url=URL,
        path=path,
        command="/bin/mcp-fleet",
    )


def test_stdio_entries_launch_us_instead_of_docker(tmp_path: Path) -> None:
    entry = config("claude-desktop", tmp_path / "c.json").entry
    assert entry == {
        "command": "/bin/mcp-fleet",
        "args": ["up", "--transport", "stdio", "--dir", "/fleet"],
    }
    code = config("claude-code", tmp_path / ".mcp.json").entry
    assert code["type"] == "stdio" and code["args"][:3] == ["up", "--transport", "stdio"]


def test_http_entries_point_at_the_url(tmp_path: Path) -> None:
    assert config("claude-code", tmp_path / "a", "http").entry == {"type": "http", "url": URL}
    assert config("cursor", tmp_path / "b", "http").entry == {"url": URL}
    assert config("codex", tmp_path / "c", "http").entry == {"url": URL}
    assert config("claude-desktop", tmp_path / "d", "http").entry["args"][-1] == URL


def test_json_snippet_and_merge_keep_other_servers(tmp_path: Path) -> None:
    path = tmp_path / "claude_desktop_config.json"
    path.write_text(json.dumps({"mcpServers": {"other": {"command": "x"}}, "theme": "dark"}))
    cfg = config("claude-desktop", path)
    assert json.loads(cfg.snippet()) == {"mcpServers": {"mcp-fleet": cfg.entry}}
    backup = cc.write(cfg)
    written = json.loads(path.read_text())
    assert written == {
        "mcpServers": {"other": {"command": "x"}, "mcp-fleet": cfg.entry},
        "theme": "dark",
    }
    assert backup is not None and json.loads(backup.read_text())["mcpServers"] == {
        "other": {"command": "x"}
    }


def test_codex_gets_toml(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('model = "o3"\n\n[mcp_servers.other]\ncommand = "x"\n')
    cfg = config("codex", path)
    assert tomllib.loads(cfg.snippet()) == {"mcp_servers": {"mcp-fleet": cfg.entry}}
    cc.write(cfg)
    doc = tomllib.loads(path.read_text())
    assert doc["model"] == "o3"
    assert doc["mcp_servers"]["other"] == {"command": "x"}
    assert doc["mcp_servers"]["mcp-fleet"]["args"] == [
        "up",
        "--transport",
        "stdio",
        "--dir",
        "/fleet",
    ]


def test_a_new_file_is_created(tmp_path: Path) -> None:
    path = tmp_path / "deep" / ".mcp.json"
    assert cc.write(config("claude-code", path)) is None
    assert "mcp-fleet" in json.loads(path.read_text())["mcpServers"]


def test_a_broken_file_is_reported_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text('{"mcpServers": {,}')
    with pytest.raises(FleetConfigError, match=r"mcp\.json:1: not valid JSON"):
        cc.write(config("cursor", path))
    assert path.read_text() == '{"mcpServers": {,}'


def test_default_paths(tmp_path: Path) -> None:
    assert cc.config_path("claude-code", cwd=tmp_path) == tmp_path / ".mcp.json"
    assert cc.config_path("codex", home=tmp_path) == tmp_path / ".codex/config.toml"
    assert cc.config_path("cursor", home=tmp_path) == tmp_path / ".cursor/mcp.json"
