"""On-demand servers with ``mcp-fleet up`` and a second router beside it, over real Docker.

``mcp-fleet up --runtime docker`` runs the controller and its own router;
``mcp-fleet router --dir`` on the same fleet, in another process, reaches
up's controller through the demand socket that ``up`` now serves. Checked,
with the official MCP client over streamable HTTP on both routers:

- a call through the separate router to a cold on-demand server starts it
  (one container) and succeeds;
- idle, the server is scaled to zero: both routers (up's own, answering in
  its process, and the other one, over the socket) agreed;
- a call through up's own router starts it again on the in-process path;
- stopping ``up`` removes its socket; the other router keeps running.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
from mcp_fleet.conventions import LABEL_FLEET
from router_support import http_client, text_of, tool_names
from test_on_demand_split import IDLE, TOOLS, Fleet, cold, free_port, until
from testbed_images import SERVERS_IMAGE

pytestmark = [
    pytest.mark.docker,
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


class UpFleet(Fleet):
    """The fleet folder run by ``mcp-fleet up`` (its ``controller`` process) and a router."""

    def start_up(self) -> str:
        self.up_port = free_port()
        self.controller = self.mcp_fleet(
            "up", "--runtime", "docker", "--transport", "streamable-http",
            "--port", str(self.up_port), log=self.controller_log,
        )  # fmt: skip
        return self.wait_healthy(self.controller, self.up_port)

    def start_router(self, *extra: str) -> str:
        self.port = free_port()
        self.router = self.mcp_fleet(
            "router", "--transport", "streamable-http", "--port", str(self.port), *extra,
            log=self.router_log,
        )  # fmt: skip
        return self.wait_healthy(self.router, self.port)

    def wait_healthy(self, proc: subprocess.Popen[bytes], port: int) -> str:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            assert proc.poll() is None, self.logs()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    return f"{base}/mcp"
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"no answer on port {port}\n{self.logs()}")


@pytest.fixture
def fleet(
    tmp_path: Path, docker_client: docker.DockerClient, testbed_images: tuple[str, ...]
) -> Iterator[UpFleet]:
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
    f = UpFleet(home, docker_client)
    try:
        yield f
    finally:
        f.stop()
        for container in docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_FLEET}={f.name}"}
        ):
            container.remove(force=True)


async def test_a_router_beside_up_starts_a_cold_on_demand_server(fleet: UpFleet) -> None:
    up_url = fleet.start_up()
    sock = fleet.home / ".state" / "demand.sock"
    await until(lambda: cold(fleet) and sock.exists(), fleet, within=45, what="od cold")
    url = fleet.start_router("--activation-timeout", "90")

    async with http_client(url) as (session, _):
        assert await tool_names(session) >= TOOLS
        assert fleet.containers() == []
        # Cold, asked through the other router: up's controller starts it.
        assert text_of(await session.call_tool("echo", {"text": "beside up"})) == "beside up"
        assert len(fleet.containers(every=False)) == 1
        # The controller writes status.json after its pass: it follows the call.
        await until(
            lambda: fleet.status().get("state") == "Ready", fleet, within=30, what="od Ready"
        )

    # Idle: both routers agree, the container goes.
    await until(lambda: cold(fleet), fleet, within=IDLE + 30, what="scaled to zero")

    # up's own router still starts it on its in-process path.
    async with http_client(up_url) as (session, _):
        assert text_of(await session.call_tool("add", {"a": 2, "b": 3})) == "5.0"
        assert len(fleet.containers(every=False)) == 1

    assert fleet.controller is not None and fleet.router is not None
    fleet.controller.send_signal(signal.SIGTERM)
    assert fleet.controller.wait(30) == 0, fleet.logs()
    assert not sock.exists()
    assert fleet.router.poll() is None
