"""MCPServer spec -> the child objects it should have (``k8s_diff``: the actions to get there).

Pure and synchronous: no Kubernetes client is imported here, no clock is read
(``now`` is an argument), so every output is a function of its inputs and is
tested as such. The operator observes once, calls ``plan_children`` and
``k8s_diff.diff_children``, and executes the actions it gets back without deciding
anything itself (the compose split: observe, plan, execute).

What a server becomes:

- ``stdio`` servers are served over streamable HTTP by ``mcp-fleet bridge``:
  either as a native sidecar (an init container with ``restartPolicy:
  Always``) joined to the server container by two FIFOs on a shared
  ``emptyDir`` (works with any image that has ``/bin/sh``), or ``inline``,
  where the bridge wraps the server in the same container (the image carries
  ``mcp-fleet``, as ours does for the Python example servers). Routers reach
  every server over HTTP through its Service; nobody attaches to pods.
- ``streamable-http`` and ``sse`` servers run as they are; the Service points at them.
- ``remote`` servers get no objects at all: the operator probes the URL.

Change detection is the compose way: the pod template is hashed into the
``mcp-fleet.dev/config-hash`` annotation (a changed spec means a new hash, so
the template changes and the workload rolls out), and every child carries the
hash of its own manifest in ``mcp-fleet.dev/applied-hash``, so an unchanged
child is never written again and there is no field-by-field comparison.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from mcp_fleet import conventions as c
from mcp_fleet.kube.spec import MCPServerSpec, Transport

Manifest = dict[str, Any]

FIFO_DIR = "/mcp-io"
SERVER_CONTAINER = "server"
BRIDGE_CONTAINER = "mcp-bridge"
PORT_NAME = "mcp"
#: Bumped when the shape of generated pods changes, so every server rolls once.
TEMPLATE_REVISION = "1"
#: Kinds the operator creates; orphans of these kinds (our labels, not desired) are deleted.
MANAGED_KINDS: tuple[tuple[str, str], ...] = (
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("v1", "Service"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
)


@dataclass(frozen=True, slots=True)
class ServerRef:
    """The identity of the MCPServer being planned (owner of every child)."""

    name: str
    namespace: str
    uid: str
    generation: int = 0
    created: datetime | None = None
    #: From the ``mcp-fleet.dev/last-activity`` annotation (router traffic, on-demand servers).
    last_activity: datetime | None = None


@dataclass(frozen=True, slots=True)
class PlanOptions:
    """Operator-wide settings that shape every plan."""

    #: Image carrying ``mcp-fleet`` for the sidecar bridge (the operator's own image).
    bridge_image: str = "mcp-fleet:latest"
    #: Namespace of the router and operator pods: the only ones let in by NetworkPolicies.
    #: None: only pods of the server's own namespace are matched.
    fleet_namespace: str | None = None
    default_requests: Mapping[str, str] = field(
        default_factory=lambda: {"cpu": "50m", "memory": "64Mi"}
    )
    default_limits: Mapping[str, str] = field(
        default_factory=lambda: {"cpu": "1", "memory": "512Mi"}
    )


@dataclass(frozen=True, slots=True)
class ServiceAddress:
    """Where a server's MCP endpoint lives inside the cluster."""

    name: str
    namespace: str
    port: int
    path: str
    transport: Literal["streamable-http", "sse"] = "streamable-http"

    def cluster_url(self) -> str:
        return f"http://{self.name}.{self.namespace}.svc:{self.port}{self.path}"


@dataclass(frozen=True, slots=True)
class ChildPlan:
    """Everything one MCPServer should have, as of one spec and one instant."""

    config_hash: str
    manifests: tuple[Manifest, ...]
    #: (kind, name) of the Deployment or StatefulSet; None for remote servers.
    workload: tuple[str, str] | None
    address: ServiceAddress | None
    remote_url: str | None
    remote_transport: Literal["streamable-http", "sse"] = "streamable-http"
    #: Replicas wanted right now (0 while an on-demand server is idle).
    replicas: int = 0
    idle: bool = False
    #: Things the user should know (e.g. DNS names in allowHosts).
    notes: tuple[str, ...] = ()
    #: The pods' label selector as text (``status.selector``, for the scale subresource).
    selector: str | None = None

    @property
    def endpoint(self) -> str | None:
        if self.remote_url is not None:
            return self.remote_url
        return self.address.cluster_url() if self.address else None


