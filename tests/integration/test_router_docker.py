"""The router in front of containers: mcp-server-time and the echo server attached through Docker.

The Docker runtime starts the test-bed images; the router reaches them the
way ``mcp-fleet router`` does with a controller elsewhere
(``DockerAttachEndpoint``: it attaches to the container's stdio itself) and
the way ``up --runtime docker`` does (``StreamEndpoint``: the runtime
attaches in this process). The official client calls through the router.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import pytest_asyncio
from mcp_fleet import conventions
from mcp_fleet.endpoints import EndpointEntry, EndpointTable
from mcp_fleet.model import CatalogEntry, ServerSpec
from mcp_fleet.router.http_service import serve_http
from mcp_fleet.router.router import Router
from mcp_fleet.runtimes.docker import DockerRuntime
from router_support import http_client, text_of, until_tools
from testbed_images import SERVERS_IMAGE, TIME_IMAGE

pytestmark = [
    pytest.mark.docker,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(120),
]


def spec(name: str, image: str) -> ServerSpec:
    entry = CatalogEntry(name=name, source=Path("catalog.yaml"), image=image)
    return ServerSpec(name=name, enabled=True, entry=entry)


@pytest.fixture(scope="module")
def fleet(docker_client: docker.DockerClient, testbed_images: tuple[str, ...]) -> Iterator[str]:
    name = f"rtest-{uuid.uuid4().hex[:8]}"
    yield name
    for c in docker_client.containers.list(
        all=True, filters={"label": f"{conventions.LABEL_FLEET}={name}"}
    ):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            c.remove(force=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def url(fleet: str) -> AsyncIterator[str]:
    attach_here = DockerRuntime(fleet=fleet)  # StreamEndpoint: attached in this process
    attach_by_router = DockerRuntime(fleet=fleet, in_process_endpoints=False)
    table = EndpointTable()
    time_spec, echo_spec = spec("time", TIME_IMAGE), spec("echo", SERVERS_IMAGE)
    time_inst, echo_inst = await asyncio.gather(
        attach_by_router.start(time_spec), attach_here.start(echo_spec)
    )
    await table.publish(
        {
            "time": EndpointEntry(time_spec, await attach_by_router.endpoint(time_inst)),
            "echo": EndpointEntry(echo_spec, await attach_here.endpoint(echo_inst)),
        }
    )
    router = Router(table)
    urls: asyncio.Queue[str] = asyncio.Queue()
    tasks = [
        asyncio.create_task(router.run()),
        asyncio.create_task(serve_http(router, port=0, ready=urls.put_nowait)),
    ]
    try:
        yield await asyncio.wait_for(urls.get(), 10)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(attach_by_router.stop(time_inst), attach_here.stop(echo_inst))
        await attach_here.aclose()
        await attach_by_router.aclose()


async def test_calls_reach_containers_through_the_router(url: str) -> None:
    async with http_client(url) as (session, _):
        await until_tools(session, {"get_current_time", "echo"}, timeout=60)
        now = await session.call_tool("get_current_time", {"timezone": "UTC"})
        assert (now.structured_content or {})["timezone"] == "UTC"
        results = await asyncio.gather(
            *(session.call_tool("echo", {"text": f"c{i}"}) for i in range(20))
        )
        assert [text_of(r) for r in results] == [f"c{i}" for i in range(20)]
