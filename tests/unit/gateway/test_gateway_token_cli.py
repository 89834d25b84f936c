"""``mcp-fleet token create|ls|revoke``: the token on stdout once, never again."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
import typer
from click.testing import Result
from mcp_fleet.cli import token_cmds
from mcp_fleet.gateway.tokens import TokenVerifier
from typer.testing import CliRunner

app = typer.Typer()


@app.callback()
def _root() -> None:
    """A root like mcp-fleet's, holding the token group."""


token_cmds.register(app)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COLUMNS", "200")
    path = tmp_path / "fleet"
    path.mkdir()
    return path


def test_create_prints_only_the_token_and_stores_its_hash(home: Path) -> None:
    result = run("token", "create", "alice", "--servers", "time,fetch", "--dir", str(home))
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and token.startswith("mcpf_")
    assert "shown only now" in result.stderr and "fetch, time" in result.stderr
    path = home / "tokens.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token not in path.read_text()
    assert hashlib.sha256(token.encode()).hexdigest() in path.read_text()
    identity = TokenVerifier(path).verify(token)
    assert (
        identity is not None and identity.allows("time", "x") and not identity.allows("github", "x")
    )


def test_ls_shows_allow_lists_never_hashes(home: Path) -> None:
    first = run("token", "create", "alice", "--dir", str(home)).stdout.strip()
    run(
        "token",
        "create",
        "bot",
        "--tools",
        "time:get_current_time",
        "--tools",
        "fetch:*",
        "--dir",
        str(home),
    )
    table = run("token", "ls", "--dir", str(home))
    as_json = run("token", "ls", "--json", "--dir", str(home))
    assert table.exit_code == 0 and "alice" in table.stdout and "all servers" in table.stdout
    assert "fetch, time:get_current_time" in table.stdout
    assert json.loads(as_json.stdout) == [
        {"name": "alice", "created": json.loads(as_json.stdout)[0]["created"], "allow": ["*"]},
        {
            "name": "bot",
            "created": json.loads(as_json.stdout)[1]["created"],
            "allow": ["fetch", "time:get_current_time"],
        },
    ]
    digest = hashlib.sha256(first.encode()).hexdigest()
    for output in (table.output, as_json.output):
        assert digest not in output and first not in output


def test_revoke_and_errors(home: Path) -> None:
    token = run("token", "create", "alice", "--dir", str(home)).stdout.strip()
    again = run("token", "create", "alice", "--dir", str(home))
    assert again.exit_code == 2 and "exists" in again.stderr and again.stdout == ""
    bad = run("token", "create", "x", "--tools", "time:bad tool", "--dir", str(home))
    assert bad.exit_code == 2 and "--servers/--tools" in bad.stderr and bad.stdout == ""
    revoked = run("token", "revoke", "alice", "--dir", str(home))
    assert revoked.exit_code == 0 and "revoked" in revoked.stderr
    assert TokenVerifier(home / "tokens.yaml").verify(token) is None
    missing = run("token", "revoke", "alice", "--dir", str(home))
    assert missing.exit_code == 2 and "no token named 'alice'" in missing.stderr
