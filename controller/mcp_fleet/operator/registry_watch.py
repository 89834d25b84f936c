"""Registry ConfigMap mode, the operator half: watch one ConfigMap, apply the difference.

``mcp-fleet operator --registry-configmap NAME`` runs this next to the
MCPServer reconciler. It follows exactly one ConfigMap in the operator's own
namespace (a list and watch with a ``metadata.name`` field selector, so the
operator needs no access to any other ConfigMap, and none cluster-wide even
with ``--all-namespaces``), and keeps the MCPServers the registry asks for
(``registry_sync.plan_registry``) equal to the ones it made:

- create what is missing, update (server-side apply) what changed, delete
  what the registry no longer enables: only MCPServers labelled
  ``mcp-fleet.dev/registry=<configmap>``; an MCPServer someone wrote by hand
  is never touched, even when it has the name of a registry server (that
  server is then reported and left out);
- a file broken as a whole changes nothing (the last good state stays, as
  the local controller keeps it), and is reported as a Warning Event on the
  ConfigMap with the ``file:line: field: message`` lines, and in the log;
- a server that cannot be made (missing catalog entry, no image, a spec the
  operator would refuse...) keeps whatever MCPServer it had, and is reported
  the same way; the rest of the fleet is made.

Level-triggered like the reconciler: every ConfigMap event and every resync
(the watch ends every ``resync_seconds`` and the ConfigMap is listed again)
only wakes one sync, which compares the whole desired set with the whole
observed set; an MCPServer of ours deleted behind the operator's back also
wakes it. Each Event is posted once per distinct problem, not per pass.
Why not a kopf handler for ConfigMaps: kopf watches every resource in the
operator's namespaces, so it would read every ConfigMap of every watched
namespace (cluster-wide with ``--all-namespaces``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, cast

import kopf
from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api
from kubernetes_asyncio.watch import Watch
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from mcp_fleet import conventions as c
from mcp_fleet.errors import FleetConfigError
from mcp_fleet.kube.client import KubeApi, load_configuration
from mcp_fleet.operator.registry_sync import (
    GROUP_VERSION,
    RegistrySource,
    ServerAction,
    diff_servers,
    plan_registry,
)

log = logging.getLogger("mcp_fleet.operator.registry")

BACKOFF_INITIAL_SECONDS: Final = 0.5
#: Kubernetes keeps Event messages short; longer text is cut with a marker.
EVENT_MESSAGE_LIMIT: Final = 1024
REASON_INVALID: Final = "RegistryInvalid"
REASON_SKIPPED: Final = "ServerSkipped"
REASON_SYNCED: Final = "Synced"


@dataclass(frozen=True, slots=True)
class RegistryOptions:
    """Which ConfigMap drives the servers, and where their secrets are."""

    configmap: str
    namespace: str
    secret: str | None = None
    resync_seconds: float = c.DEFAULT_RESYNC_SECONDS


@dataclass
class RegistrySync:
    """Follows the registry ConfigMap and converges the MCPServers it asks for."""

    options: RegistryOptions
    load_configuration: Callable[[], Awaitable[Configuration]] = load_configuration
    #: The ConfigMap as last seen (None: not there).
    body: dict[str, Any] | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _listed: bool = False
    _posted: set[tuple[str, str]] = field(default_factory=set)
    _warned: set[str] = field(default_factory=set)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Follow and converge until cancelled; anything unexpected restarts both, later."""
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an ExceptionGroup from the task group, too
                log.error("registry mode stopped (%s); restarting", exc)
                await asyncio.sleep(c.BACKOFF_MAX_SECONDS)

    async def _run_once(self) -> None:
        cfg = await self.load_configuration()
        async with ApiClient(configuration=cfg) as client:
            log.info(
                "registry mode: MCPServers from ConfigMap %s/%s",
                self.options.namespace,
                self.options.configmap,
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(self._follow(client), name="registry-follow")
                group.create_task(self._converge(KubeApi(client)), name="registry-sync")

    # -- following the ConfigMap ---------------------------------------------------------

    async def _follow(self, client: ApiClient) -> None:
        while True:
            retrying = AsyncRetrying(
                wait=wait_exponential_jitter(
                    multiplier=BACKOFF_INITIAL_SECONDS, max=c.BACKOFF_MAX_SECONDS, jitter=0.5
                ),
                retry=retry_if_exception_type(Exception),
                before_sleep=lambda state: log.warning(
                    "ConfigMap %s: %s; retrying",
                    self.options.configmap,
                    state.outcome.exception() if state.outcome else "error",
                ),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    await self._list_and_watch(client)

    async def _list_and_watch(self, client: ApiClient) -> None:
        """List (the whole state, and the resync), then watch until the resync period ends."""
        api = CoreV1Api(client)
        ns, name = self.options.namespace, self.options.configmap
        selector = f"metadata.name={name}"
        listing = await api.list_namespaced_config_map(ns, field_selector=selector)
        items = client.sanitize_for_serialization(listing).get("items") or []
        self._observe(next((i for i in items if _name(i) == name), None))
        version = listing.metadata.resource_version if listing.metadata else None
        watch = Watch(return_type="object")
        period = max(1.0, self.options.resync_seconds)
        deadline = asyncio.timeout(period)
        try:
            async with deadline:
                stream = watch.stream(
                    _lowercase_flags(api.list_namespaced_config_map),
                    ns,
                    field_selector=selector,
                    resource_version=version,
                    timeout_seconds=int(period),
                )
                async for event in stream:
                    obj = event.get("raw_object")
                    if not isinstance(obj, dict) or _name(obj) != name:
                        continue
                    kind = event.get("type")
                    if kind in ("ADDED", "MODIFIED"):
                        self._observe(obj)
                    elif kind == "DELETED":
                        self._observe(None)
        except TimeoutError:
            if not deadline.expired():
                raise
        finally:
            await watch.close()

    def _observe(self, obj: Mapping[str, Any] | None) -> None:
        if obj is None and self.body is not None:
            log.warning(
                "ConfigMap %s is gone: its MCPServers go with it (owner references)",
                self.options.configmap,
            )
        elif obj is None and not self._listed:
            log.warning(
                "ConfigMap %s/%s does not exist yet: no registry servers",
                self.options.namespace,
                self.options.configmap,
            )
        self._listed = True
        self.body = None if obj is None else dict(obj)
        self.wake()

    # -- converging ---------------------------------------------------------------------

    async def _converge(self, api: KubeApi) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync(api)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(c.BACKOFF_MAX_SECONDS, BACKOFF_INITIAL_SECONDS * 2 ** (failures - 1))
                log.warning("registry sync failed: %s; retry in %gs", exc, delay)
                await asyncio.sleep(delay)
                self.wake()
            else:
                failures = 0

    async def sync(self, api: KubeApi) -> tuple[ServerAction, ...]:
        """One pass: plan from the ConfigMap as last seen, apply the difference."""
        body = self.body
        if body is None:
            return ()
        meta = body.get("metadata") or {}
        source = RegistrySource(
            namespace=self.options.namespace,
            configmap=self.options.configmap,
            uid=str(meta.get("uid") or ""),
            secret=self.options.secret,
        )
        try:
            plan = plan_registry(body.get("data") or {}, source)
        except FleetConfigError as exc:
            log.error(
                "registry ConfigMap %s is invalid; nothing changed:\n%s", source.configmap, exc
            )
            await self._report(api, body, {(REASON_INVALID, f"{exc}\n(nothing was changed)")})
            return ()
        for warning in map(str, plan.warnings):
            if warning not in self._warned:
                log.warning("%s", warning)
        self._warned = set(map(str, plan.warnings))
        problems = {(REASON_SKIPPED, str(d)) for d in plan.skipped}
        held = {d.server for d in plan.skipped if d.server}
        owned = await api.list(
            GROUP_VERSION,
            c.K8S_KIND,
            source.namespace,
            labels={c.K8S_LABEL_REGISTRY: source.configmap},
        )
        actions = diff_servers(plan.servers, [o for o in owned if _name(o) not in held])
        done: list[ServerAction] = []
        for action in actions:
            if action.verb == "delete":
                await api.delete(GROUP_VERSION, c.K8S_KIND, source.namespace, action.name)
            else:
                assert action.manifest is not None
                if action.verb == "create":
                    existing = await api.get(
                        GROUP_VERSION, c.K8S_KIND, source.namespace, action.name
                    )
                    if existing is not None and not _ours(existing, source.configmap):
                        problems.add(
                            (
                                REASON_SKIPPED,
                                f"MCPServer {action.name} exists and was not made from this "
                                "registry: left alone",
                            )
                        )
                        continue
                await api.apply(action.manifest)
            log.info("registry %s: %s", source.configmap, action)
            done.append(action)
        if done:
            summary = ", ".join(f"{a.verb}d {a.name}" for a in done)
            problems.add((REASON_SYNCED, summary))
        await self._report(api, body, problems)
        return tuple(done)

    async def _report(
        self, api: KubeApi, body: Mapping[str, Any], now: set[tuple[str, str]]
    ) -> None:
        """Post each problem once (until it goes away), as an Event on the ConfigMap."""
        for reason, message in sorted(now - self._posted):
            if reason != REASON_SYNCED:
                log.warning("registry %s: %s", self.options.configmap, message)
            await post_event(api, body, reason=reason, message=message)
        self._posted = {p for p in now if p[0] != REASON_SYNCED}


async def post_event(api: KubeApi, body: Mapping[str, Any], *, reason: str, message: str) -> None:
    """A core/v1 Event about ``body`` (``kubectl describe configmap`` shows it); best effort."""
    meta = body.get("metadata") or {}
    name, ns = str(meta.get("name")), str(meta.get("namespace"))
    if len(message) > EVENT_MESSAGE_LIMIT:
        message = message[: EVENT_MESSAGE_LIMIT - 3] + "..."
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": ns},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": name,
            "namespace": ns,
            "uid": str(meta.get("uid") or ""),
        },
        "reason": reason,
        "message": message,
        "type": "Normal" if reason == REASON_SYNCED else "Warning",
        "source": {"component": c.K8S_MANAGER},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await CoreV1Api(api.client).create_namespaced_event(ns, cast(Any, event))
    except Exception as exc:  # an Event is a courtesy: never fail the sync for it
        log.warning("cannot post Event %s on ConfigMap %s: %s", reason, name, exc)


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _ours(obj: Mapping[str, Any], configmap: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(c.K8S_LABEL_REGISTRY) == configmap)


def _lowercase_flags(fn: Any) -> Any:
    """``fn`` sending boolean query flags as ``true``/``false`` (some servers take only those)."""

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        for key in ("watch", "allow_watch_bookmarks"):
            if isinstance(kwargs.get(key), bool):
                kwargs[key] = "true" if kwargs[key] else "false"
        return await fn(*args, **kwargs)

    return call


def add_handlers(registry: kopf.OperatorRegistry, sync: RegistrySync) -> None:
    """Wake the sync when one of its MCPServers is deleted or changed behind its back."""

    @kopf.on.event(
        c.K8S_GROUP,
        c.K8S_VERSION,
        c.K8S_PLURAL,
        id="registry-servers",
        labels={c.K8S_LABEL_REGISTRY: sync.options.configmap},
        registry=registry,
    )
    async def registry_server_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata") or {}
        if meta.get("namespace") != sync.options.namespace:
            return
        annotations = meta.get("annotations") or {}
        wanted = annotations.get(c.K8S_ANNOTATION_APPLIED_HASH)
        if type == "DELETED" or wanted is None:
            sync.wake()


__all__ = ["RegistryOptions", "RegistrySync", "add_handlers", "post_event"]
