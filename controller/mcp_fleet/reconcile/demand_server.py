"""The controller's end of the demand channel: routers in other processes, as one ``DemandSource``.

``mcp-fleet controller`` and ``mcp-fleet up`` serve this on
``<fleet>/.state/demand.sock`` (``demand_ipc`` says why a socket and what
goes over it); every ``mcp-fleet router --dir`` of the fleet connects to it.
To the controller's loop it is the remote source of ``EndpointTable.demand``
(``Demand.serve_remote``), beside the in-process ``Activator`` of ``up``'s
own router (``Demand`` merges the two):

- ``want`` from any router wakes the loop (``Demand.want``).
- ``activity`` is what the routers said at the last ``refresh``, which the
  loop awaits before each plan: one round trip to each router, in parallel,
  bounded by ``query_timeout``. Pulled rather than pushed, so the plan sees
  the calls waiting at the moment it is made (a pushed copy could be a
  period old, and a wanted server would not look wanted yet). Several
  routers merge: the least idle, the calls of all. A router that does not
  answer keeps its last answer (and is logged); one that has gone leaves
  when each server was last used, so restarting a router does not make a
  server used a second ago look idle since it started.
- ``retire_async`` asks every router in turn just before an idle server is
  stopped, and is True only if all agree; a router that does not answer
  within ``retire_timeout``, or goes away while asked, counts as busy (the
  server stays; the next plan looks again). Each router marks the server
  retired before it says yes, as the in-process router does. With no
  router connected, nobody can be using a server: True, as when ``up``
  runs without a router.
- ``wait_released`` (``ReleaseSource``) asks every router at once, before
  the old instance of a replaced server is stopped, to answer when it no
  longer uses that instance (each waits on its own table, bounded by the
  same timeout); True when all say so. A router that goes away holds
  nothing; one that does not answer in time counts as still holding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from mcp_fleet.endpoints import Activity, Demand, merge_activity
from mcp_fleet.logsetup import log_event
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

log = logging.getLogger("mcp_fleet.controller.demand")

#: How long the loop waits for a router's activity before planning without it.
DEFAULT_QUERY_TIMEOUT: Final = 0.5
#: How long a scale-down waits for a router's yes before keeping the server.
DEFAULT_RETIRE_TIMEOUT: Final = 2.0


@dataclass
class _Router:
    """One connected router."""

    name: str
    writer: asyncio.StreamWriter
    pending: dict[int, asyncio.Future[Reply]] = field(default_factory=dict)
    #: Its last activity answer, and when it came (the server's clock).
    activity: dict[str, Activity] = field(default_factory=dict)
    at: float = 0.0
    answering: bool = True

    def send(self, message: demand_ipc.Message) -> None:
        if self.writer.is_closing():
            raise ConnectionError(f"{self.name} disconnected")
        self.writer.write(demand_ipc.encode(message))


class DemandServer:
    """Listens for routers and answers for them to the controller (module docstring)."""

    def __init__(
        self,
        state_dir: Path,
        demand: Demand,
        *,
        query_timeout: float = DEFAULT_QUERY_TIMEOUT,
        retire_timeout: float = DEFAULT_RETIRE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state_dir = state_dir
        self.demand = demand
        self.query_timeout = query_timeout
        self.retire_timeout = retire_timeout
        self.clock = clock
        self.path: Path | None = None
        self._server: asyncio.Server | None = None
        self._routers: dict[int, _Router] = {}
        self._ids = itertools.count(1)
        #: Per server: when any router last reported it used (survives its router).
        self._last_used: dict[str, float] = {}
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def routers(self) -> int:
        """How many routers are connected."""
        return len(self._routers)

    async def start(self) -> Path:
        """Listen (mode 600) and answer for the routers in ``demand``; returns the socket path.

        Call it holding the fleet's controller lock: a leftover socket file of
        a killed controller is removed.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = demand_ipc.bind_path(self.state_dir)
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(path))
            path.chmod(0o600)  # before listen(): nobody can connect in between
            sock.listen(16)
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(
                self._handle, sock=sock, limit=demand_ipc.MAX_LINE_BYTES
            )
        except BaseException:
            sock.close()
            raise
        self.path = path
        self.demand.serve_remote(self)
        log_event(log, logging.DEBUG, "demand socket listening", path=str(path))
        return path

    async def aclose(self) -> None:
        """Stop listening, drop every router, remove the socket (and its pointer file)."""
        if self.demand.remote is self:
            self.demand.serve_remote(None)
        if self._server is not None:
            self._server.close()
        for router in list(self._routers.values()):
            router.writer.close()  # each handler then reads the end and returns
        if self._handlers:
            _, stuck = await asyncio.wait(self._handlers, timeout=2.0)
            for task in stuck:
                task.cancel()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            if self.path.parent != self.state_dir:
                (self.state_dir / demand_ipc.POINTER_NAME).unlink(missing_ok=True)
            self.path = None

    # -- DemandSource (what the controller's loop reads) -------------------------

    def activity(self) -> Mapping[str, Activity]:
        now = self.clock()
        merged = merge_activity(
            {n: _aged(a, now - r.at) for n, a in r.activity.items()} for r in self._routers.values()
        )
        for name, used in self._last_used.items():
            idle = max(0.0, now - used)
            seen = merged.get(name)
            if seen is None:
                merged[name] = Activity(idle_seconds=idle)
            elif idle < seen.idle_seconds:
                merged[name] = Activity(idle, inflight=seen.inflight, waiting=seen.waiting)
        return merged

    def retire(self, server: str) -> bool:
        """Without a round trip only "nobody is connected" can be answered (yes)."""
        return not self._routers

    async def refresh(self) -> None:
        routers = list(self._routers.values())
        if routers:
            await asyncio.gather(*(self._refresh_one(r) for r in routers))

    async def retire_async(self, server: str) -> bool:
        for router in list(self._routers.values()):
            try:
                reply = await self._ask(
                    router, RetireQuery(op="retire", id=0, server=server), self.retire_timeout
                )
            except TimeoutError:
                log_event(
                    log, logging.WARNING, "router did not answer; keeping the server",
                    router=router.name, server=server, timeout=self.retire_timeout,
                )  # fmt: skip
                return False
            except ConnectionError:
                return False
            if reply.retire is not True:
                return False
        return True

    async def wait_released(self, server: str, instance_id: str, *, timeout: float) -> bool:
        routers = list(self._routers.values())
        if not routers:
            return True
        answers = await asyncio.gather(
            *(self._released_by(r, server, instance_id, timeout) for r in routers)
        )
        return all(answers)

    async def _released_by(
        self, router: _Router, server: str, instance_id: str, timeout: float
    ) -> bool:
        query = ReleaseQuery(
            op="release", id=0, server=server, instance=instance_id, timeout=timeout
        )
        try:  # the router answers within ``timeout``; a little more for the round trip
            reply = await self._ask(router, query, timeout + 1.0)
        except TimeoutError:
            log_event(
                log, logging.WARNING, "router did not release the old instance in time",
                router=router.name, server=server, instance=instance_id, timeout=timeout,
            )  # fmt: skip
            return False
        except ConnectionError:
            return True  # gone: it holds nothing
        return reply.released is not False

    # -- talking to one router ----------------------------------------------------

    async def _refresh_one(self, router: _Router) -> None:
        try:
            reply = await self._ask(router, ActivityQuery(op="activity", id=0), self.query_timeout)
        except TimeoutError:
            if router.answering:
                router.answering = False
                log_event(
                    log, logging.WARNING, "router did not answer; using its last activity",
                    router=router.name, timeout=self.query_timeout,
                )  # fmt: skip
            return
        except ConnectionError:
            return
        if not router.answering:
            router.answering = True
            log_event(log, logging.INFO, "router answering again", router=router.name)
        self._take_activity(router, reply)

    def _take_activity(self, router: _Router, reply: Reply) -> None:
        now = self.clock()
        router.activity = demand_ipc.activity_from_wire(reply.activity or {})
        router.at = now
        for name, a in router.activity.items():
            used = now - a.idle_seconds
            self._last_used[name] = max(used, self._last_used.get(name, used))

    async def _ask(
        self, router: _Router, query: ActivityQuery | RetireQuery | ReleaseQuery, timeout: float
    ) -> Reply:
        """Send ``query`` with a fresh id; its reply, or TimeoutError / ConnectionError."""
        qid = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        router.pending[qid] = future
        try:
            router.send(query.model_copy(update={"id": qid}))
            async with asyncio.timeout(timeout):
                return await future
        finally:
            router.pending.pop(qid, None)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        key = id(writer)
        router = _Router(name=f"router {key:x}", writer=writer)
        try:
            if not _same_user(writer):
                log_event(log, logging.WARNING, "demand socket: refused a peer of another user")
                return
            self._routers[key] = router
            await self._serve(router, reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._routers.pop(key, None)
            for future in router.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"{router.name} disconnected"))
            writer.close()
            if router.name.startswith("router pid"):
                log_event(log, logging.INFO, "router disconnected", router=router.name)
            if task is not None:
                self._handlers.discard(task)

    async def _serve(self, router: _Router, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # a line over the limit: not a router of ours
                log_event(log, logging.WARNING, "demand socket: line too long", router=router.name)
                return
            if not line:
                return
            try:
                message = demand_ipc.decode(line)
            except DemandProtocolError as exc:
                log_event(log, logging.WARNING, "demand socket: bad message",
                          router=router.name, error=str(exc))  # fmt: skip
                continue
            if isinstance(message, Hello):
                if message.version != demand_ipc.PROTOCOL_VERSION:
                    log_event(
                        log, logging.ERROR, "router speaks another demand protocol",
                        version=message.version, expected=demand_ipc.PROTOCOL_VERSION,
                    )  # fmt: skip
                    return
                router.name = f"router pid {message.pid}"
                log_event(log, logging.INFO, "router connected", router=router.name)
            elif isinstance(message, Want):
                log_event(log, logging.DEBUG, "wanted", server=message.server, by=router.name)
                self.demand.want(message.server)
            elif isinstance(message, Reply):
                future = router.pending.get(message.id)
                if future is not None and not future.done():
                    future.set_result(message)


def _aged(a: Activity, age: float) -> Activity:
    return Activity(a.idle_seconds + max(0.0, age), inflight=a.inflight, waiting=a.waiting)


def _same_user(writer: asyncio.StreamWriter) -> bool:
    """The peer runs as this user; mode 600 already says so, this double-checks."""
    sock = writer.get_extra_info("socket")
    peercred = getattr(socket, "SO_PEERCRED", None)
    if sock is None or peercred is None:
        return True  # not Linux: the socket's mode is the check
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i"))
    except OSError:
        return False
    _pid, uid, _gid = struct.unpack("3i", raw)
    return bool(uid == os.getuid())
