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

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "mcpservers.yaml"
EXAMPLES = ROOT / "examples" / "k8s"
CHART = ROOT / "charts" / "mcp-fleet"
BRIDGE_CLI = Path(__file__).with_name("bridge_cli.py")
#: The Kubernetes version manifests are validated against (kubernetes-validate bundles it).
KUBE_VERSION = "1.33.0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_bridge(*args: str, port: int) -> subprocess.Popen[bytes]:
    """``mcp-fleet bridge --port PORT ARGS...`` as a child process (the real CLI command).

    Its log goes to a temporary file (a pipe nobody reads could fill up and stall it).
    """
    log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the test session)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(BRIDGE_CLI),
            "bridge",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    _logs[proc.pid] = log
    return proc


_logs: dict[int, Any] = {}


def log_of(proc: subprocess.Popen[bytes]) -> str:
    log = _logs[proc.pid]
    log.seek(0)
    return bytes(log.read()).decode(errors="replace")


def wait_ready(proc: subprocess.Popen[bytes], port: int, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"bridge exited with {proc.returncode}: {log_of(proc)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("bridge not ready in time")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


def write_kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "kmock", "user": {"token": "test-token"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def kubeconfig_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``KUBECONFIG`` at a file the test fills in (read by the operator at login)."""
    path = tmp_path / "kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    return path
