"""Registry ConfigMap mode: one registry.yaml (and its catalogs) drives the cluster.

The mapping is tested as the pure function it is (the guide's catalog and
registry, unchanged and with our ``kubernetes:`` extension, and a matrix of
catalog features), every MCPServer it makes validated against the CRD's own
schema and parsed by the operator's model, and the children the operator
would make from it validated strictly. Then the operator is run for real
against kmock with ``--registry-configmap``: MCPServers appear with owner
references and the label, disabling one deletes it and nothing else, a
hand-written MCPServer is never touched, and a broken registry.yaml changes
nothing and is reported as an Event naming file, line and field. Last, the
chart renders and validates with the value set, with least-privilege RBAC.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import helm_python as helm
import jsonschema
import pytest
from k8s_support import CHART, KUBE_VERSION, ROOT
from mcp_fleet.errors import FleetConfigError
from mcp_fleet.kube.spec import parse_spec
from mcp_fleet.operator.handlers import OperatorConfig, make_settings
from mcp_fleet.operator.k8s_plan import PlanOptions, plan_children
from mcp_fleet.operator.main import OperatorOptions, operate
from mcp_fleet.operator.registry_sync import (
    RegistrySource,
    diff_servers,
    plan_registry,
)
from test_chart import NAMESPACE, by_kind, one, render
from test_manifests import NOW, OPTIONS, ref, validate_k8s
from test_operator import (
    DEPLOYMENTS,
    MCP,
    MCP_PATH,
    NS,
    api,  # noqa: F401 (fixture)
    call,
    eventually,
    get,
    mcpserver,
)

GUIDE = ROOT / "examples" / "docker-guide"
SOURCE = RegistrySource(namespace="mcp", configmap="fleet", uid="uid-cm", secret="fleet-secrets")
CM_PATH = f"/api/v1/namespaces/{NS}/configmaps"
EVENTS_PATH = f"/api/v1/namespaces/{NS}/events"

CATALOG = """\
version: "2"
registry:
  time:
    image: mcp-fleet:test
    kubernetes:
      command: [mcp-server-time]
      bridge: {mode: inline}
    env:
      - name: TZ
        value: "{{time.zone|or:UTC}}"
    cpus: 0.25
    memory: 256m
    disableNetwork: true
  notes:
    image: mcp-fleet:test
    kubernetes:
      command: [python, -m, mcp_fleet.examples.servers.notes]
      bridge: {mode: inline}
    lifecycle: on-demand
    idleTimeout: 90s
  web:
    image: ghcr.io/acme/web-mcp:2
    command: [--port, "9000"]
    transport: streamable-http
    port: 9000
    allowHosts: [api.example.com:443]
    readOnly: false
    user: "1000:1000"
    secrets:
      - {name: web.token, env: WEB_TOKEN}
      - {name: web.proxy, env: HTTPS_PROXY, required: false}
  docs:
    type: remote
    remote: {url: "https://docs.example.com/mcp", transport_type: streamable-http}
    prefix: docs
  local-only:
    process: {command: [python3, -m, some_server]}
"""
REGISTRY = """\
registry:
  time: {catalog: team}
  notes: {catalog: team}
  web: {catalog: team}
  docs: {catalog: team}
  local-only: {catalog: team}
  ghost: {catalog: team}
  staged: {enabled: false}
"""


def fleet_data(**extra: str) -> dict[str, str]:
    return {
        "registry.yaml": REGISTRY,
        "team.catalog.yaml": CATALOG,
        "config.yaml": "time:\n  zone: Europe/Paris\n",
        "tools.yaml": "time: [get_current_time]\n",
        **extra,
    }


def check_manifest(manifest: dict[str, Any], crd_schema: dict[str, Any]) -> None:
    """Valid for the CRD's schema, accepted by the operator, and its children valid too."""
    jsonschema.Draft7Validator(crd_schema).validate(manifest)
    name = manifest["metadata"]["name"]
    spec = parse_spec(manifest["spec"], name=name)
    for child in plan_children(ref(name), spec, options=OPTIONS, now=NOW).manifests:
        validate_k8s(child)


# -- the pure mapping ------------------------------------------------------------------


