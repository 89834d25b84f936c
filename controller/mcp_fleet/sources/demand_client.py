"""The router's end of the demand channel: ``mcp-fleet router --dir`` talking to its controller.

Under ``mcp-fleet up`` the router answers the controller's on-demand
questions in the same process (``EndpointTable.demand``). A router that
follows a fleet whose controller runs elsewhere (``router --dir``) reaches
that controller over the fleet's demand socket (``demand_ipc`` says why a
socket): this client connects to it, tells it which cold server a call is
waiting for, and answers its ``activity`` and ``retire`` questions with the
router's own ``Activator`` (whatever ``table.demand`` serves), so the
answers mean exactly what they mean in one process: ``retire`` marks the
server's backend retired, on this event loop, before it says yes. A
``release`` question (may the old instance of a replaced server stop?) is
answered once this router no longer uses that instance
(``Demand.wait_released`` on this process's routers), or when the
controller's timeout runs out.

The controller may start after the router, stop, or restart: the client
reconnects with exponential backoff (tenacity), forever, and on every
(re)connection says again which servers calls are waiting for, since a
``want`` sent while nobody listened was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Final

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential, wait_random

from mcp_fleet.endpoints import Activity, Demand
from mcp_fleet.reconcile import demand_ipc
from mcp_fleet.reconcile.demand_ipc import (
    ActivityQuery,
    DemandProtocolError,
    Hello,
    ReleaseQuery,
    Reply,
    RetireQuery,
    Want,
)

log = logging.getLogger(__name__)

#: Backoff between connection attempts: from this...
RECONNECT_INITIAL: Final = 0.1
#: ...up to this many seconds.
RECONNECT_MAX: Final = 2.0


class DemandClient:
    """Connects ``demand`` (a router's table) to the fleet's controller (module docstring)."""

    def __init__(
        self,
        state_dir: Path,
        demand: Demand,
        *,
        reconnect_initial: float = RECONNECT_INITIAL,
        reconnect_max: float = RECONNECT_MAX,
    ) -> None:
        self.state_dir = state_dir
        self.demand = demand
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        #: Set while connected to a controller.
        self.connected = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._waiting_logged = False
        self._answers: set[asyncio.Task[None]] = set()
        demand.on_want(self._want)

    async def run(self) -> None:
        """Stay connected until cancelled (each lost connection is made again)."""
        while True:
            reader, writer = await self._connect()
            try:
                await self._session(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                self._writer = None
                self.connected.clear()
                for task in list(self._answers):
                    task.cancel()
                writer.close()
            log.info("controller's demand socket closed; reconnecting")

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=self.reconnect_initial, max=self.reconnect_max)
            + wait_random(0, self.reconnect_initial),
            retry=retry_if_exception_type(OSError),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._open()
        raise AssertionError("unreachable: retries until it connects")  # pragma: no cover

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        path = demand_ipc.locate(self.state_dir)
        try:
            if path is None:
                raise FileNotFoundError(self.state_dir / demand_ipc.SOCKET_NAME)
            return await asyncio.open_unix_connection(
                os.fspath(path), limit=demand_ipc.MAX_LINE_BYTES
            )
        except OSError as exc:
            if not self._waiting_logged:
                self._waiting_logged = True
                log.info(
                    "no controller on %s yet (%s); on-demand servers start once one listens",
                    path or self.state_dir,
                    exc.strerror or exc,
                )
            raise

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            demand_ipc.encode(
                Hello(op="hello", version=demand_ipc.PROTOCOL_VERSION, pid=os.getpid())
            )
        )
        self._writer = writer
        self._waiting_logged = False
        self.connected.set()
        log.info("connected to the controller for on-demand servers")
        for server, activity in sorted(self._activity().items()):
            if activity.waiting:  # wanted while nobody listened
                self._want(server)
        while True:
            try:
                line = await reader.readline()
            except ValueError:
                log.warning("demand socket: a line over the limit; reconnecting")
                return
            if not line:
                return
            try:
                message = demand_ipc.decode(line)
            except DemandProtocolError as exc:
                log.warning("demand socket: bad message from the controller: %s", exc)
                continue
            if isinstance(message, ActivityQuery):
                wire = demand_ipc.activity_to_wire(self._activity())
                writer.write(demand_ipc.encode(Reply(op="reply", id=message.id, activity=wire)))
            elif isinstance(message, RetireQuery):
                agreed = self._retire(message.server)
                writer.write(demand_ipc.encode(Reply(op="reply", id=message.id, retire=agreed)))
            elif isinstance(message, ReleaseQuery):
                task = asyncio.get_running_loop().create_task(self._release(message, writer))
                self._answers.add(task)
                task.add_done_callback(self._answers.discard)

    async def _release(self, query: ReleaseQuery, writer: asyncio.StreamWriter) -> None:
        """Answer once this process's routers no longer use the instance (or time runs out)."""
        try:
            released = await self.demand.wait_released(
                query.server, query.instance, timeout=query.timeout, remote=False
            )
        except Exception:
            log.exception("deciding whether %s may stop failed", query.instance)
            released = False
        if not writer.is_closing():
            with contextlib.suppress(ConnectionError, RuntimeError):
                reply = Reply(op="reply", id=query.id, released=released)
                writer.write(demand_ipc.encode(reply))

    def _activity(self) -> dict[str, Activity]:
        try:
            return dict(self.demand.activity())
        except Exception:  # a router bug must not cut the link
            log.exception("reading the router's activity failed")
            return {}

    def _retire(self, server: str) -> bool:
        try:
            return self.demand.retire(server)
        except Exception:
            log.exception("deciding whether %s may stop failed; keeping it", server)
            return False

    def _want(self, server: str) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            return  # sent again on connection
        with contextlib.suppress(ConnectionError, RuntimeError):
            writer.write(demand_ipc.encode(Want(op="want", server=server)))
