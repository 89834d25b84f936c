"""On-demand MCPServers in a cluster: the router wakes them, the operator scales them.

Everything runs for real against kmock's stateful API on 127.0.0.1: the
operator (``operate``, as in ``test_operator``), and the router as
``mcp-fleet router --kubernetes`` runs it (``run_kubernetes``: the
MCPServer follower, ``KubeDemand`` writing through the cluster client, the
router behind its HTTP front end), with the official MCP client on top.
The MCPServer's pods are played by ``mcp-fleet bridge`` around
``mcp-server-time``: the router's connector maps the Service URL the
operator writes into ``status.endpoint`` to that bridge, as cluster DNS
would, and the test reports ready pods on the Deployment as its controller
would (kmock runs no controllers).

The story: an on-demand server created an hour ago is scaled to zero; the
router still lists its tools (from its list cache, or by starting it once
when it has none); a call for it makes the router stamp the MCPServer's
last-activity annotation (a merge patch of that annotation alone), the
operator plans one replica again, and once the server is Ready the waiting
call goes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import kmock as kmock_lib
import pytest
from k8s_support import free_port, write_kubeconfig
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_fleet.endpoints import EndpointTable, HttpEndpoint
from mcp_fleet.operator.handlers import OperatorConfig, make_settings
from mcp_fleet.operator.k8s_plan import PlanOptions
from mcp_fleet.operator.main import OperatorOptions, operate
from mcp_fleet.router.activator import ListCache
from mcp_fleet.router.attach import connect_endpoint
from mcp_fleet.router.router import Router
from mcp_fleet.router.serve import serve
from mcp_fleet.router.table import ServerLists
from mcp_fleet.sources.kube_follow import read_object
from mcp_fleet.sources.kube_router import run_kubernetes
from mcp_fleet.transport import MessageStream

NS = "mcp"
MCP = kmock_lib.resource("mcp-fleet.dev", "v1alpha1", "mcpservers")
MCP_PATH = f"/apis/mcp-fleet.dev/v1alpha1/namespaces/{NS}/mcpservers"
DEPLOYMENTS = kmock_lib.resource("apps", "v1", "deployments")
ANNOTATION = "mcp-fleet.dev/last-activity"
TIME_TOOLS = {"get_current_time", "convert_time"}
T = TypeVar("T")

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning"),
]


async def eventually(fn: Callable[[], T | None], *, within: float = 20.0) -> T:
    deadline = asyncio.get_running_loop().time() + within
    value: T | None = None
    while asyncio.get_running_loop().time() < deadline:
        value = fn()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met in {within}s; last value: {value!r}")


async def call(kmock: Any, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    async with kmock.request(method, path, json=body) as resp:
        assert resp.status < 300, await resp.text()
        return await resp.json()


def get(kmock: Any, resource: Any, name: str) -> dict[str, Any] | None:
    key = (resource, NS, name)
    if key not in kmock.objects or kmock.objects[key].deleted:
        return None
    return dict(kmock.objects[key].raw)


def replicas(kmock: Any, name: str) -> int | None:
    dep = get(kmock, DEPLOYMENTS, name)
    return None if dep is None else int(dep["spec"]["replicas"])


def state(kmock: Any, name: str) -> str | None:
    return ((get(kmock, MCP, name) or {}).get("status") or {}).get("state")


def annotation_patches(kmock: Any, name: str) -> list[Any]:
    """The PATCH requests on the MCPServer itself (not its status) that touch metadata."""
    return [
        r
        for r in kmock[kmock_lib.action.UPDATE, MCP]
        if r.name == name and r.subresource is None and "metadata" in (r.data or {})
    ]


def lazy_server(name: str) -> dict[str, Any]:
    """An on-demand MCPServer created an hour ago: idle, so planned at zero replicas."""
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    return {
        "apiVersion": "mcp-fleet.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "generation": 1,
            "creationTimestamp": long_ago.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": {
            "image": "mcp-fleet:test",
            "command": ["mcp-server-time"],
            "bridge": {"mode": "inline"},
            "lifecycle": {"mode": "on-demand", "idleTimeout": "5m"},
        },
    }


async def report_ready_pods(kmock: Any, name: str) -> None:
    """What the Deployment controller would write once the pod passes its probes."""
    counts = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1}
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/{name}/status"
    await call(kmock, "PATCH", path, {"status": counts})


def test_on_demand_mcpservers_are_read_as_standby_ready_or_not() -> None:
    obj = lazy_server("lazy")
    obj["spec"]["tools"] = ["get_current_time"]
    obj["spec"]["prefix"] = "t"
    entry, standby = read_object(obj)
    assert entry is None and standby is not None  # scaled to zero: not routable, advertised
    assert (standby.target.namespace, standby.target.name) == (NS, "lazy")
    assert (standby.target.uid, standby.target.idle_timeout) == ("uid-lazy", 300.0)
    assert standby.spec.tools_allow == ("get_current_time",)
    assert standby.spec.entry is not None and standby.spec.entry.prefix == "t"
    ready = {
        "endpoint": f"http://lazy.{NS}.svc:8080/mcp",
        "configHash": "h1",
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-05-01T12:00:00Z"}
        ],
    }
    entry, again = read_object({**obj, "status": ready})
    assert entry is not None and again == standby  # the standby does not follow the status
    # Ready again after a scale to zero: same Service URL, but a new instance to attach.
    ready["conditions"][0]["lastTransitionTime"] = "2026-05-01T13:00:00Z"
    later, _ = read_object({**obj, "status": ready})
    assert later is not None and later.endpoint.instance_id != entry.endpoint.instance_id
    # Always-on, remote, or no replicas: nothing to wake.
    for spec in (
        {"image": "x", "command": ["srv"]},
        {"remote": {"url": "https://x.example/mcp"}, "lifecycle": {"mode": "on-demand"}},
        {"image": "x", "command": ["srv"], "replicas": 0, "lifecycle": {"mode": "on-demand"}},
    ):
        assert read_object({**obj, "spec": spec})[1] is None


@pytest.fixture
def api(kmock: Any, kubeconfig_env: Path) -> Any:
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
async def operator(api: Any, time_bridge: int) -> AsyncIterator[None]:
    config = OperatorConfig(
        plan_options=PlanOptions(bridge_image="mcp-fleet:test", fleet_namespace=NS),
        resolve_url=lambda address: f"http://127.0.0.1:{time_bridge}{address.path}",
        resync_seconds=0.5,
        probe_timeout=10.0,
    )
    task = asyncio.create_task(
        operate(OperatorOptions(namespaces=(NS,)), config=config, settings=make_settings())
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def kube_router(time_bridge: int, cache_dir: Path) -> AsyncIterator[tuple[Router, str]]:
    """``run_kubernetes`` as the CLI runs it, serving HTTP on 127.0.0.1; yields (router, url)."""
    port = free_port()
    made: list[Router] = []

    async def connect(endpoint: Any) -> MessageStream:
        # Cluster DNS: the Service URL in status.endpoint reaches the pod (the bridge here).
        assert isinstance(endpoint, HttpEndpoint), endpoint
        assert endpoint.url.startswith(f"http://lazy.{NS}.svc:8080/"), endpoint.url
        local = endpoint.url.replace(f"lazy.{NS}.svc:8080", f"127.0.0.1:{time_bridge}")
        return await connect_endpoint(dataclasses.replace(endpoint, url=local))

    def make_router(table: EndpointTable, published: asyncio.Event) -> Router:
        router = Router(table, published=published, connect=connect, activation_timeout=45)
        made.append(router)
        return router

    async def serve_router(router: Router) -> None:
        await serve(router, transport="streamable-http", host="127.0.0.1", port=port)

    task = asyncio.create_task(
        run_kubernetes(
            make_router, serve_router, namespaces=(NS,), selector={}, cache_dir=cache_dir
        )
    )
    try:
        router = await eventually(lambda: made and made[0])
        await asyncio.wait_for(router.wait_settled(), 40)
        yield router, f"http://127.0.0.1:{port}/mcp"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def client(url: str) -> AsyncIterator[ClientSession]:
    async with (
        streamable_http_client(url) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def wake_when_stamped(kmock: Any, name: str) -> Any:
    """Play the cluster once the router has stamped ``name``: the operator scales it up,
    its pod gets ready. Returns the router's PATCH request."""
    (patch,) = await eventually(lambda: annotation_patches(kmock, name))
    await eventually(lambda: replicas(kmock, name) == 1)
    await report_ready_pods(kmock, name)
    return patch


