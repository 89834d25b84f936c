"""``mcp-fleet bridge``: serve a stdio MCP server over streamable HTTP, in its pod.

Why a bridge, and not the attach API: a stdio server has one client, its
stdin/stdout. ToolHive's operator reaches stdio pods by attaching to them
through the Kubernetes API from a proxy pod; that ties each server to one
proxy, and attachments went stale after pod restarts (their #3179, #6343).
Routers here scale out (several replicas behind one Service), so no router
may own a server's stdio. Instead the bridge runs next to the server (same
container with ``-- argv``, or as a native sidecar talking through two FIFOs
with ``--fifo-dir``) and serves it over streamable HTTP: any number of
routers, the operator's readiness probe and ``kubectl port-forward`` users
can all reach it, and the bridge lives and dies with its server, so there is
nothing stale to keep: when the server exits, the bridge exits with its code
and Kubernetes restarts the pod's containers.

The HTTP side is the official SDK's ``StreamableHTTPServerTransport`` (one per
session, with ``Mcp-Session-Id``, SSE streams, ``DELETE``, idle expiry); the
messages of every session meet in one ``Hub`` that multiplexes them onto the
server's stdio. ``--per-session`` gives each session its own server process
instead (``sessions: per-client`` servers, whose state must not be shared).

Endpoints: ``<path>`` (default ``/mcp``) for MCP, ``/healthz`` (the bridge
runs; in FIFO mode, the FIFOs exist) and ``/readyz`` (the server answered the
bridge's own ``initialize``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.shared.message import SessionMessage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mcp_fleet.bridge.hub import Backend, Hub, make_fifos, open_fifos, spawn
from mcp_fleet.probe import ProbeError, initialize

log = logging.getLogger("mcp_fleet.bridge")

#: A session with no request in flight for this long is closed (as the SDK's default).
SESSION_IDLE_SECONDS = 30 * 60


@dataclass(frozen=True, slots=True)
class BridgeOptions:
    """How ``mcp-fleet bridge`` runs."""

    argv: tuple[str, ...] = ()
    fifo_dir: Path | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    path: str = "/mcp"
    per_session: bool = False
    init_timeout: float = 120.0

    def problem(self) -> str | None:
        if self.fifo_dir is None and not self.argv:
            return "give the server's command after --, or --fifo-dir for a sidecar"
        if self.fifo_dir is not None and self.argv:
            return "--fifo-dir and a server command exclude each other"
        if self.per_session and self.fifo_dir is not None:
            return "--per-session starts one server per session: it needs a command, not FIFOs"
        return None


class Bridge:
    """The running bridge: the shared hub (or none, per session) and the session table."""

    def __init__(self, options: BridgeOptions) -> None:
        self.options = options
        self.hub: Hub | None = None
        self.ready = asyncio.Event()
        self.healthy = asyncio.Event()
        self._transports: dict[str, StreamableHTTPServerTransport] = {}
        self._task_group: anyio.abc.TaskGroup | None = None

    # -- HTTP ---------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/healthz", self._healthz, methods=["GET"]),
                Route("/readyz", self._readyz, methods=["GET"]),
                Route(
                    self.options.path,
                    _AsgiEndpoint(self.handle_mcp),
                    methods=["GET", "POST", "DELETE"],
                ),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            try:
                yield
            finally:
                for transport in list(self._transports.values()):
                    await transport.terminate()
                tg.cancel_scope.cancel()

    async def _healthz(self, _request: Request) -> Response:
        ok = self.healthy.is_set()
        return PlainTextResponse("ok" if ok else "starting", status_code=200 if ok else 503)

    async def _readyz(self, _request: Request) -> Response:
        ok = self.ready.is_set()
        return PlainTextResponse("ready" if ok else "not ready", status_code=200 if ok else 503)

    async def handle_mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.ready.is_set():
            await _error(scope, receive, send, HTTPStatus.SERVICE_UNAVAILABLE, "server not ready")
            return
        request = Request(scope, receive)
        session_id = request.headers.get(MCP_SESSION_ID_HEADER)
        if session_id is not None:
            transport = self._transports.get(session_id)
            if transport is None:
                await _error(scope, receive, send, HTTPStatus.NOT_FOUND, "Session not found")
                return
            await transport.handle_request(scope, receive, send)
            if transport.is_terminated:
                self._transports.pop(session_id, None)
            return
        await self._open_session(scope, receive, send)

    async def _open_session(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self._task_group is not None
        session_id = uuid.uuid4().hex
        transport = StreamableHTTPServerTransport(
            mcp_session_id=session_id, idle_timeout=SESSION_IDLE_SECONDS
        )
        self._transports[session_id] = transport
        status: list[int] = []

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self._task_group.start(self._run_session, session_id, transport)
            await transport.handle_request(scope, receive, watch)
        finally:
            if not status or status[0] >= 400:
                self._transports.pop(session_id, None)
                await transport.terminate()

    async def _run_session(
        self,
        session_id: str,
        transport: StreamableHTTPServerTransport,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        hub = self.hub
        own_backend: Backend | None = None
        try:
            async with (
                transport.connect() as (read_stream, write_stream),
                anyio.create_task_group() as tg,
            ):
                if hub is None:  # per session: this session's own server process
                    own_backend = await spawn(self.options.argv)
                    hub = Hub(own_backend)
                    try:
                        await initialize(own_backend.stream, timeout=self.options.init_timeout)
                    except ProbeError as exc:
                        log.error("server for session %s did not start: %s", session_id[:12], exc)
                        task_status.started()
                        await transport.terminate()
                        return
                    tg.start_soon(_pump_then_end, hub, transport)
                hub.attach(session_id, write_stream.send, tg)
                task_status.started()
                idle = transport.idle_scope or anyio.CancelScope()
                with idle, contextlib.suppress(anyio.ClosedResourceError, anyio.EndOfStream):
                    # The transport closes this stream when the session ends (DELETE, expiry).
                    async for incoming in read_stream:
                        if isinstance(incoming, SessionMessage):
                            await hub.from_client(session_id, incoming)
                await hub.detach(session_id)
                tg.cancel_scope.cancel()
        finally:
            self._transports.pop(session_id, None)
            if hub is not None:
                await hub.detach(session_id)
            if own_backend is not None:
                with anyio.CancelScope(shield=True):
                    await own_backend.aclose()

    # -- the shared server --------------------------------------------------------------

    async def run_shared(self) -> int:
        """Connect to the server, initialize it, route its messages; its exit code when it ends."""
        if self.options.fifo_dir is not None:
            make_fifos(self.options.fifo_dir)
            self.healthy.set()
            log.info("waiting for the server container to open %s", self.options.fifo_dir)
            backend = await open_fifos(self.options.fifo_dir)
        else:
            self.healthy.set()
            backend = await spawn(self.options.argv)
        try:
            try:
                result = await initialize(backend.stream, timeout=self.options.init_timeout)
            except ProbeError as exc:
                log.error("the server did not initialize: %s", exc)
                return 1
            log.info("server %s %s is ready", result.server_name, result.server_version)
            self.hub = Hub(backend)
            self.ready.set()
            await self.hub.pump()
            self.ready.clear()
            code = await asyncio.wait_for(backend.wait(), 5)
            log.warning("the server exited (code %s); the bridge exits with it", code)
            return code
        finally:
            with anyio.CancelScope(shield=True):
                await backend.aclose()


async def _pump_then_end(hub: Hub, transport: StreamableHTTPServerTransport) -> None:
    await hub.pump()
    await transport.terminate()


class _AsgiEndpoint:
    """Starlette treats a non-function endpoint as a raw ASGI app (as the SDK's does)."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handler(scope, receive, send)


async def _error(scope: Scope, receive: Receive, send: Send, status: HTTPStatus, text: str) -> None:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": text}}
    await JSONResponse(body, status_code=status)(scope, receive, send)


async def serve(options: BridgeOptions) -> int:
    """Run the bridge until the server exits (its code) or a signal stops it (0)."""
    problem = options.problem()
    if problem:
        raise ValueError(problem)
    bridge = Bridge(options)
    config = uvicorn.Config(
        bridge.app(),
        host=options.host,
        port=options.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    try:
        sock = _listen(options.host, options.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", options.host, options.port, exc.strerror or exc)
        return 1
    http_task = asyncio.create_task(server.serve(sockets=[sock]), name="bridge-http")
    if options.per_session:
        bridge.healthy.set()
        bridge.ready.set()
        await http_task
        return 0
    server_task = asyncio.create_task(bridge.run_shared(), name="bridge-server")
    done, _ = await asyncio.wait({http_task, server_task}, return_when=asyncio.FIRST_COMPLETED)
    if server_task in done:
        server.should_exit = True
        await http_task
        return server_task.result()
    server_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await server_task
    http_task.result()
    return 0


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run(options: BridgeOptions) -> int:
    """Blocking entry for the CLI."""
    return asyncio.run(serve(options))


def options_from_cli(
    argv: Sequence[str],
    *,
    fifo_dir: str | None,
    host: str,
    port: int,
    path: str,
    per_session: bool,
    init_timeout: float,
) -> BridgeOptions:
    return BridgeOptions(
        argv=tuple(argv),
        fifo_dir=Path(fifo_dir) if fifo_dir else None,
        host=host,
        port=port,
        path=path,
        per_session=per_session,
        init_timeout=init_timeout,
    )
