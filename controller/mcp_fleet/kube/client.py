"""The few Kubernetes API calls the operator makes, through kubernetes_asyncio.

The only module (with ``handlers``' login) that touches a Kubernetes client:
the planner works on plain dicts, and this module moves those dicts to and
from the API server. Objects stay dicts (no generated model classes), so the
manifests ``k8s_plan`` builds are sent exactly as they are tested.

Writes use server-side apply (``fieldManager: mcp-fleet-operator``, forced):
one idempotent call creates or updates a child, and fields the operator stops
setting are removed, because it is their only manager. Against an API server
that answers 404 to an apply of a missing object (test servers do), ``apply``
falls back to a plain create, and a 409 on that create (someone was faster)
means apply again.

Configuration is read when asked for, never at import: ``$KUBECONFIG`` first,
then the pod's service account, then ``~/.kube/config``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client import ApiClient, ApiException, Configuration
from kubernetes_asyncio.config import (
    ConfigException,
    load_incluster_config,
    load_kube_config,
)

from mcp_fleet import conventions as c

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
REQUEST_TIMEOUT = 30.0

#: (apiVersion, kind) -> plural, for every kind the operator reads or writes.
PLURALS: dict[tuple[str, str], str] = {
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "StatefulSet"): "statefulsets",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    (f"{c.K8S_GROUP}/{c.K8S_VERSION}", c.K8S_KIND): c.K8S_PLURAL,
}


class KubeConfigError(Exception):
    """No way to reach a cluster was found."""


class ApiError(Exception):
    """An API call failed; ``status`` is the HTTP status, ``str()`` the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @classmethod
    def from_exception(cls, exc: ApiException, what: str) -> ApiError:
        message = exc.reason or "error"
        try:
            body = json.loads(exc.body) if exc.body else {}
            message = body.get("message") or message
        except (ValueError, AttributeError):
            pass
        return cls(int(exc.status or 0), f"{what}: {message} (HTTP {exc.status})")


async def load_configuration() -> Configuration:
    """Client settings from ``$KUBECONFIG`` (read now), the service account, or ~/.kube/config."""
    cfg = Configuration()
    source = _credential_source()
    try:
        if source is None:
            load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            await load_kube_config(config_file=source, client_configuration=cfg)
    except ConfigException as exc:
        raise KubeConfigError(f"cannot load cluster credentials: {exc}") from exc
    return cfg


def _credential_source() -> str | None:
    """The kubeconfig path(s) to read, or None for the in-cluster service account."""
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig:
        return kubeconfig
    if SERVICE_ACCOUNT_TOKEN.exists():
        return None
    home_config = Path("~/.kube/config").expanduser()
    if home_config.exists():
        return str(home_config)
    raise KubeConfigError(
        "no cluster credentials: set KUBECONFIG, or run in a pod with a service account"
    )


def own_namespace() -> str | None:
    """The namespace this pod runs in (POD_NAMESPACE, else the service account's), if any."""
    env = os.environ.get("POD_NAMESPACE")
    if env:
        return env
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def resource_path(
    api_version: str,
    kind: str,
    namespace: str,
    name: str | None = None,
    *,
    subresource: str | None = None,
) -> str:
    plural = PLURALS[(api_version, kind)]
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{root}/namespaces/{namespace}/{plural}"
    if name is not None:
        path += f"/{name}"
    if subresource is not None:
        path += f"/{subresource}"
    return path


class KubeApi:
    """Typed-enough access to the API server: dicts in, dicts out, ``ApiError`` on failure."""

    def __init__(self, client: ApiClient, *, field_manager: str = c.K8S_MANAGER) -> None:
        self.client = client
        self.field_manager = field_manager

    async def aclose(self) -> None:
        await self.client.close()

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: Sequence[tuple[str, str]] = (),
    ) -> Any:
        try:
            return await self.client.call_api(
                path,
                method,
                query_params=list(query),
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                response_types_map={200: "object", 201: "object", 202: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            raise ApiError.from_exception(exc, what) from None

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        path = resource_path(api_version, kind, namespace, name)
        try:
            obj = await self._call("GET", path, f"get {kind} {namespace}/{name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return dict(obj) if obj else None

    async def list(
        self, api_version: str, kind: str, namespace: str, *, labels: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """Objects of ``kind`` with all ``labels`` (filtered here too, whatever the server did)."""
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        path = resource_path(api_version, kind, namespace)
        result = await self._call(
            "GET", path, f"list {kind} in {namespace}", query=[("labelSelector", selector)]
        )
        items: list[dict[str, Any]] = []
        for item in (result or {}).get("items") or []:
            have = (item.get("metadata") or {}).get("labels") or {}
            if all(have.get(k) == v for k, v in labels.items()):
                # List items carry no apiVersion/kind of their own.
                items.append({"apiVersion": api_version, "kind": kind, **item})
        return items

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update ``manifest`` with server-side apply (create where apply cannot)."""
        meta = manifest["metadata"]
        kind, ns, name = manifest["kind"], meta["namespace"], meta["name"]
        path = resource_path(manifest["apiVersion"], kind, ns, name)
        query = [("fieldManager", self.field_manager), ("force", "true")]
        try:
            return dict(
                await self._call(
                    "PATCH",
                    path,
                    f"apply {kind} {ns}/{name}",
                    body=manifest,
                    content_type="application/apply-patch+yaml",
                    query=query,
                )
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
        try:
            return await self.create(manifest)
        except ApiError as exc:
            if exc.status != 409:
                raise
        return dict(
            await self._call(
                "PATCH",
                path,
                f"apply {kind} {ns}/{name}",
                body=manifest,
                content_type="application/apply-patch+yaml",
                query=query,
            )
        )

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], manifest["kind"], meta["namespace"])
        what = f"create {manifest['kind']} {meta['namespace']}/{meta['name']}"
        query = [("fieldManager", self.field_manager)]
        return dict(await self._call("POST", path, what, body=manifest, query=query))

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        path = resource_path(api_version, kind, namespace, name)
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        try:
            await self._call("DELETE", path, f"delete {kind} {namespace}/{name}", body=body)
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch ``MCPServer.status`` (custom resources take no strategic merge)."""
        path = resource_path(
            f"{c.K8S_GROUP}/{c.K8S_VERSION}", c.K8S_KIND, namespace, name, subresource="status"
        )
        await self._call(
            "PATCH",
            path,
            f"update status of MCPServer {namespace}/{name}",
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    async def patch_annotations(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        annotations: Mapping[str, str],
    ) -> None:
        """Merge-patch ``metadata.annotations`` alone (the router's last-activity mark)."""
        path = resource_path(api_version, kind, namespace, name)
        await self._call(
            "PATCH",
            path,
            f"annotate {kind} {namespace}/{name}",
            body={"metadata": {"annotations": dict(annotations)}},
            content_type="application/merge-patch+json",
            query=[("fieldManager", self.field_manager)],
        )
