"""``sessions: per-client``: one backend instance per client session.

Most servers are shared: one backend session, every client multiplexed over
it. A server whose state must not be shared (a browser, a shell, a REPL)
says ``sessions: per-client`` in its catalog entry, and the router then
gives each client session an instance of its own:

- **Listed for everyone.** Its tools, prompts and resources are advertised
  to every session, from the activator's list cache
  (``<fleet>/.state/cache/<server>.json``), else the catalog's ``tools``;
  with neither, one instance is started once to learn them. The first
  session instance of each run refreshes the cache.
- **Started by a session's first call**, for that session only, bounded
  by the activation timeout; concurrent first calls of one session share
  one start. Every later call of that session, and every server-to-client
  request and notification of that instance, goes to and comes from that
  session alone; list_changed from an instance is not propagated (the lists
  are the server's, not a session's).
- **Stopped when the session ends**: HTTP DELETE or expiry, stdio EOF, the
  router's shutdown. An instance that dies fails its session's calls in
  flight; the session's next call starts a new one (its state is lost).
- **Capped**: at most ``max_instances`` session instances run at once
  (stopping ones included; the one instance a server may run to learn its
  lists is not counted); a session's first call beyond that is refused with
  MCP error -32029 naming the limit, so many sessions cannot exhaust the
  machine.

Instances come from a ``SessionLauncher`` (``session_launcher``: why the
router, not the controller, starts them); without one (``mcp-fleet router
--dir``) calls are answered with the MCP error "per-client sessions need
mcp-fleet up". A per-client server published with an HTTP endpoint (a
``type: remote`` server) needs no launcher: each session gets its own HTTP
connection, hence its own MCP session at that server (behind ``mcp-fleet
bridge --per-session``, its own process).

The hot path of shared servers is untouched: per-client servers are never
attached as shared backends, so ``Router.backend`` finds none and only the
slow path, already taken for cold on-demand servers, asks this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from mcp_fleet import __version__ as _fleet_version
from mcp_fleet import conventions
from mcp_fleet.endpoints import EndpointEntry, HttpEndpoint
from mcp_fleet.model import ServerSpec, SessionMode
from mcp_fleet.router import jsonrpc
from mcp_fleet.router.activator import DEFAULT_ACTIVATION_TIMEOUT, ListCache, catalog_tools
from mcp_fleet.router.attach import connect_endpoint, failure_reason
from mcp_fleet.router.attachment import read_lists
from mcp_fleet.router.backend import BackendError, BackendSession
from mcp_fleet.router.clients import NEEDS, REFRESH_ON, ClientHub
from mcp_fleet.router.jsonrpc import JsonObject
from mcp_fleet.router.session import RouterSession
from mcp_fleet.router.session_launcher import (
    DEFAULT_MAX_INSTANCES,
    SessionInstance,
    SessionLauncher,
    instance_name,
    stop_quietly,
)
from mcp_fleet.router.table import ServerLists

log = logging.getLogger(__name__)

#: The gateway's "over a limit" code (``gateway.identity.LIMITED``), an HTTP 429 in spirit.
LIMITED: Final = -32029
#: Seconds between sweeps for instances no session holds (after a crash, a failed stop).
SWEEP_INTERVAL_SECONDS: Final = 60.0
#: Seconds the router's shutdown waits for its per-client instances to stop.
STOP_WAIT_SECONDS: Final = 20.0
NEEDS_UP: Final = "per-client sessions need mcp-fleet up"


def is_per_client(spec: ServerSpec) -> bool:
    """Does ``spec`` give each client session an instance of its own?"""
    return spec.entry is not None and spec.entry.sessions is SessionMode.PER_CLIENT


@dataclass
class _Server:
    """What the router keeps of one per-client server."""

    spec: ServerSpec
    lists: ServerLists | None
    source: str  # "cache", "catalog", "server" or "none"
    #: Published HTTP endpoint: each session gets a connection of its own.
    endpoint: HttpEndpoint | None = None
    discovery: asyncio.Task[None] | None = None
    #: Lists read from a live instance during this run (the cache is current).
    fresh: bool = False


@dataclass(eq=False)
class _Lease:
    """One client session's instance of one per-client server."""

    server: str
    name: str
    #: None for an instance started only to learn the server's lists.
    session: RouterSession | None
    ready: asyncio.Future[BackendSession]
    backend: BackendSession | None = None
    instance: SessionInstance | None = None
    task: asyncio.Task[None] | None = None
    ended: bool = False


