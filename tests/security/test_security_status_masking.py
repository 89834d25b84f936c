"""What ``mcp-fleet up`` shows of a secret, and to whom (findings of an outside review).

The secret holds a quote, a backslash, a slash, a plus and a non-ASCII
letter, so that every escaping spells it differently. Two real ``mcp-fleet
up`` runs, with tokens ``admin`` (everything) and ``alice`` (``--servers
echo``):

- The value pasted into registry.yaml (``vault: {enabled: <the secret>}``)
  is quoted back JSON-escaped by the error about it: ``/api/status`` masks
  it for admin (``got "***"``) and alice gets nothing about vault, nor
  ``home`` or ``controller_pid``; ``/metrics`` is refused to alice (403) and
  served to admin (the decision: metrics name every server, so they need a
  token that may use every server).
- A server writes the secret to stderr as ``json.dumps``, ``repr``,
  ``quote``/``quote_plus`` and base64 (plain, URL-safe, inside a Basic
  credential) would, then exits: none of those spellings is in ``mcp-fleet
  logs``, the status' ``stderr_tail`` or ``.state/logs/*.log``; and
  ``.state``, left readable by an older version, is 0700 with every file in
  it 0600 (walked) while the fleet runs and after.

Each test first proves the secret was there to leak (the server's
``/proc/<pid>/environ``, the error naming vault, the stderr lines), so a
clean result means masked, not absent. Waits are on observable states.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp_fleet.config.secrets import format_value
from support import until
from support.fleet_up import (
    ECHO,
    PY,
    Up,
    cli,
    create_token,
    mcp_client,
    process_entry,
    running_up,
    tool_text,
    write_fleet,
)

pytestmark = [pytest.mark.timeout(180), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

SECRET = 'sk-"q\\' + uuid.uuid4().hex + "/+?é"
RAW = SECRET.encode()
SECRET_REF = "    secrets:\n      - name: api.token\n        env: TOKEN\n"
#: Writes the secret to stderr as libraries spell it, then exits (its last lines: stderr_tail).
LEAKY = """\
import base64, json, os, sys, urllib.parse as u
t = os.environ["TOKEN"]
b = t.encode()
for line in (
    "json " + json.dumps({"token": t}) + " " + json.dumps(t, ensure_ascii=False),
    "repr " + repr({"token": t}) + " " + repr(b),
    "url " + u.quote(t) + " " + u.quote(t, safe="") + " " + u.urlencode({"t": t}),
    "b64 " + base64.b64encode(b).decode() + " " + base64.urlsafe_b64encode(b).decode(),
    "basic Authorization: Basic " + base64.b64encode(b"user:" + b).decode(),
    "end-of-forms",
):
    sys.stderr.write(line + "\\n")
sys.stderr.flush()
sys.exit(3)
"""


def spellings() -> dict[str, str]:
    """The secret as each escaping writes it (none may be anywhere a user can read)."""
    basic = base64.b64encode(b"user:" + RAW).decode()
    return {
        "plain": SECRET,
        "json": json.dumps(SECRET)[1:-1],
        "json unicode": json.dumps(SECRET, ensure_ascii=False)[1:-1],
        "repr": repr(SECRET)[1:-1],
        "repr bytes": repr(RAW)[2:-1],
        "url": urllib.parse.quote(SECRET),
        "url safe none": urllib.parse.quote(SECRET, safe=""),
        "url plus": urllib.parse.quote_plus(SECRET),
        "base64": base64.b64encode(RAW).decode().rstrip("="),
        "urlsafe base64": base64.urlsafe_b64encode(RAW).decode().rstrip("="),
        "inside a Basic credential": basic[8:-8],
    }


def assert_masked(where: str, text: str) -> None:
    found = [name for name, form in spellings().items() if form in text]
    assert not found, f"the secret is in {where} as {found}: {text[:3000]}"


def fleet(tmp: Path) -> Path:
    """vault holds the secret, leaky prints it and exits, echo is alice's; secrets.env 0600."""
    leaky = tmp / "leaky.py"
    leaky.write_text(LEAKY)
    home = write_fleet(
        tmp,
        {
            "vault": process_entry(ECHO) + SECRET_REF,
            "leaky": process_entry([PY, str(leaky)]) + SECRET_REF,
            "echo": process_entry(ECHO),
        },
    )
    secrets = home / "secrets.env"
    secrets.write_text(f"api.token={format_value(SECRET)}\n")
    secrets.chmod(0o600)
    return home


async def api_status(up: Up, token: str) -> tuple[dict[str, Any], str]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{up.base}/api/status", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json(), response.text


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def environ(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def servers_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in doc["servers"]}


