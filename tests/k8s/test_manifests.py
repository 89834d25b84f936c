"""Every manifest we ship or generate, checked offline against the real schemas.

- The CRD is itself a Kubernetes object: validated strictly (unknown fields
  are errors) against the Kubernetes OpenAPI schemas bundled by
  kubernetes-validate, and checked to be structural with descriptions.
- The CRD's openAPIV3Schema and the operator's spec model must describe the
  same fields: a field in one and not the other is a bug either way.
- Every example MCPServer validates against the CRD's schema (jsonschema) and
  parses with the operator's model, and every object the operator generates
  from it (and from a matrix of other specs) validates strictly as well.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv
import pytest
import yaml
from k8s_support import CHART, CRD_FILE, EXAMPLES, KUBE_VERSION
from mcp_fleet.kube.spec import MCPServerSpec, parse_spec
from mcp_fleet.operator.k8s_plan import PlanOptions, ServerRef, plan_children
from pydantic import BaseModel

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
OPTIONS = PlanOptions(bridge_image="mcp-fleet:0.1.0", fleet_namespace="mcp-fleet")
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def validate_k8s(obj: dict[str, Any]) -> None:
    """Strict validation against the Kubernetes OpenAPI schema of ``KUBE_VERSION``."""
    try:
        kv.validate(obj, KUBE_VERSION, strict=True)
    except kv.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")


def ref(name: str) -> ServerRef:
    return ServerRef(name=name, namespace="team-a", uid=f"uid-{name}", generation=1, created=NOW)


def test_crd_is_a_valid_strict_custom_resource_definition(crd: dict[str, Any]) -> None:
    validate_k8s(crd)
    (version,) = crd["spec"]["versions"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:3] == ["Status", "Ready", "Endpoint"] and "Age" in columns
    assert crd["spec"]["scope"] == "Namespaced"


def test_chart_ships_the_same_crd() -> None:
    assert (CHART / "crds" / "mcpservers.yaml").read_text() == CRD_FILE.read_text()


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, sub in (schema.get("properties") or {}).items():
        out += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        out += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += _walk(schema["additionalProperties"], f"{path}{{}}")
    return out


def test_crd_schema_is_structural_and_documented(crd_schema: dict[str, Any]) -> None:
    for path, node in _walk(crd_schema):
        typed = "type" in node or node.get("x-kubernetes-int-or-string")
        assert typed, f"{path or '<root>'}: no type (a structural schema needs one everywhere)"
        container_item = path.endswith(("[]", "{}"))
        if path and path != ".metadata" and not container_item:
            assert node.get("description"), f"{path}: no description"


def _model_fields(model: type[BaseModel]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        alias = info.alias or name
        annotation = info.annotation
        nested = None
        for candidate in getattr(annotation, "__args__", (annotation,)):
            inner = getattr(candidate, "__args__", (candidate,))
            for t in (candidate, *inner):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    nested = t
        fields[alias] = _model_fields(nested) if nested else None
    return fields


def _schema_fields(schema: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, sub in (schema.get("properties") or {}).items():
        if sub.get("type") == "array" and "properties" in (sub.get("items") or {}):
            sub = sub["items"]
        fields[name] = _schema_fields(sub) if "properties" in sub else None
    return fields


def test_crd_schema_and_operator_model_have_the_same_fields(crd_schema: dict[str, Any]) -> None:
    assert _schema_fields(crd_schema["properties"]["spec"]) == _model_fields(MCPServerSpec)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_example_is_valid_and_generates_valid_objects(
    path: Any, crd_schema: dict[str, Any]
) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "mcp-fleet.dev/v1alpha1" and doc["kind"] == "MCPServer"
    jsonschema.Draft7Validator(crd_schema).validate(doc)
    spec = parse_spec(doc["spec"], name=doc["metadata"]["name"])
    plan = plan_children(ref(doc["metadata"]["name"]), spec, options=OPTIONS, now=NOW)
    for manifest in plan.manifests:
        validate_k8s(manifest)
    assert plan.endpoint


def test_examples_cover_the_init_servers() -> None:
    names = {yaml.safe_load(p.read_text())["metadata"]["name"] for p in EXAMPLE_FILES}
    assert {"time", "notes", "calc"} <= names


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"spec": {"image": "x", "transport": "grpc"}}, "transport"),
        ({"spec": {"image": "x", "port": 0}}, "port"),
        ({"spec": {"image": "x", "secretRefs": [{"name": "s"}]}}, "secretRefs"),
        ({"spec": {"remote": {"transport": "sse"}}}, "remote"),
        ({}, "spec"),
    ],
)
def test_crd_schema_rejects_bad_objects(
    doc: dict[str, Any], where: str, crd_schema: dict[str, Any]
) -> None:
    obj = {
        "apiVersion": "mcp-fleet.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": "x"},
        **doc,
    }
    with pytest.raises(jsonschema.ValidationError) as info:
        jsonschema.Draft7Validator(crd_schema).validate(obj)
    assert where in "/".join(str(p) for p in info.value.absolute_path) + info.value.message


SPECS: dict[str, dict[str, Any]] = {
    "inline": {
        "image": "mcp-fleet:0.1.0",
        "command": ["mcp-server-time"],
        "bridge": {"mode": "inline"},
    },
    "sidecar": {
        "image": "mcp/time",
        "command": ["mcp-server-time"],
        "args": ["--local-timezone=UTC"],
    },
    "per-client": {
        "image": "mcp-fleet:0.1.0",
        "command": ["python", "-m", "calc"],
        "bridge": {"mode": "inline"},
        "sessions": "per-client",
    },
    "http": {"image": "srv", "transport": "streamable-http", "port": 3000, "args": ["--http"]},
    "sse": {"image": "srv", "transport": "sse", "port": 3001},
    "statefulset": {"image": "srv", "command": ["srv"], "workload": "StatefulSet", "replicas": 3},
    "allow-hosts": {
        "image": "srv",
        "command": ["srv"],
        "network": {
            "allowHosts": ["api.github.com:443", "10.0.0.0/8", "[2001:db8::/32]:443", "example.org"]
        },
    },
    "open": {"image": "srv", "command": ["srv"], "network": {"mode": "open"}},
    "overrides": {
        "image": "srv",
        "command": ["srv"],
        "imagePullPolicy": "Always",
        "env": [{"name": "A", "value": "1"}],
        "secretRefs": [
            {"name": "tokens", "key": "github", "env": "GITHUB_TOKEN", "optional": True}
        ],
        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi", "cpu": 2}},
        "securityContext": {
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "readOnlyRootFilesystem": False,
        },
        "podTemplate": {
            "metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}},
            "spec": {
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "mcp", "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [{"name": "server", "env": [{"name": "B", "value": "2"}]}],
                "volumes": [{"name": "cache", "emptyDir": {}}],
            },
        },
    },
    "on-demand": {
        "image": "srv",
        "command": ["srv"],
        "lifecycle": {"mode": "on-demand", "idleTimeout": 60},
    },
}


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_generated_objects_validate_strictly(kind: str, crd_schema: dict[str, Any]) -> None:
    obj = {
        "apiVersion": "mcp-fleet.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": kind},
        "spec": SPECS[kind],
    }
    jsonschema.Draft7Validator(crd_schema).validate(obj)
    spec = parse_spec(SPECS[kind], name=kind)
    server = ServerRef(kind, "team-a", f"uid-{kind}", 1, created=NOW - timedelta(hours=1))
    plan = plan_children(server, spec, options=OPTIONS, now=NOW)
    kinds = [m["kind"] for m in plan.manifests]
    assert kinds[0] == spec.workload and "Service" in kinds and "NetworkPolicy" in kinds
    for manifest in plan.manifests:
        validate_k8s(manifest)
