"""``router --server NAME=CMD``: stopping a server takes what its wrapper started too.

A server launched through a wrapper (``sh -c '...'``) may leave a child that
ignores the end of its input; the router's ad-hoc servers run in a process
group of their own, and their stop signals the whole group.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mcp_fleet.sources.adhoc import AdhocFleet
from support import until

pytestmark = pytest.mark.timeout(30)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


async def test_a_wrapper_child_that_ignores_eof_is_stopped_with_its_server(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"sleep 600 & echo $! > {pidfile}; exec cat"
    fleet = AdhocFleet()
    server = await fleet.add("wrapped", ["sh", "-c", script])
    child = int(await until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="pid"))
    assert alive(child) and os.getpgid(child) == server.process.pid
    await fleet.aclose()
    await until(lambda: not alive(child), within=10, what="the wrapper's child stopped")
