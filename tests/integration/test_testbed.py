"""The test bed works: its images run as hardened stdio MCP servers.

Each image is started the way the fleet starts servers (``docker run -i
--rm`` with no network, a read-only root, no capabilities, no privilege
gain) and driven with the official ``mcp`` client over the container's
stdio: initialize, tools/list, one tools/call with a checked result. If these
fail, every Docker test after them would fail for reasons unrelated to the
code under test, so this is the first place to look.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import docker
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import TextContent
from testbed_images import (
    INPUT_HASH_LABEL,
    SERVERS_IMAGE,
    TIME_IMAGE,
    docker_run_args,
    hardened_container_options,
    server_in_image,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("testbed_images")]

SESSION_TIMEOUT_SECONDS = 60


@asynccontextmanager
async def mcp_session(image: str, *args: str) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session with IMAGE run as a hardened stdio server."""
    params = StdioServerParameters(command="docker", args=docker_run_args(image, *args))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def only_text(result: Any) -> str:
    assert not result.is_error, result
    [block] = result.content
    assert isinstance(block, TextContent)
    return block.text


async def test_time_image_serves_mcp_server_time() -> None:
    with anyio.fail_after(SESSION_TIMEOUT_SECONDS):
        async with mcp_session(TIME_IMAGE) as session:
            tools = await session.list_tools()
            assert {tool.name for tool in tools.tools} == {"get_current_time", "convert_time"}

            result = await session.call_tool("get_current_time", {"timezone": "Asia/Tokyo"})

    assert not result.is_error, result
    current = result.structured_content
    assert current is not None
    assert current["timezone"] == "Asia/Tokyo"
    # The server's clock answer is real: Tokyo's offset, and now.
    reported = datetime.fromisoformat(current["datetime"])
    assert reported.utcoffset() == timedelta(hours=9)
    assert abs(reported - datetime.now(UTC)) < timedelta(minutes=2)


async def test_servers_image_runs_the_echo_server_by_default() -> None:
    with anyio.fail_after(SESSION_TIMEOUT_SECONDS):
        async with mcp_session(SERVERS_IMAGE) as session:
            tools = await session.list_tools()
            assert {tool.name for tool in tools.tools} == {"echo", "add", "sleep"}

            echoed = await session.call_tool("echo", {"text": "héllo, fleet"})
            added = await session.call_tool("add", {"a": 2, "b": 40.5})

    assert only_text(echoed) == "héllo, fleet"
    assert float(only_text(added)) == 42.5


async def test_servers_image_runs_another_server_named_by_its_file() -> None:
    with anyio.fail_after(SESSION_TIMEOUT_SECONDS):
        async with mcp_session(SERVERS_IMAGE, server_in_image("echo_server.py")) as session:
            slept = await session.call_tool("sleep", {"seconds": 0.05})

    assert only_text(slept) == "slept 0.05"


def test_crash_server_exits_3_with_its_reason(docker_client: docker.DockerClient) -> None:
    container = docker_client.containers.run(
        SERVERS_IMAGE,
        [server_in_image("crash_server.py")],
        detach=True,
        **hardened_container_options(),
    )
    try:
        exit_status = container.wait(timeout=SESSION_TIMEOUT_SECONDS)
        stderr = container.logs(stdout=False, stderr=True).decode()
    finally:
        container.remove(force=True)

    assert exit_status["StatusCode"] == 3
    assert "refusing to start" in stderr


@pytest.mark.parametrize("image", [TIME_IMAGE, SERVERS_IMAGE])
def test_server_images_run_unprivileged_and_record_their_inputs(
    docker_client: docker.DockerClient, image: str
) -> None:
    config = docker_client.images.get(image).attrs["Config"]

    assert config["User"] == "65534:65534"
    assert len(config["Labels"][INPUT_HASH_LABEL]) == 64
