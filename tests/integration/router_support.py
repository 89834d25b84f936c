"""Shared plumbing for the router's integration tests.

The official ``mcp`` client is the test client. Its transports are anyio
context managers that must be entered and left in one task, so a
``ClientRunner`` keeps them open in a task of its own and hands the
connected ``ClientSession`` to the tests; any task of the same loop may use
the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from support import until

ROOT = Path(__file__).resolve().parents[2]
SERVERS = ROOT / "tests" / "servers"
PY = sys.executable
FEATURE = [PY, str(SERVERS / "feature_server.py")]
ECHO = [PY, str(SERVERS / "echo_server.py")]
TIME = [PY, "-m", "mcp_server_time"]


class Recorder:
    """Callbacks a test client installs, recording what the router forwarded to it."""

    def __init__(self) -> None:
        self.logs: list[types.LoggingMessageNotificationParams] = []
        self.messages: list[Any] = []
        self.sampled: list[types.CreateMessageRequestParams] = []
        self.elicited: list[Any] = []
        self.changed = asyncio.Event()

    async def sampling(
        self, ctx: Any, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        self.sampled.append(params)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="42"), model="test-model"
        )

    async def elicitation(self, ctx: Any, params: Any) -> types.ElicitResult:
        self.elicited.append(params)
        return types.ElicitResult(action="accept", content={"answer": "yes"})

    async def roots(self, ctx: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params)

    async def handler(self, message: Any) -> None:
        self.messages.append(message)
        if (
            "list_changed" in repr(message)
            or "ListChanged" in type(getattr(message, "root", message)).__name__
        ):
            self.changed.set()

    def session_kwargs(self) -> dict[str, Any]:
        return {
            "sampling_callback": self.sampling,
            "elicitation_callback": self.elicitation,
            "list_roots_callback": self.roots,
            "logging_callback": self.logging,
            "message_handler": self.handler,
        }


class ClientRunner:
    """Holds an ``mcp`` client connection open in its own task."""

    def __init__(self, connect: Callable[[], Any], recorder: Recorder | None = None) -> None:
        self._connect = connect
        self.recorder = recorder or Recorder()
        self._ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async with self._connect() as streams:
                read, write = streams[0], streams[1]
                async with ClientSession(read, write, **self.recorder.session_kwargs()) as session:
                    await session.initialize()
                    self._ready.set_result(session)
                    await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            if not isinstance(exc, Exception | asyncio.CancelledError):
                raise

    async def session(self, timeout: float = 30.0) -> ClientSession:
        return await asyncio.wait_for(asyncio.shield(self._ready), timeout)

    async def aclose(self) -> None:
        self._stop.set()
        try:
            await asyncio.wait_for(self._task, timeout=10)
        except (TimeoutError, Exception):
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


def router_params(
    servers: dict[str, list[str]], *extra: str, stdin_copy: Path | None = None
) -> StdioServerParameters:
    """``python -m mcp_fleet.router --server ...``; with ``stdin_copy``, everything the
    router reads on stdin is also written to that file (``tee``), in order."""
    args = ["-m", "mcp_fleet.router"]
    for name, argv in servers.items():
        args += ["--server", f"{name}=" + " ".join(argv)]
    args += extra
    if stdin_copy is not None:
        script = f"tee {shlex.quote(str(stdin_copy))} | exec {shlex.join([PY, *args])}"
        return StdioServerParameters(command="sh", args=["-c", script], cwd=str(ROOT))
    return StdioServerParameters(command=PY, args=args, cwd=str(ROOT))


@contextlib.asynccontextmanager
async def stdio_client_to_router(
    servers: dict[str, list[str]],
    *extra: str,
    recorder: Recorder | None = None,
    stdin_copy: Path | None = None,
) -> AsyncIterator[tuple[ClientSession, Recorder]]:
    params = router_params(servers, *extra, stdin_copy=stdin_copy)
    runner = ClientRunner(lambda: stdio_client(params), recorder)
    try:
        session = await runner.session()
        yield session, runner.recorder
    finally:
        await runner.aclose()


@contextlib.asynccontextmanager
async def http_client(
    url: str, recorder: Recorder | None = None
) -> AsyncIterator[tuple[ClientSession, Recorder]]:
    runner = ClientRunner(lambda: streamable_http_client(url), recorder)
    try:
        session = await runner.session()
        yield session, runner.recorder
    finally:
        await runner.aclose()


async def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    await until(predicate, within=timeout, every=0.02, what="condition")


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def tool_names(session: ClientSession) -> set[str]:
    names: set[str] = set()
    cursor = None
    while True:
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        result = await session.list_tools(params=params)
        names |= {t.name for t in result.tools}
        cursor = result.next_cursor
        if not cursor:
            return names


async def until_tools(session: ClientSession, wanted: set[str], timeout: float = 45.0) -> None:
    """Wait until the router lists every tool of ``wanted`` (backends attach as they come up)."""
    listed: set[str] = set()

    async def all_listed() -> bool:
        nonlocal listed
        listed = await tool_names(session)
        return wanted <= listed

    await until(
        all_listed, within=timeout, every=0.1,
        what="tools listed", context=lambda: f"missing: {sorted(wanted - listed)}",
    )  # fmt: skip