def labels_for(name: str) -> dict[str, str]:
    """Labels every child of MCPServer ``name`` carries (selector labels included)."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": c.K8S_COMPONENT_SERVER,
        "app.kubernetes.io/part-of": c.K8S_PART_OF,
        "app.kubernetes.io/managed-by": c.K8S_MANAGER,
        c.K8S_LABEL_SERVER: name,
    }


def selector_for(name: str) -> dict[str, str]:
    """The immutable pod selector: as small as possible, so it never needs to change."""
    return {c.K8S_LABEL_SERVER: name, "app.kubernetes.io/component": c.K8S_COMPONENT_SERVER}


def owner_reference(ref: ServerRef) -> dict[str, Any]:
    return {
        "apiVersion": f"{c.K8S_GROUP}/{c.K8S_VERSION}",
        "kind": c.K8S_KIND,
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def canonical_hash(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def is_idle(ref: ServerRef, spec: MCPServerSpec, *, now: datetime) -> bool:
    """An on-demand server is idle once neither creation nor traffic is within idleTimeout."""
    if spec.lifecycle.mode != "on-demand" or ref.created is None:
        return False
    last = max(t for t in (ref.created, ref.last_activity) if t is not None)
    return now - last > timedelta(seconds=spec.lifecycle.idle_timeout_seconds)


def plan_children(
    ref: ServerRef, spec: MCPServerSpec, *, options: PlanOptions, now: datetime
) -> ChildPlan:
    """The desired children of one MCPServer (deterministic: same inputs, same manifests)."""
    if spec.remote is not None:
        return ChildPlan(
            config_hash=canonical_hash({"remote": spec.remote.model_dump(mode="json")}),
            manifests=(),
            workload=None,
            address=None,
            remote_url=spec.remote.url,
            remote_transport=spec.remote.transport,
        )
    idle = is_idle(ref, spec, now=now)
    replicas = 0 if idle else spec.replicas
    template = _pod_template(ref, spec, options)
    config_hash = canonical_hash([TEMPLATE_REVISION, template])
    template["metadata"]["annotations"][c.K8S_ANNOTATION_CONFIG_HASH] = config_hash
    http_transport: Literal["streamable-http", "sse"] = (
        "sse" if spec.transport is Transport.SSE else "streamable-http"
    )
    address = ServiceAddress(ref.name, ref.namespace, spec.port, spec.http_path, http_transport)
    manifests = [_workload(ref, spec, template, replicas, config_hash)]
    manifests.append(_service(ref, spec, name=ref.name, headless=False))
    if spec.workload == "StatefulSet":
        manifests.append(_service(ref, spec, name=f"{ref.name}-pods", headless=True))
    policy, notes = _network_policy(ref, spec, options)
    manifests.append(policy)
    return ChildPlan(
        config_hash=config_hash,
        manifests=tuple(_stamp(m) for m in manifests),
        workload=(spec.workload, ref.name),
        address=address,
        remote_url=None,
        replicas=replicas,
        idle=idle,
        notes=notes,
        selector=",".join(f"{k}={v}" for k, v in sorted(selector_for(ref.name).items())),
    )


def merge_overrides(base: Any, override: Any) -> Any:
    """Merge a ``podTemplate`` override into generated YAML, the way users expect.

    Dicts merge key by key; lists of named items (containers, volumes, env,
    ports, volumeMounts) merge by ``name``; any other value replaces.
    """
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge_overrides(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(override, list) and _named(base) and _named(override):
        merged = [dict(item) for item in base]
        index = {item["name"]: i for i, item in enumerate(merged)}
        for item in override:
            if item["name"] in index:
                merged[index[item["name"]]] = merge_overrides(merged[index[item["name"]]], item)
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(override)


def fifo_script(directory: str) -> str:
    """The server container's shell line: run the argv with its stdio on the bridge's FIFOs.

    ``in`` is opened before ``out``, the order the bridge opens them in, so neither blocks
    the other forever.
    """
    return f'exec "$0" "$@" <"{directory}/in" >"{directory}/out"'


def _named(items: list[Any]) -> bool:
    return all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items)


def _stamp(manifest: Manifest) -> Manifest:
    """Record the manifest's own hash on it, so unchanged children are never rewritten."""
    manifest["metadata"].setdefault("annotations", {})
    manifest["metadata"]["annotations"][c.K8S_ANNOTATION_APPLIED_HASH] = canonical_hash(manifest)
    return manifest


