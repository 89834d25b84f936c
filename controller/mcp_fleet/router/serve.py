"""Run a Router with one frontend: what ``mcp-fleet router`` and ``mcp-fleet up`` share.

The router follows its endpoint table in one task while the frontend serves
clients in another. Over stdio the run ends when the client closes our
stdin (the client owns our lifetime, as with any stdio server); over HTTP it
runs until cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from mcp_fleet import conventions
from mcp_fleet.router.frontend_http import serve_http
from mcp_fleet.router.frontend_stdio import serve_stdio
from mcp_fleet.router.router import Router

Transport = Literal["stdio", "streamable-http", "sse"]


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (a faster event loop), else on asyncio's.

    Everything imported so far lives as long as the process: ``gc.freeze``
    moves it out of the collector's way, and a higher first threshold lets
    the short-lived dictionaries of forwarded messages die young without a
    collection every few hundred calls.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


TRANSPORTS: tuple[Transport, ...] = ("stdio", "streamable-http", "sse")


async def serve(
    router: Router,
    *,
    transport: Transport = "stdio",
    host: str = conventions.DEFAULT_HTTP_HOST,
    port: int = conventions.DEFAULT_HTTP_PORT,
    path: str = conventions.DEFAULT_HTTP_PATH,
    allowed_origins: list[str] | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``router`` on ``transport`` until the client leaves (stdio) or we are cancelled."""
    follower = asyncio.create_task(router.run(), name="router")
    frontend: asyncio.Task[None] | None = None
    try:
        if transport == "stdio":
            if on_ready is not None:
                on_ready("stdio")
            frontend = asyncio.create_task(serve_stdio(router), name="frontend-stdio")
        else:

            def ready(url: str) -> None:
                if on_ready is not None:
                    on_ready(url.replace(path, "/sse") if transport == "sse" else url)

            frontend = asyncio.create_task(
                serve_http(
                    router,
                    host=host,
                    port=port,
                    path=path,
                    allowed_origins=allowed_origins,
                    ready=ready,
                ),
                name="frontend-http",
            )
        done, _ = await asyncio.wait({follower, frontend}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # re-raise a crash of either side
    finally:
        for pending in (follower, frontend):
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