def assert_annotation_only(patch: Any) -> None:
    assert patch.headers["Content-Type"].startswith("application/merge-patch+json")
    assert patch.params.get("fieldManager") == "mcp-fleet-router"
    assert set(patch.data) == {"metadata"} and set(patch.data["metadata"]) == {"annotations"}
    stamps = patch.data["metadata"]["annotations"]
    assert set(stamps) == {ANNOTATION}
    stamped = datetime.fromisoformat(stamps[ANNOTATION].replace("Z", "+00:00"))
    assert stamps[ANNOTATION].endswith("Z")
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 30


async def test_cold_server_is_listed_and_woken_by_a_call(
    api: Any, operator: None, time_bridge: int, tmp_path: Path
) -> None:
    await call(api, "POST", MCP_PATH, lazy_server("lazy"))
    await eventually(lambda: replicas(api, "lazy") == 0)
    await eventually(lambda: state(api, "lazy") == "Stopped")

    # The router kept the lists of the last run: listed while cold, nothing started.
    cached = ServerLists(
        "lazy",
        tools=tuple(
            {"name": n, "inputSchema": {"type": "object", "properties": {}}} for n in TIME_TOOLS
        ),
    )
    ListCache(tmp_path).save(cached, config_hash="earlier")
    async with kube_router(time_bridge, tmp_path) as (router, url), client(url) as session:
        assert {t.name for t in (await session.list_tools()).tools} == TIME_TOOLS
        assert router.activator.describe("lazy")["lists_from"] == "cache"
        assert annotation_patches(api, "lazy") == [] and replicas(api, "lazy") == 0

        # A call: it waits while the router stamps the MCPServer and the operator scales it up.
        calling = asyncio.create_task(
            session.call_tool("get_current_time", {"timezone": "Europe/Paris"})
        )
        (patch,) = await eventually(lambda: annotation_patches(api, "lazy"))
        assert_annotation_only(patch)
        await eventually(lambda: replicas(api, "lazy") == 1)
        await asyncio.sleep(0.3)
        assert not calling.done()  # no pod is ready yet: the call waits
        await report_ready_pods(api, "lazy")
        obj = get(api, MCP, "lazy")
        assert obj is not None and ANNOTATION in obj["metadata"]["annotations"]
        assert obj["spec"] == lazy_server("lazy")["spec"]  # the spec untouched

        result = await asyncio.wait_for(calling, 40)
        assert not result.is_error, result
        assert "Europe/Paris" in result.content[0].text  # type: ignore[union-attr]
        assert state(api, "lazy") == "Ready"

        # Calls to the warm server: forwarded at once; the stamp is not rewritten per call.
        again = await session.call_tool("get_current_time", {"timezone": "UTC"})
        assert not again.is_error
        await asyncio.sleep(1.5)  # more than one tick of the refresh loop
        assert len(annotation_patches(api, "lazy")) == 1


async def test_cold_server_without_cached_lists_is_started_once_to_list_it(
    api: Any, operator: None, time_bridge: int, tmp_path: Path
) -> None:
    await call(api, "POST", MCP_PATH, lazy_server("lazy"))
    await eventually(lambda: state(api, "lazy") == "Stopped")
    cache = tmp_path / "cache"
    cache.mkdir()
    waking = asyncio.create_task(wake_when_stamped(api, "lazy"))
    # The router settles once the start to learn the lists is over.
    async with kube_router(time_bridge, cache) as (router, url):
        assert_annotation_only(await waking)
        assert router.activator.describe("lazy")["lists_from"] == "server"
        async with client(url) as session:
            assert {t.name for t in (await session.list_tools()).tools} == TIME_TOOLS
        # ...and the lists are cached for the next start of a router.
        lists = await eventually(lambda: ListCache(cache).load("lazy"))
        assert {t["name"] for t in lists.tools} == TIME_TOOLS
        assert len(annotation_patches(api, "lazy")) == 1
