"""The Helm chart, rendered and linted with the real Helm library (helm-python-sdk).

For the default values and for non-default ones (cluster-wide RBAC, an
Ingress, existing token and session-key Secrets, several watched namespaces, no router):
the chart lints clean in strict mode for a recent Kubernetes, every rendered
object validates strictly against the Kubernetes schemas, the values pass
values.schema.json (and bad values do not), and the RBAC stays least-privilege.
"""

from __future__ import annotations

from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml
from k8s_support import CHART, KUBE_VERSION
from test_manifests import validate_k8s

RELEASE = "mcp-fleet"
NAMESPACE = "mcp-fleet"

NON_DEFAULT: dict[str, Any] = {
    "operator": {
        "clusterWide": True,
        "verbosity": 2,
        "logFormat": "json",
        "bridgeImage": "mirror/mcp-fleet:0.1.0",
    },
    "router": {
        "replicas": 3,
        "serverSelector": {"mcp-fleet.dev/team": "platform"},
        "auth": {"existingSecret": "team-token", "secretKey": "bearer"},
        "sessionKey": {"existingSecret": "team-session", "secretKey": "key"},
        "allowedHosts": ["mcp.corp.example"],
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "host": "mcp.corp.internal",
            "tlsSecretName": "mcp-tls",
            "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"},
        },
        "service": {"type": "LoadBalancer"},
    },
    "image": {
        "repository": "registry.corp.internal/mcp-fleet",
        "tag": "0.1.0-rc1",
        "pullPolicy": "Always",
    },
    "imagePullSecrets": [{"name": "corp-pull"}],
    "commonLabels": {"cost-center": "ai"},
}


@pytest.fixture(scope="module")
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(
    chart: helm.Chart, values: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], str]:
    files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = files.pop(f"{chart.name}/templates/NOTES.txt", "")
    objects = [doc for text in files.values() for doc in yaml.safe_load_all(text) if doc]
    return objects, notes


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    (found,) = [o for o in by_kind(objects, kind) if o["metadata"]["name"].endswith(suffix)]
    return found


@pytest.mark.parametrize("values", [None, NON_DEFAULT], ids=["default", "non-default"])
def test_chart_lints_clean_in_strict_mode(values: dict[str, Any] | None) -> None:
    report = helm.lint(
        CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
    )
    assert report["errors"] == []
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == [], serious


@pytest.mark.parametrize("values", [None, NON_DEFAULT], ids=["default", "non-default"])
def test_every_rendered_object_validates_strictly(
    chart: helm.Chart, values: dict[str, Any] | None
) -> None:
    chart.validate_schema(values)
    objects, _ = render(chart, values)
    assert objects
    for obj in objects:
        validate_k8s(obj)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mcp-fleet"


def test_defaults_install_namespaced_operator_router_and_token(chart: helm.Chart) -> None:
    objects, notes = render(chart)
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    roles = by_kind(objects, "Role")
    assert {r["metadata"]["namespace"] for r in roles} == {NAMESPACE}
    operator = one(objects, "Deployment", "-operator")
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    assert container["args"][container["args"].index("operator") + 1 :][:2] == [
        f"--namespace={NAMESPACE}",
        f"--fleet-namespace={NAMESPACE}",
    ]
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MCP_FLEET_BRIDGE_IMAGE"] == "mcp-fleet:0.1.0"

    router = one(objects, "Deployment", "-router")
    labels = router["spec"]["template"]["metadata"]["labels"]
    # What server NetworkPolicies let in:
    assert (labels["app.kubernetes.io/part-of"], labels["app.kubernetes.io/component"]) == (
        "mcp-fleet",
        "router",
    )
    (rc,) = router["spec"]["template"]["spec"]["containers"]
    assert rc["args"][rc["args"].index("router") :][:2] == ["router", "--kubernetes"]
    token_env = next(e for e in rc["env"] if e["name"] == "MCP_FLEET_ROUTER_TOKEN")
    secret = one(objects, "Secret", "-router-token")
    assert token_env["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "token",
    }
    assert len(secret["data"]["token"]) >= 48
    session_env = next(e for e in rc["env"] if e["name"] == "MCP_FLEET_SESSION_KEY")
    session_secret = one(objects, "Secret", "-router-session")
    assert session_env["valueFrom"]["secretKeyRef"] == {
        "name": session_secret["metadata"]["name"],
        "key": "session-key",
    }
    assert len(session_secret["data"]["session-key"]) >= 48
    assert "--allowed-host=mcp-fleet-router.mcp-fleet.svc" in rc["args"]
    service = one(objects, "Service", "-router")
    assert service["spec"]["selector"] == router["spec"]["selector"]["matchLabels"]
    assert not by_kind(objects, "Ingress")
    assert "kubectl apply -n mcp-fleet -f examples/k8s/time.yaml" in notes
    assert "kubectl port-forward -n mcp-fleet svc/mcp-fleet-router 8811:8811" in notes


