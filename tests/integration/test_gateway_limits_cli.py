"""Limits set on ``mcp-fleet up``'s command line, through the real router.

A fleet of one process server (``echo``: ``echo`` and a slow ``sleep``) is
served by ``mcp-fleet up`` over streamable HTTP, and the official MCP client
makes the calls. With ``--max-calls-per-identity 1`` a second call while a
slow one runs is refused at once with the 429-style MCP error naming the
limit, and the same identity may call again once the first call is done.
With ``--rate-per-identity 2/s --burst-per-identity 2`` a quick burst of five
calls gets two through and the rest refused with a ``retryAfter``; after that
wait a call goes through again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from router_support import ECHO, PY, ROOT, ClientRunner, text_of

pytestmark = [pytest.mark.timeout(90), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

LAUNCH = "from mcp_fleet.cli.main import app\napp()\n"
LIMITED = -32029


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_fleet(home: Path) -> None:
    (home / "catalogs").mkdir(parents=True)
    command = "[" + ", ".join(f'"{a}"' for a in ECHO) + "]"
    (home / "catalogs" / "test.yaml").write_text(
        'version: "2"\nregistry:\n'
        f"  echo:\n    description: echo\n    process:\n      command: {command}\n"
    )
    (home / "registry.yaml").write_text("registry:\n  echo:\n    catalog: test\n")


@contextlib.contextmanager
def up(tmp: Path, *limits: str) -> Iterator[str]:
    """``mcp-fleet up`` with ``limits``, until ready; yields its MCP URL."""
    home = tmp / "fleet"
    write_fleet(home)
    port = free_port()
    err = tmp / "up.err"
    args = ["up", "--dir", str(home), "--port", str(port), *limits]
    with err.open("wb") as stderr:
        proc = subprocess.Popen([PY, "-c", LAUNCH, *args], cwd=ROOT, stderr=stderr)
    try:
        deadline = time.monotonic() + 40
        while True:
            assert proc.poll() is None, err.read_text()
            with contextlib.suppress(httpx.HTTPError):
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            assert time.monotonic() < deadline, "mcp-fleet up never became ready"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.asynccontextmanager
async def client(url: str) -> AsyncIterator[Any]:
    runner = ClientRunner(lambda: streamable_http_client(url))
    try:
        session = await runner.session()
        for _ in range(200):  # the echo server attaches shortly after the controller's pass
            if "sleep" in {t.name for t in (await session.list_tools()).tools}:
                break
            await asyncio.sleep(0.1)
        yield session
    finally:
        await runner.aclose()


async def outcome(call: Any) -> str | MCPError:
    try:
        return text_of(await call)
    except MCPError as exc:
        return exc


async def test_max_calls_per_identity_refuses_a_second_concurrent_call(tmp_path: Path) -> None:
    with up(tmp_path, "--max-calls-per-identity", "1") as url:
        async with client(url) as session:
            slow = asyncio.create_task(outcome(session.call_tool("sleep", {"seconds": 1.5})))
            await asyncio.sleep(0.3)  # the slow call is in flight
            started = time.monotonic()
            second = await outcome(session.call_tool("echo", {"text": "me too"}))
            assert time.monotonic() - started < 1.0  # refused at once, not queued
            assert isinstance(second, MCPError), second
            assert second.code == LIMITED
            assert "limit 1 per identity" in second.message
            assert second.data["status"] == 429
            assert second.data["limit"] == "identity-concurrency"
            assert await slow == "slept 1.5"
            # The slot is free again once the slow call has been answered.
            assert text_of(await session.call_tool("echo", {"text": "now"})) == "now"


async def test_rate_per_identity_refuses_a_burst_beyond_it_with_retry_after(
    tmp_path: Path,
) -> None:
    with up(tmp_path, "--rate-per-identity", "2/s", "--burst-per-identity", "2") as url:
        async with client(url) as session:
            results = [await outcome(session.call_tool("echo", {"text": str(i)})) for i in range(5)]
            passed = [r for r in results if isinstance(r, str)]
            refused = [r for r in results if isinstance(r, MCPError)]
            assert results[:2] == ["0", "1"]
            assert 1 <= len(passed) <= 3 and len(refused) >= 2  # a 0.5 s refill may let one in
            for error in refused:
                assert error.code == LIMITED
                assert error.data["limit"] == "identity-rate"
                assert 0 < error.data["retryAfter"] <= 0.5
                assert "2 calls/s (burst 2)" in error.message
            await asyncio.sleep(max(e.data["retryAfter"] for e in refused) + 0.05)
            assert text_of(await session.call_tool("echo", {"text": "later"})) == "later"