class _Owner:
    """The ``BackendListener`` of one instance: everything it says goes to its session only."""

    def __init__(self, manager: PerClient, lease: _Lease) -> None:
        self.manager = manager
        self.lease = lease

    def backend_notification(self, backend: BackendSession, method: str, msg: JsonObject) -> None:
        session = self.lease.session
        if session is None or session.closed or not session.initialized:
            return
        params = msg.get("params")
        if method == "notifications/message":
            level = params.get("level") if isinstance(params, dict) else None
            if session.wants_log(level):
                session.channel.send(jsonrpc.dumps(msg))
        elif method in REFRESH_ON:
            return  # the advertised lists are the server's, not one session's
        elif method == "notifications/cancelled":
            rid = params.get("requestId") if isinstance(params, dict) else None
            target = backend.server_requests.pop(rid, None) if jsonrpc.valid_id(rid) else None
            if target is not None and type(target[1]) is int:
                reason = params.get("reason") if isinstance(params, dict) else None
                session.cancel_outgoing(target[1], reason)
        else:
            session.channel.send(jsonrpc.dumps(msg))

    def backend_request(self, backend: BackendSession, msg: JsonObject) -> None:
        session = self.lease.session
        method = msg.get("method")
        needed = NEEDS.get(method) if isinstance(method, str) else None
        if session is None or session.closed or not session.has_capability(needed):
            why = f"the client does not support {needed}" if needed else "no client is connected"
            backend.respond_error(msg["id"], jsonrpc.METHOD_NOT_FOUND, why)
            return
        _, related = ClientHub._caller_of(backend, needed)
        session.forward_server_request(backend, msg, related=related)

    def backend_closed(self, backend: BackendSession, reason: str) -> None:
        self.manager._lost(self.lease, reason)