def test_guide_files_unchanged_name_what_a_cluster_needs_then_map_with_the_extension(
    crd_schema: dict[str, Any],
) -> None:
    registry = (GUIDE / "registry.yaml").read_text()
    catalog = (GUIDE / "catalogs" / "custom.yaml").read_text()
    plan = plan_registry({"registry.yaml": registry, "custom.catalog.yaml": catalog}, SOURCE)
    # Docker's catalog does not say what the image runs: a sidecar bridge cannot start it.
    assert plan.servers == ()
    skipped = {d.server: str(d) for d in plan.skipped}
    assert set(skipped) == {"paloalto-firewall", "cisco-asa"}  # internal-ticketing is disabled
    assert skipped["paloalto-firewall"].startswith(
        "custom.catalog.yaml:6: registry.paloalto-firewall: cannot be an MCPServer: "
    )
    assert "kubernetes: {command: [my-server]}" in skipped["paloalto-firewall"]

    extended = catalog.replace(
        "    image: paloalto-mcp-server:latest\n",
        "    image: paloalto-mcp-server:latest\n    kubernetes: {command: [paloalto-mcp]}\n",
    ).replace(
        "    image: cisco-asa-mcp-server:latest\n",
        "    image: cisco-asa-mcp-server:latest\n    kubernetes: {command: [asa-mcp]}\n",
    )
    plan = plan_registry({"registry.yaml": registry, "custom.catalog.yaml": extended}, SOURCE)
    assert plan.names == ("cisco-asa", "paloalto-firewall") and plan.skipped == ()
    palo = plan.servers[1]
    assert palo["metadata"]["labels"]["mcp-fleet.dev/registry"] == "fleet"
    assert palo["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "fleet",
            "uid": "uid-cm",
            "controller": True,
        }
    ]
    assert palo["spec"] == {
        "image": "paloalto-mcp-server:latest",
        "command": ["paloalto-mcp"],
        "secretRefs": [
            {"name": "fleet-secrets", "key": "PANOS_HOST", "env": "PANOS_HOST", "optional": False},
            {
                "name": "fleet-secrets",
                "key": "PANOS_API_KEY",
                "env": "PANOS_API_KEY",
                "optional": False,
            },
        ],
    }
    for manifest in plan.servers:
        check_manifest(manifest, crd_schema)


def test_catalog_features_map_to_the_spec_and_unusable_servers_are_named(
    crd_schema: dict[str, Any],
) -> None:
    plan = plan_registry(fleet_data(), SOURCE)
    assert plan.names == ("docs", "notes", "time", "web")
    servers = {m["metadata"]["name"]: m["spec"] for m in plan.servers}
    assert servers["time"] == {
        "image": "mcp-fleet:test",
        "command": ["mcp-server-time"],
        "bridge": {"mode": "inline"},
        "env": [{"name": "TZ", "value": "Europe/Paris"}],  # template filled from config.yaml
        "resources": {"limits": {"cpu": "250m", "memory": "256Mi"}},
        "tools": ["get_current_time"],  # tools.yaml
    }
    assert servers["notes"]["lifecycle"] == {"mode": "on-demand", "idleTimeout": 90}
    assert servers["web"] == {
        "image": "ghcr.io/acme/web-mcp:2",
        "args": ["--port", "9000"],
        "transport": "streamable-http",
        "port": 9000,
        "network": {"mode": "allowHosts", "allowHosts": ["api.example.com:443"]},
        "securityContext": {"readOnlyRootFilesystem": False, "runAsUser": 1000, "runAsGroup": 1000},
        "secretRefs": [
            {"name": "fleet-secrets", "key": "web.token", "env": "WEB_TOKEN", "optional": False},
            {"name": "fleet-secrets", "key": "web.proxy", "env": "HTTPS_PROXY", "optional": True},
        ],
    }
    assert servers["docs"] == {
        "remote": {"url": "https://docs.example.com/mcp", "transport": "streamable-http"},
        "prefix": "docs",
    }
    skipped = {d.server: str(d) for d in plan.skipped}
    assert set(skipped) == {"local-only", "ghost"}
    assert "team.catalog.yaml:" in skipped["local-only"] and "no image" in skipped["local-only"]
    assert skipped["ghost"].startswith("registry.yaml:7: registry.ghost.catalog: ")
    for manifest in plan.servers:
        check_manifest(manifest, crd_schema)
    # Deterministic: the same data plans the same manifests (and hashes).
    assert plan_registry(fleet_data(), SOURCE).servers == plan.servers


def test_catalogs_layer_in_key_order_and_stray_keys_warn() -> None:
    later = 'version: "2"\nregistry:\n  docs:\n    type: remote\n    remote: {url: "https://b.example/mcp"}\n'
    plan = plan_registry(
        fleet_data(**{"zz.catalog.yaml": later, "secrets.env": "X=1", "notes.txt": "hi"}),
        SOURCE,
    )
    docs = next(m for m in plan.servers if m["metadata"]["name"] == "docs")
    # registry says catalog: team, so team's entry is used even though zz overrides by name...
    assert docs["spec"]["remote"]["url"] == "https://docs.example.com/mcp"
    warnings = [str(w) for w in plan.warnings]
    assert any(w.startswith("zz.catalog.yaml:") and "overrides the entry" in w for w in warnings)
    assert any(
        w.startswith("secrets.env: unknown key") and "--registry-secret" in w for w in warnings
    )
    assert any(w.startswith("notes.txt: unknown key") for w in warnings)
    # ...and a registry entry without catalog: takes the merged view, where the later key wins.
    data = fleet_data(**{"zz.catalog.yaml": later})
    data["registry.yaml"] = "registry:\n  docs: {}\n"
    (docs,) = plan_registry(data, SOURCE).servers
    assert docs["spec"]["remote"]["url"] == "https://b.example/mcp"