def _meta(ref: ServerRef, name: str, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": ref.namespace,
        "labels": labels_for(ref.name),
        "annotations": {},
        "ownerReferences": [owner_reference(ref)],
    }
    meta.update(extra)
    return meta


def _workload(
    ref: ServerRef, spec: MCPServerSpec, template: Manifest, replicas: int, config_hash: str
) -> Manifest:
    meta = _meta(ref, ref.name)
    meta["annotations"][c.K8S_ANNOTATION_CONFIG_HASH] = config_hash
    body: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": selector_for(ref.name)},
        "revisionHistoryLimit": 3,
        "template": template,
    }
    if spec.workload == "StatefulSet":
        body["serviceName"] = f"{ref.name}-pods"
        body["podManagementPolicy"] = "Parallel"
        body["updateStrategy"] = {"type": "RollingUpdate"}
    else:
        # A new pod answers before an old one goes: no gap in service during a rollout.
        body["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        }
    return {"apiVersion": "apps/v1", "kind": spec.workload, "metadata": meta, "spec": body}


def _service(ref: ServerRef, spec: MCPServerSpec, *, name: str, headless: bool) -> Manifest:
    body: dict[str, Any] = {
        "selector": selector_for(ref.name),
        "ports": [
            {
                "name": PORT_NAME,
                "port": spec.port,
                "targetPort": PORT_NAME,
                "protocol": "TCP",
                "appProtocol": "http",
            }
        ],
    }
    if headless:
        body["clusterIP"] = "None"
    else:
        # MCP sessions live in one pod: keep each router replica on the pod it started with.
        body["type"] = "ClusterIP"
        body["sessionAffinity"] = "ClientIP"
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(ref, name), "spec": body}


def _container_security(spec: MCPServerSpec) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": spec.security_context.read_only_root_filesystem,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _resources(spec: MCPServerSpec, options: PlanOptions) -> dict[str, Any]:
    return {
        "requests": {**options.default_requests, **spec.resources.requests},
        "limits": {**options.default_limits, **spec.resources.limits},
    }


def _http_probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def _bridge_args(spec: MCPServerSpec) -> list[str]:
    args = ["mcp-fleet", "bridge", "--port", str(spec.port), "--path", spec.http_path]
    if spec.sessions == "per-client":
        args.append("--per-session")
    return args


