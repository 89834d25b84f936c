"""The Docker runtime against the real daemon and the test-bed images.

One mcp-server-time container is started for the module (its start is the
slow part) and exercised the ways the controller and the router use it:
probe, raw JSON-RPC over an attach, the official ``ClientSession`` over the
same attach, detach and re-attach. Other tests start the fast test servers.
Every container carries a per-run fleet label and is removed at the end,
whatever happened; containers of other fleets and unlabelled ones are
created to prove the runtime never touches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import docker
import docker.errors
import orjson
import pytest
import pytest_asyncio
from mcp import ClientSession, types
from mcp.shared.message import SessionMessage
from mcp_fleet import conventions
from mcp_fleet.docker_attach import open_attach_stream
from mcp_fleet.endpoints import DockerAttachEndpoint
from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.model import CatalogEntry, ServerSpec, frozen_map
from mcp_fleet.probe import ProbeError
from mcp_fleet.runtimes.base import Instance, Runtime, RuntimeEvent
from mcp_fleet.runtimes.docker import DaemonUnreachable, DockerRuntime, ImageUnavailable
from mcp_fleet.status import REASON_IMAGE_UNAVAILABLE
from mcp_fleet.transport import MessageStream, StreamClosed
from testbed_images import PYBASE_IMAGE, SERVERS_IMAGE, TIME_IMAGE, server_in_image

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "s3cr3t-value-that-must-not-leak"
PROBE_TIMEOUT = 20.0


def make_spec(name: str, image: str, *, command: tuple[str, ...] = (), **entry: Any) -> ServerSpec:
    return ServerSpec(
        name=name,
        enabled=True,
        entry=CatalogEntry(
            name=name, source=Path("catalog.yaml"), image=image, command=command, **entry
        ),
        env=frozen_map({"TZ": "UTC"}),
        secret_env=frozen_map({"TIME_API_TOKEN": SECRET}),
    )


def remove_fleet(client: docker.DockerClient, fleet: str) -> None:
    for c in client.containers.list(
        all=True, filters={"label": f"{conventions.LABEL_FLEET}={fleet}"}
    ):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            c.remove(force=True)


@pytest.fixture(scope="module")
def fleet(docker_client: docker.DockerClient, testbed_images: tuple[str, ...]) -> Iterator[str]:
    """A fleet name of this run; every container carrying it is removed at the end."""
    name = f"itest-{uuid.uuid4().hex[:8]}"
    yield name
    remove_fleet(docker_client, name)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runtime(fleet: str) -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime(fleet=fleet)
    yield rt
    await rt.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def time_instance(runtime: DockerRuntime) -> Instance:
    inst = await runtime.start(make_spec("time", TIME_IMAGE))
    await runtime.probe(inst, timeout=PROBE_TIMEOUT)
    return inst


async def rpc(
    stream: MessageStream, msg_id: int, method: str, params: dict[str, Any] | None = None
) -> Any:
    request: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    if params is not None:
        request["params"] = params
    await stream.send(orjson.dumps(request))
    async with asyncio.timeout(PROBE_TIMEOUT):
        while True:
            answer = orjson.loads(await stream.receive())
            if answer.get("id") == msg_id:
                assert "error" not in answer, answer
                return answer["result"]


async def handshake(stream: MessageStream) -> dict[str, Any]:
    result = await rpc(
        stream,
        1,
        "initialize",
        {
            "protocolVersion": conventions.MCP_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "itest", "version": "0"},
        },
    )
    await stream.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    return dict(result)


async def utc_now_via(stream: MessageStream, msg_id: int) -> dict[str, Any]:
    result = await rpc(
        stream, msg_id, "tools/call", {"name": "get_current_time", "arguments": {"timezone": "UTC"}}
    )
    assert result.get("isError") is not True, result
    return dict(json.loads(result["content"][0]["text"]))


# -- the protocol over attach -------------------------------------------------


async def test_runtime_satisfies_the_protocol(runtime: DockerRuntime) -> None:
    assert isinstance(runtime, Runtime)


async def test_attach_speaks_mcp_with_real_results(
    runtime: DockerRuntime, time_instance: Instance
) -> None:
    stream = await runtime.attach(time_instance.instance_id)
    try:
        init = await handshake(stream)
        assert init["serverInfo"]["name"] == "mcp-time"
        tools = await rpc(stream, 2, "tools/list")
        assert {t["name"] for t in tools["tools"]} >= {"get_current_time", "convert_time"}
        now = await utc_now_via(stream, 3)
        assert now["timezone"] == "UTC" and now["datetime"].endswith("+00:00")
        converted = await rpc(
            stream,
            4,
            "tools/call",
            {
                "name": "convert_time",
                "arguments": {
                    "source_timezone": "UTC",
                    "time": "12:00",
                    "target_timezone": "Asia/Tokyo",
                },
            },
        )
        assert "21:00" in converted["content"][0]["text"]
    finally:
        await stream.aclose()


async def test_detach_and_reattach_keep_the_same_server_running(
    runtime: DockerRuntime, time_instance: Instance, docker_client: docker.DockerClient, fleet: str
) -> None:
    for round_ in range(2):
        stream = await runtime.attach(time_instance.instance_id)
        await handshake(stream)
        assert (await utc_now_via(stream, 10 + round_))["timezone"] == "UTC"
        await stream.aclose()
        await runtime.probe(time_instance, timeout=PROBE_TIMEOUT)
    # A router in another process: the endpoint names the container, it attaches itself.
    elsewhere = DockerRuntime(fleet=fleet, in_process_endpoints=False)
    endpoint = await elsewhere.endpoint(time_instance)
    await elsewhere.aclose()
    assert isinstance(endpoint, DockerAttachEndpoint)
    stream = await open_attach_stream(docker_client.api, endpoint.container_id)
    await handshake(stream)
    assert (await utc_now_via(stream, 20))["timezone"] == "UTC"
    await stream.aclose()
    info = docker_client.api.inspect_container(time_instance.instance_id)
    assert info["State"]["Running"] is True
    assert info["RestartCount"] == 0
    observed = (await runtime.observe()).by_server()["time"]
    assert [(i.instance_id, i.running, i.started_at) for i in observed] == [
        (time_instance.instance_id, True, time_instance.started_at)
    ]


@contextlib.asynccontextmanager
async def client_session(stream: MessageStream) -> AsyncIterator[ClientSession]:
    """The official client over a ``MessageStream``: two pumps between it and memory streams."""
    read_w, read_r = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_w, write_r = anyio.create_memory_object_stream[SessionMessage](0)

    async def pump_in() -> None:
        async with read_w:
            with contextlib.suppress(StreamClosed):
                while True:
                    raw = await stream.receive()
                    message = types.jsonrpc_message_adapter.validate_json(raw, by_name=False)
                    await read_w.send(SessionMessage(message))

    async def pump_out() -> None:
        async with write_r:
            async for item in write_r:
                data = item.message.model_dump_json(by_alias=True, exclude_unset=True)
                await stream.send(data.encode())

    async with anyio.create_task_group() as tg:
        tg.start_soon(pump_in)
        tg.start_soon(pump_out)
        async with ClientSession(read_r, write_w) as session:
            yield session
        tg.cancel_scope.cancel()


async def test_official_client_session_over_the_attach(
    runtime: DockerRuntime, time_instance: Instance
) -> None:
    endpoint = await runtime.endpoint(time_instance)
    stream = await endpoint.open()  # type: ignore[union-attr]
    try:
        async with client_session(stream) as session:
            init = await session.initialize()
            assert init.server_info.name == "mcp-time"
            tools = await session.list_tools()
            assert "get_current_time" in {t.name for t in tools.tools}
            result = await session.call_tool("get_current_time", {"timezone": "Europe/Paris"})
            assert not result.is_error
            assert "Europe/Paris" in result.content[0].text  # type: ignore[union-attr]
    finally:
        await stream.aclose()
    await runtime.probe(time_instance, timeout=PROBE_TIMEOUT)  # still there after the session


# -- what the container looks like ---------------------------------------------


async def test_container_is_hardened_labelled_and_keeps_secrets_in_env_only(
    runtime: DockerRuntime, time_instance: Instance, docker_client: docker.DockerClient, fleet: str
) -> None:
    info = docker_client.api.inspect_container(time_instance.instance_id)
    host, config = info["HostConfig"], info["Config"]
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True
    assert host["Memory"] == 2 * 1024**3
    assert host["NanoCpus"] == 1_000_000_000
    assert host["NetworkMode"] == "none"
    assert host["PidsLimit"] > 0
    assert host["Init"] is True
    assert "/tmp" in host["Tmpfs"]
    assert config["OpenStdin"] is True
    assert config["StdinOnce"] is False  # detaching must not close the server's stdin
    assert config["Tty"] is False
    assert config["Labels"][conventions.LABEL_FLEET] == fleet
    assert config["Labels"][conventions.LABEL_SERVER] == "time"
    assert config["Labels"][conventions.LABEL_RUNTIME] == "docker"
    assert config["Labels"][conventions.LABEL_CONFIG_HASH] == time_instance.config_hash
    assert info["Name"].lstrip("/").startswith(f"mcpf-{fleet}-time-")
    assert f"TIME_API_TOKEN={SECRET}" in config["Env"]
    public = json.dumps(
        [
            config["Labels"],
            config["Cmd"],
            config["Entrypoint"],
            info["Args"],
            info["Path"],
            info["Name"],
            host,
        ]
    )
    assert SECRET not in public
    assert SECRET not in repr(time_instance)
    assert all(SECRET not in line for line in await runtime.logs(time_instance))


# -- ownership -----------------------------------------------------------------


@pytest.fixture
def foreign_containers(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """An unlabelled container and one of another fleet: both must stay untouched."""
    api = docker_client.api
    other_fleet = f"other-{uuid.uuid4().hex[:8]}"
    ids = [
        api.create_container(PYBASE_IMAGE, command=["true"])["Id"],
        api.create_container(
            PYBASE_IMAGE,
            command=["true"],
            labels={conventions.LABEL_FLEET: other_fleet, conventions.LABEL_SERVER: "time"},
        )["Id"],
    ]
    yield ids
    for cid in ids:
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_container(cid, force=True)


async def test_observe_sees_only_its_own_fleet(
    runtime: DockerRuntime,
    time_instance: Instance,
    foreign_containers: list[str],
    docker_client: docker.DockerClient,
) -> None:
    observed = await runtime.observe()
    ids = {i.instance_id for i in observed.instances}
    assert time_instance.instance_id in ids
    assert not ids & set(foreign_containers)
    assert {i.fleet for i in observed.instances} == {runtime.fleet}
    other = docker_client.api.inspect_container(foreign_containers[1])
    forged = Instance(
        server="time",
        instance_id=foreign_containers[1],
        runtime=time_instance.runtime,
        fleet=other["Config"]["Labels"][conventions.LABEL_FLEET],
        config_hash="",
        running=False,
        started_at=0.0,
    )
    with pytest.raises(RuntimeFailure, match="belongs to fleet"):
        await runtime.stop(forged)
    for cid in foreign_containers:
        docker_client.api.inspect_container(cid)  # still there


# -- failures ------------------------------------------------------------------


async def test_missing_image_fails_with_a_reason_and_creates_nothing(
    runtime: DockerRuntime, fleet: str
) -> None:
    image = f"mcp-fleet-test/does-not-exist-{uuid.uuid4().hex[:6]}:never"
    with pytest.raises(ImageUnavailable) as err:
        await runtime.start(make_spec("ghost", image))
    assert err.value.reason == REASON_IMAGE_UNAVAILABLE
    assert image in str(err.value) and "could not be pulled" in str(err.value)
    no_pull = DockerRuntime(fleet=fleet, pull_missing=False)
    try:
        with pytest.raises(ImageUnavailable, match="pulling is disabled"):
            await no_pull.start(make_spec("ghost", image))
    finally:
        await no_pull.aclose()
    assert "ghost" not in (await runtime.observe()).by_server()


async def next_event(
    events: AsyncIterator[RuntimeEvent], server: str, kind: str, within: float = 20.0
) -> RuntimeEvent:
    async with asyncio.timeout(within):
        async for event in events:
            if event.server == server and event.kind == kind:
                return event
    raise AssertionError("events ended")


async def test_crashing_server_exits_with_its_code_and_stderr(runtime: DockerRuntime) -> None:
    events = runtime.events()
    inst = await runtime.start(
        make_spec("crash", SERVERS_IMAGE, command=(server_in_image("crash_server.py"),))
    )
    died = await next_event(events, "crash", "die")
    assert "exited with code 3" in died.detail
    await events.aclose()  # type: ignore[attr-defined]
    (seen,) = (await runtime.observe()).by_server()["crash"]
    assert (seen.running, seen.exit_code) == (False, 3)
    assert any("refusing to start" in line for line in await runtime.logs(seen, tail=5))
    with pytest.raises(ProbeError, match="not running"):
        await runtime.probe(seen, timeout=5)
    assert inst.instance_id == seen.instance_id
    # Starting the same configuration again replaces the exited container (same name).
    again = await runtime.start(
        make_spec("crash", SERVERS_IMAGE, command=(server_in_image("crash_server.py"),))
    )
    assert again.instance_id != inst.instance_id
    (now,) = (await runtime.observe()).by_server()["crash"]
    assert now.instance_id == again.instance_id
    await runtime.stop(now)
    assert "crash" not in (await runtime.observe()).by_server()


async def test_events_report_a_killed_server_and_stop_is_idempotent(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    events = runtime.events()
    spec = make_spec("echo", SERVERS_IMAGE)
    inst = await runtime.start(spec)
    assert (await next_event(events, "echo", "start")).server == "echo"
    again = await runtime.start(spec)  # the same configuration is never started twice
    assert again.instance_id == inst.instance_id
    docker_client.api.kill(inst.instance_id)
    died = await next_event(events, "echo", "die")
    assert "exited with code 137" in died.detail
    await runtime.stop(inst)
    await next_event(events, "echo", "destroy")
    await runtime.stop(inst)  # already gone: fine
    await events.aclose()  # type: ignore[attr-defined]
    assert "echo" not in (await runtime.observe()).by_server()


# -- the daemon going away ----------------------------------------------------


class SocketProxy:
    """A unix-socket relay in front of dockerd that can be 'restarted' (drops every link).

    ``events_streaming`` is set once dockerd has begun answering an ``/events`` request
    relayed here: a client's events stream runs through the proxy.
    """

    def __init__(self, path: Path, target: str) -> None:
        self.path, self.target = path, target
        self.server: asyncio.AbstractServer | None = None
        self.links: set[asyncio.StreamWriter] = set()
        self.events_streaming = asyncio.Event()

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._link, path=str(self.path))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.links):
            w.close()
        await self.server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_unix_connection(self.target)
        self.links |= {writer, up_w}
        asked_events = False

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            nonlocal asked_events
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                    if up:
                        asked_events = asked_events or b"/events?" in data
                    elif asked_events:
                        self.events_streaming.set()
            dst.close()

        await asyncio.gather(copy(reader, up_w, True), copy(up_r, writer, False))
        self.links -= {writer, up_w}


async def test_daemon_restart_is_reported_and_unreachable_daemon_fails_clearly(
    tmp_path: Path, fleet: str
) -> None:
    proxy = SocketProxy(tmp_path / "docker.sock", "/var/run/docker.sock")
    await proxy.start()
    rt = DockerRuntime(fleet=fleet, base_url=f"unix://{proxy.path}")
    events = rt.events()
    try:
        await rt.observe()
        pending = asyncio.ensure_future(events.__anext__())
        await asyncio.wait_for(proxy.events_streaming.wait(), 15)  # dockerd answers /events
        await proxy.stop()
        lost = await asyncio.wait_for(pending, 10)
        assert (lost.server, lost.kind) == (None, "daemon") and lost.detail.startswith("lost")
        with pytest.raises(DaemonUnreachable, match="cannot reach"):
            await rt.observe()
        await proxy.start()
        back = await asyncio.wait_for(events.__anext__(), 15)
        assert (back.kind, back.detail) == ("daemon", "reconnected")
        await rt.observe()
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        await rt.aclose()
        with contextlib.suppress(Exception):
            await proxy.stop()