def test_secrets_need_the_registry_secret_and_never_get_a_value() -> None:
    plan = plan_registry(fleet_data(), RegistrySource("mcp", "fleet", "uid-cm"))
    assert "web" not in plan.names
    (web,) = [str(d) for d in plan.skipped if d.server == "web"]
    assert "needs secrets web.token, web.proxy" in web and "--registry-secret" in web
    # A secrets.env put in the ConfigMap by mistake is never read: no value goes anywhere.
    plan = plan_registry(fleet_data(**{"secrets.env": "web.token=s3cr3t-value\n"}), SOURCE)
    (web_server,) = [m for m in plan.servers if m["metadata"]["name"] == "web"]
    assert "s3cr3t-value" not in repr(plan) and "s3cr3t-value" not in repr(web_server)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"registry.yaml": 'registry:\n  time:\n    enabled: "yes please"\n'},
            'registry.yaml:3: registry.time.enabled: expected true/false, got "yes please"',
        ),
        ({"registry.yaml": "registry: [oops\n"}, "registry.yaml:"),
        ({"team.catalog.yaml": CATALOG}, "no registry.yaml key"),
        (
            {"registry.yaml": REGISTRY, "team.catalog.yaml": "registry:\n  x:\n    cpus: many\n"},
            "team.catalog.yaml:3: registry.x.cpus: expected a number",
        ),
    ],
    ids=["bad-field", "bad-yaml", "no-registry", "bad-catalog"],
)
def test_a_broken_file_raises_naming_key_line_and_field(
    data: dict[str, str], expected: str
) -> None:
    with pytest.raises(FleetConfigError) as info:
        plan_registry(data, SOURCE)
    assert expected in str(info.value)
    assert "/tmp" not in str(info.value)  # the ConfigMap key, not the scratch file


def test_diff_creates_updates_and_deletes_only_by_hash() -> None:
    desired = plan_registry(fleet_data(), SOURCE).servers
    assert [str(a) for a in diff_servers(desired, desired)] == []
    changed = plan_registry(
        fleet_data(**{"config.yaml": "time:\n  zone: Asia/Tokyo\n"}), SOURCE
    ).servers
    stale = [{"metadata": {"name": "old", "annotations": {}}}]
    actions = diff_servers(changed, [*desired[:3], *stale])
    assert [str(a) for a in actions] == [
        "update MCPServer time (registry entry changed)",
        "create MCPServer web (enabled in the registry)",
        "delete MCPServer old (no longer enabled in the registry)",
    ]


# -- the operator, run for real against kmock ------------------------------------------


def configmap(data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "fleet", "namespace": NS, "uid": "uid-cm"},
        "data": data,
    }


def events(kmock: Any, reason: str) -> list[dict[str, Any]]:
    found = []
    for (resource, ns, _), obj in list(kmock.objects.items()):
        if resource.plural == "events" and ns == NS and not obj.deleted:
            raw = dict(obj.raw)
            if raw.get("reason") == reason and raw["involvedObject"]["name"] == "fleet":
                found.append(raw)
    return found


@pytest.fixture
async def registry_operator(api: Any) -> AsyncIterator[None]:  # noqa: F811
    config = OperatorConfig(
        plan_options=PlanOptions(bridge_image="mcp-fleet:test", fleet_namespace=NS),
        resync_seconds=0.5,
    )
    options = OperatorOptions(
        namespaces=(NS,),
        fleet_namespace=NS,
        registry_configmap="fleet",
        registry_secret="fleet-secrets",
    )
    task = asyncio.create_task(operate(options, config=config, settings=make_settings()))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")
