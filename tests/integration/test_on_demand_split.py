"""On-demand servers with the controller and the router in two processes, over real Docker.

``mcp-fleet controller --runtime docker`` and ``mcp-fleet router --dir``
run as two real subprocesses on a fleet whose one server (the echo server
image) is ``lifecycle: on-demand`` with a 3 s idle timeout; the official MCP
client talks to the router over streamable HTTP. They share nothing but the
fleet folder, Docker, and the demand socket in ``.state``. What a user sees:

- the server's tools are listed while no container runs;
- the first call starts exactly one container (ten calls at once too) and
  succeeds; idle for 3 s, the container is removed; the next call starts
  it again;
- the router killed with SIGKILL and started again reconnects to the
  controller, and a call longer than the idle timeout is not cut short:
  the controller does not stop a server with a call in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import support
from mcp_fleet.conventions import LABEL_FLEET, LABEL_SERVER, fleet_name
from router_support import http_client, text_of, tool_names
from support import free_port, until_sync
from testbed_images import SERVERS_IMAGE

pytestmark = [
    pytest.mark.docker,
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

PY = sys.executable
IDLE = 3.0
TOOLS = {"echo", "add", "sleep"}


class Fleet:
    """The fleet folder, its two processes, and what Docker runs for it."""

    def __init__(self, home: Path, docker_client: docker.DockerClient) -> None:
        self.home = home
        self.name = fleet_name(home)
        self.docker = docker_client
        self.controller_log = home.parent / "controller.log"
        self.router_log = home.parent / "router.log"
        self.controller: subprocess.Popen[bytes] | None = None
        self.router: subprocess.Popen[bytes] | None = None
        self.port = 0

    def mcp_fleet(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as err:
            return subprocess.Popen(
                [PY, "-m", "mcp_fleet.cli.main", *args, "--dir", str(self.home)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                env=os.environ.copy(),
            )  # fmt: skip

    def start_controller(self) -> None:
        self.controller = self.mcp_fleet(
            "controller", "--runtime", "docker", log=self.controller_log
        )

    def start_router(self) -> str:
        self.port = free_port()
        self.router = self.mcp_fleet(
            "router", "--transport", "streamable-http", "--port", str(self.port),
            log=self.router_log,
        )  # fmt: skip
        base = f"http://127.0.0.1:{self.port}"

        def healthy() -> bool:
            assert self.router.poll() is None, self.logs()
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            return False

        until_sync(healthy, within=40, every=0.1, what="the router answered", context=self.logs)
        return f"{base}/mcp"

    def stop(self) -> None:
        for proc in (self.router, self.controller):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)

    def containers(self, *, every: bool = True) -> list[Any]:
        filters = {"label": [f"{LABEL_FLEET}={self.name}", f"{LABEL_SERVER}=od"]}
        if not every:
            filters["status"] = ["running"]
        return list(self.docker.containers.list(all=every, filters=filters))

    def status(self) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads((self.home / ".state" / "status.json").read_text())
            for server in doc.get("servers", []):
                if server["name"] == "od":
                    return dict(server)
        return {}

    def logs(self) -> str:
        parts = []
        for path in (self.controller_log, self.router_log):
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {path.name} ---\n{text[-4000:]}")
        return "\n".join(parts)


@pytest.fixture
def fleet(
    tmp_path: Path, docker_client: docker.DockerClient, testbed_images: tuple[str, ...]
) -> Iterator[Fleet]:
    home = tmp_path / "fleet"
    (home / "catalogs").mkdir(parents=True)
    (home / "catalogs" / "od.yaml").write_text(
        'version: "2"\n'
        "registry:\n"
        "  od:\n"
        "    description: echo, started on demand\n"
        f"    image: {SERVERS_IMAGE}\n"
        "    lifecycle: on-demand\n"
        f"    idleTimeout: {IDLE:g}s\n"
        "    tools: [echo, add, sleep]\n"
    )
    (home / "registry.yaml").write_text("registry:\n  od: {}\n")
    f = Fleet(home, docker_client)
    try:
        yield f
    finally:
        f.stop()
        for container in docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_FLEET}={f.name}"}
        ):
            container.remove(force=True)


async def until(check: Callable[[], Any], fleet: Fleet, *, within: float, what: str) -> None:
    await support.until(check, within=within, what=what, every=0.1, context=fleet.logs)


def cold(f: Fleet) -> bool:
    st = f.status()
    return (st.get("state"), st.get("reason")) == ("Stopped", "ScaledToZero") and not f.containers()


def connections(f: Fleet) -> int:
    return f.controller_log.read_text(errors="replace").count("router connected")


async def test_split_controller_and_router_start_stop_and_survive_a_killed_router(
    fleet: Fleet,
) -> None:
    fleet.start_controller()
    url = fleet.start_router()
    await until(lambda: cold(fleet), fleet, within=45, what="od cold before any call")
    await until(lambda: connections(fleet) == 1, fleet, within=15, what="router connected")
    sock = fleet.home / ".state" / "demand.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600

    async with http_client(url) as (session, _):
        # Cold: listed from the catalog, nothing runs.
        assert await tool_names(session) >= TOOLS
        assert fleet.containers() == []

        # The first call starts exactly one container and succeeds.
        assert text_of(await session.call_tool("echo", {"text": "hello"})) == "hello"
        (first,) = fleet.containers()
        # The controller writes status.json after its pass: it follows the call.
        await until(
            lambda: fleet.status().get("state") == "Ready", fleet, within=30, what="od Ready"
        )

        # Idle: removed, still listed.
        await until(lambda: cold(fleet), fleet, within=IDLE + 20, what="scaled to zero")
        assert await tool_names(session) >= TOOLS

        # Ten calls at once on a cold server: one new container, every call answered.
        texts = [f"call-{i}" for i in range(10)]
        results = await asyncio.gather(*(session.call_tool("echo", {"text": t}) for t in texts))
        assert [text_of(r) for r in results] == texts
        (second,) = fleet.containers()
        assert second.id != first.id

    # SIGKILL the router while the server is warm, then start another.
    fleet.router.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    fleet.router.wait(10)  # type: ignore[union-attr]
    url = fleet.start_router()
    await until(lambda: connections(fleet) == 2, fleet, within=15, what="router reconnected")
    assert fleet.controller.poll() is None  # type: ignore[union-attr]

    async with http_client(url) as (session, _):
        assert await tool_names(session) >= TOOLS
        assert text_of(await session.call_tool("echo", {"text": "again"})) == "again"
        (serving,) = fleet.containers(every=False)

        # A call two idle periods long: the server stays up all along.
        call = asyncio.create_task(session.call_tool("sleep", {"seconds": 2 * IDLE}))
        while not call.done():
            assert [c.id for c in fleet.containers(every=False)] == [serving.id], fleet.logs()
            await asyncio.sleep(0.2)
        assert text_of(call.result()) == f"slept {2 * IDLE}"

        # Idle again: removed; the next call starts it once more.
        await until(lambda: cold(fleet), fleet, within=IDLE + 20, what="scaled to zero again")
        assert text_of(await session.call_tool("add", {"a": 2, "b": 3})) == "5.0"
        assert len(fleet.containers()) == 1
    st = fleet.status()
    assert st.get("restarts") == 0, st  # scaling to zero is not a failure

    # A stopped controller takes its socket along; the router waits for the next one.
    fleet.controller.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    assert fleet.controller.wait(30) == 0  # type: ignore[union-attr]
    assert not sock.exists()
    assert fleet.router.poll() is None  # type: ignore[union-attr]