def _env(spec: MCPServerSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": e.name, "value": e.value} for e in spec.env]
    names = {e.name for e in spec.env}
    for ref in spec.secret_refs:
        env.append(
            {
                "name": ref.env_name,
                "valueFrom": {
                    "secretKeyRef": {"name": ref.name, "key": ref.key, "optional": ref.optional}
                },
            }
        )
        names.add(ref.env_name)
    if "HOME" not in names:
        # The root filesystem is read-only and uid 65534 has no home: give tools a writable one.
        env.append({"name": "HOME", "value": "/tmp"})
    return env


def _pod_template(ref: ServerRef, spec: MCPServerSpec, options: PlanOptions) -> Manifest:
    assert spec.image is not None  # guaranteed by the spec model for non-remote servers
    port = {"name": PORT_NAME, "containerPort": spec.port, "protocol": "TCP"}
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    server: dict[str, Any] = {
        "name": SERVER_CONTAINER,
        "image": spec.image,
        "env": _env(spec),
        "resources": _resources(spec, options),
        "securityContext": _container_security(spec),
        "volumeMounts": mounts,
    }
    if spec.image_pull_policy:
        server["imagePullPolicy"] = spec.image_pull_policy
    init_containers: list[dict[str, Any]] = []
    if spec.transport is not Transport.STDIO:
        if spec.command:
            server["command"] = list(spec.command)
        if spec.args:
            server["args"] = list(spec.args)
        server["ports"] = [port]
        server["readinessProbe"] = {"tcpSocket": {"port": PORT_NAME}, "periodSeconds": 5}
    elif spec.bridge.mode == "inline":
        server["command"] = [*_bridge_args(spec), "--", *spec.command, *spec.args]
        server["ports"] = [port]
        server["readinessProbe"] = _http_probe("/readyz", period=5, failures=3)
        server["livenessProbe"] = _http_probe("/healthz", period=10, failures=3)
    else:
        server["command"] = ["/bin/sh", "-c", fifo_script(FIFO_DIR)]
        server["args"] = [*spec.command, *spec.args]
        mounts.append({"name": "mcp-io", "mountPath": FIFO_DIR})
        volumes.append({"name": "mcp-io", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})
        init_containers.append(_sidecar(spec, options))
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 15,
        "securityContext": _pod_security(spec),
        "containers": [server],
        "volumes": volumes,
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    metadata: dict[str, Any] = {
        "labels": {**spec.pod_template.metadata.labels, **labels_for(ref.name)},
        "annotations": dict(spec.pod_template.metadata.annotations),
    }
    merged_spec = merge_overrides(pod_spec, spec.pod_template.spec)
    return {"metadata": metadata, "spec": merged_spec}


def _pod_security(spec: MCPServerSpec) -> dict[str, Any]:
    sc = spec.security_context
    out: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": sc.run_as_user,
        "runAsGroup": sc.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if sc.fs_group is not None:
        out["fsGroup"] = sc.fs_group
    return out


def _sidecar(spec: MCPServerSpec, options: PlanOptions) -> dict[str, Any]:
    """The bridge as a native sidecar: started (FIFOs made) before the server container."""
    return {
        "name": BRIDGE_CONTAINER,
        "image": spec.bridge.image or options.bridge_image,
        "command": [*_bridge_args(spec), "--fifo-dir", FIFO_DIR],
        "restartPolicy": "Always",
        "ports": [{"name": PORT_NAME, "containerPort": spec.port, "protocol": "TCP"}],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "startupProbe": _http_probe("/healthz", period=1, failures=30),
        "readinessProbe": _http_probe("/readyz", period=5, failures=3),
        "livenessProbe": _http_probe("/healthz", period=10, failures=3),
        "resources": {
            "requests": {"cpu": "10m", "memory": "48Mi"},
            "limits": {"cpu": "500m", "memory": "192Mi"},
        },
        "securityContext": {**_container_security(spec), "readOnlyRootFilesystem": True},
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "mcp-io", "mountPath": FIFO_DIR},
        ],
    }


def _network_policy(
    ref: ServerRef, spec: MCPServerSpec, options: PlanOptions
) -> tuple[Manifest, tuple[str, ...]]:
    """Ingress only from the fleet's router and operator; egress as ``spec.network`` says.

    Core NetworkPolicy matches addresses, not names: a CIDR entry is exact, a
    DNS name can only open its port to every address (plus DNS itself). Pin
    names with a CIDR, or use an FQDN-aware policy engine, where that matters.
    """
    peer: dict[str, Any] = {
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/part-of": c.K8S_PART_OF},
            "matchExpressions": [
                {
                    "key": "app.kubernetes.io/component",
                    "operator": "In",
                    "values": [c.K8S_COMPONENT_ROUTER, c.K8S_COMPONENT_OPERATOR],
                }
            ],
        }
    }
    if options.fleet_namespace:
        peer["namespaceSelector"] = {
            "matchLabels": {"kubernetes.io/metadata.name": options.fleet_namespace}
        }
    body: dict[str, Any] = {
        "podSelector": {"matchLabels": selector_for(ref.name)},
        "ingress": [{"from": [peer], "ports": [{"port": spec.port, "protocol": "TCP"}]}],
    }
    mode = spec.network.effective_mode
    notes: list[str] = []
    if mode == "open":
        body["policyTypes"] = ["Ingress"]
    else:
        body["policyTypes"] = ["Ingress", "Egress"]
        egress: list[dict[str, Any]] = []
        if mode == "allowHosts":
            egress.append(
                {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
            )
            for rule in spec.network.rules:
                entry: dict[str, Any] = {}
                if rule.cidr is not None:
                    entry["to"] = [{"ipBlock": {"cidr": rule.cidr}}]
                else:
                    notes.append(
                        f"allowHosts {rule.host}: a NetworkPolicy cannot match DNS names; "
                        f"port {rule.port or 'any'} is open to every address"
                    )
                if rule.port is not None:
                    entry["ports"] = [{"port": rule.port, "protocol": "TCP"}]
                if not entry:
                    # A bare host name without a port: every destination, every port.
                    entry = {
                        "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]
                    }
                egress.append(entry)
        body["egress"] = egress
    manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(ref, ref.name),
        "spec": body,
    }
    return manifest, tuple(notes)