async def test_status_masks_a_pasted_secret_and_shows_each_token_its_own(tmp_path: Path) -> None:
    home = fleet(tmp_path)
    admin = create_token(home, "admin")
    alice = create_token(home, "alice", "--servers", "echo")
    async with running_up(home) as up:

        async def vault_ready() -> bool:
            doc, _ = await api_status(up, admin)
            return servers_of(doc).get("vault", {}).get("state") == "Ready"

        await until(vault_ready, within=60, what="vault Ready", context=up.log)
        doc, _ = await api_status(up, admin)
        pid = int(servers_of(doc)["vault"]["instance"].split(":")[1])
        assert b"TOKEN=" + RAW in environ(pid), "the secret never reached vault: nothing proved"

        (home / "registry.yaml").write_text(
            f"registry:\n  vault: {{enabled: {SECRET}}}\n  leaky: {{}}\n  echo: {{}}\n"
        )

        async def file_error() -> list[dict[str, Any]]:
            doc, _ = await api_status(up, admin)
            return [d for d in doc.get("file_errors") or () if d.get("server") == "vault"]

        errors = await until(file_error, within=30, what="the pasted secret refused")
        assert 'got "***"' in errors[0]["text"], errors
        doc, text = await api_status(up, admin)
        assert_masked("/api/status (admin)", text)
        assert_masked("/api/status (admin), decoded", repr(doc))
        assert doc["home"] == str(home) and isinstance(doc["controller_pid"], int)

        mine, text = await api_status(up, alice)
        assert_masked("/api/status (alice)", text)
        assert "vault" not in text and "leaky" not in text, text
        assert "home" not in mine and "controller_pid" not in mine
        assert str(home) not in text
        assert [s["name"] for s in mine["servers"]] == ["echo"]
        assert [d["server"] for d in mine["file_errors"]] == [None], "only a count of the others"
        async with mcp_client(up.url, alice) as session:  # still served: last good state
            tools = {t.name for t in (await session.list_tools()).tools}
            echo = next(name for name in ("echo", "echo__echo") if name in tools)
            assert tool_text(await session.call_tool(echo, {"text": "hi"})) == "hi"

        async with httpx.AsyncClient() as http:
            refused = await http.get(f"{up.base}/metrics", headers=bearer(alice))
            metrics = await http.get(f"{up.base}/metrics", headers=bearer(admin))
        assert refused.status_code == 403 and "vault" not in refused.text
        assert "may use every server" in refused.json()["message"]
        assert metrics.status_code == 200 and 'server="vault"' in metrics.text
        assert_masked("/metrics", metrics.text)

        status_json = (home / ".state" / "status.json").read_text()
        assert "***" in status_json
        assert_masked("status.json", status_json)
        assert_masked("mcp-fleet status --json", cli("status", "--json", "--dir", str(home)).stdout)
    assert_masked("the log of up", up.log())


async def test_escaped_forms_stay_out_of_logs_and_state_is_private(tmp_path: Path) -> None:
    home = fleet(tmp_path)
    state = home / ".state"
    (state / "logs").mkdir(parents=True)
    leftover = state / "logs" / "old.log"
    leftover.write_text("left by an older version\n")
    leftover.chmod(0o644)
    state.chmod(0o755)
    admin = create_token(home, "admin")
    audit = state / "audit.jsonl"
    async with running_up(home, "--audit-log", str(audit)) as up:

        async def leaky_tail() -> list[str]:
            doc, _ = await api_status(up, admin)
            servers = servers_of(doc)
            if servers.get("vault", {}).get("state") != "Ready":
                return []
            tail = servers.get("leaky", {}).get("stderr_tail") or []
            return tail if "end-of-forms" in tail else []

        tail = await until(leaky_tail, within=60, what="leaky's last words", context=up.log)
        assert any(line.startswith("json ") and "***" in line for line in tail), tail
        assert any(line.startswith("basic ") and "***" in line for line in tail), tail
        _, text = await api_status(up, admin)
        assert_masked("/api/status stderr_tail", text)
        assert_masked("stderr_tail", "\n".join(tail))
        walked = private_state(state)
        assert {"controller.lock", "status.json", "old.log", "leaky.log", "vault.log"} <= walked
        assert any(name.startswith("vault.") and name.endswith(".json") for name in walked), (
            "a pid file, while vault runs"
        )
        logs = cli("logs", "leaky", "--tail", "50", "--dir", str(home)).stdout
        assert "end-of-forms" in logs and logs.count("***") >= 6, logs
        assert_masked("mcp-fleet logs leaky", logs)
    for log in sorted((state / "logs").glob("*.log*")):
        assert_masked(str(log.relative_to(home)), log.read_text(errors="replace"))
    assert "audit.jsonl" in private_state(state)
    assert_masked("the log of up", up.log())


def private_state(state: Path) -> set[str]:
    """Walk ``.state``: it is 0700, every regular file in it 0600; the names of the files."""
    assert stat.S_IMODE(state.stat().st_mode) == 0o700, oct(state.stat().st_mode)
    names = set()
    for top, _, files in os.walk(state):
        for name in files:
            path = Path(top, name)
            if not path.is_file() or path.is_symlink():
                continue  # the demand socket, a link
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path}: {oct(path.stat().st_mode)}"
            names.add(name)
    return names