class PerClient:
    """The router's per-client servers and their sessions' instances (module docstring)."""

    def __init__(
        self,
        *,
        launcher: SessionLauncher | None = None,
        max_instances: int = DEFAULT_MAX_INSTANCES,
        timeout: float = DEFAULT_ACTIVATION_TIMEOUT,
        attach_timeout: float = conventions.DEFAULT_PROBE_TIMEOUT_SECONDS,
        on_change: Callable[[], None] | None = None,
        sweep_interval: float = SWEEP_INTERVAL_SECONDS,
    ) -> None:
        self.launcher = launcher
        self.max_instances = max(1, max_instances)
        self.timeout = timeout
        self.attach_timeout = attach_timeout
        self.on_change = on_change
        self.sweep_interval = sweep_interval
        self.cache: ListCache | None = None
        self._servers: dict[str, _Server] = {}
        self._leases: dict[RouterSession, dict[str, _Lease]] = {}
        #: Every instance started and not yet stopped, by name (what the cap counts).
        self._live: dict[str, _Lease] = {}
        self._chores: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    def __contains__(self, server: object) -> bool:
        return server in self._servers

    def __len__(self) -> int:
        return len(self._servers)

    def _session_instances(self) -> int:
        """Instances that client sessions hold (stopping ones included): what the cap counts.

        An instance started only to learn a server's lists is not one: at most
        one runs per server, and it is stopped once read. Counting it let the
        discovery of a new server, still stopping, refuse the first session's
        first call under ``--max-session-instances 1``.
        """
        return sum(1 for lease in self._live.values() if lease.session is not None)

    @property
    def running(self) -> int:
        """Instances started and not yet stopped."""
        return len(self._live)

    # -- what the router reads ---------------------------------------------------

    def ready(self, session: RouterSession, server: str) -> BackendSession | None:
        """The session's running instance of ``server``, if it has one (no waiting)."""
        leases = self._leases.get(session)
        lease = leases.get(server) if leases is not None else None
        return lease.backend if lease is not None else None

    def backends_of(self, session: RouterSession) -> list[BackendSession]:
        """Every running instance of ``session``."""
        leases = self._leases.get(session) or {}
        return [lease.backend for lease in leases.values() if lease.backend is not None]

    def advertised(self) -> Iterator[tuple[ServerSpec, ServerLists]]:
        for rec in self._servers.values():
            if rec.lists is not None:
                yield rec.spec, rec.lists

    def discovering(self) -> bool:
        """True while an instance runs only so that the server's lists are learned."""
        return any(
            r.discovery is not None and not r.discovery.done() for r in self._servers.values()
        )

    def describe(self) -> JsonObject:
        counts: dict[str, int] = {}
        for lease in self._live.values():
            counts[lease.server] = counts.get(lease.server, 0) + 1
        return {
            "max_instances": self.max_instances,
            "running": len(self._live),
            "launcher": self.launcher is not None,
            "servers": {
                name: {"lists_from": rec.source, "instances": counts.get(name, 0)}
                for name, rec in sorted(self._servers.items())
            },
        }

    # -- following the controller --------------------------------------------------

    def start(self) -> None:
        """Begin sweeping for instances no session holds (the first sweep runs now)."""
        if self.launcher is not None and self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep_loop(), name="per-client-sweep"
            )

    async def update(
        self,
        specs: Mapping[str, ServerSpec],
        published: Mapping[str, EndpointEntry],
        cache_dir: Path | None,
    ) -> None:
        """Take the current per-client servers: ``specs`` the controller runs on demand
        (never shared), ``published`` those it publishes as routable (remote ones)."""
        if cache_dir is not None and (self.cache is None or self.cache.directory != cache_dir):
            self.cache = ListCache(cache_dir)
        wanted = {**{n: e.spec for n, e in published.items()}, **specs}
        changed = False
        for name in [n for n in self._servers if n not in wanted]:
            rec = self._servers.pop(name)
            changed = True
            if rec.discovery is not None:
                rec.discovery.cancel()
            for lease in [lease for lease in self._live.values() if lease.server == name]:
                self._end(lease, "removed from the fleet")
        new = [n for n in sorted(wanted) if n not in self._servers]
        loaded: dict[str, ServerLists | None] = {}
        cache = self.cache
        if new and cache is not None:
            loaded = await asyncio.to_thread(lambda: {n: cache.load(n) for n in new})
        for name, spec in wanted.items():
            entry = published.get(name)
            endpoint = entry.endpoint if entry is not None else None
            http = endpoint if isinstance(endpoint, HttpEndpoint) else None
            known = self._servers.get(name)
            if known is not None:
                known.spec, known.endpoint = spec, http
                continue
            changed = True
            lists, source = loaded.get(name), "cache"
            if lists is None:
                tools = catalog_tools(spec)
                lists, source = (
                    (ServerLists(name, tools=tools), "catalog") if tools else (None, "none")
                )
            rec = self._servers[name] = _Server(spec, lists, source, endpoint=http)
            if lists is None:
                if self.launcher is None and http is None:
                    log.warning(
                        "server %s: per-client, with no cached lists and no catalog `tools`;"
                        " nothing to list (%s)", name, NEEDS_UP,
                    )  # fmt: skip
                    continue
                rec.discovery = asyncio.get_running_loop().create_task(
                    self._discover(rec), name=f"discover:{name}"
                )
                rec.discovery.add_done_callback(lambda _t: self._changed())
        if changed:
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def _discover(self, rec: _Server) -> None:
        name = rec.spec.name
        log.info("server %s: per-client with no cached lists; starting it once to list it", name)
        try:
            lease = self._open(rec, None)
        except BackendError as exc:
            log.warning("server %s: could not learn its lists: %s", name, exc.message)
            return
        try:
            backend = await asyncio.shield(lease.ready)
            await self._learn(rec, backend)
        except BackendError as exc:
            log.warning("server %s: could not learn its lists: %s", name, exc.message)
        finally:
            self._end(lease, "lists read")

    async def _learn(self, rec: _Server, backend: BackendSession) -> None:
        lists = await read_lists(backend, timeout=self.attach_timeout)
        name = rec.spec.name
        rec.fresh = True
        if self._servers.get(name) is not rec:
            return
        old = rec.lists
        rec.lists, rec.source = lists, "server"
        if old is None or not old.same_items(lists):
            self._changed()
        if self.cache is not None:
            cache, config_hash = self.cache, rec.spec.config_hash()
            try:
                await asyncio.to_thread(cache.save, lists, config_hash=config_hash)
            except (OSError, ValueError) as exc:
                log.warning("server %s: cannot write its list cache: %s", name, exc)

    # -- a session's instances -------------------------------------------------------

    async def backend_for(self, session: RouterSession, server: str) -> BackendSession:
        """The session's instance of ``server``, started now if it has none; bounded wait.

        Raises ``BackendError`` when it cannot be started (no launcher, the
        cap, a start that fails or times out).
        """
        leases = self._leases.get(session)
        lease = leases.get(server) if leases is not None else None
        if lease is None:
            rec = self._servers.get(server)
            if rec is None:
                raise _not_connected(server)
            if session.closed or self._closed:
                raise _unavailable(server, "the client session has ended")
            lease = self._open(rec, session)
            self._leases.setdefault(session, {})[server] = lease
        return await asyncio.shield(lease.ready)

    def _open(self, rec: _Server, session: RouterSession | None) -> _Lease:
        server = rec.spec.name
        if self.launcher is None and rec.endpoint is None:
            raise _needs_up(server)
        if session is not None and self._session_instances() >= self.max_instances:
            raise _over_limit(server, self.max_instances)
        ready: asyncio.Future[BackendSession] = asyncio.get_running_loop().create_future()
        ready.add_done_callback(_retrieve)
        lease = _Lease(server, instance_name(server), session, ready)
        self._live[lease.name] = lease
        lease.task = asyncio.get_running_loop().create_task(
            self._start(rec, lease), name=f"per-client:{lease.name}"
        )
        return lease

    async def _start(self, rec: _Server, lease: _Lease) -> None:
        server = lease.server
        backend: BackendSession | None = None
        try:
            async with asyncio.timeout(self.timeout):
                lease.instance = await self._launch(rec, lease.name)
                backend = BackendSession(
                    server, lease.instance.stream, _Owner(self, lease),
                    instance_id=lease.instance.instance_id,
                    call_timeout=_call_timeout(rec.spec),
                    client_version=_fleet_version, close_stream=False,
                )  # fmt: skip
                await backend.start(timeout=self.attach_timeout)
                await self._restore(lease, backend)
        except Exception as exc:
            reason = await _why_failed(exc, lease.instance, self.timeout)
            log.warning("server %s: per-client instance %s failed: %s", server, lease.name, reason)
            self._fail(
                lease, backend, _unavailable(server, f"per-client instance failed: {reason}")
            )
            return
        except asyncio.CancelledError:
            self._fail(lease, backend, _unavailable(server, "router stopped"))
            raise
        if lease.ended:
            self._fail(lease, backend, _unavailable(server, "the client session has ended"))
            return
        lease.backend = backend
        lease.ready.set_result(backend)
        log.info("server %s: started %s for a client session", server, lease.name)
        if lease.session is not None and not rec.fresh and self._servers.get(server) is rec:
            rec.fresh = True
            self._chore(self._learn_quietly(rec, backend))

    async def _launch(self, rec: _Server, name: str) -> SessionInstance:
        if rec.endpoint is not None:  # a server over HTTP: a connection (an MCP session) of its own
            endpoint = replace(rec.endpoint, instance_id=name)
            stream = await connect_endpoint(endpoint)
            return SessionInstance(name=name, server=rec.spec.name, stream=stream, instance_id=name)
        assert self.launcher is not None
        return await self.launcher.launch(rec.spec, name)

    async def _restore(self, lease: _Lease, backend: BackendSession) -> None:
        """A new instance gets the log level its session asked for."""
        session = lease.session
        level = session.log_level if session is not None else None
        if level and "logging" in backend.capabilities:
            try:
                await backend.call("logging/setLevel", {"level": level})
            except BackendError as exc:
                log.debug("server %s: setting the log level failed: %s", lease.server, exc)

    async def _learn_quietly(self, rec: _Server, backend: BackendSession) -> None:
        try:
            await self._learn(rec, backend)
        except BackendError as exc:
            log.debug("server %s: listing a per-client instance failed: %s", rec.spec.name, exc)

    def _fail(self, lease: _Lease, backend: BackendSession | None, error: BackendError) -> None:
        """A start that did not make it: the waiting calls get ``error``, the instance goes."""
        self._forget(lease)
        if not lease.ready.done():
            lease.ready.set_exception(error)
        self._chore(self._stop(lease, backend, error.message))

    def _forget(self, lease: _Lease) -> None:
        """Later calls of the session start a fresh instance instead of this one."""
        lease.ended = True
        session = lease.session
        leases = self._leases.get(session) if session is not None else None
        if leases is not None and leases.get(lease.server) is lease:
            del leases[lease.server]
            if not leases and session is not None:
                del self._leases[session]

    def _lost(self, lease: _Lease, reason: str) -> None:
        """The instance's stream ended: its calls have failed; the next call starts another."""
        if lease.ended:
            return
        log.warning("server %s: per-client instance %s lost (%s)", lease.server, lease.name, reason)
        self._end(lease, reason)

    def _end(self, lease: _Lease, reason: str) -> None:
        """Stop one instance (in the background); a start still under way stops when done."""
        if lease.ended:
            return
        self._forget(lease)
        lease.backend = None
        if lease.task is not None and not lease.task.done():
            return  # ``_start`` sees ``ended`` and stops what it started
        backend = (
            lease.ready.result() if lease.ready.done() and not lease.ready.exception() else None
        )
        self._chore(self._stop(lease, backend, reason))

    async def _stop(self, lease: _Lease, backend: BackendSession | None, reason: str) -> None:
        try:
            if backend is not None:
                await backend.aclose(reason)
            if lease.instance is not None:
                await stop_quietly(lease.instance)
                log.info("server %s: stopped %s (%s)", lease.server, lease.name, reason)
        finally:
            self._live.pop(lease.name, None)

    def session_ended(self, session: RouterSession) -> None:
        """The client session is gone: stop its instances."""
        for lease in list((self._leases.get(session) or {}).values()):
            self._end(lease, "client session ended")

    def _chore(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    # -- sweeping and shutdown -------------------------------------------------------

    async def _sweep_loop(self) -> None:
        assert self.launcher is not None
        while True:
            try:
                stopped = await self.launcher.sweep(self._live.__contains__)
                if stopped:
                    log.info("stopped %d per-client instance(s) no client session holds", stopped)
            except Exception:  # a sweep must never end the router
                log.exception("sweeping per-client instances failed")
            await asyncio.sleep(self.sweep_interval)

    async def aclose(self) -> None:
        """Stop every instance (the router is stopping) and wait for them, bounded."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for rec in self._servers.values():
            if rec.discovery is not None:
                rec.discovery.cancel()
        for lease in list(self._live.values()):
            self._end(lease, "router stopped")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_WAIT_SECONDS
        while True:  # a start under way ends in a stop of its own: wait for that too
            pending = {t for t in self._chores if not t.done()}
            pending |= {
                lease.task for lease in self._live.values()
                if lease.task is not None and not lease.task.done()
            }  # fmt: skip
            if not pending:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                for task in pending:
                    task.cancel()
                break
            await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        if self.launcher is not None:
            await self.launcher.aclose()


async def _why_failed(exc: Exception, instance: SessionInstance | None, timeout: float) -> str:
    """Why an instance did not start, with its last words when it left some."""
    reason = f"did not start within {timeout:g} s"
    if not isinstance(exc, TimeoutError):
        reason = failure_reason(exc)
    if instance is not None:
        words = await instance.last_words()
        if words and words not in reason:
            reason += f" (its last words: {words})"
    return reason


def _not_connected(server: str) -> BackendError:
    return BackendError(
        server, jsonrpc.BACKEND_UNAVAILABLE, f"server {server!r} is not connected",
        data={"server": server, "reason": "not connected"},
    )  # fmt: skip


def _needs_up(server: str) -> BackendError:
    return BackendError(
        server, jsonrpc.BACKEND_UNAVAILABLE,
        f"server {server!r} runs one instance per client session: {NEEDS_UP}",
        data={"server": server, "reason": NEEDS_UP},
    )  # fmt: skip


def _over_limit(server: str, max_instances: int) -> BackendError:
    return BackendError(
        server, LIMITED,
        f"server {server!r} runs one instance per client session, and"
        f" {max_instances} per-client instances already run (the limit);"
        " end a session or raise the limit",
        data={"server": server, "reason": "per-client instance limit", "status": 429,
              "limit": "max-session-instances", "max": max_instances},
    )  # fmt: skip


def _unavailable(server: str, reason: str) -> BackendError:
    return BackendError(
        server, jsonrpc.BACKEND_UNAVAILABLE, f"server {server!r} is unavailable: {reason}",
        data={"server": server, "reason": reason},
    )  # fmt: skip


def _call_timeout(spec: ServerSpec) -> float:
    entry = spec.entry
    if entry is not None and entry.call_timeout_seconds:
        return float(entry.call_timeout_seconds)
    return conventions.DEFAULT_CALL_TIMEOUT_SECONDS


def _retrieve(future: asyncio.Future[BackendSession]) -> None:
    """Mark a failed start's error as seen: its waiters may all have been cancelled."""
    if not future.cancelled():
        future.exception()
