"""A call held while its server starts passes the same admission as any other call.

Attack (from an outside review): a token limited with ``--servers`` to one
server calls another server's tool right after ``mcp-fleet up`` listens,
while that server is still starting. The router holds such a call until the
server attaches; it then forwarded it without asking the allow-list, the
limits, the audit log or the metrics. Here the forbidden server sleeps 4 s
before it starts (a shell in front of it), the restricted client calls its
tool at once, and the call must be refused as forbidden and audited; the
same on a running fleet while the server is disabled and enabled again
(any replacement opens the same window).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from mcp import MCPError
from mcp.client.session import ClientSession
from support import until
from support.fleet_up import (
    ECHO,
    PY,
    SERVERS,
    cli,
    create_token,
    mcp_client,
    process_entry,
    running_up,
    tool_text,
    write_fleet,
)

pytestmark = [pytest.mark.timeout(180), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

#: A call outside the allow-list is answered as an unknown tool (and audited as forbidden).
REFUSED = -32602
SLOW_FEATURE = ["sh", "-c", f'sleep 4; exec "{PY}" "{SERVERS / "feature_server.py"}"']


def fleet(tmp: Path) -> tuple[Path, str, str]:
    """calc (echo, quick) and slow (the feature server, 4 s to start); alice: calc only."""
    home = write_fleet(tmp, {"calc": process_entry(ECHO), "slow": process_entry(SLOW_FEATURE)})
    return home, create_token(home, "admin"), create_token(home, "alice", "--servers", "calc")


def audit_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def outcome(session: ClientSession, tool: str) -> str:
    """What a call of ``tool`` got: ``ok:TEXT`` or ``error:CODE``."""
    try:
        return "ok:" + tool_text(await session.call_tool(tool, {}))
    except MCPError as exc:
        return f"error:{exc.error.code}"


async def test_a_restricted_token_cannot_call_a_server_that_is_still_starting(
    tmp_path: Path,
) -> None:
    home, admin, alice = fleet(tmp_path)
    audit = tmp_path / "audit.jsonl"
    async with running_up(home, "--audit-log", str(audit)) as up:
        async with mcp_client(up.url, alice) as session:
            # Called at once: "slow" is not routable yet, so the call is held.
            assert await outcome(session, "whoami") == f"error:{REFUSED}"
        async with mcp_client(up.url, admin) as session:  # the server did come up
            whoami = await until(lambda: outcome(session, "whoami"), within=60, what="slow up")
            assert whoami.startswith("ok:"), whoami
    refused = [
        line for line in audit_lines(audit)
        if line["identity"] == "token:alice" and line["server"] == "slow"
    ]  # fmt: skip
    assert [(r["tool"], r["outcome"]) for r in refused] == [("whoami", "forbidden")], refused


async def test_no_call_of_a_restricted_token_gets_through_while_its_server_restarts(
    tmp_path: Path,
) -> None:
    home, admin, alice = fleet(tmp_path)
    audit = tmp_path / "audit.jsonl"
    async with (
        running_up(home, "--audit-log", str(audit)) as up,
        mcp_client(up.url, admin) as admin_session,
        mcp_client(up.url, alice) as s,
    ):
        ok = await until(lambda: outcome(admin_session, "whoami"), within=60, what="slow up")
        assert ok.startswith("ok:")
        outcomes: list[str] = []
        stop = asyncio.Event()

        async def hammer() -> None:
            while not stop.is_set():
                outcomes.append(await outcome(s, "whoami"))

        task = asyncio.create_task(hammer())
        try:
            cli("server", "disable", "slow", "--dir", str(home))
            await until(lambda: _gone(admin_session), within=60, what="slow stopped")
            cli("server", "enable", "slow", "--dir", str(home))
            await until(lambda: _back(admin_session), within=90, what="slow started again")
            await until(lambda: len(outcomes) >= 20, within=30, what="calls made")
        finally:
            stop.set()
            await task
    assert not [o for o in outcomes if o.startswith("ok:")], outcomes
    alice_calls = [line for line in audit_lines(audit) if line["identity"] == "token:alice"]
    assert alice_calls and all(line["outcome"] == "forbidden" for line in alice_calls)
    # Every alice call that reached admission is in the audit log, none as admitted.
    assert len(alice_calls) <= outcomes.count(f"error:{REFUSED}")  # the rest: really unknown


async def _gone(session: ClientSession) -> bool:
    return "whoami" not in {t.name for t in (await session.list_tools()).tools}


async def _back(session: ClientSession) -> bool:
    return (await outcome(session, "whoami")).startswith("ok:")
