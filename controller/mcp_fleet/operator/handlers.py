"""kopf wiring and the reconcile pass: level-triggered, idempotent, no finalizers.

kopf watches, logs in and serialises events per object; the decisions are
ours. Every MCPServer event (and every event of a child Deployment or
StatefulSet) only *wakes* the object's reconcile; a resync loop wakes every
object again every ``resync_seconds``; a reconcile always compares the whole
desired state with the whole observed state. A missed event costs latency,
never correctness (the controller-runtime contract).

Why ``@kopf.on.event`` and not create/update/delete handlers: those keep
progress in annotations and need a finalizer for timers and daemons, so an
MCPServer could not be deleted while the operator is down. Here nothing is
stored on the objects but their status, children go away through their
``ownerReferences`` (the garbage collector), and no finalizer is ever set.

One pass for one MCPServer:

1. parse the spec (invalid: status Degraded/InvalidSpec with the field, and
   nothing it runs is touched);
2. plan its children (pure) and observe the ones that exist (by label);
3. execute the diff: apply changed or missing children (server-side apply),
   delete the ones no longer wanted, never touch objects someone else owns;
4. read the workload's rollout and, while no pod is ready, why (image, secret,
   crash loop); when a pod is ready, probe it with a real MCP initialize;
5. write ``status`` only when it changed.

Failures are retried per object with exponential backoff; one broken server
never slows the others (a bounded number of passes run at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kubernetes_asyncio.client import ApiClient, Configuration

from mcp_fleet import conventions as c
from mcp_fleet.errors import FleetConfigError
from mcp_fleet.kube.client import ApiError, KubeApi, KubeConfigError, load_configuration
from mcp_fleet.kube.spec import parse_spec
from mcp_fleet.operator.k8s_diff import ChildAction, diff_children, is_controlled_by
from mcp_fleet.operator.k8s_plan import (
    ChildPlan,
    PlanOptions,
    ServerRef,
    canonical_hash,
    plan_children,
    selector_for,
)
from mcp_fleet.operator.k8s_status import (
    PodProblem,
    ProbeResult,
    WorkloadObservation,
    build_status,
    diagnose_pods,
    status_changed,
)
from mcp_fleet.operator.readiness import Probe, UrlResolver, cluster_url, mcp_probe

log = logging.getLogger("mcp_fleet.operator")

Key = tuple[str, str]  # (namespace, name)
GROUP_VERSION = f"{c.K8S_GROUP}/{c.K8S_VERSION}"
BACKOFF_MAX = c.BACKOFF_MAX_SECONDS


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class OperatorConfig:
    """Everything that shapes the operator's behaviour (tests swap the seams)."""

    plan_options: PlanOptions = field(default_factory=PlanOptions)
    probe: Probe = mcp_probe
    resolve_url: UrlResolver = cluster_url
    resync_seconds: float = c.DEFAULT_RESYNC_SECONDS
    probe_timeout: float = 10.0
    concurrency: int = c.DEFAULT_START_CONCURRENCY
    clock: Callable[[], datetime] = utcnow
    load_configuration: Callable[[], Awaitable[Configuration]] = load_configuration


class RetryLaterError(Exception):
    """The pass wrote what it knows; try this object again later."""


