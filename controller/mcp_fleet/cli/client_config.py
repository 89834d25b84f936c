"""Client configuration: the entry that points Claude Desktop, Claude Code, Codex or Cursor at us.

Where Docker's guide puts ``docker run -i --rm ... docker/mcp-gateway`` in a
client's config, we put ``mcp-fleet up --transport stdio --dir ...`` (or, for
HTTP, the router's URL). Each client keeps its own file format and place:
JSON ``mcpServers`` for Claude Desktop, Claude Code's ``.mcp.json`` and
Cursor; TOML ``mcp_servers`` for Codex. Writing merges our one entry into
what is there (other servers and settings untouched), keeps a backup, and
replaces the file atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomli_w

from mcp_fleet.config.atomic import atomic_write
from mcp_fleet.errors import Diagnostic, FleetConfigError

ClientName = Literal["claude-desktop", "claude-code", "codex", "cursor"]
CLIENTS: tuple[ClientName, ...] = ("claude-desktop", "claude-code", "codex", "cursor")
ClientTransport = Literal["stdio", "http"]
DEFAULT_ENTRY_NAME = "mcp-fleet"


@dataclass(frozen=True)
class ClientConfig:
    """The file a client reads and the document to put in it."""

    client: ClientName
    path: Path
    format: Literal["json", "toml"]
    entry_name: str
    entry: dict[str, Any]

    def section(self) -> str:
        return "mcp_servers" if self.format == "toml" else "mcpServers"

    def snippet(self) -> str:
        """What to paste into the client's file (only our entry, in its section)."""
        doc = {self.section(): {self.entry_name: self.entry}}
        return render(doc, self.format)


def config_path(client: ClientName, *, home: Path | None = None, cwd: Path | None = None) -> Path:
    """Where ``client`` reads its MCP servers from on this machine."""
    home = home or Path.home()
    cwd = cwd or Path.cwd()
    if client == "claude-desktop":
        if sys.platform == "darwin":
            return home / "Library/Application Support/Claude/claude_desktop_config.json"
        if sys.platform == "win32":
            appdata = os.environ.get("APPDATA")
            base = Path(appdata) if appdata else home / "AppData/Roaming"
            return base / "Claude/claude_desktop_config.json"
        return home / ".config/Claude/claude_desktop_config.json"
    if client == "claude-code":
        return cwd / ".mcp.json"
    if client == "cursor":
        return home / ".cursor/mcp.json"
    return home / ".codex/config.toml"


def fleet_command() -> str:
    """The absolute path of our executable when it is on PATH (desktop apps get a short PATH)."""
    return shutil.which("mcp-fleet") or "mcp-fleet"


def build_entry(
    client: ClientName,
    transport: ClientTransport,
    *,
    fleet_dir: Path,
    url: str,
    command: str | None = None,
) -> dict[str, Any]:
    """The server entry for ``client``: our stdio command, or the router's URL."""
    if transport == "stdio":
        entry: dict[str, Any] = {
            "command": command or fleet_command(),
            "args": ["up", "--transport", "stdio", "--dir", str(fleet_dir)],
        }
        if client == "claude-code":
            entry = {"type": "stdio", **entry, "env": {}}
        return entry
    if client == "claude-code":
        return {"type": "http", "url": url}
    if client == "claude-desktop":
        # Claude Desktop's file only launches stdio servers: bridge to the URL.
        return {"command": "npx", "args": ["-y", "mcp-remote", url]}
    return {"url": url}


def client_config(
    client: ClientName,
    *,
    transport: ClientTransport = "stdio",
    fleet_dir: Path,
    url: str,
    entry_name: str = DEFAULT_ENTRY_NAME,
    path: Path | None = None,
    command: str | None = None,
) -> ClientConfig:
    return ClientConfig(
        client=client,
        path=path or config_path(client),
        format="toml" if client == "codex" else "json",
        entry_name=entry_name,
        entry=build_entry(client, transport, fleet_dir=fleet_dir, url=url, command=command),
    )


def render(doc: dict[str, Any], fmt: Literal["json", "toml"]) -> str:
    if fmt == "toml":
        return tomli_w.dumps(doc)
    return json.dumps(doc, indent=2) + "\n"


def _load(path: Path, fmt: Literal["json", "toml"]) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    if not text.strip():
        return {}
    try:
        doc = tomllib.loads(text) if fmt == "toml" else json.loads(text)
    except json.JSONDecodeError as exc:
        raise FleetConfigError(
            Diagnostic(f"not valid JSON: {exc.msg}", file=path, line=exc.lineno)
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise FleetConfigError(Diagnostic(f"not valid TOML: {exc}", file=path)) from None
    if not isinstance(doc, dict):
        raise FleetConfigError(Diagnostic("expected an object at the top level", file=path))
    return doc


def merged(config: ClientConfig) -> dict[str, Any]:
    """The client's file with our entry set (everything else kept as it was)."""
    doc = _load(config.path, config.format)
    section = doc.get(config.section())
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise FleetConfigError(
            Diagnostic("expected a table of servers", file=config.path, field=config.section())
        )
    doc[config.section()] = {**section, config.entry_name: config.entry}
    return doc


def write(config: ClientConfig) -> Path | None:
    """Merge our entry into the client's file; returns the backup's path, if a file was there."""
    text = render(merged(config), config.format)
    return atomic_write(config.path, text, backup=True)