def test_non_default_values_cluster_wide_ingress_existing_secret(chart: helm.Chart) -> None:
    objects, notes = render(chart, NON_DEFAULT)
    assert not by_kind(objects, "Role") and not by_kind(objects, "Secret")
    assert {r["metadata"]["name"] for r in by_kind(objects, "ClusterRole")} == {
        "mcp-fleet-operator",
        "mcp-fleet-router",
    }
    binding = one(objects, "ClusterRoleBinding", "-operator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mcp-fleet-operator", "namespace": NAMESPACE}
    ]
    operator = one(objects, "Deployment", "-operator")
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert (
        "--all-namespaces" in args and args.count("--verbose") == 2 and "--log-format=json" in args
    )
    assert operator["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "corp-pull"}]
    assert (
        operator["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.corp.internal/mcp-fleet:0.1.0-rc1"
    )
    router = one(objects, "Deployment", "-router")
    rc = router["spec"]["template"]["spec"]["containers"][0]
    assert "--selector=mcp-fleet.dev/team=platform" in rc["args"]
    token_env = next(e for e in rc["env"] if e["name"] == "MCP_FLEET_ROUTER_TOKEN")
    assert token_env["valueFrom"]["secretKeyRef"] == {"name": "team-token", "key": "bearer"}
    session_env = next(e for e in rc["env"] if e["name"] == "MCP_FLEET_SESSION_KEY")
    assert session_env["valueFrom"]["secretKeyRef"] == {"name": "team-session", "key": "key"}
    assert {"--allowed-host=mcp.corp.internal", "--allowed-host=mcp.corp.example"} <= set(
        rc["args"]
    )
    ingress = one(objects, "Ingress", "-router")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["mcp.corp.internal"], "secretName": "mcp-tls"}]
    assert (
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
        == "mcp-fleet-router"
    )
    assert router["metadata"]["labels"]["cost-center"] == "ai"
    assert "https://mcp.corp.internal/mcp" in notes


def test_watch_namespaces_get_one_role_each_and_router_can_be_off(chart: helm.Chart) -> None:
    values = {"operator": {"watchNamespaces": ["team-a", "team-b"]}, "router": {"enabled": False}}
    chart.validate_schema(values)
    objects, notes = render(chart, values)
    roles = by_kind(objects, "Role")
    assert sorted((r["metadata"]["namespace"], r["metadata"]["name"]) for r in roles) == [
        ("team-a", "mcp-fleet-operator"),
        ("team-b", "mcp-fleet-operator"),
    ]
    for binding in by_kind(objects, "RoleBinding"):
        assert binding["subjects"][0]["namespace"] == NAMESPACE  # the operator's own ServiceAccount
    assert not [o for o in objects if o["metadata"]["name"].endswith("-router")]
    args = one(objects, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "port-forward" not in notes


def test_router_without_auth_says_so(chart: helm.Chart) -> None:
    values = {"router": {"auth": {"enabled": False}}}
    chart.validate_schema(values)
    objects, _ = render(chart, values)
    rc = one(objects, "Deployment", "-router")["spec"]["template"]["spec"]["containers"][0]
    assert "--allow-unauthenticated" in rc["args"]
    assert "MCP_FLEET_ROUTER_TOKEN" not in {e["name"] for e in rc["env"]}
    assert "MCP_FLEET_SESSION_KEY" in {e["name"] for e in rc["env"]}
    assert [s["metadata"]["name"] for s in by_kind(objects, "Secret")] == [
        "mcp-fleet-router-session"
    ]


def test_rbac_is_least_privilege(chart: helm.Chart) -> None:
    for values in (None, NON_DEFAULT):
        objects, _ = render(chart, values)
        for role in by_kind(objects, "Role") + by_kind(objects, "ClusterRole"):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"], role["metadata"][
                    "name"
                ]
                assert "secrets" not in rule["resources"], "no component needs to read Secrets"
                assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
        router_rules = [
            r
            for r in by_kind(objects, "Role") + by_kind(objects, "ClusterRole")
            if r["metadata"]["name"].endswith("-router")
        ]
        for role in router_rules:
            assert [rule["resources"] for rule in role["rules"]] == [["mcpservers"]]


@pytest.mark.parametrize(
    "bad",
    [
        {"operator": {"resyncSeconds": "fast"}},
        {"operator": {"clusterwide": True}},  # misspelt: unknown keys are refused
        {"router": {"service": {"type": "Headless"}}},
        {"operator": {"watchNamespaces": ["Not_A_Namespace"]}},
        {"image": {"pullPolicy": "Sometimes"}},
    ],
)
def test_bad_values_are_refused_by_the_schema(chart: helm.Chart, bad: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError) as info:
        chart.validate_schema(bad)
    assert "at '/" in str(info.value)  # the message names the offending key


def test_values_yaml_matches_its_schema_and_chart_metadata(chart: helm.Chart) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(chart.schema).validate(values)
    assert [c["name"] for c in chart.crds] == ["crds/mcpservers.yaml"]


def test_chart_app_version_is_the_package_version(chart: helm.Chart) -> None:
    from mcp_fleet import __version__

    assert chart.metadata["appVersion"] == __version__
