"""Fixtures for the Kubernetes tests: a stateful mock API server, a real MCP server, manifests.

No cluster is needed: ``kmock`` (by kopf's author) serves a stateful
Kubernetes API on 127.0.0.1, and the operator runs against it for real, its
login handler reading ``KUBECONFIG`` like in production. kmock knows nothing
about MCPServer until told (with its ``status`` subresource), validates
nothing and garbage-collects nothing, so schemas are checked separately
(``test_manifests``) and ownership is checked by its references.

``bridge_url`` runs ``mcp-fleet bridge`` around ``mcp-server-time`` as a
subprocess, once per test session: the operator's readiness probe and the bridge
tests talk to a real MCP server over real HTTP.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_support import CRD_FILE, free_port, start_bridge, stop, wait_ready


@pytest.fixture(scope="session")
def time_bridge() -> Iterator[int]:
    """A bridge around ``python -m mcp_server_time``; yields its port."""
    port = free_port()
    proc = start_bridge("--", sys.executable, "-m", "mcp_server_time", port=port)
    try:
        wait_ready(proc, port)
        yield port
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    return dict(yaml.safe_load(CRD_FILE.read_text()))


@pytest.fixture(scope="session")
def crd_schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return dict(version["schema"]["openAPIV3Schema"])


@pytest.fixture
def kubeconfig_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``KUBECONFIG`` at a file the test fills in (read by the operator at login)."""
    path = tmp_path / "kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    return path
