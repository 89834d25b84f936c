"""What the fault tests share: a fleet on disk, a real controller process, /proc and Docker views.

The fault tests break real things (a SIGKILLed controller, a full or
read-only file system, a backend flooding its stdout, a restarted dockerd),
so they drive the controller the way a user does: ``python -m
mcp_fleet.cli.main controller`` as a subprocess, watched only through what
it writes (``.state/status.json``) and what really runs (``/proc``, the
Docker API). Each fleet gets its own name (``MCP_FLEET_NAME``) and each
server a unique marker in its command line, so tests running side by side
never see each other's processes or containers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mcp_fleet import conventions

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]
SERVERS = REPO / "tests" / "servers"
ECHO = SERVERS / "echo_server.py"
Status = dict[str, Any]


class Fleet:
    """A fleet directory edited as a user would, with a fleet name and a marker of its own."""

    def __init__(self, home: Path, *, prefix: str = "fault") -> None:
        self.home = home
        self.name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.marker = f"mcpf-{self.name}"
        (home / conventions.CATALOGS_DIR).mkdir(parents=True, exist_ok=True)
        self.log = home.parent / f"{self.name}.controller.log"

    @property
    def env(self) -> dict[str, str]:
        """The environment every command of this fleet runs with."""
        return {**os.environ, conventions.ENV_FLEET_NAME: self.name}

    @property
    def status_file(self) -> Path:
        return self.home / conventions.STATE_DIR / conventions.STATUS_FILE

    def write_catalog(self, text: str, *, name: str = "test") -> None:
        path = self.home / conventions.CATALOGS_DIR / f"{name}.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)  # a watcher never reads half a catalog

    def set_registry(self, enabled: Mapping[str, bool]) -> None:
        lines = ["registry:"]
        for server, on in enabled.items():
            lines += [f"  {server}:", f"    enabled: {'true' if on else 'false'}"]
        path = self.home / conventions.REGISTRY_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(path)

    def write_secrets(self, values: Mapping[str, str], *, mode: int = 0o600) -> None:
        path = self.home / conventions.SECRETS_FILE
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        path.chmod(mode)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``mcp-fleet ARGS --dir HOME`` and wait for it."""
        return subprocess.run(
            [PY, "-m", "mcp_fleet.cli.main", *args, "--dir", str(self.home)],
            capture_output=True, text=True, timeout=timeout, env=self.env,
        )  # fmt: skip

    def start_controller(
        self,
        *,
        runtime: str = "process",
        env: Mapping[str, str] | None = None,
        probe_timeout: float = 20.0,
    ) -> subprocess.Popen[bytes]:
        """``mcp-fleet -vv --log-format json controller`` in the background; stderr to ``log``."""
        return subprocess.Popen(
            [PY, "-m", "mcp_fleet.cli.main", "-vv", "--log-format", "json", "controller",
             "--runtime", runtime, "--resync", "1", "--probe-timeout", str(probe_timeout),
             "--dir", str(self.home)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"),
            env={**self.env, **(env or {})},
        )  # fmt: skip

    def status(self) -> Status:
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads(self.status_file.read_text())
            if isinstance(doc, dict):
                return doc
        return {}

    def wait_status(self, check: Callable[[Status], bool], *, within: float = 45.0) -> Status:
        """Poll the status file until ``check`` holds; fail with the controller's log."""
        deadline = time.monotonic() + within
        doc: Status = {}
        while time.monotonic() < deadline:
            doc = self.status()
            if doc and check(doc):
                return doc
            time.sleep(0.05)
        tail = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
        raise AssertionError(
            f"status not reached in {within} s: {json.dumps(doc)[:3000]}\ncontroller log:\n{tail}"
        )


def states(doc: Status) -> dict[str, str]:
    return {s["name"]: s["state"] for s in doc.get("servers", [])}


def servers_of(doc: Status) -> dict[str, Status]:
    return {s["name"]: s for s in doc.get("servers", [])}


def converged(doc: Status, wanted: set[str], *, pid: int) -> bool:
    """The controller ``pid`` wrote it, every wanted server is Ready and nothing is pending."""
    return (
        doc.get("controller_pid") == pid
        and not doc.get("pending")
        and {n for n, s in states(doc).items() if s == "Ready"} == wanted
        and all(s["desired"] == "enabled" for s in doc.get("servers", []) if s["name"] in wanted)
    )


def stop(proc: subprocess.Popen[bytes] | None, *, sig: int = signal.SIGTERM) -> int | None:
    """End a controller we started (TERM, then KILL); returns its exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


# /proc


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def processes_with(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and text in cmdline(int(entry.name)) and alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def kill_all_with(text: str) -> None:
    for pid in processes_with(text):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of ``pid`` from ``/proc/<pid>/status``, in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def settles(check: Callable[[], bool], *, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


# Docker


def fleet_containers(client: Any, fleet: str) -> list[Any]:
    """Every container (any state) carrying ``fleet``'s ownership label (listed again when
    one is removed between the SDK's listing and its inspect of it)."""
    import docker.errors

    label = f"{conventions.LABEL_FLEET}={fleet}"
    for _ in range(10):
        with contextlib.suppress(docker.errors.NotFound):
            return list(client.containers.list(all=True, filters={"label": label}))
    return list(client.containers.list(all=True, filters={"label": label}))


def containers_by_server(client: Any, fleet: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for c in fleet_containers(client, fleet):
        out.setdefault(c.labels.get(conventions.LABEL_SERVER, ""), []).append(c)
    return out


def remove_fleet_containers(client: Any, fleet: str) -> None:
    import docker.errors

    for c in fleet_containers(client, fleet):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            c.remove(force=True)


@contextlib.contextmanager
def cleanup(fleet: Fleet, *procs: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    """Whatever happens: controllers killed, the fleet's processes gone."""
    try:
        yield
    finally:
        for group in procs:
            for proc in group:
                stop(proc, sig=signal.SIGKILL)
        kill_all_with(fleet.marker)
