"""``sessions: per-client`` end to end: a real ``mcp-fleet up``, real servers, the official client.

A fleet directory holds one stateful server (tests/servers/counter_server.py:
``increment`` counts in its own process and names its pid and host) marked
``sessions: per-client``. ``mcp-fleet up`` runs as a separate process over
streamable HTTP and the official MCP client opens sessions to it. What a
user sees is checked: every session lists the server's tools; each session
counts 1, 2, 3 on an instance of its own (never interleaved with another
session's), and only its own instance's log messages reach it; closing a
session (HTTP DELETE) stops its instance while the others go on; the cap on
instances refuses a session's first call with a clear MCP error; and after a
``kill -9`` of ``up`` and a restart no per-session instance is left. Once
with local processes, once with Docker containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from mcp import MCPError
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_fleet.conventions import LABEL_FLEET, fleet_name
from mcp_fleet.router.session_launcher import ENV_MAX_INSTANCES
from mcp_fleet.sources.session_runtimes import sessions_fleet
from router_support import (
    PY,
    ROOT,
    SERVERS,
    ClientRunner,
    http_client,
    text_of,
    tool_names,
    until_tools,
)
from support import fleet_up, free_port, until
from support.fleet_up import Up, stop_up
from testbed_images import SERVERS_IMAGE, server_in_image

pytestmark = [pytest.mark.timeout(180), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

LAUNCH = "from mcp_fleet.cli.main import app\napp()\n"
COUNTER = SERVERS / "counter_server.py"
_RESULT = re.compile(r"count=(\d+) pid=(\d+) host=(\S+)")


def write_fleet(home: Path, *, docker_runtime: bool) -> None:
    if docker_runtime:
        how = f"    image: {SERVERS_IMAGE}\n    command: [{server_in_image('counter_server.py')}]\n"
    else:
        how = f'    process:\n      command: ["{PY}", "{COUNTER}"]\n'
    (home / "catalogs").mkdir(parents=True)
    (home / "catalogs" / "test.yaml").write_text(
        'version: "2"\nregistry:\n'
        f"  counter:\n    description: a counter per client\n    sessions: per-client\n{how}"
    )
    (home / "registry.yaml").write_text("registry:\n  counter: {}\n")


async def start_up(home: Path, *extra: str, max_instances: int = 32) -> Up:
    """``mcp-fleet up`` with at most ``max_instances`` per-client instances."""
    return await fleet_up.start_up(home, *extra, env={ENV_MAX_INSTANCES: str(max_instances)})


@contextlib.asynccontextmanager
async def running_up(home: Path, *extra: str, max_instances: int = 32) -> AsyncIterator[Up]:
    up = await start_up(home, *extra, max_instances=max_instances)
    try:
        yield up
    finally:
        await stop_up(up)


def client(url: str) -> ClientRunner:
    """A client session to ``url`` whose end (HTTP DELETE) the test chooses."""
    return ClientRunner(lambda: streamable_http_client(url))


async def increment(session: ClientSession) -> tuple[int, int, str]:
    text = text_of(await session.call_tool("increment", {}))
    found = _RESULT.fullmatch(text)
    assert found, text
    return int(found.group(1)), int(found.group(2)), found.group(3)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


async def counts_apart(a: ClientSession, b: ClientSession) -> tuple[set[str], set[str]]:
    """Interleaved calls of two sessions: each counts 1, 2, 3 on its own instance.

    Returns the (pid, host) identities each session's calls reached.
    """
    seen: dict[str, list[tuple[int, int, str]]] = {"a": [], "b": []}
    for _ in range(3):
        seen["a"].append(await increment(a))
        seen["b"].append(await increment(b))
    assert [c for c, _, _ in seen["a"]] == [1, 2, 3]
    assert [c for c, _, _ in seen["b"]] == [1, 2, 3]
    ids_a = {f"{p}@{h}" for _, p, h in seen["a"]}
    ids_b = {f"{p}@{h}" for _, p, h in seen["b"]}
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b
    return ids_a, ids_b


# -- local processes -------------------------------------------------------------------


async def test_each_session_gets_its_own_process_stopped_with_the_session(tmp_path: Path) -> None:
    home = tmp_path / "fleet"
    write_fleet(home, docker_runtime=False)
    async with running_up(home, max_instances=2) as up:
        runner_a, runner_b = client(up.url), client(up.url)
        try:
            a, b = await runner_a.session(), await runner_b.session()
            # Listed for every session (learned once, from an instance started to list it;
            # a first list may come before that, once the router's start-up hold is over).
            await until_tools(a, {"increment", "announce"})
            await until_tools(b, {"increment", "announce"})
            ids_a, ids_b = await counts_apart(a, b)
            pid_a, pid_b = (int(next(iter(i)).split("@")[0]) for i in (ids_a, ids_b))
            assert alive(pid_a) and alive(pid_b) and up.proc.pid not in (pid_a, pid_b)

            # A server's log messages reach only the session whose instance sent them.
            assert text_of(await a.call_tool("announce", {"text": "for-a"})) == "for-a"
            logs_a, logs_b = runner_a.recorder.logs, runner_b.recorder.logs
            await until(lambda: any("for-a" in str(m.data) for m in logs_a), what="a's log")
            # b's own log comes after anything of a's sent its way (one stream, in order).
            assert text_of(await b.call_tool("announce", {"text": "for-b"})) == "for-b"
            await until(lambda: any("for-b" in str(m.data) for m in logs_b), what="b's log")
            assert not any("for-a" in str(m.data) for m in logs_b)
            assert not any("for-b" in str(m.data) for m in logs_a)

            # The cap (2 here): a third session's first call is refused, naming the limit.
            async with http_client(up.url) as (c, _):
                with pytest.raises(MCPError, match="2 per-client instances already run"):
                    await c.call_tool("increment", {})

            # Closing a session (HTTP DELETE) stops its instance; the other goes on counting.
            await runner_a.aclose()
            await until(lambda: not alive(pid_a), what="the closed session's instance stopped")
            assert alive(pid_b)
            assert (await increment(b))[:2] == (4, pid_b)

            # Room again under the cap: a new session starts afresh, on a new instance.
            async with http_client(up.url) as (c, _):
                count, pid_c, _ = await increment(c)
                assert count == 1 and pid_c not in (pid_a, pid_b)
            await until(lambda: not alive(pid_c), what="the third session's instance stopped")
        finally:
            await runner_a.aclose()
            await runner_b.aclose()
        await until(lambda: not alive(pid_b), what="the last instance stopped")
    sessions_dir = home / ".state" / "sessions"
    assert not list((sessions_dir / "processes").glob("*.json"))
    assert not list((sessions_dir / "logs").glob("counter-s-*.log"))


async def test_kill_9_of_up_leaves_no_per_session_process(tmp_path: Path) -> None:
    home = tmp_path / "fleet"
    write_fleet(home, docker_runtime=False)
    up = await start_up(home)
    try:
        async with http_client(up.url) as (a, _), http_client(up.url) as (b, _):
            await until_tools(a, {"increment"})
            (_, pid_a, _), (_, pid_b, _) = await increment(a), await increment(b)
            up.proc.send_signal(signal.SIGKILL)
            await up.proc.wait()
            await until(lambda: not alive(pid_a) and not alive(pid_b), what="died with up")
    finally:
        await stop_up(up)
    async with running_up(home) as again:
        await until(
            lambda: not list((home / ".state" / "sessions" / "processes").glob("*.json")),
            what="pid files of the killed up's instances swept",
        )
        async with http_client(again.url) as (c, _):
            assert "increment" in await tool_names(c)  # from the list cache: nothing started
            assert (await increment(c))[0] == 1


async def test_a_remote_per_client_server_gets_an_http_session_per_client(tmp_path: Path) -> None:
    """A ``type: remote`` per-client server: each client session gets an MCP session of its
    own at the server (here ``mcp-fleet bridge --per-session``, one process per session)."""
    port = free_port()
    bridge = await asyncio.create_subprocess_exec(
        PY, "-c", LAUNCH, "bridge", "--host", "127.0.0.1", "--port", str(port), "--per-session",
        "--", PY, str(COUNTER), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, cwd=str(ROOT),
    )  # fmt: skip
    home = tmp_path / "fleet"
    (home / "catalogs").mkdir(parents=True)
    (home / "catalogs" / "test.yaml").write_text(
        'version: "2"\nregistry:\n  counter:\n    type: remote\n    sessions: per-client\n'
        f"    remote: {{url: 'http://127.0.0.1:{port}/mcp'}}\n"
    )
    (home / "registry.yaml").write_text("registry:\n  counter: {}\n")
    try:
        async with httpx.AsyncClient() as http:

            async def ready() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
                return False

            await until(ready, what="the bridge ready", every=0.1)
        async with (
            running_up(home) as up,
            http_client(up.url) as (a, _),
            http_client(up.url) as (b, _),
        ):
            await until_tools(a, {"increment"})
            await counts_apart(a, b)
    finally:
        bridge.terminate()
        await asyncio.wait_for(bridge.wait(), 30)


# -- Docker ----------------------------------------------------------------------------


def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # no daemon here: the docker tests cannot run
        pytest.skip(f"no Docker daemon answers: {exc}")
    try:
        client.images.get(SERVERS_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{SERVERS_IMAGE} is missing: run tests/testbed.sh")
    return client


@pytest.mark.docker
async def test_each_session_gets_its_own_container_and_none_outlives_up(tmp_path: Path) -> None:
    daemon = docker_client()
    home = tmp_path / "fleet"
    write_fleet(home, docker_runtime=True)
    label = f"{LABEL_FLEET}={sessions_fleet(fleet_name(home))}"

    def containers() -> list[Any]:
        # sparse: one listing call, no inspect per container (a container removed between
        # the listing and its inspect would raise NotFound while the router stops it).
        return list(daemon.containers.list(all=True, sparse=True, filters={"label": label}))

    up = await start_up(home, "--runtime", "docker")
    try:
        runner_a, runner_b = client(up.url), client(up.url)
        try:
            a, b = await runner_a.session(), await runner_b.session()
            await until_tools(a, {"increment"})
            ids_a, ids_b = await counts_apart(a, b)
            host_a = next(iter(ids_a)).split("@")[1]
            host_b = next(iter(ids_b)).split("@")[1]
            running = {c.id[:12] for c in containers()}
            assert {host_a, host_b} <= running, (host_a, host_b, running)

            await runner_a.aclose()  # a's session ends: its container goes
            await until(
                lambda: host_a not in {c.id[:12] for c in containers()},
                what="the closed session's container removed",
            )
            assert host_b in {c.id[:12] for c in containers()}
            count, _, host = await increment(b)
            assert (count, host) == (4, host_b)

            up.proc.send_signal(signal.SIGKILL)  # b's container outlives the killed up...
            await up.proc.wait()
            assert host_b in {c.id[:12] for c in containers()}
        finally:
            await runner_a.aclose()
            await runner_b.aclose()
            await stop_up(up)
        async with running_up(home, "--runtime", "docker"):  # ...until up starts again
            await until(lambda: not containers(), what="stale session containers swept")
    finally:
        for container in containers():
            with contextlib.suppress(Exception):
                container.remove(force=True)
