"""``mcp-fleet secret set|ls|rm``: values go in, never come out."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from cli_support import Invoke

VALUE = "hunter2-very-secret"


def add_server_with_secret(home: Path) -> None:
    (home / "catalogs" / "custom.yaml").write_text(
        "registry:\n  fw:\n    image: fw:1\n    secrets:\n"
        "      - {name: FW_KEY, env: FW_KEY}\n      - {name: FW_HOST, env: FW_HOST}\n"
    )
    with (home / "registry.yaml").open("a") as fh:
        fh.write("  fw: {}\n")


def test_set_ls_rm(home: Path, cli: Invoke) -> None:
    add_server_with_secret(home)
    secrets = home / "secrets.env"
    result = cli("secret", "set", f"FW_KEY={VALUE}", "--dir", str(home))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"set FW_KEY in {secrets}\n"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert f"FW_KEY={VALUE}" in secrets.read_text()

    listing = cli("secret", "ls", "--dir", str(home))
    assert listing.exit_code == 0
    assert (
        "FW_KEY" in listing.stdout and "FW_HOST" in listing.stdout and "missing" in listing.stdout
    )
    assert VALUE not in listing.stdout + listing.stderr
    rows = json.loads(cli("secret", "ls", "--json", "--dir", str(home)).stdout)
    assert rows == [
        {
            "name": "FW_HOST",
            "set": False,
            "used_by": [{"server": "fw", "enabled": True, "required": True}],
        },
        {
            "name": "FW_KEY",
            "set": True,
            "used_by": [{"server": "fw", "enabled": True, "required": True}],
        },
    ]

    assert cli("secret", "rm", "FW_KEY", "--dir", str(home)).exit_code == 0
    assert "FW_KEY" not in secrets.read_text()
    assert cli("secret", "rm", "FW_KEY", "--dir", str(home)).exit_code == 2


def test_set_from_stdin_never_echoes(home: Path, cli: Invoke) -> None:
    result = cli("secret", "set", "PIPED", "--dir", str(home), input=VALUE + "\n")
    assert result.exit_code == 0, result.output
    assert VALUE not in result.stdout + result.stderr
    assert f"PIPED={VALUE}\n" in (home / "secrets.env").read_text()
    assert "no server in the registry uses a secret called PIPED" in result.stderr


def test_set_fixes_a_loose_mode(home: Path, cli: Invoke) -> None:
    secrets = home / "secrets.env"
    secrets.chmod(0o644)
    result = cli("secret", "set", "A=1", "--dir", str(home))
    assert "now mode 600" in result.stdout
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600


def test_bad_input_is_exit_2(home: Path, cli: Invoke) -> None:
    assert cli("secret", "set", "bad name=1", "--dir", str(home)).exit_code == 2
    assert cli("secret", "set", "EMPTY=", "--dir", str(home)).exit_code == 2
    (home / "secrets.env").write_text(f"garbage line {VALUE}\n")
    result = cli("secret", "set", "A=1", "--dir", str(home))
    assert result.exit_code == 2
    assert "secrets.env:1: expected NAME=value (line not shown)" in result.stderr
    assert VALUE not in result.stderr


def test_loose_secrets_file_refuses_and_ls_warns(home: Path, cli: Invoke) -> None:
    add_server_with_secret(home)
    secrets = home / "secrets.env"
    secrets.write_text(f"FW_KEY={VALUE}\nFW_HOST=h\n")
    secrets.chmod(0o640)
    listing = cli("secret", "ls", "--dir", str(home))
    assert "chmod 600" in listing.stderr
    rows = json.loads(cli("server", "ls", "--json", "--dir", str(home)).stdout)
    fw = next(r for r in rows if r["name"] == "fw")
    assert not fw["usable"] and "refused" in fw["problems"][0]["message"]
    assert all(r["usable"] for r in rows if r["name"] != "fw")
    validate = cli("catalog", "validate", "--dir", str(home))
    assert validate.exit_code == 2 and VALUE not in validate.stdout + validate.stderr
