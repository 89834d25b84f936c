"""The operator, run for real (kopf) against kmock's stateful Kubernetes API on 127.0.0.1.

Each test starts ``mcp-fleet operator``'s own entry (``operate``) in a task:
the login handler reads ``KUBECONFIG`` (pointing at kmock), kopf watches the
MCPServer resource and the operator's children, and readiness is a real MCP
initialize against a real ``mcp-fleet bridge`` (the Service's address is
mapped to the bridge on 127.0.0.1, since there is no pod behind it here).

Changes are made through kmock's HTTP API, so the operator sees watch events
just as from a real API server. kmock does not bump ``metadata.generation``
(tests do, as the API server would on a spec change), runs no Deployment
controller (tests report ready pods on the Deployment's status subresource,
as it would) and has no garbage collector (see ``test_deleted_server_...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import kmock as kmock_lib
import pytest
from k8s_support import BRIDGE_CLI, write_kubeconfig
from mcp_fleet.operator.handlers import OperatorConfig, make_settings
from mcp_fleet.operator.k8s_plan import PlanOptions
from mcp_fleet.operator.main import OperatorOptions, operate

NS = "mcp"
MCP = kmock_lib.resource("mcp-fleet.dev", "v1alpha1", "mcpservers")
MCP_PATH = f"/apis/mcp-fleet.dev/v1alpha1/namespaces/{NS}/mcpservers"
DEPLOYMENTS = kmock_lib.resource("apps", "v1", "deployments")
SERVICES = kmock_lib.resource("", "v1", "services")
POLICIES = kmock_lib.resource("networking.k8s.io", "v1", "networkpolicies")
T = TypeVar("T")

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning"),
]


async def eventually(fn: Callable[[], T | None], *, within: float = 15.0) -> T:
    """Poll ``fn`` until it returns something truthy; fail with the last value otherwise."""
    deadline = asyncio.get_running_loop().time() + within
    value: T | None = None
    while asyncio.get_running_loop().time() < deadline:
        value = fn()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met in {within}s; last value: {value!r}")


def get(kmock: Any, resource: Any, name: str) -> dict[str, Any] | None:
    key = (resource, NS, name)
    if key not in kmock.objects or kmock.objects[key].deleted:
        return None
    return dict(kmock.objects[key].raw)


def status(kmock: Any, name: str) -> dict[str, Any]:
    return dict((get(kmock, MCP, name) or {}).get("status") or {})


def condition(st: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in st.get("conditions", []) if c["type"] == ctype)


async def call(kmock: Any, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    async with kmock.request(method, path, json=body) as resp:
        assert resp.status < 300, await resp.text()
        return await resp.json()


def mcpserver(name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mcp-fleet.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "generation": 1,
            "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **meta,
        },
        "spec": spec,
    }


TIME_SPEC = {
    "image": "mcp-fleet:test",
    "command": ["mcp-server-time"],
    "bridge": {"mode": "inline"},
    "env": [{"name": "TZ", "value": "UTC"}],
    "secretRefs": [{"name": "time-secrets", "key": "token", "env": "API_TOKEN"}],
}


@pytest.fixture
def api(kmock: Any, kubeconfig_env: Path) -> Any:
    """kmock serving the built-in kinds and MCPServer (with status), KUBECONFIG pointing at it."""
    kmock.resources.load_bundled()
    kmock.resources[MCP] = kmock_lib.ResourceInfo(
        kind="MCPServer",
        singular="mcpserver",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        shortnames={"mcps"},
        subresources={"status"},
    )
    write_kubeconfig(kubeconfig_env, str(kmock.url).rstrip("/"))
    return kmock


@pytest.fixture
async def operator(api: Any, time_bridge: int) -> AsyncIterator[OperatorConfig]:
    config = OperatorConfig(
        plan_options=PlanOptions(bridge_image="mcp-fleet:test", fleet_namespace=NS),
        resolve_url=lambda address: f"http://127.0.0.1:{time_bridge}{address.path}",
        resync_seconds=0.5,
        probe_timeout=10.0,
    )
    settings = make_settings()
    assert settings.scanning.disabled  # as in production; kmock 0.8 cannot list namespaces
    task = asyncio.create_task(
        operate(OperatorOptions(namespaces=(NS,)), config=config, settings=settings)
    )
    try:
        yield config
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def report_ready_pods(kmock: Any, name: str, replicas: int = 1) -> None:
    """What the Deployment controller would write once the pods pass their probes."""
    body = {
        "status": {
            "replicas": replicas,
            "readyReplicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas,
        }
    }
    await call(kmock, "PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{name}/status", body)


async def test_server_is_created_probed_rolled_out_and_healed(kmock: Any, operator: Any) -> None:
    await call(kmock, "POST", MCP_PATH, mcpserver("time", TIME_SPEC))

    dep = await eventually(lambda: get(kmock, DEPLOYMENTS, "time"))
    owner = {
        "apiVersion": "mcp-fleet.dev/v1alpha1",
        "kind": "MCPServer",
        "name": "time",
        "uid": "uid-time",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert dep["metadata"]["ownerReferences"] == [owner]
    assert dep["metadata"]["labels"]["mcp-fleet.dev/server"] == "time"
    assert dep["spec"]["selector"]["matchLabels"] == {
        "mcp-fleet.dev/server": "time",
        "app.kubernetes.io/component": "mcp-server",
    }
    pod = dep["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["command"][:2] == ["mcp-fleet", "bridge"]
    assert server["command"][-2:] == ["--", "mcp-server-time"]
    assert server["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] == 65534
    assert pod["automountServiceAccountToken"] is False
    assert {
        "name": "API_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "time-secrets", "key": "token", "optional": False}},
    } in server["env"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    first_hash = dep["spec"]["template"]["metadata"]["annotations"]["mcp-fleet.dev/config-hash"]

    svc = await eventually(lambda: get(kmock, SERVICES, "time"))
    assert svc["metadata"]["ownerReferences"] == [owner]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["port"] == 8080
    policy = await eventually(lambda: get(kmock, POLICIES, "time"))
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["egress"] == []  # network: none (the default)

    # No pod is ready yet: Progressing, not Ready.
    st = await eventually(lambda: (s := status(kmock, "time")).get("state") == "Starting" and s)
    assert condition(st, "Progressing")["status"] == "True"
    assert condition(st, "Ready")["reason"] == "Starting"
    assert st["endpoint"] == "http://time.mcp.svc:8080/mcp"

    # Pods ready -> the operator's own MCP initialize decides Ready.
    await report_ready_pods(kmock, "time")
    st = await eventually(lambda: (s := status(kmock, "time")).get("state") == "Ready" and s)
    ready = condition(st, "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "True",
        "Initialized",
        1,
    )
    assert {"get_current_time", "convert_time"} <= set(st["tools"])
    assert st["serverInfo"]["name"] == "mcp-time"
    assert condition(st, "Degraded")["status"] == "False"
    assert st["readyReplicas"] == 1 and st["configHash"] == first_hash

    # A spec change rolls out: a new config hash on the pod template.
    change = {
        "metadata": {"generation": 2},
        "spec": {"env": [{"name": "TZ", "value": "Europe/Paris"}]},
    }
    await call(kmock, "PATCH", f"{MCP_PATH}/time", change)
    dep = await eventually(
        lambda: (
            (d := get(kmock, DEPLOYMENTS, "time"))
            and d["spec"]["template"]["metadata"]["annotations"]["mcp-fleet.dev/config-hash"]
            != first_hash
            and d
        )
    )
    assert {"name": "TZ", "value": "Europe/Paris"} in dep["spec"]["template"]["spec"]["containers"][
        0
    ]["env"]
    st = await eventually(lambda: (s := status(kmock, "time")).get("observedGeneration") == 2 and s)
    assert condition(st, "Ready")["observedGeneration"] == 2

    # A child deleted behind the operator's back comes back.
    await call(kmock, "DELETE", f"/api/v1/namespaces/{NS}/services/time")
    svc = await eventually(lambda: get(kmock, SERVICES, "time"))
    assert svc["metadata"]["ownerReferences"] == [owner]


async def test_deleted_server_leaves_children_to_the_garbage_collector(
    kmock: Any, operator: Any
) -> None:
    """Deletion: no finalizer, no delete handler; ownerReferences let the GC remove children.

    kmock has no garbage collector, so what can be checked is what the GC
    relies on: every child names the deleted MCPServer as its controlling
    owner (with blockOwnerDeletion), and the operator neither blocks the
    deletion nor recreates or touches the children afterwards.
    """
    await call(kmock, "POST", MCP_PATH, mcpserver("gone", TIME_SPEC))
    children = [(DEPLOYMENTS, "gone"), (SERVICES, "gone"), (POLICIES, "gone")]
    for resource, name in children:
        await eventually(lambda r=resource, n=name: get(kmock, r, n))  # type: ignore[misc]
    await eventually(lambda: status(kmock, "gone").get("state"))
    server = get(kmock, MCP, "gone")
    assert server is not None and not server["metadata"].get("finalizers")

    await call(kmock, "DELETE", f"{MCP_PATH}/gone")
    assert get(kmock, MCP, "gone") is None  # deleted at once: nothing blocks it
    versions = {k: len(kmock.objects[(k[0], NS, k[1])].history) for k in children}
    await asyncio.sleep(1.6)  # three resync periods
    for resource, name in children:
        obj = get(kmock, resource, name)
        assert obj is not None
        (ref,) = obj["metadata"]["ownerReferences"]
        assert (ref["uid"], ref["controller"], ref["blockOwnerDeletion"]) == (
            "uid-gone",
            True,
            True,
        )
        assert len(kmock.objects[(resource, NS, name)].history) == versions[(resource, name)]


async def test_bad_spec_is_degraded_with_the_field_named_then_recovers(
    kmock: Any, operator: Any
) -> None:
    bad = {"image": "mcp-fleet:test", "command": ["x"], "transport": "grpc", "port": 70000}
    await call(kmock, "POST", MCP_PATH, mcpserver("broken", bad))
    st = await eventually(lambda: (s := status(kmock, "broken")).get("state") and s)
    assert st["state"] == "Failed"
    degraded = condition(st, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert (
        "spec.transport: expected 'stdio', 'streamable-http' or 'sse', got 'grpc'"
        in degraded["message"]
    )
    assert "spec.port" in degraded["message"]
    assert condition(st, "Ready")["status"] == "False"
    await asyncio.sleep(0.6)
    assert get(kmock, DEPLOYMENTS, "broken") is None  # nothing is run from a bad spec

    fix = {"metadata": {"generation": 2}, "spec": {"transport": "streamable-http", "port": 9000}}
    await call(kmock, "PATCH", f"{MCP_PATH}/broken", fix)
    dep = await eventually(lambda: get(kmock, DEPLOYMENTS, "broken"))
    assert dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 9000
    st = await eventually(
        lambda: (s := status(kmock, "broken")).get("observedGeneration") == 2 and s
    )
    assert condition(st, "Degraded")["status"] == "False"


async def test_foreign_object_is_never_taken_over(kmock: Any, operator: Any) -> None:
    theirs = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "taken", "namespace": NS, "labels": {"app": "theirs"}},
        "spec": {"replicas": 3},
    }
    await call(kmock, "POST", f"/apis/apps/v1/namespaces/{NS}/deployments", theirs)
    await call(kmock, "POST", MCP_PATH, mcpserver("taken", TIME_SPEC))
    st = await eventually(lambda: (s := status(kmock, "taken")).get("conditions") and s)
    degraded = condition(st, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "RuntimeError"
    assert "Deployment taken exists and is not controlled by this MCPServer" in degraded["message"]
    assert get(kmock, DEPLOYMENTS, "taken") == theirs  # untouched
    assert get(kmock, SERVICES, "taken") is not None  # the rest of the server is still made


async def test_remote_server_is_probed_and_image_problems_are_reported(
    kmock: Any, operator: Any, time_bridge: int
) -> None:
    remote = {"remote": {"url": f"http://127.0.0.1:{time_bridge}/mcp"}}
    await call(kmock, "POST", MCP_PATH, mcpserver("far", remote))
    st = await eventually(lambda: (s := status(kmock, "far")).get("state") == "Ready" and s)
    assert st["endpoint"] == f"http://127.0.0.1:{time_bridge}/mcp"
    assert "get_current_time" in st["tools"]
    assert get(kmock, DEPLOYMENTS, "far") is None and get(kmock, SERVICES, "far") is None

    await call(kmock, "POST", MCP_PATH, mcpserver("pull", {**TIME_SPEC, "image": "nope:missing"}))
    await eventually(lambda: get(kmock, DEPLOYMENTS, "pull"))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "pull-7d9f-abcde",
            "namespace": NS,
            "labels": {"mcp-fleet.dev/server": "pull", "app.kubernetes.io/component": "mcp-server"},
        },
        "status": {
            "containerStatuses": [
                {
                    "name": "server",
                    "state": {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": 'Back-off pulling image "nope:missing"',
                        }
                    },
                }
            ]
        },
    }
    await call(kmock, "POST", f"/api/v1/namespaces/{NS}/pods", pod)
    st = await eventually(lambda: (s := status(kmock, "pull")).get("state") == "Failed" and s)
    ready = condition(st, "Ready")
    assert ready["reason"] == "ImageUnavailable"
    assert 'Back-off pulling image "nope:missing"' in ready["message"]
    assert condition(st, "Degraded")["status"] == "True"


async def test_on_demand_server_scales_to_zero_and_back(kmock: Any, operator: Any) -> None:
    long_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    spec = {**TIME_SPEC, "lifecycle": {"mode": "on-demand", "idleTimeout": "5m"}}
    await call(kmock, "POST", MCP_PATH, mcpserver("lazy", spec, creationTimestamp=long_ago))
    dep = await eventually(lambda: get(kmock, DEPLOYMENTS, "lazy"))
    assert dep["spec"]["replicas"] == 0
    st = await eventually(lambda: (s := status(kmock, "lazy")).get("state") == "Stopped" and s)
    assert condition(st, "Ready")["reason"] == "ScaledToZero"

    # The router marks activity: the server is wanted again.
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    mark = {"metadata": {"annotations": {"mcp-fleet.dev/last-activity": now}}}
    await call(kmock, "PATCH", f"{MCP_PATH}/lazy", mark)
    await eventually(lambda: (d := get(kmock, DEPLOYMENTS, "lazy")) and d["spec"]["replicas"] == 1)
    st = await eventually(lambda: (s := status(kmock, "lazy")).get("state") == "Starting" and s)


async def test_operator_command_runs_as_a_process(api: Any, tmp_path: Path) -> None:
    """``mcp-fleet operator`` itself: credentials from KUBECONFIG, children made, SIGTERM stops."""
    log = (tmp_path / "operator.log").open("wb")
    argv = [sys.executable, str(BRIDGE_CLI), "operator", "--namespace", NS, "--resync", "1"]
    env = {**os.environ, "MCP_FLEET_BRIDGE_IMAGE": "registry.local/mcp-fleet:9"}
    proc = await asyncio.create_subprocess_exec(*argv, stdout=log, stderr=log, env=env)
    try:
        await call(
            api, "POST", MCP_PATH, mcpserver("proc", {"image": "mcp/time", "command": ["t"]})
        )
        dep = await eventually(lambda: get(api, DEPLOYMENTS, "proc"), within=30)
        (sidecar,) = dep["spec"]["template"]["spec"]["initContainers"]
        assert sidecar["image"] == "registry.local/mcp-fleet:9"
        await eventually(lambda: status(api, "proc").get("state") == "Starting", within=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
        log.close()
    assert code == 0, (tmp_path / "operator.log").read_text()
