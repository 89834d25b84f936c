"""What ``mcp-fleet status`` says of a per-client server under a real ``mcp-fleet up``.

``up`` runs with ``--max-session-instances 1`` (over the environment
variable, which the helper sets to 32) and one ``sessions: per-client``
counter server as local processes. The status file, read as another process
would, follows the router: PerClient with no session instance, then one
while a client session holds its instance, then none again once that
session is closed (HTTP DELETE); ``mcp-fleet status`` prints the count; and
the option's cap refuses a second session's first call.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from mcp import MCPError
from router_support import PY, ROOT, http_client, tool_names
from test_per_client_sessions import LAUNCH, client, increment, running_up, until, write_fleet

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def counter_status(home: Path) -> dict[str, Any]:
    doc = json.loads((home / ".state" / "status.json").read_text())
    return next(s for s in doc["servers"] if s["name"] == "counter")


def has(home: Path, count: int) -> bool:
    try:
        st = counter_status(home)
    except (OSError, ValueError, StopIteration):
        return False
    return (st["state"], st["reason"], st.get("session_instances")) == (
        "Stopped", "PerClient", count,
    )  # fmt: skip


async def test_status_follows_the_session_instances_of_up(tmp_path: Path) -> None:
    home = tmp_path / "fleet"
    write_fleet(home, docker_runtime=False)
    async with running_up(home, "--max-session-instances", "1") as up:
        runner = client(up.url)
        try:
            a = await runner.session()
            assert "increment" in await tool_names(a)
            await until(lambda: has(home, 0), what="PerClient with no session instance")
            assert "no session instance runs" in counter_status(home)["message"]

            assert (await increment(a))[0] == 1
            await until(lambda: has(home, 1), within=10, what="one session instance")
            assert counter_status(home)["message"] == "per-client: 1 session instance running"
            proc = await asyncio.create_subprocess_exec(
                PY, "-c", LAUNCH, "status", "--dir", str(home), cwd=str(ROOT),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={"COLUMNS": "200", "PATH": ""},
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            line = next(x for x in out.decode().splitlines() if x.startswith("counter "))
            assert "PerClient" in line and "1 session instance running" in line

            async with http_client(up.url) as (other, _):  # the cap comes from the option
                with pytest.raises(MCPError, match="1 per-client instances already run"):
                    await other.call_tool("increment", {})

            await runner.aclose()  # the session ends: so does its instance, and the count
            await until(lambda: has(home, 0), within=10, what="back to no session instance")
        finally:
            await runner.aclose()
