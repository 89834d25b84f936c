"""Everything MCP carries passes through the router, both ways, over stdio and streamable HTTP.

The official ``mcp`` client talks to the router; behind it run the feature
server (tests/servers/feature_server.py), the echo server and
mcp-server-time as real processes. Over stdio the router is a subprocess
(``python -m mcp_fleet.router --server ...``), as a client's config would
launch it; over HTTP it runs in the test's loop on a free port. The router's
page size is 50 so the aggregated lists span several pages too.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
import pytest_asyncio
from mcp import ClientSession
from mcp.shared.exceptions import MCPError
from mcp_fleet.router.http_service import serve_http
from mcp_fleet.router.router import Router
from mcp_fleet.sources.adhoc import AdhocFleet
from router_support import (
    ECHO,
    FEATURE,
    TIME,
    Recorder,
    http_client,
    stdio_client_to_router,
    text_of,
    until_tools,
    wait_for,
)
from support import until

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

SERVERS = {"feature": FEATURE, "echo": ECHO, "time": TIME}
PAGE = 50
READY = {"echo", "get_current_time", "progress"}


class Observed(Recorder):
    """What the client saw, and whether a ``wait`` call of it has reached the router."""

    def __init__(self) -> None:
        super().__init__()
        self.wait_reached_router: Callable[[], bool] = lambda: False


def calls_read(stdin_copy: Path, tool: str) -> int:
    """How many ``tools/call`` of ``tool`` the router has read (its stdin, as copied)."""
    count = 0
    for line in stdin_copy.read_text().splitlines() if stdin_copy.exists() else ():
        try:
            msg = json.loads(line)
        except ValueError:
            continue  # the line being written
        params = msg.get("params") or {}
        count += msg.get("method") == "tools/call" and params.get("name") == tool
    return count


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["stdio", "http"])
async def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[ClientSession, Recorder]]:
    observed = Observed()
    if request.param == "stdio":
        stdin_copy = tmp_path_factory.mktemp("router") / "stdin.jsonl"
        observed.wait_reached_router = lambda: calls_read(stdin_copy, "wait") > 0
        async with stdio_client_to_router(
            SERVERS, "--page-size", str(PAGE), recorder=observed, stdin_copy=stdin_copy
        ) as pair:
            await until_tools(pair[0], READY)
            yield pair
        return
    async with AdhocFleet() as fleet:
        for name, argv in SERVERS.items():
            await fleet.add(name, argv)
        router = Router(fleet.table, page_size=PAGE)

        def forwarded() -> bool:  # the router in this loop has the call in flight
            backend = router.backend("feature")
            return backend is not None and backend.pending_count > 0

        observed.wait_reached_router = forwarded
        urls: asyncio.Queue[str] = asyncio.Queue()
        follower = asyncio.create_task(router.run())
        server = asyncio.create_task(serve_http(router, port=0, ready=urls.put_nowait))
        try:
            url = await asyncio.wait_for(urls.get(), 10)
            async with http_client(url, observed) as pair:
                await until_tools(pair[0], READY)
                yield pair
        finally:
            server.cancel()
            follower.cancel()
            await asyncio.gather(server, follower, return_exceptions=True)


async def all_pages(fetch: Any, key: str) -> tuple[list[Any], int]:
    items: list[Any] = []
    cursor = None
    pages = 0
    while True:
        result = await fetch(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        pages += 1
        items += getattr(result, key)
        cursor = result.next_cursor
        if not cursor:
            return items, pages


async def test_tools_of_every_backend_are_aggregated_over_several_pages(client: Any) -> None:
    session, _ = client
    tools, pages = await all_pages(session.list_tools, "tools")
    names = {t.name for t in tools}
    assert {
        "echo",
        "add",
        "sleep",
        "get_current_time",
        "convert_time",
        "progress",
        "sample",
    } <= names
    assert {f"bulk_{i:03d}" for i in range(120)} <= names
    assert len(names) == len(tools)
    assert pages >= 3


async def test_calls_reach_each_backend(client: Any) -> None:
    session, _ = client
    assert text_of(await session.call_tool("echo", {"text": "hi"})) == "hi"
    now = await session.call_tool("get_current_time", {"timezone": "UTC"})
    assert now.structured_content is not None and now.structured_content["timezone"] == "UTC"
    assert text_of(await session.call_tool("bulk_077", {})) == "bulk_077"
    await session.send_ping()


async def test_unknown_tool_is_an_error(client: Any) -> None:
    session, _ = client
    with pytest.raises(MCPError, match="Unknown tool"):
        await session.call_tool("no_such_tool", {})


async def test_progress_notifications_reach_the_caller(client: Any) -> None:
    session, _ = client
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    result = await session.call_tool("progress", {"steps": 4}, progress_callback=on_progress)
    assert text_of(result) == "done 4"
    assert [p for p, _, _ in seen] == [1, 2, 3, 4]
    assert seen[-1][1] == 4 and seen[-1][2] == "step 4"


async def stats(session: ClientSession) -> dict[str, Any]:
    result = await session.call_tool("stats", {})
    assert result.structured_content is not None
    return result.structured_content


async def test_cancellation_reaches_the_backend(client: Any) -> None:
    session, recorder = client
    before = (await stats(session))["cancelled"]
    call = asyncio.create_task(session.call_tool("wait", {"seconds": 30}))
    await until(recorder.wait_reached_router, within=15, what="the wait call reached the router")
    # The router forwards in the order it reads: ``stats`` reaches the feature server after
    # ``wait``, whose handler therefore runs (sleeping) by the time ``stats`` is answered.
    await stats(session)
    assert not call.done()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    async def counted() -> bool:
        return bool((await stats(session))["cancelled"] > before)

    await until(counted, within=15, what="the feature server counted the cancel")
    assert (await stats(session))["cancelled"] == before + 1


async def test_log_level_is_forwarded_and_applied_per_client(client: Any) -> None:
    session, recorder = client
    await session.set_logging_level("warning")
    assert (await stats(session))["level"] == "warning"
    recorder.logs.clear()
    await session.call_tool("log", {"level": "info", "message": "quiet"})
    await session.call_tool("log", {"level": "error", "message": "loud"})
    await wait_for(lambda: any(entry.data == "loud" for entry in recorder.logs))
    assert all(entry.data != "quiet" for entry in recorder.logs)
    assert recorder.logs[-1].logger == "feature"


async def test_sampling_request_goes_to_the_calling_client(client: Any) -> None:
    session, recorder = client
    result = await session.call_tool("sample", {"prompt": "what is six times seven"})
    assert text_of(result) == "sampled: 42"
    assert recorder.sampled[-1].messages[0].content.text == "what is six times seven"  # type: ignore[union-attr]


async def test_elicitation_round_trip(client: Any) -> None:
    session, recorder = client
    assert text_of(await session.call_tool("elicit", {"question": "proceed?"})) == "accept: yes"
    assert recorder.elicited


async def test_roots_are_answered_by_the_client(client: Any) -> None:
    session, _ = client
    assert text_of(await session.call_tool("roots", {})) == "file:///work/project"


async def test_resources_pages_templates_and_binary(client: Any) -> None:
    session, _ = client
    resources, pages = await all_pages(session.list_resources, "resources")
    uris = {str(r.uri) for r in resources}
    assert {f"feature://item/{i}" for i in range(120)} | {"feature://blob"} <= uris
    assert pages >= 3
    templates = await session.list_resource_templates()
    assert [t.uri_template for t in templates.resource_templates] == ["feature://item/{id}"]
    listed = await session.read_resource("feature://item/7")
    assert listed.contents[0].text == "item 7"  # type: ignore[union-attr]
    by_template = await session.read_resource("feature://item/999")
    assert by_template.contents[0].text == "item 999"  # type: ignore[union-attr]
    blob = await session.read_resource("feature://blob")
    assert base64.b64decode(blob.contents[0].blob) == bytes(range(256)) * 4  # type: ignore[union-attr]
    with pytest.raises(MCPError):
        await session.read_resource("nowhere://at/all")


async def test_subscriptions_and_update_notifications(client: Any) -> None:
    session, recorder = client
    uri = "feature://item/3"
    await session.subscribe_resource(uri)
    assert uri in (await stats(session))["subscriptions"]
    recorder.messages.clear()
    await session.call_tool("touch", {"uri": uri})

    def updated() -> bool:
        return any(
            isinstance(m, types.ResourceUpdatedNotification) and str(m.params.uri) == uri
            for m in recorder.messages
        )

    await wait_for(updated)
    await session.unsubscribe_resource(uri)
    assert uri not in (await stats(session))["subscriptions"]


async def test_prompts_with_arguments_and_completion(client: Any) -> None:
    session, _ = client
    prompts = await session.list_prompts()
    greet = next(p for p in prompts.prompts if p.name == "greet")
    assert [a.name for a in greet.arguments or []] == ["name", "style"]
    got = await session.get_prompt("greet", {"name": "Ada", "style": "formal"})
    assert got.messages[0].content.text == "Good day, Ada."  # type: ignore[union-attr]
    done = await session.complete(
        types.PromptReference(type="ref/prompt", name="greet"), {"name": "style", "value": "f"}
    )
    assert done.completion.values == ["formal"]
    ids = await session.complete(
        types.ResourceTemplateReference(type="ref/resource", uri="feature://item/{id}"),
        {"name": "id", "value": "11"},
    )
    assert ids.completion.values == [
        "11",
        "110",
        "111",
        "112",
        "113",
        "114",
        "115",
        "116",
        "117",
        "118",
        "119",
    ]


async def test_large_payload_of_ten_megabytes(client: Any) -> None:
    session, _ = client
    result = await session.call_tool("big", {"megabytes": 10})
    assert len(text_of(result)) == 10 * 1024 * 1024


async def test_binary_content(client: Any) -> None:
    session, _ = client
    result = await session.call_tool("image", {})
    image, embedded = result.content
    assert isinstance(image, types.ImageContent) and image.mime_type == "image/png"
    assert isinstance(embedded, types.EmbeddedResource)
    assert base64.b64decode(embedded.resource.blob) == bytes(range(256)) * 4  # type: ignore[union-attr]


async def test_structured_output_schema_annotations_and_meta(client: Any) -> None:
    session, _ = client
    tools, _ = await all_pages(session.list_tools, "tools")
    tool = next(t for t in tools if t.name == "structured")
    assert tool.output_schema is not None and set(tool.output_schema["properties"]) == {
        "sum",
        "product",
    }
    assert tool.annotations is not None and tool.annotations.title == "Arithmetic"
    assert tool.annotations.read_only_hint is True
    assert tool.meta == {"fleet.test/tag": "structured"}
    result = await session.call_tool("structured", {"a": 2, "b": 5})
    assert result.structured_content == {"sum": 7.0, "product": 10.0}
    assert result.meta == {"fleet.test/echo": "meta"}


async def test_backend_list_change_reaches_the_client(client: Any) -> None:
    session, recorder = client
    recorder.changed.clear()
    created = text_of(await session.call_tool("grow", {}))
    await asyncio.wait_for(recorder.changed.wait(), 10)
    tools, _ = await all_pages(session.list_tools, "tools")
    assert created in {t.name for t in tools}
    assert text_of(await session.call_tool(created, {})) == created