async def test_operator_keeps_mcpservers_equal_to_the_registry_configmap(
    kmock: Any, registry_operator: None
) -> None:
    await call(kmock, "POST", MCP_PATH, mcpserver("manual", {"image": "x", "command": ["y"]}))
    await call(kmock, "POST", CM_PATH, configmap(fleet_data()))

    # Every usable enabled server appears, owned by the ConfigMap and labelled.
    for name in ("docs", "notes", "time", "web"):
        server = await eventually(lambda n=name: get(kmock, MCP, n))  # type: ignore[misc]
        assert server["metadata"]["labels"]["mcp-fleet.dev/registry"] == "fleet"
        (owner,) = server["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("ConfigMap", "fleet", "uid-cm")
    # ...and the operator runs them like any MCPServer.
    await eventually(lambda: get(kmock, DEPLOYMENTS, "time"))
    skipped = await eventually(lambda: events(kmock, "ServerSkipped"))
    assert any("registry.ghost.catalog" in e["message"] for e in skipped)
    assert get(kmock, MCP, "local-only") is None and get(kmock, MCP, "ghost") is None
    notes_versions = len(kmock.objects[(MCP, NS, "notes")].history)

    # Disable web: it is deleted; the hand-written one and the unchanged ones stay as they are.
    data = fleet_data()
    data["registry.yaml"] = REGISTRY.replace(
        "web: {catalog: team}", "web: {catalog: team, enabled: false}"
    )
    await call(kmock, "PATCH", f"{CM_PATH}/fleet", {"data": data})
    await eventually(lambda: get(kmock, MCP, "web") is None)
    assert get(kmock, MCP, "manual") is not None
    assert len(kmock.objects[(MCP, NS, "notes")].history) == notes_versions

    # A broken registry.yaml: nothing changes, the problem is an Event on the ConfigMap.
    broken = {**data, "registry.yaml": REGISTRY + "  manual:\n    enabled: maybe\n"}
    await call(kmock, "PATCH", f"{CM_PATH}/fleet", {"data": broken})
    (invalid,) = await eventually(lambda: events(kmock, "RegistryInvalid"))
    assert invalid["type"] == "Warning"
    assert (
        'registry.yaml:10: registry.manual.enabled: expected true/false, got "maybe"'
        in invalid["message"]
    )
    await asyncio.sleep(1.2)  # two resync periods
    for name in ("docs", "notes", "time", "manual"):
        assert get(kmock, MCP, name) is not None, name
    assert len(events(kmock, "RegistryInvalid")) == 1  # reported once, not every resync

    # Fixed, but now naming the hand-written server: it is reported and left alone.
    named = {**data, "registry.yaml": REGISTRY + "  manual: {catalog: team}\n"}
    named["team.catalog.yaml"] = (
        CATALOG + "  manual:\n    image: z\n    kubernetes: {command: [z]}\n"
    )
    await call(kmock, "PATCH", f"{CM_PATH}/fleet", {"data": named})
    await eventually(
        lambda: any(
            "manual exists and was not made" in e["message"] for e in events(kmock, "ServerSkipped")
        )
    )
    manual = get(kmock, MCP, "manual")
    assert manual is not None and manual["spec"] == {"image": "x", "command": ["y"]}
    assert "labels" not in manual["metadata"]

    # An MCPServer of the registry deleted behind the operator's back comes back.
    await call(kmock, "DELETE", f"{MCP_PATH}/docs")
    await eventually(lambda: get(kmock, MCP, "docs"))


# -- the chart -------------------------------------------------------------------------

REGISTRY_VALUES = {
    "operator": {"registryConfigMap": "mcp-registry", "registrySecret": "mcp-secrets"}
}


def test_chart_with_registry_configmap_renders_valid_least_privilege_objects() -> None:
    chart = helm.Chart.load(CHART)
    chart.validate_schema(REGISTRY_VALUES)
    for values in (
        REGISTRY_VALUES,
        {"operator": {**REGISTRY_VALUES["operator"], "clusterWide": True}},
    ):
        report = helm.lint(
            CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
        )
        assert report["errors"] == []
        objects, _ = render(chart, values)
        for obj in objects:
            validate_k8s(obj)
        role = one(objects, "Role", "-operator-registry")
        assert role["metadata"]["namespace"] == NAMESPACE
        rules = {tuple(r["resources"]): r for r in role["rules"]}
        assert rules[("configmaps",)] == {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["mcp-registry"],
            "verbs": ["get", "list", "watch"],
        }
        assert set(rules[("mcpservers",)]["verbs"]) == {
            "get",
            "list",
            "watch",
            "create",
            "patch",
            "delete",
        }
        assert all("secrets" not in r["resources"] for r in role["rules"])
        binding = one(objects, "RoleBinding", "-operator-registry")
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        args = one(objects, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0][
            "args"
        ]
        assert (
            "--registry-configmap=mcp-registry" in args and "--registry-secret=mcp-secrets" in args
        )
    # Off by default: no ConfigMap access at all.
    objects, _ = render(chart)
    for role in by_kind(objects, "Role") + by_kind(objects, "ClusterRole"):
        assert all("configmaps" not in r["resources"] for r in role["rules"])
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"operator": {"registryConfigMap": "Not_Valid"}})


def test_cli_refuses_a_secret_without_a_configmap() -> None:
    from mcp_fleet.cli.main import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["operator", "--registry-secret", "s"])
    assert result.exit_code == 2 and "--registry-configmap" in result.output
