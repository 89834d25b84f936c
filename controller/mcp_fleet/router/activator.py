"""The activator: how the router serves on-demand servers while they are cold.

An on-demand server (``lifecycle: on-demand``) runs only while it is used.
The controller publishes every enabled one (``EndpointTable.on_demand``),
warm or cold; this module keeps, for each, what the router advertises while
no instance runs, and holds the calls that arrive meanwhile, as Knative's
activator does for a service scaled to zero:

- **Lists while cold.** The lists of the last run, cached in
  ``<fleet>/.state/cache/<server>.json`` so they survive restarts, else the
  catalog entry's ``tools``. A server with neither is started once, as if a
  call wanted it, to learn its lists (then it scales to zero again). Warm
  and cold advertise the same lists, so going cold or warm sends clients no
  ``list_changed``; only lists that really changed do.
- **The first call.** A call for a cold server asks for it
  (``Demand.want`` wakes the controller) and waits, bounded by
  ``timeout``, for the router to attach the new instance; it is then
  forwarded as usual. Concurrent first calls all wait on the same start: the
  controller plans one instance, whatever the number of callers.
- **Idle.** ``activity`` tells the controller, when it plans, which servers
  have calls in flight or waiting and how long each has been idle;
  ``retire`` is asked just before an idle server is stopped and agrees only
  when no call is in flight or waiting, after which new calls wait for the
  next instance instead of reaching the one being stopped.

Cold starts are counted in the gateway's metrics when that module (and
prometheus_client) is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

from mcp_fleet import conventions
from mcp_fleet.config.atomic import atomic_write
from mcp_fleet.endpoints import Activity, Demand
from mcp_fleet.model import ServerSpec
from mcp_fleet.router import jsonrpc
from mcp_fleet.router.backend import BackendError, BackendSession
from mcp_fleet.router.jsonrpc import JsonObject
from mcp_fleet.router.table import ServerLists

log = logging.getLogger(__name__)

CACHE_VERSION: Final = 1
#: How long a call waits for a cold server, unless the router is told otherwise.
DEFAULT_ACTIVATION_TIMEOUT: Final = conventions.DEFAULT_PROBE_TIMEOUT_SECONDS + 10.0
#: A retired backend whose instance is still published after this long is re-attached
#: (its stop failed): a waiting call must not wait for a stop that will not come.
RETIRED_GRACE_SECONDS: Final = 5.0


class ActivatorHost(Protocol):
    """What the activator needs from the router."""

    def backend(self, server: str) -> BackendSession | None:
        """The attached backend of ``server``, if any."""

    def reattach(self, server: str) -> None:
        """Attach to ``server`` again now if it is published but not attached."""

    def release_backend(self, server: str) -> bool:
        """Detach ``server`` unless a call is in flight; True when detached (or none)."""


@dataclass
class _Standby:
    """What the router keeps of one on-demand server."""

    spec: ServerSpec
    #: Advertised while cold; None until something is known (see ``source``).
    lists: ServerLists | None
    source: str  # "cache", "catalog", "server" or "none"
    waiting: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    #: ``time.monotonic()`` of the first call waiting for the current start.
    wanted_since: float | None = None
    #: ``time.monotonic()`` of the last time a waiting call was let go.
    last_used: float = 0.0
    discovery: asyncio.Task[None] | None = None


def catalog_tools(spec: ServerSpec) -> tuple[JsonObject, ...]:
    """The catalog entry's ``tools`` as MCP tool definitions (Docker's catalog form too).

    Docker catalogs give ``{name, description, arguments: [{name, type, desc,
    optional}]}``; an entry with ``inputSchema`` is taken as it is.
    """
    entry = spec.entry
    if entry is None:
        return ()
    out: list[JsonObject] = []
    for raw in entry.tools:
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            continue
        tool: JsonObject = {"name": name}
        description = raw.get("description")
        if isinstance(description, str):
            tool["description"] = description
        schema = raw.get("inputSchema")
        tool["inputSchema"] = (
            dict(schema) if isinstance(schema, Mapping) else _schema(raw.get("arguments"))
        )
        out.append(tool)
    return tuple(out)


def _schema(arguments: Any) -> JsonObject:
    properties: JsonObject = {}
    required: list[str] = []
    for arg in arguments if isinstance(arguments, list) else ():
        if not isinstance(arg, Mapping) or not isinstance(arg.get("name"), str):
            continue
        prop: JsonObject = {"type": str(arg.get("type") or "string")}
        desc = arg.get("desc") or arg.get("description")
        if isinstance(desc, str):
            prop["description"] = desc
        if isinstance(arg.get("items"), Mapping):
            prop["items"] = dict(arg["items"])
        properties[arg["name"]] = prop
        if not arg.get("optional"):
            required.append(arg["name"])
    schema: JsonObject = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


class ListCache:
    """The lists of on-demand servers, one JSON file each under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, server: str) -> Path:
        if not conventions.SERVER_NAME_RE.match(server):
            raise ValueError(f"not a server name: {server!r}")
        return self.directory / f"{server}.json"

    def load(self, server: str) -> ServerLists | None:
        """The cached lists of ``server``, or None (no file, or one we cannot read)."""
        try:
            doc = orjson.loads(self.path(server).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("server %s: ignoring its list cache: %s", server, exc)
            return None
        if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION:
            return None

        def items(key: str) -> tuple[JsonObject, ...]:
            value = doc.get(key)
            return tuple(i for i in value if isinstance(i, dict)) if isinstance(value, list) else ()

        return ServerLists(
            server=server,
            tools=items("tools"),
            prompts=items("prompts"),
            resources=items("resources"),
            templates=items("resourceTemplates"),
        )

    def save(self, lists: ServerLists, *, config_hash: str) -> None:
        """Write the lists atomically (readers never see half a file)."""
        doc = {
            "version": CACHE_VERSION,
            "server": lists.server,
            "config_hash": config_hash,
            "saved_at": time.time(),
            "tools": lists.tools,
            "prompts": lists.prompts,
            "resources": lists.resources,
            "resourceTemplates": lists.templates,
        }
        atomic_write(self.path(lists.server), orjson.dumps(doc), mode=0o600)


class Activator:
    """The router's on-demand servers: cold lists, waiting calls, activity (module docstring)."""

    def __init__(
        self,
        host: ActivatorHost,
        demand: Demand,
        *,
        timeout: float = DEFAULT_ACTIVATION_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        on_discovered: Callable[[], None] | None = None,
    ) -> None:
        self.host = host
        self.on_discovered = on_discovered
        self.demand = demand
        self.timeout = timeout
        self.clock = clock
        self.cache: ListCache | None = None
        self._standby: dict[str, _Standby] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._cold_start: Callable[[str, float], None] | None = None

    def __contains__(self, server: object) -> bool:
        return server in self._standby

    def spec(self, server: str) -> ServerSpec | None:
        sb = self._standby.get(server)
        return sb.spec if sb is not None else None

    def advertised(self) -> Iterator[tuple[ServerSpec, ServerLists]]:
        """Every on-demand server with known lists, and those lists."""
        for sb in self._standby.values():
            if sb.lists is not None:
                yield sb.spec, sb.lists

    def discovering(self) -> bool:
        """True while a server is being started only to learn its lists."""
        return any(
            sb.discovery is not None and not sb.discovery.done() for sb in self._standby.values()
        )

    def describe(self, server: str) -> JsonObject:
        sb = self._standby[server]
        return {"on_demand": True, "lists_from": sb.source, "waiting": sb.waiting}

    # -- following the controller ---------------------------------------------

    async def update(self, specs: Mapping[str, ServerSpec], cache_dir: Path | None) -> None:
        """Take the controller's current set of on-demand servers."""
        if cache_dir is not None and (self.cache is None or self.cache.directory != cache_dir):
            self.cache = ListCache(cache_dir)
        for name in [n for n in self._standby if n not in specs]:
            sb = self._standby.pop(name)
            if sb.discovery is not None:
                sb.discovery.cancel()
            sb.arrived.set()  # waiting calls see that it is gone
        new = [name for name in sorted(specs) if name not in self._standby]
        cache = self.cache
        loaded: dict[str, ServerLists | None] = {}
        if new and cache is not None:  # no thread hop on the cold-start path (nothing new)
            loaded = await asyncio.to_thread(lambda: {n: cache.load(n) for n in new})
        for name, spec in specs.items():
            known = self._standby.get(name)
            if known is not None:
                known.spec = spec
                continue
            lists, source = loaded.get(name), "cache"
            if lists is None:
                tools = catalog_tools(spec)
                lists, source = ServerLists(name, tools=tools), "catalog"
                if not tools:
                    lists, source = None, "none"
            sb = self._standby[name] = _Standby(spec, lists, source)
            if lists is None:
                sb.discovery = asyncio.get_running_loop().create_task(
                    self._discover(name), name=f"discover:{name}"
                )
                sb.discovery.add_done_callback(self._discovery_done)
        if self._standby and self._cold_start is None:
            self._cold_start = _metrics_hook()

    def _discovery_done(self, _task: asyncio.Task[None]) -> None:
        if self.on_discovered is not None:
            self.on_discovered()

    async def _discover(self, server: str) -> None:
        """Start a server whose lists nobody knows yet, once, to learn them."""
        log.info("server %s: on demand with no cached lists; starting it once to list it", server)
        try:
            await self.wait(server)
        except BackendError as exc:
            log.warning("server %s: could not learn its lists: %s", server, exc.message)

    # -- calls for cold servers ---------------------------------------------

    async def wait(self, server: str, *, timeout: float | None = None) -> BackendSession:
        """The attached backend of ``server``, starting it if it is cold; bounded wait.

        Raises ``BackendError`` when it does not come up within the timeout.
        """
        backend = self.host.backend(server)
        if backend is not None:
            return backend
        sb = self._standby.get(server)
        if sb is None:
            raise BackendError(
                server, jsonrpc.BACKEND_UNAVAILABLE, f"server {server!r} is not connected",
                data={"server": server, "reason": "not connected"},
            )  # fmt: skip
        limit = self.timeout if timeout is None else timeout
        deadline = self.clock() + limit
        sb.waiting += 1
        if sb.wanted_since is None:
            sb.wanted_since = self.clock()
        try:
            self.demand.want(server)
            self.host.reattach(server)
            while True:
                arrived = sb.arrived
                backend = self.host.backend(server)
                if backend is not None:
                    return backend
                if self._standby.get(server) is not sb:
                    raise BackendError(
                        server, jsonrpc.BACKEND_UNAVAILABLE,
                        f"server {server!r} was removed from the fleet",
                        data={"server": server, "reason": "removed"},
                    )  # fmt: skip
                remaining = deadline - self.clock()
                if remaining <= 0:
                    raise BackendError(
                        server, jsonrpc.BACKEND_UNAVAILABLE,
                        f"on-demand server {server!r} did not start within {limit:g} s"
                        " (see mcp-fleet status)",
                        data={"server": server, "reason": "start timed out"},
                    )  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), timeout=min(remaining, 1.0))
                if not arrived.is_set():
                    self.host.reattach(server)  # a failed attach retries without its backoff
        finally:
            sb.waiting -= 1
            sb.last_used = self.clock()
            if sb.waiting == 0 and self.host.backend(server) is None:
                sb.wanted_since = None  # gave up: the next call times a fresh start

    def attached(self, server: str, backend: BackendSession) -> None:
        """The router attached ``server``: let the waiting calls go."""
        sb = self._standby.get(server)
        if sb is None:
            return
        sb.arrived.set()
        sb.arrived = asyncio.Event()
        if sb.wanted_since is not None:
            seconds = self.clock() - sb.wanted_since
            sb.wanted_since = None
            log.info("server %s: cold start took %.3f s", server, seconds)
            if self._cold_start is not None:
                with contextlib.suppress(Exception):
                    self._cold_start(server, seconds)

    def learned(self, server: str, lists: ServerLists) -> None:
        """Fresh lists from a running instance: advertise them while cold, and cache them."""
        sb = self._standby.get(server)
        if sb is None:
            return
        same = sb.lists is not None and sb.lists.same_items(lists)
        unchanged = same and sb.source in ("cache", "server")
        sb.lists, sb.source = lists, "server"
        if unchanged or self.cache is None:
            return
        cache, config_hash = self.cache, sb.spec.config_hash()
        task = asyncio.get_running_loop().create_task(
            self._write(cache, lists, config_hash), name=f"cache:{server}"
        )
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, cache: ListCache, lists: ServerLists, config_hash: str) -> None:
        try:
            await asyncio.to_thread(cache.save, lists, config_hash=config_hash)
        except (OSError, ValueError) as exc:
            log.warning("server %s: cannot write its list cache: %s", lists.server, exc)

    # -- what the controller asks (``DemandSource``) -------------------------

    def activity(self) -> Mapping[str, Activity]:
        now = self.clock()
        out: dict[str, Activity] = {}
        for name, sb in self._standby.items():
            backend = self.host.backend(name)
            if backend is None and not sb.waiting:
                continue
            last = max(sb.last_used, backend.last_activity if backend is not None else 0.0)
            out[name] = Activity(
                idle_seconds=max(0.0, now - last),
                inflight=backend.pending_count if backend is not None else 0,
                waiting=sb.waiting,
            )
        return out

    def retire(self, server: str) -> bool:
        sb = self._standby.get(server)
        if sb is not None and sb.waiting:
            return False
        return self.host.release_backend(server)

    async def aclose(self) -> None:
        for sb in self._standby.values():
            if sb.discovery is not None:
                sb.discovery.cancel()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)


def _metrics_hook() -> Callable[[str, float], None] | None:
    """``metrics.cold_start`` (and its span, when tracing) when the gateway's metrics can be
    loaded, else None."""
    try:
        from mcp_fleet.gateway import metrics, tracing
    except ImportError:
        return None

    def record(server: str, seconds: float) -> None:
        metrics.cold_start(server, seconds=seconds)
        tracing.cold_start(server, seconds)

    return record
