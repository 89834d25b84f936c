"""The pure planner: spec -> children, children -> actions. No client, no clock, no cluster.

Includes the convergence property of DESIGN.md for the operator: whatever
the observed children are, executing the actions of one diff leaves nothing
more to do (``diff(plan, apply(diff(plan, observed))) == []``), and no action
ever touches an object this MCPServer does not control.
"""

from __future__ import annotations

import ast
import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp_fleet.errors import FleetConfigError
from mcp_fleet.kube.spec import parse_duration, parse_host_rule, parse_spec
from mcp_fleet.operator import k8s_plan
from mcp_fleet.operator.k8s_diff import diff_children
from mcp_fleet.operator.k8s_plan import (
    ChildPlan,
    PlanOptions,
    ServerRef,
    merge_overrides,
    plan_children,
)

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
OPTIONS = PlanOptions(bridge_image="mcp-fleet:0.1.0", fleet_namespace="mcp-fleet")
BASE = {"image": "mcp/time", "command": ["mcp-server-time"]}


def plan(spec: dict[str, Any], *, name: str = "time", uid: str = "u1", **ref: Any) -> ChildPlan:
    server = ServerRef(name, "team-a", uid, 1, **ref)
    return plan_children(server, parse_spec(spec, name=name), options=OPTIONS, now=NOW)


def find(p: ChildPlan, kind: str, name: str | None = None) -> dict[str, Any]:
    return next(
        m
        for m in p.manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    )


def template_hash(p: ChildPlan) -> str:
    return str(
        find(p, p.workload[0] if p.workload else "")["spec"]["template"]["metadata"]["annotations"][
            "mcp-fleet.dev/config-hash"
        ]
    )


def test_plans_are_deterministic() -> None:
    assert plan(BASE) == plan(copy.deepcopy(BASE))


def test_config_hash_follows_the_pod_template_not_the_scale() -> None:
    base = plan(BASE)
    assert template_hash(base) == base.config_hash
    assert plan({**BASE, "replicas": 4}).config_hash == base.config_hash
    assert plan({**BASE, "env": [{"name": "TZ", "value": "UTC"}]}).config_hash != base.config_hash
    assert plan({**BASE, "image": "mcp/time:2"}).config_hash != base.config_hash


def test_sidecar_bridge_layout() -> None:
    pod = find(plan(BASE), "Deployment")["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: started before the server
    assert sidecar["image"] == "mcp-fleet:0.1.0"
    assert sidecar["command"] == [
        "mcp-fleet",
        "bridge",
        "--port",
        "8080",
        "--path",
        "/mcp",
        "--fifo-dir",
        "/mcp-io",
    ]
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/healthz"
    (server,) = pod["containers"]
    assert server["command"] == ["/bin/sh", "-c", 'exec "$0" "$@" <"/mcp-io/in" >"/mcp-io/out"']
    assert server["args"] == ["mcp-server-time"]
    assert "ports" not in server  # the bridge is the one listening
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "mcp-io"}


def test_inline_bridge_and_http_servers() -> None:
    inline = find(
        plan({**BASE, "bridge": {"mode": "inline"}, "sessions": "per-client"}), "Deployment"
    )
    (server,) = inline["spec"]["template"]["spec"]["containers"]
    bridge = ["mcp-fleet", "bridge", "--port", "8080", "--path", "/mcp", "--per-session"]
    assert server["command"] == [*bridge, "--", "mcp-server-time"]
    assert "initContainers" not in inline["spec"]["template"]["spec"]
    http = plan({"image": "srv", "transport": "sse", "port": 3000, "args": ["--sse"]})
    (server,) = find(http, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert server["args"] == ["--sse"] and "command" not in server
    assert server["ports"] == [{"name": "mcp", "containerPort": 3000, "protocol": "TCP"}]
    assert http.endpoint == "http://time.team-a.svc:3000/sse"
    assert http.address is not None and http.address.transport == "sse"


def test_hardening_is_on_by_default() -> None:
    pod = find(plan(BASE), "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65534,
        "runAsGroup": 65534,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for container in pod["containers"] + pod["initContainers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert container["resources"]["limits"] and container["resources"]["requests"]


def test_network_policies() -> None:
    none = find(plan(BASE), "NetworkPolicy")["spec"]
    assert none["policyTypes"] == ["Ingress", "Egress"] and none["egress"] == []
    (rule,) = none["ingress"]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "mcp-fleet"}
    }
    assert peer["podSelector"]["matchExpressions"][0]["values"] == ["router", "operator"]
    hosts = plan({**BASE, "network": {"allowHosts": ["api.github.com:443", "10.0.0.0/8:5432"]}})
    egress = find(hosts, "NetworkPolicy")["spec"]["egress"]
    assert egress == [
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
        {"ports": [{"port": 443, "protocol": "TCP"}]},
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 5432, "protocol": "TCP"}]},
    ]
    assert hosts.notes == (
        "allowHosts api.github.com: a NetworkPolicy cannot match DNS names; "
        "port 443 is open to every address",
    )
    opened = find(plan({**BASE, "network": {"mode": "open"}}), "NetworkPolicy")["spec"]
    assert opened["policyTypes"] == ["Ingress"] and "egress" not in opened


