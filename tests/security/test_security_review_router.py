"""What a restricted token learns and moves on shared servers, against a real ``mcp-fleet up``.

From an outside review (informational findings, fixed):
- a call outside the token's allow-list is answered exactly as an unknown
  name is (no server or tool named), so a token cannot enumerate what other
  servers offer; the audit log still records it as forbidden;
- its ``logging/setLevel`` reaches only the servers it sees: a token
  limited to ``calc`` asking for debug does not turn up the log level of the
  shared ``feat`` server;
- its ``notifications/roots/list_changed`` reaches only the servers it sees;
- sessions belong to the token, not to its name: a token made anew under a
  revoked token's name cannot use the revoked token's sessions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import MCPError
from mcp.client.session import ClientSession
from support import until
from support.fleet_up import (
    ECHO,
    PY,
    SERVERS,
    auth_headers,
    cli,
    create_token,
    mcp_client,
    process_entry,
    running_up,
    write_fleet,
)

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*is deprecated as of 2026-07-28"),
]

FEATURE = [PY, str(SERVERS / "feature_server.py")]
INIT = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "t", "version": "1"}},
}  # fmt: skip


def fleet(tmp: Path) -> tuple[Path, str, str]:
    home = write_fleet(tmp, {"calc": process_entry(ECHO), "feat": process_entry(FEATURE)})
    return home, create_token(home, "admin"), create_token(home, "alice", "--servers", "calc")


async def stats(session: ClientSession) -> dict[str, Any]:
    return (await session.call_tool("stats", {})).structured_content or {}


async def refusal(session: ClientSession, tool: str) -> tuple[int, str]:
    with pytest.raises(MCPError) as refused:
        await session.call_tool(tool, {})
    return refused.value.error.code, refused.value.error.message


async def listed(session: ClientSession, *tools: str) -> bool:
    return set(tools) <= {t.name for t in (await session.list_tools()).tools}


async def test_a_restricted_token_learns_nothing_and_moves_nothing_on_servers_it_cannot_see(
    tmp_path: Path,
) -> None:
    home, admin, alice = fleet(tmp_path)
    audit = tmp_path / "audit.jsonl"
    async with (
        running_up(home, "--audit-log", str(audit)) as up,
        mcp_client(up.url, admin) as admin_session,
        mcp_client(up.url, alice) as alice_session,
    ):
        await until(lambda: listed(admin_session, "stats", "echo"), within=60, what="fleet up")

        # Forbidden and unknown look the same.
        assert await refusal(alice_session, "whoami") == (-32602, "Unknown tool: whoami")
        assert await refusal(alice_session, "no_such_tool") == (
            -32602,
            "Unknown tool: no_such_tool",
        )
        with pytest.raises(MCPError) as prompt:
            await alice_session.get_prompt("greet")
        assert prompt.value.error.message == "Unknown prompt: greet"

        # A log level asked for by alice is not pushed to feat; admin's is.
        await alice_session.set_logging_level("debug")
        assert (await stats(admin_session))["level"] is None
        await admin_session.set_logging_level("error")
        assert (await stats(admin_session))["level"] == "error"
        await alice_session.set_logging_level("debug")  # still not below admin's, for feat
        assert (await stats(admin_session))["level"] == "error"

        # Roots: alice's change goes nowhere near feat; admin's reaches it. Both travel
        # the same ordered stream to feat, so a count of 1 after admin's proves it.
        await alice_session.send_roots_list_changed()
        await admin_session.send_roots_list_changed()
        await until(lambda: _roots_changed(admin_session), what="admin's roots change arrived")
        assert (await stats(admin_session))["roots_changed"] == 1

    lines = [json.loads(x) for x in audit.read_text().splitlines() if x.strip()]
    forbidden = [(x["server"], x["tool"]) for x in lines if x["outcome"] == "forbidden"]
    assert ("feat", "whoami") in forbidden


async def _roots_changed(session: ClientSession) -> bool:
    return bool((await stats(session))["roots_changed"])


async def test_a_new_token_under_a_revoked_name_cannot_use_the_old_sessions(
    tmp_path: Path,
) -> None:
    home, _admin, alice = fleet(tmp_path)
    async with running_up(home) as up, httpx.AsyncClient(timeout=30) as http:
        opened = await http.post(up.url, json=INIT, headers=auth_headers(alice))
        assert opened.status_code == 200, opened.text
        sid = opened.headers["mcp-session-id"]
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        own = await http.post(
            up.url, json=listing, headers={**auth_headers(alice), "mcp-session-id": sid}
        )
        assert own.status_code == 200, own.text

        cli("token", "revoke", "alice", "--dir", str(home))
        again = create_token(home, "alice", "--servers", "calc")

        async def revoked() -> bool:
            r = await http.post(up.url, json=INIT, headers=auth_headers(alice))
            return r.status_code == 401

        await until(revoked, what="the revoked token refused")
        headers = {**auth_headers(again), "mcp-session-id": sid}
        reused = await http.post(up.url, json=listing, headers=headers)
        assert reused.status_code in (403, 404), reused.text
        fresh = await http.post(up.url, json=INIT, headers=auth_headers(again))
        assert fresh.status_code == 200 and fresh.headers["mcp-session-id"] != sid
