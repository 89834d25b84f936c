"""On-demand servers end to end: real controller, real router, real servers, the official client.

A fleet directory holds an on-demand echo server with a 2 s idle timeout.
The controller and the router run in the test's loop as ``mcp-fleet up``
runs them (one endpoint table between them, the router on streamable HTTP)
and the official MCP client talks to the router. The scenario checks what a
user sees: the server's tools are listed while nothing runs, a call starts
it and succeeds, it stops on its own once idle (Stopped, ScaledToZero),
the next call starts it again without the client noticing anything but the
wait, 50 concurrent first calls start exactly one instance, and the lists
learned while it ran are cached on disk, so a restarted router lists them
without starting it. Once with local processes, once with Docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from mcp_fleet.config import resolve_files
from mcp_fleet.conventions import LABEL_FLEET, LABEL_SERVER, fleet_name
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.model import RuntimeKind, ServerSpec
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.router.http_service import serve_http
from mcp_fleet.router.router import Router
from mcp_fleet.runtimes.base import Instance, Runtime
from mcp_fleet.runtimes.select import build_runtimes
from mcp_fleet.status import REASON_IDLE, ServerState
from router_support import ECHO, http_client, text_of, tool_names
from support import until
from testbed_images import SERVERS_IMAGE

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

IDLE = 2.0


def catalog(kind: RuntimeKind, marker: str) -> str:
    if kind is RuntimeKind.DOCKER:
        how = f"    image: {SERVERS_IMAGE}\n"
    else:
        argv = ", ".join(f'"{a}"' for a in (*ECHO, marker))
        how = f"    process:\n      command: [{argv}]\n"
    return (
        'version: "2"\n'
        "registry:\n"
        "  od:\n"
        "    description: echo, started on demand\n"
        "    lifecycle: on-demand\n"
        f"    idleTimeout: {IDLE:g}s\n"
        "    tools: [echo, add, sleep]\n"
        f"{how}"
    )


@dataclass
class Fleet:
    home: Path
    controller: Controller
    router: Router
    url: str
    starts: list[str]

    def state(self) -> tuple[ServerState, str] | None:
        st = self.controller.status().server("od")
        return None if st is None else (st.state, st.reason)


def count_starts(runtime: Runtime, starts: list[str]) -> None:
    """Record every start the controller asks of the (real) runtime."""
    original = runtime.start

    async def start(spec: ServerSpec) -> Instance:
        starts.append(spec.name)
        return await original(spec)

    runtime.start = start  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def fleet_up(home: Path, kind: RuntimeKind) -> AsyncIterator[Fleet]:
    files = resolve_files(home)
    runtimes = build_runtimes(kind, fleet=fleet_name(home), state_dir=files.state_dir)
    starts: list[str] = []
    count_starts(runtimes[kind], starts)
    table = EndpointTable()
    ctl = Controller(files, runtimes, table, preferred_runtime=kind, watch=False)
    router = Router(table)
    urls: asyncio.Queue[str] = asyncio.Queue()
    tasks = [
        asyncio.create_task(ctl.run()),
        asyncio.create_task(router.run()),
        asyncio.create_task(serve_http(router, port=0, ready=urls.put_nowait)),
    ]
    try:
        url = await asyncio.wait_for(urls.get(), 15)
        yield Fleet(home, ctl, router, url, starts)
    finally:
        for task in reversed(tasks):
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
        await asyncio.wait_for(ctl.aclose(stop_processes=True), 20)


def make_home(tmp_path: Path, kind: RuntimeKind, marker: str) -> Path:
    home = tmp_path / "fleet"
    (home / "catalogs").mkdir(parents=True)
    (home / "catalogs" / "od.yaml").write_text(catalog(kind, marker))
    (home / "registry.yaml").write_text("registry:\n  od: {}\n")
    return home


def cold(f: Fleet) -> bool:
    return f.state() == (ServerState.STOPPED, REASON_IDLE)


def processes_with(text: str) -> int:
    found = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                stat = (entry / "stat").read_text()
                if text in cmd and stat[stat.rfind(")") + 2] not in "ZX":
                    found += 1
    return found


async def scenario(f: Fleet, running: Callable[[], int]) -> None:
    """The user's view, with ``running()`` counting live instances the runtime's own way."""
    await until(lambda: cold(f), what="od Stopped/ScaledToZero before any call")
    async with http_client(f.url) as (session, recorder):
        # Cold: listed from the catalog's tools, nothing started.
        assert {"echo", "add", "sleep"} <= await tool_names(session)
        assert f.starts == [] and running() == 0

        # The first call starts it, waits, and succeeds.
        assert text_of(await session.call_tool("echo", {"text": "hello"})) == "hello"
        assert running() == 1 and f.starts == ["od"]
        # The pass publishes the endpoint (the call goes on at once), then the status.
        ready = (ServerState.READY, "Initialized")
        await until(lambda: f.state() == ready, within=10, what="status Ready after the call")

        # Idle for IDLE seconds: scaled to zero, still listed, no list_changed.
        await until(lambda: f.router.backend("od") is not None, what="attached")
        await until(lambda: f.router.activator.describe("od")["lists_from"] == "server")
        recorder.changed.clear()
        await until(lambda: cold(f), within=IDLE + 10, what="scaled to zero after idle")
        await until(lambda: running() == 0, within=10, what="instance gone")
        assert {"echo", "add", "sleep"} <= await tool_names(session)

        # 50 concurrent first calls: one start, every call answered.
        texts = [f"call-{i}" for i in range(50)]
        results = await asyncio.gather(*(session.call_tool("echo", {"text": t}) for t in texts))
        assert [text_of(r) for r in results] == texts
        assert f.starts == ["od", "od"] and running() == 1

        # Idle again, then one more call: restarted transparently.
        await until(lambda: cold(f), within=IDLE + 10, what="scaled to zero again")
        assert text_of(await session.call_tool("add", {"a": 2, "b": 3})) == "5.0"
        assert f.starts == ["od", "od", "od"]
        assert not recorder.changed.is_set()  # going cold and warm is no list change
    status = f.controller.status().server("od")
    assert status is not None and status.restarts == 0  # scaling down is not a failure


async def test_on_demand_process_server_scales_to_zero_and_back(tmp_path: Path) -> None:
    marker = f"od-{uuid.uuid4().hex[:10]}"
    home = make_home(tmp_path, RuntimeKind.PROCESS, marker)
    async with fleet_up(home, RuntimeKind.PROCESS) as f:
        await scenario(f, lambda: processes_with(marker))
        await until(lambda: cold(f), within=IDLE + 10, what="cold before restart")
    cache = home / ".state" / "cache" / "od.json"
    assert cache.exists() and b'"inputSchema"' in cache.read_bytes()

    # A restarted gateway lists the cached lists (the server's own) without starting it.
    (home / "catalogs" / "od.yaml").write_text(
        catalog(RuntimeKind.PROCESS, marker).replace("    tools: [echo, add, sleep]\n", "")
    )
    async with fleet_up(home, RuntimeKind.PROCESS) as f:
        await until(lambda: cold(f))
        async with http_client(f.url) as (session, _):
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert set(tools) == {"echo", "add", "sleep"}
            assert tools["echo"].description == "Return the text unchanged."
        assert f.starts == [] and processes_with(marker) == 0
        assert f.router.activator.describe("od")["lists_from"] == "cache"


@pytest.mark.docker
async def test_on_demand_docker_server_starts_one_container_for_concurrent_calls(
    tmp_path: Path, docker_client: docker.DockerClient, testbed_images: tuple[str, ...]
) -> None:
    home = make_home(tmp_path, RuntimeKind.DOCKER, "unused")
    fleet = fleet_name(home)

    def containers() -> int:
        filters = {"label": [f"{LABEL_FLEET}={fleet}", f"{LABEL_SERVER}=od"], "status": "running"}
        return len(docker_client.containers.list(filters=filters))

    try:
        async with fleet_up(home, RuntimeKind.DOCKER) as f:
            await scenario(f, containers)
    finally:
        ours = {"label": f"{LABEL_FLEET}={fleet}"}
        for container in docker_client.containers.list(all=True, filters=ours):
            container.remove(force=True)
