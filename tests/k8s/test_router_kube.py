"""The router in a cluster: following MCPServers through kmock, and sessions across replicas.

kmock serves a stateful Kubernetes API on 127.0.0.1 with MCPServer objects
whose ``status`` points at real MCP servers: ``mcp-fleet bridge`` around
``tests/servers/echo_server.py`` and around ``mcp-server-time`` (the
Service URLs a real operator would write are replaced by the bridges'
local URLs). Objects are changed through kmock's HTTP API, so the router
sees real list and watch traffic.

The first test runs the follower and the router in this process and looks
at what the router advertises. The second runs two ``mcp-fleet router
--kubernetes`` processes with one session key, as two replicas behind a
Service: a session begun on one is served by the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import kmock as kmock_lib
import pytest
from k8s_support import ROOT, free_port, start_bridge, stop, wait_ready, write_kubeconfig
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.router.router import Router
from mcp_fleet.sources.kube_follow import KubeFollower, entry_for, parse_selector

NS = "team"
MCP = kmock_lib.resource("mcp-fleet.dev", "v1alpha1", "mcpservers")
MCP_PATH = f"/apis/mcp-fleet.dev/v1alpha1/namespaces/{NS}/mcpservers"
ECHO_TOOLS = {"echo", "add", "sleep"}
TIME_TOOLS = {"get_current_time", "convert_time"}
TOKEN = "team-token-0123456789abcdef"
SESSION_KEY = "shared-session-key-0123456789abcdef"
T = TypeVar("T")

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def echo_bridge() -> Iterator[int]:
    """A bridge around the echo test server; yields its port."""
    port = free_port()
    server = str(ROOT / "tests" / "servers" / "echo_server.py")
    proc = start_bridge("--", sys.executable, server, port=port)
    try:
        wait_ready(proc, port)
        yield port
    finally:
        stop(proc)


@pytest.fixture
def api(kmock: Any, kubeconfig_env: Path) -> Any:
    """kmock serving MCPServer (with status), KUBECONFIG pointing at it."""
    kmock.resources.load_bundled()
    kmock.resources[MCP] = kmock_lib.ResourceInfo(
        kind="MCPServer",
        singular="mcpserver",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        shortnames={"mcps"},
        subresources={"status"},
    )
    write_kubeconfig(kubeconfig_env, str(kmock.url).rstrip("/"))
    return kmock


async def call(kmock: Any, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    async with kmock.request(method, path, json=body) as resp:
        assert resp.status < 300, await resp.text()
        return await resp.json()


def ready_status(port: int, *, ready: bool = True, config_hash: str = "h1") -> dict[str, Any]:
    return {
        "state": "Ready" if ready else "Starting",
        "configHash": config_hash,
        "endpoint": f"http://127.0.0.1:{port}/mcp",
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": "Initialized" if ready else "Starting",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }


def mcpserver(
    name: str,
    status: dict[str, Any] | None,
    *,
    spec: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "mcp-fleet.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "generation": 1,
            "labels": {"team": "a", **(labels or {})},
            "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": spec if spec is not None else {"image": "example/server:1", "command": ["srv"]},
    }
    if status is not None:
        obj["status"] = status
    return obj


async def eventually(fn: Callable[[], T | None], *, within: float = 15.0) -> T:
    deadline = asyncio.get_running_loop().time() + within
    value: T | None = None
    while asyncio.get_running_loop().time() < deadline:
        value = fn()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met in {within}s; last value: {value!r}")


@contextlib.asynccontextmanager
async def following(
    events: list[str], **options: Any
) -> AsyncIterator[tuple[Router, KubeFollower]]:
    table = EndpointTable()
    published = asyncio.Event()
    follower = KubeFollower(table, (NS,), published=published, **options)
    router = Router(
        table,
        published=published,
        on_event=lambda event, server, detail: events.append(f"{event}:{server}"),
    )
    tasks = [asyncio.create_task(follower.run()), asyncio.create_task(router.run())]
    try:
        yield router, follower
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await router.aclose()


def servers_of(router: Router) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for advertised, route in router.table.tool_routes.items():
        out.setdefault(route.server, set()).add(advertised)
    return out


def test_entry_for_reads_the_spec_and_the_status() -> None:
    obj = mcpserver(
        "web",
        ready_status(9),
        spec={"remote": {"url": "https://x.example/sse", "transport": "sse"}, "tools": ["a"]},
    )
    obj["spec"]["prefix"] = "w"
    obj["metadata"]["annotations"] = {"mcp-fleet.dev/call-timeout": "2m"}
    entry = entry_for(obj)
    assert entry is not None
    assert entry.endpoint.url == "http://127.0.0.1:9/mcp"  # type: ignore[union-attr]
    assert entry.endpoint.transport == "sse"  # type: ignore[union-attr]
    assert entry.spec.tools_allow == ("a",)
    assert entry.spec.entry is not None and entry.spec.entry.prefix == "w"
    assert entry.spec.entry.call_timeout_seconds == 120.0
    rolled = mcpserver("web", ready_status(9, config_hash="h2"), spec=obj["spec"])
    assert entry_for(rolled).endpoint.instance_id != entry.endpoint.instance_id  # type: ignore[union-attr]
    assert entry_for(mcpserver("web", ready_status(9, ready=False))) is None
    assert entry_for(mcpserver("web", None)) is None
    assert parse_selector(["team=a,tier = prod"]) == {"team": "a", "tier": "prod"}
    for bad in ("team", "team!=a", "=a"):
        with pytest.raises(ValueError, match="key=value"):
            parse_selector([bad])


async def test_router_follows_ready_mcpservers_only(
    api: Any, echo_bridge: int, time_bridge: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mcp_fleet.sources.kube_follow")
    await call(api, "POST", MCP_PATH, mcpserver("time", ready_status(time_bridge)))
    await call(api, "POST", MCP_PATH, mcpserver("echo", ready_status(echo_bridge, ready=False)))
    other = mcpserver("other", ready_status(echo_bridge), labels={"team": "b"})
    await call(api, "POST", MCP_PATH, other)
    broken = mcpserver("broken", ready_status(echo_bridge), spec={"image": "x", "replicas": -1})
    await call(api, "POST", MCP_PATH, broken)
    # The API server fails the first list: the follower backs off and lists again.
    api[kmock_lib.action.LIST, MCP][:1] << 500
    events: list[str] = []
    async with following(events, selector={"team": "a"}, resync_seconds=60) as (router, follower):
        await asyncio.wait_for(router.wait_settled(), 15)
        assert servers_of(router) == {"time": TIME_TOOLS}  # settled: after the first list
        assert "MCPServers in team: API error 500" in caplog.text
        assert len(list(api[kmock_lib.action.LIST, MCP])) == 2  # failed, then listed
        assert len(list(api[kmock_lib.action.WATCH, MCP])) == 1  # and watching since
        assert "MCPServer team/broken skipped: " in caplog.text
        assert "spec.replicas" in caplog.text

        # echo turns Ready: its tools appear.
        await call(api, "PATCH", f"{MCP_PATH}/echo/status", {"status": ready_status(echo_bridge)})
        await eventually(lambda: servers_of(router) == {"time": TIME_TOOLS, "echo": ECHO_TOOLS})

        # A rollout (new config hash) re-attaches; a tool allow-list narrows what is advertised.
        assert events.count("attached:echo") == 1
        await call(
            api,
            "PATCH",
            f"{MCP_PATH}/echo",
            {"spec": {"tools": ["echo"]}, "status": ready_status(echo_bridge, config_hash="h2")},
        )
        await eventually(lambda: servers_of(router).get("echo") == {"echo"})
        await eventually(lambda: events.count("attached:echo") == 2)

        # Deleted: gone. Not Ready any more: gone too.
        await call(api, "DELETE", f"{MCP_PATH}/time")
        await eventually(lambda: servers_of(router) == {"echo": {"echo"}})
        await call(
            api, "PATCH", f"{MCP_PATH}/echo/status", {"status": ready_status(0, ready=False)}
        )
        await eventually(lambda: servers_of(router) == {})
        assert len(list(api[kmock_lib.action.WATCH, MCP])) == 1  # no error, no relist
        assert set(follower.entries) == {(NS, "echo"), (NS, "other"), (NS, "broken")}


class RouterProcess:
    """``mcp-fleet router --kubernetes`` as a child process, as one replica of the chart's."""

    def __init__(self, kubeconfig: Path, home: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "MCP_FLEET_HOME": str(home),
            "MCP_FLEET_ROUTER_TOKEN": TOKEN,
            "MCP_FLEET_SESSION_KEY": SESSION_KEY,
        }
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mcp_fleet.router", "--kubernetes",
            f"--namespace={NS}", "--selector", "team=a", "--transport=streamable-http",
            "--host=127.0.0.1", f"--port={self.port}",
            env=self.env, stdout=asyncio.subprocess.DEVNULL, stderr=self.log,
        )  # fmt: skip

    def output(self) -> str:
        self.log.seek(0)
        return bytes(self.log.read()).decode(errors="replace")

    async def wait_ready(self, http: httpx.AsyncClient, *, within: float = 20.0) -> None:
        assert self.proc is not None
        deadline = asyncio.get_running_loop().time() + within
        while asyncio.get_running_loop().time() < deadline:
            if self.proc.returncode is not None:
                raise AssertionError(f"router exited {self.proc.returncode}: {self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{self.port}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"router not ready in {within}s: {self.output()}")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.log.close()


def headers(sid: str | None = None, *, token: str | None = TOKEN) -> dict[str, str]:
    out = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    if token is not None:
        out["authorization"] = f"Bearer {token}"
    if sid is not None:
        out["mcp-session-id"] = sid
        out["mcp-protocol-version"] = "2025-06-18"
    return out


def rpc(mid: int | None, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if mid is not None:
        msg["id"] = mid
    if params is not None:
        msg["params"] = params
    return msg


async def test_two_router_replicas_serve_one_session(
    api: Any, kubeconfig_env: Path, tmp_path: Path, echo_bridge: int, time_bridge: int
) -> None:
    await call(api, "POST", MCP_PATH, mcpserver("echo", ready_status(echo_bridge)))
    await call(api, "POST", MCP_PATH, mcpserver("time", ready_status(time_bridge)))
    replicas = [RouterProcess(kubeconfig_env, tmp_path), RouterProcess(kubeconfig_env, tmp_path)]
    a, b = replicas
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            await asyncio.gather(*(r.start() for r in replicas))
            await asyncio.gather(*(r.wait_ready(http) for r in replicas))

            # One replica, the official client: every Ready server's tools, a call through.
            client = create_mcp_http_client(headers={"authorization": f"Bearer {TOKEN}"})
            async with (
                client,
                streamable_http_client(a.url, http_client=client) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                tools = {t.name for t in (await session.list_tools()).tools}
                assert tools == ECHO_TOOLS | TIME_TOOLS
                echoed = await session.call_tool("echo", {"text": "through A"})
                assert not echoed.is_error and echoed.content[0].text == "through A"  # type: ignore[union-attr]

            # No token: refused.
            init = rpc(1, "initialize", {
                "protocolVersion": "2025-06-18",
                "capabilities": {"sampling": {}},
                "clientInfo": {"name": "raw", "version": "1"},
            })  # fmt: skip
            refused = await http.post(a.url, json=init, headers=headers(token=None))
            assert refused.status_code == 401

            # Initialize on A; everything after it on B, with A's session id.
            opened = await http.post(a.url, json=init, headers=headers())
            assert opened.status_code == 200, opened.text
            sid = opened.headers["mcp-session-id"]
            assert opened.json()["result"]["protocolVersion"] == "2025-06-18"
            note = await http.post(
                b.url, json=rpc(None, "notifications/initialized"), headers=headers(sid)
            )
            assert note.status_code == 202, note.text
            listed = await http.post(b.url, json=rpc(2, "tools/list"), headers=headers(sid))
            assert listed.status_code == 200, listed.text
            assert listed.headers["mcp-session-id"] == sid
            assert {t["name"] for t in listed.json()["result"]["tools"]} == ECHO_TOOLS | TIME_TOOLS
            called = await http.post(
                b.url, json=rpc(3, "tools/call", {"name": "echo", "arguments": {"text": "via B"}}),
                headers=headers(sid),
            )  # fmt: skip
            assert called.json()["result"]["content"][0]["text"] == "via B"
            # ...and back on A, which still holds the session it began.
            again = await http.post(
                a.url, json=rpc(4, "tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}}),
                headers=headers(sid),
            )  # fmt: skip
            assert again.json()["result"]["content"][0]["text"] == "5.0"

            # An id no replica signed, or a tampered one, is not a session.
            for bad in ("0" * 32, sid[:-4] + ("AAAA" if not sid.endswith("AAAA") else "BBBB")):
                lost = await http.post(b.url, json=rpc(5, "ping"), headers=headers(bad))
                assert lost.status_code == 404, lost.text

            # B ends the session it restored.
            ended = await http.delete(b.url, headers=headers(sid))
            assert ended.status_code == 200
    finally:
        await asyncio.gather(*(r.stop() for r in replicas))
