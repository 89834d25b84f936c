"""A test MCP server that exercises every feature the router must carry, both ways.

Run as a plain process (``python tests/servers/feature_server.py``); speaks
stdio. Built on the official SDK's lowlevel ``Server`` so it controls what
the high-level API hides: its own pagination (many tools and resources over
several pages), ``_meta`` on results, output schemas, annotations.

Tools:
- ``progress(steps)``: one progress notification per step, then done.
- ``wait(seconds)``: sleeps; a cancelled wait is counted (``stats`` reports it).
- ``stats()``: cancellations seen, subscriptions held, log level set.
- ``log(level, message)``: sends a log message at ``level``.
- ``sample(prompt)``: asks the client to sample (sampling/createMessage).
- ``elicit(question)``: asks the client for input (elicitation/create).
- ``roots()``: asks the client for its roots (roots/list).
- ``big(megabytes)``: a text result of that size.
- ``image()``: an image and an embedded blob resource (binary content).
- ``structured(a, b)``: structured output matching its output schema.
- ``touch(uri)``: sends notifications/resources/updated for ``uri``.
- ``grow()``: adds a tool and sends notifications/tools/list_changed.
- ``whoami()``: this process's pid (tests use it to kill the server).
- ``bulk_000`` .. ``bulk_119``: filler tools, served 50 per page.

Resources ``feature://item/0..119`` (50 per page), ``feature://blob`` (binary),
the template ``feature://item/{id}``, prompt ``greet(name, style?)``, and
completion for the prompt's ``style`` and the template's ``id``.
"""

from __future__ import annotations

import base64
import os
import warnings
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.stdio import stdio_server

warnings.simplefilter("ignore")  # the 2026 deprecations of logging/sampling/roots

PAGE = 50
BULK_TOOLS = 120
ITEMS = 120
TEMPLATE = "feature://item/{id}"
# A 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
BLOB = bytes(range(256)) * 4

state: dict[str, Any] = {
    "cancelled": 0, "subscriptions": set(), "level": None, "grown": 0, "roots_changed": 0,
}  # fmt: skip


def _schema(**props: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in props.items()},
        "required": list(props),
    }


def _tools() -> list[types.Tool]:
    tools = [
        types.Tool(
            name="progress", description="Report progress.", input_schema=_schema(steps="integer")
        ),
        types.Tool(name="wait", description="Sleep.", input_schema=_schema(seconds="number")),
        types.Tool(name="stats", description="Counters.", input_schema=_schema()),
        types.Tool(
            name="log", description="Log.", input_schema=_schema(level="string", message="string")
        ),
        types.Tool(name="sample", description="Sampling.", input_schema=_schema(prompt="string")),
        types.Tool(
            name="elicit", description="Elicitation.", input_schema=_schema(question="string")
        ),
        types.Tool(name="roots", description="Roots.", input_schema=_schema()),
        types.Tool(
            name="big", description="Large result.", input_schema=_schema(megabytes="number")
        ),
        types.Tool(name="image", description="Binary content.", input_schema=_schema()),
        types.Tool(
            name="structured",
            description="Structured output.",
            input_schema=_schema(a="number", b="number"),
            output_schema=_schema(sum="number", product="number"),
            annotations=types.ToolAnnotations(
                title="Arithmetic", read_only_hint=True, idempotent_hint=True
            ),
            _meta={"fleet.test/tag": "structured"},
        ),
        types.Tool(
            name="touch", description="Resource updated.", input_schema=_schema(uri="string")
        ),
        types.Tool(name="grow", description="Add a tool.", input_schema=_schema()),
        types.Tool(name="whoami", description="My pid.", input_schema=_schema()),
    ]
    tools += [
        types.Tool(name=f"grown_{i}", description="Added at run time.", input_schema=_schema())
        for i in range(state["grown"])
    ]
    tools += [
        types.Tool(name=f"bulk_{i:03d}", description=f"Filler {i}.", input_schema=_schema())
        for i in range(BULK_TOOLS)
    ]
    return tools


def _page(
    items: list[Any], params: types.PaginatedRequestParams | None
) -> tuple[list[Any], str | None]:
    start = int(params.cursor) if params is not None and params.cursor else 0
    end = start + PAGE
    return items[start:end], (str(end) if end < len(items) else None)


def _text(text: str) -> list[types.ContentBlock]:
    return [types.TextContent(type="text", text=text)]