class Reconciler:
    """The per-object work queue and the reconcile pass."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.objects: dict[Key, dict[str, Any]] = {}
        self._essence: dict[Key, str] = {}
        #: The status this operator last wrote per object: it is the only writer, and watch
        #: events may replay older copies of the object.
        self._written: dict[Key, dict[str, Any]] = {}
        self._dirty: set[Key] = set()
        self._workers: dict[Key, asyncio.Task[None]] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._failures: dict[Key, int] = {}
        self._limit = asyncio.Semaphore(config.concurrency)
        self._api: KubeApi | None = None
        self._api_ready = asyncio.Event()
        self._resync: asyncio.Task[None] | None = None

    # -- connection ---------------------------------------------------------------------

    async def login(self) -> Configuration:
        cfg = await self.config.load_configuration()
        old, self._api = self._api, KubeApi(ApiClient(cfg))
        self._api_ready.set()
        if old is not None:
            await old.aclose()
        return cfg

    async def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        tasks = [t for t in (self._resync, *self._workers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._api is not None:
            await self._api.aclose()

    # -- events -------------------------------------------------------------------------

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """An MCPServer event: remember the object, wake its pass if something we use changed."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if event_type == "DELETED":
            self.objects.pop(key, None)
            self._essence.pop(key, None)
            self._failures.pop(key, None)
            self._written.pop(key, None)
            return
        self.objects[key] = _plain(body)
        essence = canonical_hash(
            [
                body.get("spec"),
                meta.get("uid"),
                meta.get("generation"),
                meta.get("deletionTimestamp"),
                (meta.get("annotations") or {}).get(c.K8S_ANNOTATION_LAST_ACTIVITY),
            ]
        )
        if self._essence.get(key) != essence:
            self._essence[key] = essence
            self.request(key)

    def request(self, key: Key, *, delay: float = 0.0) -> None:
        """Make sure ``key`` is reconciled (now, or after ``delay`` seconds); requests coalesce."""
        if delay > 0:
            old = self._timers.pop(key, None)
            if old is not None:
                old.cancel()
            self._timers[key] = asyncio.get_running_loop().call_later(delay, self.request, key)
            return
        self._dirty.add(key)
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(
                self._work(key), name=f"reconcile {key[0]}/{key[1]}"
            )

    async def resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            for key in list(self.objects):
                self.request(key)

    def start_resync(self) -> None:
        if self._resync is None:
            self._resync = asyncio.create_task(self.resync_forever(), name="resync")

    async def _work(self, key: Key) -> None:
        try:
            while key in self._dirty:
                self._dirty.discard(key)
                async with self._limit:
                    try:
                        await self.reconcile(key)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        failures = self._failures.get(key, 0) + 1
                        self._failures[key] = failures
                        delay = min(BACKOFF_MAX, c.BACKOFF_INITIAL_SECONDS * 2 ** (failures - 1))
                        if not isinstance(exc, RetryLaterError):
                            log.exception("reconcile of %s/%s failed", *key)
                        else:
                            log.warning("reconcile of %s/%s: %s; retry in %gs", *key, exc, delay)
                        self.request(key, delay=delay)
                    else:
                        self._failures.pop(key, None)
        finally:
            self._workers.pop(key, None)

    # -- the pass -----------------------------------------------------------------------

    async def reconcile(self, key: Key) -> None:
        body = self.objects.get(key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return  # gone or going: the garbage collector removes the children
        await self._api_ready.wait()
        api = self._api
        assert api is not None
        meta = body["metadata"]
        namespace, name, uid = key[0], key[1], str(meta.get("uid") or "")
        generation = int(meta.get("generation") or 0)
        previous = self._written.get(key) or body.get("status") or {}
        now = self.config.clock()
        try:
            spec = parse_spec(body.get("spec"), name=name)
        except FleetConfigError as exc:
            status = build_status(
                generation=generation, previous=previous, now=now, spec_problem=str(exc)
            )
            await self._write_status(api, key, body, status)
            return
        ref = ServerRef(
            name=name,
            namespace=namespace,
            uid=uid,
            generation=generation,
            created=_time(meta.get("creationTimestamp")),
            last_activity=_time(
                (meta.get("annotations") or {}).get(c.K8S_ANNOTATION_LAST_ACTIVITY)
            ),
        )
        plan = plan_children(ref, spec, options=self.config.plan_options, now=now)
        problem: str | None = None
        workload: WorkloadObservation | None = None
        pods: PodProblem | None = None
        try:
            problem = await self._converge(api, plan, ref)
            workload, pods = await self._observe_rollout(api, plan, ref)
        except ApiError as exc:
            problem = str(exc)
        probe = await self._probe(plan, workload)
        status = build_status(
            generation=generation,
            previous=previous,
            now=now,
            plan=plan,
            apply_problem=problem,
            workload=workload,
            pods=pods,
            probe=probe,
        )
        await self._write_status(api, key, body, status)
        if problem:
            raise RetryLaterError(problem)

    async def _converge(self, api: KubeApi, plan: ChildPlan, ref: ServerRef) -> str | None:
        observed: list[dict[str, Any]] = []
        labels = {c.K8S_LABEL_SERVER: ref.name, "app.kubernetes.io/managed-by": c.K8S_MANAGER}
        for api_version, kind in _MANAGED:
            observed.extend(await api.list(api_version, kind, ref.namespace, labels=labels))
        diff = diff_children(plan, observed, uid=ref.uid)
        conflicts = list(diff.conflicts)
        for action in diff.actions:
            log.info("%s/%s: %s", ref.namespace, ref.name, action)
            conflict = await self._execute(api, action, ref)
            if conflict:
                conflicts.append(conflict)
        return "; ".join(conflicts) or None

    async def _execute(self, api: KubeApi, action: ChildAction, ref: ServerRef) -> str | None:
        if action.verb == "delete":
            await api.delete(action.api_version, action.kind, ref.namespace, action.name)
            return None
        assert action.manifest is not None
        if action.verb == "create":
            existing = await api.get(action.api_version, action.kind, ref.namespace, action.name)
            if existing is not None and not is_controlled_by(existing, ref.uid):
                return f"{action.kind} {action.name} exists and is not controlled by this MCPServer"
        await api.apply(action.manifest)
        return None

    async def _observe_rollout(
        self, api: KubeApi, plan: ChildPlan, ref: ServerRef
    ) -> tuple[WorkloadObservation | None, PodProblem | None]:
        if plan.workload is None:
            return None, None
        kind, name = plan.workload
        obj = await api.get("apps/v1", kind, ref.namespace, name)
        if obj is None:
            return None, None
        workload = WorkloadObservation.from_object(obj)
        pods: PodProblem | None = None
        if workload.ready < workload.desired:
            pod_list = await api.list("v1", "Pod", ref.namespace, labels=selector_for(ref.name))
            pods = diagnose_pods(pod_list)
        return workload, pods

    async def _probe(
        self, plan: ChildPlan, workload: WorkloadObservation | None
    ) -> ProbeResult | None:
        timeout = self.config.probe_timeout
        if plan.remote_url is not None:
            return await self.config.probe(
                plan.remote_url, transport=plan.remote_transport, within=timeout
            )
        if plan.address is None or workload is None or workload.ready == 0:
            return None
        url = self.config.resolve_url(plan.address)
        return await self.config.probe(url, transport=plan.address.transport, within=timeout)

    async def _write_status(
        self, api: KubeApi, key: Key, body: dict[str, Any], status: dict[str, Any]
    ) -> None:
        previous = self._written.get(key) or body.get("status") or {}
        if not status_changed(status, previous):
            return
        try:
            await api.patch_status(key[0], key[1], status)
        except ApiError as exc:
            if exc.status == 404:
                return  # deleted meanwhile
            raise
        merged = {k: v for k, v in {**previous, **status}.items() if v is not None}
        body["status"] = merged
        self._written[key] = merged
        if previous.get("state") != status.get("state"):
            _post_event(body, status)


_MANAGED = (
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("v1", "Service"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
)


def _post_event(body: Mapping[str, Any], status: Mapping[str, Any]) -> None:
    """A Kubernetes Event on state changes, for ``kubectl describe`` (best effort)."""
    conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
    ready: dict[str, Any] = next((x for x in conditions if x.get("type") == "Ready"), {})
    degraded: dict[str, Any] = next((x for x in conditions if x.get("type") == "Degraded"), {})
    cond = ready if ready.get("status") == "True" or degraded.get("status") != "True" else degraded
    poster = kopf.info if cond is ready else kopf.warn
    with contextlib.suppress(Exception):  # outside kopf's context there is no event queue
        poster(
            cast(Any, dict(body)),
            reason=str(cond.get("reason", "StateChanged")),
            message=str(cond.get("message", "")),
        )


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A deep plain-dict copy of a kopf body (its views change under our feet)."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if isinstance(value, Mapping):
            out[key] = _plain(value)
        elif isinstance(value, list):
            out[key] = [_plain(v) if isinstance(v, Mapping) else v for v in value]
        else:
            out[key] = value
    return out


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def connection_info(cfg: Configuration) -> kopf.ConnectionInfo:
    """kopf's credentials from the same client configuration our own calls use."""
    header: Any = cfg.get_api_key_with_prefix("BearerToken")
    if inspect.isawaitable(header):
        header = await header
    parts = header.split(" ", 1) if isinstance(header, str) and header else []
    scheme, token = (
        (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    )
    assert cfg.host is not None
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        username=cfg.username or None,
        password=cfg.password or None,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
    )


def make_settings() -> kopf.OperatorSettings:
    """kopf settings: nothing of kopf's stored on our objects, warnings posted as Events.

    Scanning is off: the watched namespaces are named and the CRD is installed
    before the operator starts (Helm installs crds/ first), so the operator needs
    no permission to list namespaces or CustomResourceDefinitions.
    """
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.posting.level = logging.WARNING
    settings.persistence.finalizer = f"{c.K8S_GROUP}/operator"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.K8S_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=c.K8S_GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    return settings


def build_registry(reconciler: Reconciler) -> kopf.OperatorRegistry:
    """The kopf handlers of one operator instance (a registry of its own, not kopf's global)."""
    registry = kopf.OperatorRegistry()
    managed = {"app.kubernetes.io/managed-by": c.K8S_MANAGER}

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        try:
            cfg = await reconciler.login()
        except KubeConfigError as exc:
            raise kopf.LoginError(str(exc)) from exc
        return await connection_info(cfg)

    @kopf.on.startup(registry=registry)
    async def startup(**_: Any) -> None:
        reconciler.start_resync()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await reconciler.close()

    @kopf.on.event(c.K8S_GROUP, c.K8S_VERSION, c.K8S_PLURAL, registry=registry)
    async def server_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        reconciler.observe(type, body)

    async def child_event(body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata") or {}
        server = (meta.get("labels") or {}).get(c.K8S_LABEL_SERVER)
        key = (str(meta.get("namespace")), str(server))
        if server and key in reconciler.objects:
            reconciler.request(key)

    for kind in ("deployments", "statefulsets"):
        kopf.on.event("apps", "v1", kind, id=f"child-{kind}", labels=managed, registry=registry)(
            child_event
        )
    return registry


__all__ = [
    "OperatorConfig",
    "Reconciler",
    "build_registry",
    "connection_info",
    "make_settings",
]
