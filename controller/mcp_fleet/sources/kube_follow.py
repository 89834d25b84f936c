"""Follow the MCPServers of a cluster, for ``mcp-fleet router --kubernetes``.

In a cluster the operator owns the servers and writes what it found into
each MCPServer's ``status``: the ``Ready`` condition (a real MCP initialize
through the Service answered) and ``endpoint`` (the Service's streamable
HTTP URL, or the remote URL). The router needs nothing else, so it does not
look at pods or Services: it lists and watches MCPServers (in its
namespaces, optionally by label selector) and publishes an ``HttpEndpoint``
into its ``EndpointTable`` for each one that is Ready with an endpoint. The
router then attaches and detaches as it does for a local fleet.

On-demand MCPServers (``spec.lifecycle.mode: on-demand``, not remote, with
replicas) are also published with ``publish_on_demand``, Ready or not: the
router's activator then advertises them while the operator has them scaled
to zero and holds the calls that need them, and ``kube_demand`` (through
``target``) stamps their last-activity annotation so the operator brings
them back. Their lists come from the router's list cache, else from one
start to learn them (the CRD carries tool names only, not definitions).

The instance id is a digest of the object's uid, ``status.configHash``,
endpoint and the time the Ready condition last turned true: a rollout (new
pod template, hence a new config hash), a moved endpoint, or pods that
became ready again (after a scale to zero, whose Service URL is unchanged)
make the router re-attach, and a deleted and re-created MCPServer of the
same name counts as a new server.

Level-triggered like the rest of mcp-fleet: a list gives the whole state,
watch events only update it, every change republishes the whole table
(``EndpointTable.publish`` wakes the router only when something really
changed), and the list is repeated every ``resync_seconds`` and after every
watch error, with exponential backoff (tenacity) while the API server
fails. Until the first list succeeds nothing is published; after that a
failing API server keeps the last known table, since the servers
themselves usually still answer. An MCPServer whose spec does not parse is
skipped with one log line; the others are unaffected.

Both Kubernetes clients read ``KUBECONFIG`` at import; the configuration is
loaded here at call time (``operator.kube.load_configuration``: KUBECONFIG,
else the pod's service account).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from mcp_fleet import conventions
from mcp_fleet.endpoints import EndpointEntry, EndpointTable, HttpEndpoint
from mcp_fleet.errors import FleetConfigError
from mcp_fleet.model import (
    CatalogEntry,
    Lifecycle,
    RemoteSpec,
    ServerSpec,
    ServerType,
    frozen_map,
)
from mcp_fleet.sources.kube_demand import Target

log = logging.getLogger(__name__)

RESYNC_SECONDS: Final = 300.0
BACKOFF_INITIAL_SECONDS: Final = 0.5
BACKOFF_MAX_SECONDS: Final = 30.0
#: A list-and-watch cycle that ends sooner (without an error) is followed by this pause.
MIN_CYCLE_SECONDS: Final = 1.0
#: Per-server call timeout override on an MCPServer (seconds, or a duration like 2m).
ANNOTATION_CALL_TIMEOUT: Final = f"{conventions.K8S_GROUP}/call-timeout"

Key = tuple[str, str]


class BadObject(ValueError):
    """An MCPServer the router cannot use (the message says why and where)."""


def parse_selector(values: Iterable[str]) -> dict[str, str]:
    """``["team=a", "tier=prod"]`` -> ``{"team": "a", "tier": "prod"}``.

    Raises ValueError naming the bad entry (only equality selectors are taken).
    """
    out: dict[str, str] = {}
    for raw in values:
        for part in raw.split(","):
            key, sep, value = part.strip().partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key or "=" in value or key.endswith("!"):
                raise ValueError(
                    f"--selector {raw!r}: expected key=value (equality selectors only)"
                )
            out[key] = value
    return out


def selector_text(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _matches(obj: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _ready_condition(status: Mapping[str, Any]) -> Mapping[str, Any]:
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return cond
    return {}


def _is_ready(status: Mapping[str, Any]) -> bool:
    return _ready_condition(status).get("status") == "True"


@dataclass(frozen=True, slots=True)
class Standby:
    """An on-demand MCPServer: what the router advertises while it is cold, and where
    to mark its activity."""

    spec: ServerSpec
    target: Target


def _call_timeout(meta: Mapping[str, Any], default: float) -> float:
    from mcp_fleet.kube.spec import parse_duration

    raw = (meta.get("annotations") or {}).get(ANNOTATION_CALL_TIMEOUT)
    if raw is None:
        return default
    try:
        seconds = float(parse_duration(raw))
    except ValueError as exc:
        raise BadObject(f"metadata.annotations[{ANNOTATION_CALL_TIMEOUT}]: {exc}") from None
    if seconds <= 0:
        raise BadObject(f"metadata.annotations[{ANNOTATION_CALL_TIMEOUT}]: must be positive")
    return seconds


def entry_for(
    obj: Mapping[str, Any], *, call_timeout: float = conventions.DEFAULT_CALL_TIMEOUT_SECONDS
) -> EndpointEntry | None:
    """The routable server ``obj`` describes, or None while it is not Ready (or has no endpoint).

    Raises ``BadObject`` for an MCPServer whose spec or status cannot be used.
    """
    return read_object(obj, call_timeout=call_timeout)[0]


def read_object(
    obj: Mapping[str, Any], *, call_timeout: float = conventions.DEFAULT_CALL_TIMEOUT_SECONDS
) -> tuple[EndpointEntry | None, Standby | None]:
    """What the router makes of one MCPServer: its routable entry (None unless Ready
    with an endpoint) and, for an on-demand server, its standby (None otherwise).

    Raises ``BadObject`` for an MCPServer whose spec or status cannot be used.
    """
    from mcp_fleet.kube.spec import Transport, parse_spec

    meta = obj.get("metadata") or {}
    name, namespace = meta.get("name"), meta.get("namespace") or ""
    if not isinstance(name, str) or not name:
        raise BadObject("metadata.name: missing")
    status = obj.get("status") or {}
    if not isinstance(status, Mapping):
        status = {}
    try:
        spec = parse_spec(obj.get("spec"), name=name)
    except FleetConfigError as exc:
        raise BadObject(str(exc)) from None
    if spec.remote is not None:
        transport = spec.remote.transport
    else:
        transport = "sse" if spec.transport is Transport.SSE else "streamable-http"
    on_demand = spec.remote is None and spec.lifecycle.mode == "on-demand" and spec.replicas > 0
    idle_timeout = float(spec.lifecycle.idle_timeout_seconds) if on_demand else None
    timeout = _call_timeout(meta, call_timeout)

    def server_spec(remote: RemoteSpec | None) -> ServerSpec:
        entry = CatalogEntry(
            name=name,
            source=Path(f"mcpserver/{namespace}/{name}"),
            type=ServerType.REMOTE,
            remote=remote,
            prefix=spec.prefix,
            call_timeout_seconds=timeout,
            transport=transport,
            lifecycle=Lifecycle.ON_DEMAND if on_demand else Lifecycle.ALWAYS,
            idle_timeout_seconds=idle_timeout,
        )
        return ServerSpec(name=name, enabled=True, entry=entry, tools_allow=spec.tools)

    standby = None
    if on_demand and idle_timeout is not None:
        uid = str(meta.get("uid") or "")
        standby = Standby(server_spec(None), Target(namespace, name, uid, idle_timeout))
    url = status.get("endpoint")
    if not _is_ready(status) or not url:
        return None, standby
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise BadObject(f"status.endpoint: not an http(s) URL: {url!r}")
    since = str(_ready_condition(status).get("lastTransitionTime") or "")
    identity = "\0".join([str(meta.get("uid") or ""), str(status.get("configHash") or ""), url])
    if since:
        identity += "\0" + since
    instance_id = hashlib.sha256(identity.encode()).hexdigest()[:16]
    endpoint = HttpEndpoint(server=name, instance_id=instance_id, url=url, transport=transport)
    routable = server_spec(RemoteSpec(url=url, transport_type=transport))
    return EndpointEntry(routable, endpoint), standby


@dataclass
class KubeFollower:
    """Keeps an ``EndpointTable`` equal to the Ready MCPServers it watches, and its
    on-demand set equal to the on-demand ones (see the module doc).

    ``namespaces`` None watches every namespace (needs a ClusterRole).
    ``cache_dir`` is where the router keeps on-demand servers' lists (None:
    in memory only).
    """

    table: EndpointTable
    namespaces: tuple[str, ...] | None
    selector: Mapping[str, str] = field(default_factory=frozen_map)
    call_timeout: float = conventions.DEFAULT_CALL_TIMEOUT_SECONDS
    resync_seconds: float = RESYNC_SECONDS
    backoff_max: float = BACKOFF_MAX_SECONDS
    #: Set once the first complete table is published (the router's ``published``: it
    #: settles, and ``/readyz`` answers ready, only after that and the attaches).
    published: asyncio.Event | None = None
    cache_dir: Path | None = None
    #: Routable entry (None: known but not routable) of every MCPServer seen, by (namespace, name).
    entries: dict[Key, EndpointEntry | None] = field(default_factory=dict)
    #: The on-demand MCPServers seen, by (namespace, name).
    standby: dict[Key, Standby] = field(default_factory=dict)
    #: The on-demand servers last published, by server name.
    _targets: dict[str, Target] = field(default_factory=dict)
    _listed: set[str | None] = field(default_factory=set)
    _collisions: set[str] = field(default_factory=set)

    async def run(self) -> None:
        """Follow until cancelled (one list/watch loop per namespace)."""
        from kubernetes_asyncio.client import ApiClient

        from mcp_fleet.kube.client import load_configuration

        cfg = await load_configuration()
        async with ApiClient(configuration=cfg) as client:
            scopes: tuple[str | None, ...] = self.namespaces if self.namespaces else (None,)
            async with asyncio.TaskGroup() as group:
                for ns in scopes:
                    group.create_task(self._follow(client, ns), name=f"kube-follow-{ns or '*'}")

    async def _follow(self, client: Any, namespace: str | None) -> None:
        while True:
            retrying = AsyncRetrying(
                wait=wait_exponential_jitter(
                    multiplier=BACKOFF_INITIAL_SECONDS, max=self.backoff_max, jitter=0.5
                ),
                retry=retry_if_exception_type(Exception),
                before_sleep=lambda state: log.warning(
                    "MCPServers in %s: %s; retrying in %.1fs",
                    namespace or "all namespaces",
                    _describe(state.outcome.exception() if state.outcome else None),
                    state.next_action.sleep if state.next_action else 0.0,
                ),
                reraise=True,
            )
            started = asyncio.get_running_loop().time()
            async for attempt in retrying:
                with attempt:
                    await self._list_and_watch(client, namespace)
            if asyncio.get_running_loop().time() - started < MIN_CYCLE_SECONDS:
                await asyncio.sleep(MIN_CYCLE_SECONDS)  # a watch the server ends at once

    async def _list_and_watch(self, client: Any, namespace: str | None) -> None:
        """One cycle: list (the whole state), then watch until the resync period ends."""
        from kubernetes_asyncio.client import CustomObjectsApi
        from kubernetes_asyncio.watch import Watch

        api = CustomObjectsApi(client)
        args: tuple[Any, ...]
        if namespace is None:
            fn: Any = api.list_cluster_custom_object
            args = (conventions.K8S_GROUP, conventions.K8S_VERSION, conventions.K8S_PLURAL)
        else:
            fn = api.list_namespaced_custom_object
            args = (
                conventions.K8S_GROUP,
                conventions.K8S_VERSION,
                namespace,
                conventions.K8S_PLURAL,
            )
        kwargs: dict[str, Any] = {}
        if self.selector:
            kwargs["label_selector"] = selector_text(self.selector)
        listing = await fn(*args, **kwargs)
        items = listing.get("items") or []
        version = (listing.get("metadata") or {}).get("resourceVersion")
        self._replace(namespace, items)
        await self._publish()
        watch = Watch(return_type="object")
        deadline = asyncio.timeout(self.resync_seconds)
        try:
            async with deadline:
                stream = watch.stream(
                    _lowercase_flags(fn),
                    *args,
                    resource_version=version,
                    timeout_seconds=int(self.resync_seconds),
                    allow_watch_bookmarks=True,
                    **kwargs,
                )
                async for event in stream:
                    kind = event.get("type")
                    obj = event.get("raw_object")
                    if kind in ("ADDED", "MODIFIED", "DELETED") and isinstance(obj, dict):
                        self._apply(kind, obj)
                        await self._publish()
        except TimeoutError:
            if not deadline.expired():
                raise  # the connection timed out, not our resync period
        finally:
            await watch.close()

    def _key(self, obj: Mapping[str, Any]) -> Key:
        meta = obj.get("metadata") or {}
        return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))

    def _convert(self, obj: Mapping[str, Any]) -> tuple[EndpointEntry | None, Standby | None]:
        if not _matches(obj, self.selector):
            return None, None
        try:
            return read_object(obj, call_timeout=self.call_timeout)
        except BadObject as exc:
            ns, name = self._key(obj)
            log.warning("MCPServer %s/%s skipped: %s", ns, name, exc)
            return None, None

    def _store(self, key: Key, seen: tuple[EndpointEntry | None, Standby | None]) -> None:
        self.entries[key] = seen[0]
        if seen[1] is None:
            self.standby.pop(key, None)
        else:
            self.standby[key] = seen[1]

    def _replace(self, namespace: str | None, items: Iterable[Any]) -> None:
        """A list result: the whole state of ``namespace`` (None: every namespace)."""
        fresh = {self._key(o): self._convert(o) for o in items if isinstance(o, dict)}
        for key in [k for k in self.entries if namespace is None or k[0] == namespace]:
            if key not in fresh:
                del self.entries[key]
                self.standby.pop(key, None)
        for key, seen in fresh.items():
            self._store(key, seen)
        self._listed.add(namespace)

    def _apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        key = self._key(obj)
        if kind == "DELETED":
            self.entries.pop(key, None)
            self.standby.pop(key, None)
        else:
            self._store(key, self._convert(obj))

    def _owners(self) -> dict[str, str]:
        """Server name -> the namespace that serves it: on a name taken in two namespaces,
        the first namespace in sorted order wins (logged once)."""
        owners: dict[str, str] = {}
        used = {k for k, e in self.entries.items() if e is not None} | set(self.standby)
        for ns, name in sorted(used):
            if name not in owners:
                owners[name] = ns
            elif name not in self._collisions:
                self._collisions.add(name)
                log.warning(
                    "MCPServer %s/%s skipped: the name is taken in another namespace", ns, name
                )
        return owners

    def routable(self) -> dict[str, EndpointEntry]:
        """The table to publish, by server name (see ``_owners`` for names in two namespaces)."""
        out: dict[str, EndpointEntry] = {}
        for name, ns in self._owners().items():
            entry = self.entries.get((ns, name))
            if entry is not None:
                out[name] = entry
        return out

    def on_demand(self) -> dict[str, Standby]:
        """The on-demand servers to publish, by server name."""
        out: dict[str, Standby] = {}
        for name, ns in self._owners().items():
            standby = self.standby.get((ns, name))
            if standby is not None:
                out[name] = standby
        return out

    def target(self, server: str) -> Target | None:
        """The MCPServer behind on-demand ``server`` as last published (``KubeDemand``)."""
        return self._targets.get(server)

    async def _publish(self) -> None:
        scopes = set(self.namespaces) if self.namespaces else {None}
        if not scopes <= self._listed:
            return  # not every namespace listed yet: a partial table would detach servers
        standby = self.on_demand()
        self._targets = {name: sb.target for name, sb in standby.items()}
        # On-demand first: the router must know a server is on demand before it attaches it.
        await self.table.publish_on_demand(
            {name: sb.spec for name, sb in standby.items()}, cache_dir=self.cache_dir
        )
        await self.table.publish(self.routable())
        if self.published is not None:
            self.published.set()


def _lowercase_flags(fn: Any) -> Any:
    """``fn`` sending its boolean query flags as ``true``/``false``.

    The generated client sends ``watch=True``; the API server parses either
    spelling, but other servers (kmock among them) only take ``true`` and
    would answer a plain list instead of a watch.
    """

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        for name in ("watch", "allow_watch_bookmarks"):
            if isinstance(kwargs.get(name), bool):
                kwargs[name] = "true" if kwargs[name] else "false"
        return await fn(*args, **kwargs)

    return call


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status is not None:
        return f"API error {status}: {reason or exc}"
    return f"{type(exc).__name__}: {exc}"


async def follow_kubernetes(
    table: EndpointTable,
    *,
    namespaces: tuple[str, ...] | None,
    selector: Mapping[str, str] | None = None,
    call_timeout: float = conventions.DEFAULT_CALL_TIMEOUT_SECONDS,
    resync_seconds: float = RESYNC_SECONDS,
    published: asyncio.Event | None = None,
    cache_dir: Path | None = None,
) -> None:
    """Keep ``table`` equal to the Ready MCPServers of ``namespaces`` until cancelled.

    ``published`` is set after the first complete list (give the same event to ``Router``).
    """
    await KubeFollower(
        table,
        namespaces,
        selector=frozen_map(selector),
        call_timeout=call_timeout,
        resync_seconds=resync_seconds,
        published=published,
        cache_dir=cache_dir,
    ).run()