async def list_tools(
    ctx: Any, params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    page, cursor = _page(_tools(), params)
    return types.ListToolsResult(tools=page, next_cursor=cursor)


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    args = params.arguments or {}
    session = ctx.session
    name = params.name
    if name == "progress":
        steps = int(args.get("steps", 3))
        for i in range(steps):
            await session.report_progress(i + 1, steps, f"step {i + 1}")
        return types.CallToolResult(content=_text(f"done {steps}"))
    if name == "wait":
        try:
            await anyio.sleep(float(args.get("seconds", 1)))
        except anyio.get_cancelled_exc_class():
            state["cancelled"] += 1
            raise
        return types.CallToolResult(content=_text("waited"))
    if name == "stats":
        data = {
            "cancelled": state["cancelled"],
            "subscriptions": sorted(state["subscriptions"]),
            "level": state["level"],
            "roots_changed": state["roots_changed"],
        }
        return types.CallToolResult(content=_text(str(data)), structured_content=data)
    if name == "log":
        await session.send_log_message(args["level"], args["message"], logger="feature")
        return types.CallToolResult(content=_text("logged"))
    if name == "sample":
        result = await session.create_message(
            [
                types.SamplingMessage(
                    role="user", content=types.TextContent(type="text", text=args["prompt"])
                )
            ],
            max_tokens=50,
        )
        content = result.content
        text = content.text if isinstance(content, types.TextContent) else str(content)
        return types.CallToolResult(content=_text(f"sampled: {text}"))
    if name == "elicit":
        answer = await session.elicit_form(
            args["question"],
            {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
            },
        )
        return types.CallToolResult(
            content=_text(f"{answer.action}: {(answer.content or {}).get('answer')}")
        )
    if name == "roots":
        roots = await session.list_roots()
        return types.CallToolResult(content=_text(",".join(str(r.uri) for r in roots.roots)))
    if name == "big":
        size = int(float(args.get("megabytes", 1)) * 1024 * 1024)
        return types.CallToolResult(content=_text("x" * size))
    if name == "image":
        return types.CallToolResult(
            content=[
                types.ImageContent(
                    type="image", data=base64.b64encode(PNG).decode(), mime_type="image/png"
                ),
                types.EmbeddedResource(
                    type="resource",
                    resource=types.BlobResourceContents(
                        uri="feature://blob", mime_type="application/octet-stream",
                        blob=base64.b64encode(BLOB).decode(),
                    ),
                ),
            ]
        )  # fmt: skip
    if name == "structured":
        a, b = float(args["a"]), float(args["b"])
        data = {"sum": a + b, "product": a * b}
        return types.CallToolResult(
            content=_text(str(data)), structured_content=data, _meta={"fleet.test/echo": "meta"}
        )
    if name == "touch":
        await session.send_resource_updated(args["uri"])
        return types.CallToolResult(content=_text("touched"))
    if name == "grow":
        state["grown"] += 1
        await session.send_tool_list_changed()
        return types.CallToolResult(content=_text(f"grown_{state['grown'] - 1}"))
    if name == "whoami":
        return types.CallToolResult(content=_text(str(os.getpid())))
    if name.startswith(("bulk_", "grown_")):
        return types.CallToolResult(content=_text(name))
    return types.CallToolResult(content=_text(f"unknown tool {name}"), is_error=True)


def _items() -> list[types.Resource]:
    items = [
        types.Resource(uri=f"feature://item/{i}", name=f"item-{i}", mime_type="text/plain")
        for i in range(ITEMS)
    ]
    items.append(
        types.Resource(uri="feature://blob", name="blob", mime_type="application/octet-stream")
    )
    return items


async def list_resources(
    ctx: Any, params: types.PaginatedRequestParams | None
) -> types.ListResourcesResult:
    page, cursor = _page(_items(), params)
    return types.ListResourcesResult(resources=page, next_cursor=cursor)


async def list_templates(
    ctx: Any, params: types.PaginatedRequestParams | None
) -> types.ListResourceTemplatesResult:
    return types.ListResourceTemplatesResult(
        resource_templates=[
            types.ResourceTemplate(uri_template=TEMPLATE, name="item", mime_type="text/plain")
        ]
    )


async def read_resource(
    ctx: Any, params: types.ReadResourceRequestParams
) -> types.ReadResourceResult:
    uri = str(params.uri)
    if uri == "feature://blob":
        contents: list[Any] = [
            types.BlobResourceContents(
                uri=uri, mime_type="application/octet-stream", blob=base64.b64encode(BLOB).decode()
            )
        ]
    elif uri.startswith("feature://item/"):
        contents = [
            types.TextResourceContents(
                uri=uri, mime_type="text/plain", text=f"item {uri.rsplit('/', 1)[1]}"
            )
        ]
    else:
        raise ValueError(f"no such resource {uri}")
    return types.ReadResourceResult(contents=contents)


async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
    state["subscriptions"].add(str(params.uri))
    return types.EmptyResult()


async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    state["subscriptions"].discard(str(params.uri))
    return types.EmptyResult()


async def list_prompts(
    ctx: Any, params: types.PaginatedRequestParams | None
) -> types.ListPromptsResult:
    return types.ListPromptsResult(
        prompts=[
            types.Prompt(
                name="greet",
                description="Greet someone.",
                arguments=[
                    types.PromptArgument(name="name", required=True),
                    types.PromptArgument(name="style", required=False),
                ],
            )
        ]
    )


async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
    args = params.arguments or {}
    style = args.get("style", "casual")
    text = f"Good day, {args.get('name')}." if style == "formal" else f"Hi {args.get('name')}!"
    return types.GetPromptResult(
        description="A greeting",
        messages=[
            types.PromptMessage(role="user", content=types.TextContent(type="text", text=text))
        ],
    )


async def complete(ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
    value = params.argument.value
    if isinstance(params.ref, types.PromptReference):
        options = ["formal", "casual"]
    else:
        options = [str(i) for i in range(ITEMS)]
    values = [o for o in options if o.startswith(value)][:100]
    return types.CompleteResult(
        completion=types.Completion(values=values, total=len(values), has_more=False)
    )


async def roots_changed(ctx: Any, params: Any) -> None:
    state["roots_changed"] += 1


async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
    state["level"] = params.level
    return types.EmptyResult()


server = Server(
    "feature",
    version="1.0",
    instructions="Feature test server.",
    on_list_tools=list_tools,
    on_call_tool=call_tool,
    on_list_resources=list_resources,
    on_list_resource_templates=list_templates,
    on_read_resource=read_resource,
    on_subscribe_resource=subscribe,
    on_unsubscribe_resource=unsubscribe,
    on_list_prompts=list_prompts,
    on_get_prompt=get_prompt,
    on_completion=complete,
    on_set_logging_level=set_level,
    on_roots_list_changed=roots_changed,
)


async def main() -> None:
    options = server.create_initialization_options(
        NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
    )
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, options)


if __name__ == "__main__":
    anyio.run(main)