def test_pod_template_overrides_merge_by_name_and_keep_our_labels() -> None:
    spec = {
        **BASE,
        "bridge": {"mode": "inline"},
        "env": [{"name": "A", "value": "1"}],
        "podTemplate": {
            "metadata": {"labels": {"team": "a", "mcp-fleet.dev/server": "hijack"}},
            "spec": {
                "nodeSelector": {"disk": "ssd"},
                "containers": [
                    {
                        "name": "server",
                        "env": [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}],
                    },
                    {"name": "extra", "image": "busybox"},
                ],
            },
        },
    }
    template = find(plan(spec), "Deployment")["spec"]["template"]
    assert template["metadata"]["labels"]["team"] == "a"
    assert template["metadata"]["labels"]["mcp-fleet.dev/server"] == "time"
    assert template["spec"]["nodeSelector"] == {"disk": "ssd"}
    server, extra = template["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert (env["A"], env["B"], env["HOME"]) == ("2", "3", "/tmp")
    assert extra == {"name": "extra", "image": "busybox"}
    assert merge_overrides([1, 2], [3]) == [3]


def test_statefulset_gets_a_headless_service() -> None:
    p = plan({**BASE, "workload": "StatefulSet"})
    sts = find(p, "StatefulSet")
    assert sts["spec"]["serviceName"] == "time-pods"
    assert find(p, "Service", "time-pods")["spec"]["clusterIP"] == "None"
    assert find(p, "Service", "time")["spec"]["sessionAffinity"] == "ClientIP"


def test_on_demand_scales_to_zero_after_idle_and_back_with_activity() -> None:
    spec = {**BASE, "lifecycle": {"mode": "on-demand", "idleTimeout": "10m"}}
    fresh = plan(spec, created=NOW - timedelta(minutes=5))
    assert (fresh.replicas, fresh.idle) == (1, False)
    idle = plan(spec, created=NOW - timedelta(hours=2))
    assert (idle.replicas, idle.idle) == (0, True)
    assert find(idle, "Deployment")["spec"]["replicas"] == 0
    woken = plan(spec, created=NOW - timedelta(hours=2), last_activity=NOW - timedelta(minutes=1))
    assert (woken.replicas, woken.idle) == (1, False)
    assert idle.config_hash == woken.config_hash  # scaling never changes the pods


def test_remote_servers_have_no_children() -> None:
    p = plan({"remote": {"url": "https://mcp.example.org/mcp"}})
    assert p.manifests == () and p.workload is None and p.endpoint == "https://mcp.example.org/mcp"


def test_diff_actions_and_their_causes() -> None:
    p = plan(BASE)
    assert [str(a) for a in diff_children(p, [], uid="u1").actions] == [
        "create Deployment/time: missing",
        "create Service/time: missing",
        "create NetworkPolicy/time: missing",
    ]
    live = [copy.deepcopy(m) for m in p.manifests]
    assert diff_children(p, live, uid="u1").actions == ()
    changed = plan({**BASE, "env": [{"name": "X", "value": "y"}]})
    assert [str(a) for a in diff_children(changed, live, uid="u1").actions] == [
        "apply Deployment/time: changed"
    ]
    stale_sts = copy.deepcopy(find(plan({**BASE, "workload": "StatefulSet"}), "StatefulSet"))
    assert [str(a) for a in diff_children(p, [*live, stale_sts], uid="u1").actions] == [
        "delete StatefulSet/time: no longer desired"
    ]


def test_objects_of_others_are_never_touched() -> None:
    p = plan(BASE)
    theirs = copy.deepcopy(find(p, "Service"))
    theirs["metadata"]["ownerReferences"] = [
        {**theirs["metadata"]["ownerReferences"][0], "uid": "other"}
    ]
    orphan_of_other = copy.deepcopy(
        find(plan({**BASE, "workload": "StatefulSet"}, uid="other"), "StatefulSet")
    )
    result = diff_children(p, [theirs, orphan_of_other], uid="u1")
    assert result.conflicts == ("Service time exists and is not controlled by this MCPServer",)
    touched = {(a.kind, a.name) for a in result.actions}
    assert ("Service", "time") not in touched and ("StatefulSet", "time") not in touched


SPEC_VARIANTS = st.fixed_dictionaries(
    {
        "image": st.sampled_from(["mcp/time", "mcp/time:2"]),
        "command": st.just(["srv"]),
        "replicas": st.integers(0, 3),
        "workload": st.sampled_from(["Deployment", "StatefulSet"]),
        "env": st.lists(
            st.sampled_from([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]),
            unique_by=lambda e: e["name"],
        ),
        "network": st.sampled_from(
            [{"mode": "none"}, {"mode": "open"}, {"allowHosts": ["10.0.0.0/8:443"]}]
        ),
    }
)


def _execute(observed: dict[tuple[str, str], dict[str, Any]], p: ChildPlan, uid: str) -> None:
    for action in diff_children(p, list(observed.values()), uid=uid).actions:
        if action.verb == "delete":
            del observed[(action.kind, action.name)]
        else:
            assert action.manifest is not None
            observed[(action.kind, action.name)] = copy.deepcopy(action.manifest)


@settings(max_examples=60, deadline=None)
@given(before=SPEC_VARIANTS, after=SPEC_VARIANTS, drop=st.sets(st.integers(0, 4)))
def test_one_diff_converges_and_spares_foreign_objects(
    before: dict[str, Any], after: dict[str, Any], drop: set[int]
) -> None:
    observed: dict[tuple[str, str], dict[str, Any]] = {}
    _execute(observed, plan(before), "u1")
    for i, key in enumerate(sorted(observed)):
        if i in drop:
            del observed[key]  # children deleted behind the operator's back
    foreign = copy.deepcopy(find(plan(BASE, uid="someone-else"), "NetworkPolicy"))
    foreign["metadata"]["name"] = "not-ours"
    observed[("NetworkPolicy", "not-ours")] = foreign
    target = plan(after)
    _execute(observed, target, "u1")
    assert diff_children(target, list(observed.values()), uid="u1").actions == ()
    assert observed[("NetworkPolicy", "not-ours")] == foreign
    ours = {k for k, v in observed.items() if k != ("NetworkPolicy", "not-ours")}
    assert ours == {(m["kind"], m["metadata"]["name"]) for m in target.manifests}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90), ("90", 90), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("2h", 7200)],
)
def test_durations(text: Any, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "10x", "m", 0, "-5", "1d"])
def test_bad_durations(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_host_rules_and_their_errors() -> None:
    assert parse_host_rule("api.github.com:443").host == "api.github.com"
    assert parse_host_rule("10.1.2.3").cidr == "10.1.2.3/32"
    assert parse_host_rule("[2001:db8::/32]:443").cidr == "2001:db8::/32"
    assert parse_host_rule("*.example.org:443").host == "*.example.org"
    for bad in ("host:0", "host:http", "bad host", "[::1"):
        with pytest.raises(ValueError):
            parse_host_rule(bad)


def test_spec_errors_name_every_field() -> None:
    with pytest.raises(FleetConfigError) as info:
        parse_spec(
            {
                "image": "x",
                "command": ["a"],
                "replicas": -1,
                "lifecycle": {"mode": "sometimes"},
                "extra": 1,
            },
            name="ok",
        )
    text = str(info.value)
    assert "spec.replicas: Input should be greater than or equal to 0, got -1" in text
    assert "spec.lifecycle.mode: expected 'always' or 'on-demand', got 'sometimes'" in text
    assert "spec.extra: unknown field" in text
    with pytest.raises(FleetConfigError, match=r"sessions per-client needs bridge\.mode inline"):
        parse_spec({**BASE, "sessions": "per-client"}, name="ok")
    with pytest.raises(FleetConfigError, match=r"metadata\.name: must be a lower-case DNS label"):
        parse_spec(BASE, name="x" * 60)


PURE_MODULES = ("spec", "k8s_plan", "k8s_diff", "k8s_status")
FORBIDDEN = ("kubernetes", "kubernetes_asyncio", "kopf", "docker", "aiohttp", "httpx", "mcp")


@pytest.mark.parametrize("module", PURE_MODULES)
def test_planning_imports_no_client(module: str) -> None:
    """spec, k8s_plan, k8s_diff, k8s_status: pure, no Kubernetes client, kopf or network library."""
    root = Path(k8s_plan.__file__).parent
    seen: set[str] = set()
    todo = [f"mcp_fleet.operator.{module}"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = root.parent.joinpath(*name.split(".")[1:]).with_suffix(".py")
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for imported in names:
                top = imported.split(".")[0]
                assert top not in FORBIDDEN, f"{name} imports {imported}"
                if imported.startswith("mcp_fleet"):
                    todo.append(imported)
