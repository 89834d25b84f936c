"""Helpers of the Kubernetes tests: paths, a free port, a real ``mcp-fleet bridge``, kubeconfigs.

Imported by the tests as ``k8s_support`` (fixtures stay in conftest.py): a
module of its own, so no test depends on which ``conftest`` was imported last.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml
from support import until_sync

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
    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"bridge exited with {proc.returncode}: {log_of(proc)}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    until_sync(ready, within=timeout, every=0.1, what="bridge ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
