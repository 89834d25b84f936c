"""On-demand MCPServers in a cluster: the router tells the operator they are used.

In ``mcp-fleet up`` the controller and the router share a process and talk
through ``endpoints.Demand``. In a cluster they do not: the operator scales
an on-demand MCPServer to zero once its ``mcp-fleet.dev/last-activity``
annotation (or its creation) is older than ``idleTimeout``, and to
``spec.replicas`` as soon as the annotation is recent again. So the router
speaks through that annotation, and ``KubeDemand`` is the ``Demand`` that
does it:

- ``want(server)`` (a call waits for a cold server) stamps the annotation
  with the current time at once, which wakes the operator (an annotation
  change is an event it reconciles) and makes it plan the replicas again;
- while calls flow to a warm on-demand server, a background loop reads the
  router's ``activity`` once a second and stamps the annotation again, at
  most once per ``max(idleTimeout / 4, 15 s)`` per server, so the operator
  never sees it idle while it is used, and a busy server costs the API
  server one small write every few minutes.

Every write is a JSON merge patch of ``metadata.annotations`` alone, never
the spec, so it cannot conflict with whoever owns the spec (``kubectl
apply``, GitOps) and needs only ``patch`` on ``mcpservers``. Writes run in
background tasks: a call never waits for the API server, and a failed
write is logged and retried with backoff while the server is still wanted,
never failing a call. Several router replicas each write; the operator only
reads the newest time, so that is harmless.

The throttle is a small pure class (``RefreshThrottle``) with an injected
clock, so its rules are tested without an API server or real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from mcp_fleet import conventions
from mcp_fleet.endpoints import Demand

log = logging.getLogger(__name__)

#: The shortest time between two refreshes of one server's annotation.
MIN_REFRESH_SECONDS: Final = 15.0
#: How often the router's activity is read.
TICK_SECONDS: Final = 1.0
#: Backoff after a failed write: first retry, and the longest wait between retries.
RETRY_INITIAL_SECONDS: Final = 1.0
RETRY_MAX_SECONDS: Final = 30.0
#: The field manager the router's writes are recorded under.
FIELD_MANAGER: Final = "mcp-fleet-router"


@dataclass(frozen=True, slots=True)
class Target:
    """The MCPServer behind one on-demand server name, as the follower last saw it."""

    namespace: str
    name: str
    uid: str
    idle_timeout: float

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.namespace, self.name, self.uid)


class AnnotationPatcher(Protocol):
    """Merge-patch ``annotations`` into an MCPServer's metadata (raises on failure)."""

    async def __call__(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None: ...


def refresh_interval(idle_timeout: float, *, minimum: float = MIN_REFRESH_SECONDS) -> float:
    """How often a used server's annotation is refreshed: a quarter of its idle timeout,
    at least ``minimum`` seconds."""
    return max(idle_timeout / 4.0, minimum)


def rfc3339(moment: datetime) -> str:
    """``2026-05-01T12:00:00Z``: the annotation's format (UTC, seconds)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Record:
    #: Clock time the last successful write was started (its stamp covers uses until then).
    stamped: float | None = None
    failures: int = 0
    retry_at: float = 0.0


@dataclass
class RefreshThrottle:
    """When an MCPServer's last-activity annotation is due a new stamp (pure, clock given).

    A server is due when something needs it (a waiting call, a call in
    flight, or a use since the last stamp; before any stamp, a use within
    the refresh interval) and the last stamp is older than its refresh
    interval; never while a failed write is backing off.
    """

    minimum: float = MIN_REFRESH_SECONDS
    records: dict[Any, _Record] = field(default_factory=dict)

    def due(
        self,
        key: Any,
        *,
        now: float,
        idle_timeout: float,
        needed: bool = False,
        last_use: float | None = None,
    ) -> bool:
        rec = self.records.get(key) or _Record()
        if now < rec.retry_at:
            return False
        interval = refresh_interval(idle_timeout, minimum=self.minimum)
        if rec.stamped is None:  # never stamped by this router: only a recent use counts
            return needed or (last_use is not None and now - last_use < interval)
        used = needed or (last_use is not None and last_use > rec.stamped)
        return used and now - rec.stamped >= interval

    def stamped(self, key: Any, *, at: float) -> None:
        """A write started at ``at`` succeeded."""
        rec = self.records.setdefault(key, _Record())
        rec.stamped, rec.failures, rec.retry_at = at, 0, 0.0

    def failed(self, key: Any, *, now: float) -> float:
        """A write failed at ``now``; returns the seconds until the next attempt may run."""
        rec = self.records.setdefault(key, _Record())
        rec.failures += 1
        delay = min(RETRY_MAX_SECONDS, RETRY_INITIAL_SECONDS * 2.0 ** (rec.failures - 1))
        rec.retry_at = now + delay
        return delay

    def forget(self, keep: set[Any]) -> None:
        """Drop the records of servers no longer followed."""
        for key in [k for k in self.records if k not in keep]:
            del self.records[key]


class KubeDemand(Demand):
    """``Demand`` for a router in a cluster: wants and activity become annotation writes.

    ``targets`` maps a server name to its MCPServer (None: not an on-demand
    server the router follows). ``patch`` defaults to a merge patch through
    the cluster configuration ``run`` loads.
    """

    def __init__(
        self,
        targets: Callable[[str], Target | None],
        *,
        patch: AnnotationPatcher | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        min_refresh: float = MIN_REFRESH_SECONDS,
        tick: float = TICK_SECONDS,
    ) -> None:
        super().__init__()
        self.targets = targets
        self.clock = clock
        self.wall_clock = wall_clock
        self.tick = tick
        self.throttle = RefreshThrottle(minimum=min_refresh)
        self._patch = patch
        self._patch_ready = asyncio.Event()
        if patch is not None:
            self._patch_ready.set()
        self._writes: dict[tuple[str, str, str], asyncio.Task[None]] = {}

    # -- what the activator calls ------------------------------------------------------

    def want(self, server: str) -> None:
        """A call waits for ``server``: wake local listeners and stamp its MCPServer now."""
        super().want(server)
        self._consider(server, needed=True)

    # -- the refresh loop ---------------------------------------------------------------

    def stamp_used(self) -> None:
        """Stamp every on-demand server the router uses whose stamp is due (one tick)."""
        now = self.clock()
        activity = self.activity()
        for server, act in activity.items():
            needed = act.inflight > 0 or act.waiting > 0
            self._consider(server, needed=needed, last_use=now - act.idle_seconds)
        # Cold and unwanted servers (and deleted ones) need no record: their next want
        # stamps at once anyway.
        held = {t.key for t in map(self.targets, activity) if t is not None}
        self.throttle.forget(held | set(self._writes))

    async def run(self) -> None:
        """Refresh once per tick until cancelled (cluster credentials loaded here)."""
        client = None
        if self._patch is None:
            client, self._patch = await _cluster_patcher()
            self._patch_ready.set()
        try:
            while True:
                self.stamp_used()
                await asyncio.sleep(self.tick)
        finally:
            await self.aclose()
            if client is not None:
                await client.aclose()

    async def aclose(self) -> None:
        writes = list(self._writes.values())
        for task in writes:
            task.cancel()
        for task in writes:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def writing(self) -> int:
        """Writes under way (for tests and status)."""
        return len(self._writes)

    # -- writes ---------------------------------------------------------------------------

    def _consider(self, server: str, *, needed: bool, last_use: float | None = None) -> None:
        target = self.targets(server)
        if target is None or target.key in self._writes:
            return
        now = self.clock()
        if not self.throttle.due(
            target.key,
            now=now,
            idle_timeout=target.idle_timeout,
            needed=needed,
            last_use=last_use,
        ):
            return
        task = asyncio.get_running_loop().create_task(
            self._write(target, started=now), name=f"last-activity:{target.namespace}/{server}"
        )
        self._writes[target.key] = task
        key = target.key

        def done(_task: asyncio.Task[None]) -> None:
            if self._writes.get(key) is _task:
                del self._writes[key]

        task.add_done_callback(done)

    async def _write(self, target: Target, *, started: float) -> None:
        stamp = rfc3339(self.wall_clock())
        try:
            await self._patch_ready.wait()
            assert self._patch is not None
            await self._patch(
                target.namespace,
                target.name,
                {conventions.K8S_ANNOTATION_LAST_ACTIVITY: stamp},
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            delay = self.throttle.failed(target.key, now=self.clock())
            log.warning(
                "MCPServer %s/%s: cannot mark activity (%s); retrying in %.0f s if still used",
                target.namespace,
                target.name,
                _describe(exc),
                delay,
            )
            return
        self.throttle.stamped(target.key, at=started)
        log.debug("MCPServer %s/%s: last activity %s", target.namespace, target.name, stamp)


async def _cluster_patcher() -> tuple[Any, AnnotationPatcher]:
    """A patcher writing through the cluster (``KubeApi``), and the client to close."""
    from kubernetes_asyncio.client import ApiClient

    from mcp_fleet.kube.client import KubeApi, load_configuration

    api = KubeApi(ApiClient(configuration=await load_configuration()), field_manager=FIELD_MANAGER)

    async def patch(namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        await api.patch_annotations(
            f"{conventions.K8S_GROUP}/{conventions.K8S_VERSION}",
            conventions.K8S_KIND,
            namespace,
            name,
            annotations,
        )

    return api, patch


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
