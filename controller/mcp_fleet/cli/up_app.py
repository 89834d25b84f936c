"""``mcp-fleet up``'s application, wired in one importable place: controller, router, gateway.

``up_cmd`` parses the command line into ``UpOptions`` and runs ``UpApp`` in
its own event loop; a test runs the same application in its loop::

    options = UpOptions(files=resolve_files(home), port=0)
    async with UpApp(options) as app:      # listening; the fleet is starting
        await app.published.wait()         # every server Ready (or failed)
        ...                                # an MCP client to app.url
    # stopped: router, demand socket, controller (its process servers too)

What ``run`` does, in order (the same whether the command or a test runs it):

1. Takes the fleet's controller lock (``Controller.claim``): a second ``up``
   on the same fleet fails at once with ``ControllerBusy``.
2. Listens on the fleet's demand socket (``reconcile.demand_server``), so a
   ``mcp-fleet router --dir`` beside it can start on-demand servers.
3. Opens the frontend (``router.serve``: port bound, gateway settings
   checked) and only then starts the controller's loop and the follower of
   the router's per-client session counts (``up_controller``): nothing
   starts for a port in use.
4. Serves until cancelled (over stdio: until the client leaves), then
   stops the router, the demand socket and the controller.

Signals and the console belong to the command: ``UpApp`` installs no
signal handler, and says what happens (ready, the servers as they attach)
only through the ``say`` it is given, and never over stdio.

Imported only when ``up`` runs: it pulls in the controller and the router.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from mcp_fleet import conventions
from mcp_fleet.cli.controller_cmds import serve_demand
from mcp_fleet.cli.router_cmds import ACTIVATION_TIMEOUT_SECONDS
from mcp_fleet.cli.up_controller import UpHooks, follow_sessions, session_counts
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.gateway.app import GatewaySettings
from mcp_fleet.model import FleetFiles, RuntimeKind
from mcp_fleet.reconcile.demand_server import DemandServer
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.router.http_service import router_status
from mcp_fleet.router.router import Router, RouterEvent
from mcp_fleet.router.serve import Transport, serve
from mcp_fleet.router.session_launcher import DEFAULT_MAX_INSTANCES
from mcp_fleet.router.table import PrefixMode
from mcp_fleet.runtimes.base import Runtime
from mcp_fleet.runtimes.select import build_runtimes
from mcp_fleet.sources.session_runtimes import session_launcher

#: How long the router's lists wait for the fleet to start (``published``).
SETTLE_SECONDS = 30.0


@dataclass(frozen=True)
class UpOptions:
    """What ``up`` runs, checked: ``up_cmd`` builds it from the command line."""

    files: FleetFiles
    runtime: RuntimeKind = RuntimeKind.PROCESS
    transport: Transport = "streamable-http"
    host: str = conventions.DEFAULT_HTTP_HOST
    #: 0: any free port (``UpApp.url`` says which).
    port: int = conventions.DEFAULT_HTTP_PORT
    prefix: PrefixMode = "collisions"
    tools: tuple[str, ...] = ()
    page_size: int = 500
    activation_timeout: float = ACTIVATION_TIMEOUT_SECONDS
    max_session_instances: int = DEFAULT_MAX_INSTANCES
    #: The team gateway's settings; None: no tokens, loopback only (``router.serve``).
    gateway: GatewaySettings | None = None

    @property
    def stdio(self) -> bool:
        return self.transport == "stdio"


def _quiet(_text: str) -> None:
    pass


class UpApp:
    """One ``mcp-fleet up`` in this event loop (see the module docstring).

    Built inside the running event loop; ``runtimes`` default to those
    ``options.runtime`` asks for (``runtimes.select.build_runtimes``).
    """

    def __init__(
        self,
        options: UpOptions,
        *,
        runtimes: Mapping[RuntimeKind, Runtime] | None = None,
        say: Callable[[str], None] = _quiet,
    ) -> None:
        files = options.files
        if runtimes is None:
            runtimes = build_runtimes(
                options.runtime, fleet=conventions.fleet_name(files.home), state_dir=files.state_dir
            )
        self.options = options
        #: Where progress goes (over stdio nowhere: stdout carries the protocol).
        self.say = _quiet if options.stdio else say
        self.table = EndpointTable()
        #: Set after the first pass that leaves no server starting (each is Ready, and
        #: published, or failed), or whose files are broken: the fleet as it starts is
        #: known, and the router need wait no longer for it (lists, a stdio initialize).
        self.published = asyncio.Event()
        self.controller = Controller(files, runtimes, self.table, preferred_runtime=options.runtime)
        self.hooks = UpHooks(published=self.published)
        self.hooks.attach(self.controller)
        self.router = Router(
            self.table, prefix=options.prefix, tools=options.tools, page_size=options.page_size,
            on_event=self._on_event, published=self.published, settle_timeout=SETTLE_SECONDS,
            activation_timeout=options.activation_timeout,
            launcher=session_launcher(files.home, options.runtime),
            max_session_instances=options.max_session_instances,
        )  # fmt: skip
        self.hooks.sessions = self.sessions
        #: Where clients connect (``http://host:port/mcp``), once listening over HTTP.
        self.url: str | None = None
        #: Set once clients can connect.
        self.listening = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._main: asyncio.Task[None] | None = None

    def sessions(self) -> dict[str, int]:
        """Per-client instances the router runs now, by server."""
        return session_counts(self.router)

    async def run(self) -> None:
        """Serve until cancelled (over stdio: until the client leaves), then stop it all."""
        demand: DemandServer | None = None
        try:
            self.controller.claim()  # the lock first: the demand socket is this fleet's
            demand = await serve_demand(self.options.files.state_dir, self.table.demand)
            await serve(
                self.router, transport=self.options.transport, host=self.options.host,
                port=self.options.port, gateway=self.options.gateway,
                status_provider=self._status, on_listening=self._start_fleet,
                on_ready=self._on_ready,
            )  # fmt: skip
        finally:
            await self._stop_fleet(demand)

    # Started in the background (tests): ``async with UpApp(options) as app``.

    async def start(self) -> None:
        """Run in a task of this loop until clients can connect; raises what stopped it
        before that (a port in use, another controller on the fleet...)."""
        main = asyncio.create_task(self.run(), name="up")
        self._main = main
        listening = asyncio.create_task(self.listening.wait())
        await asyncio.wait({main, listening}, return_when=asyncio.FIRST_COMPLETED)
        if not self.listening.is_set():
            listening.cancel()
            await main  # raises what ended it
            raise RuntimeError("up ended before it listened")

    async def stop(self) -> None:
        """Stop what ``start`` started, and wait until the fleet has stopped."""
        main, self._main = self._main, None
        if main is None:
            return
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await main

    async def __aenter__(self) -> UpApp:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # Wiring.

    def _status(self) -> dict[str, Any]:
        return router_status(self.router, self.controller.status().to_json())

    def _start_fleet(self) -> None:
        """The endpoint is listening: now start the servers."""
        self._tasks.append(asyncio.create_task(self.controller.run(), name="controller"))
        self._tasks.append(
            asyncio.create_task(follow_sessions(self.controller, self.sessions), name="sessions")
        )

    async def _stop_fleet(self, demand: DemandServer | None) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if demand is not None:
            await demand.aclose()
        await self.controller.aclose()
        if self._tasks:
            self.say("fleet stopped")

    def _on_ready(self, where: str) -> None:
        if not self.options.stdio:
            self.url = where
        self.listening.set()
        self.say(f"mcp-fleet is serving {self.options.files.home} on {where}")
        self.say(f"  Claude Code:  claude mcp add --transport http mcp-fleet {where}")
        self.say(
            "  other clients: mcp-fleet client config claude-desktop|codex|cursor --transport http"
        )
        self.say("Servers appear below as they become ready; Ctrl-C stops the fleet.")

    def _on_event(self, event: RouterEvent, server: str, detail: str) -> None:
        if event == "attached":
            count = sum(1 for r in self.router.table.tool_routes.values() if r.server == server)
            self.say(f"ready    {server} ({count} tools)")
        elif event in ("detached", "failed"):
            self.say(f"{event:<8} {server}: {detail}")
        elif event == "renamed":
            self.say(f"renamed  {detail}")
