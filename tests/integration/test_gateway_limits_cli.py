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
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from prometheus_client.parser import text_string_to_metric_families
from router_support import ECHO, PY, ROOT, ClientRunner, text_of, until_tools
from support import free_port, until, until_sync

pytestmark = [pytest.mark.timeout(90), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

LAUNCH = "from mcp_fleet.cli.main import app\napp()\n"
LIMITED = -32029


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

        def ready() -> bool:
            assert proc.poll() is None, err.read_text()
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            return False

        until_sync(ready, within=40, every=0.1, what="mcp-fleet up ready")
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
        # The echo server attaches shortly after the controller's pass.
        await until_tools(session, {"echo", "sleep"})
        yield session
    finally:
        await runner.aclose()


async def outcome(call: Any) -> str | MCPError:
    try:
        return text_of(await call)
    except MCPError as exc:
        return exc


async def calls_in_flight(url: str, server: str) -> float:
    """``mcp_fleet_calls_in_flight{server}`` on ``up``'s ``/metrics``."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(url.replace("/mcp", "/metrics"))).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mcp_fleet_calls_in_flight" and sample.labels.get("server") == server
    )


async def test_max_calls_per_identity_refuses_a_second_concurrent_call(tmp_path: Path) -> None:
    with up(tmp_path, "--max-calls-per-identity", "1") as url:
        async with client(url) as session:
            slow = asyncio.create_task(outcome(session.call_tool("sleep", {"seconds": 5})))

            async def admitted() -> bool:  # the slow call holds the identity's only slot
                return await calls_in_flight(url, "echo") == 1

            await until(admitted, what="the slow call in flight")
            second = await outcome(session.call_tool("echo", {"text": "me too"}))
            assert not slow.done()  # refused while the slow call runs: not queued behind it
            assert isinstance(second, MCPError), second
            assert second.code == LIMITED
            assert "limit 1 per identity" in second.message
            assert second.data["status"] == 429
            assert second.data["limit"] == "identity-concurrency"
            assert await slow == "slept 5.0"
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
