"""dockerd restarted under a running fleet: the controller converges again by itself.

Restarting the machine's shared daemon would kill the containers of every
other test running at the same time, so this test starts a private dockerd
of its own (its own ``--data-root``, ``--exec-root``, pid file and socket;
otherwise started exactly as tests/testbed.sh starts the shared one), loads
the test image into it (kept in the test-bed cache, so only the first run
pays for the load), and points a real ``mcp-fleet controller --runtime
docker`` at it through ``DOCKER_HOST``.

Then the daemon is stopped with SIGTERM, as a package upgrade or a host
restart would: its containers stop with it and the controller loses the API
and its events stream. The controller must report the runtime unavailable,
touch nothing meanwhile, and once the daemon is started again (the same
way) converge without help: the exited containers removed, one new running
container per server, every server Ready. The daemon is stopped at the end
whatever happens.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from faults_support import (
    Fleet,
    cleanup,
    cmdline,
    containers_by_server,
    converged,
    processes_with,
    servers_of,
    stop,
)
from testbed_images import SERVERS_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.timeout(150)]

DOCKERD_FLAGS = ("--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false")
ANSWER_WITHIN = 30.0
SERVERS = ("one", "two")


def cache_dir() -> Path:
    base = os.environ.get("MCP_FLEET_TESTBED_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mcp-fleet-testbed"
    )
    return Path(base) / "private-dockerd"


@dataclass
class PrivateDaemon:
    """A dockerd of our own; ``start``/``stop`` it like the shared one is started."""

    data_root: Path
    exec_root: Path
    log: Path

    @property
    def host(self) -> str:
        return f"unix://{self.exec_root}/docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.exec_root / "dockerd.pid"

    def pid(self) -> int | None:
        """The daemon's pid, found by its exec root (its pid file may not exist yet)."""
        found = [p for p in processes_with(f"--exec-root {self.exec_root} ")
                 if cmdline(p).startswith("dockerd ")]  # fmt: skip
        return found[0] if found else None

    def start(self) -> float:
        """Start it detached (``setsid -f``, as tests/testbed.sh does); seconds to answer."""
        t0 = time.monotonic()
        with self.log.open("ab") as log:
            subprocess.run(
                ["setsid", "-f", "dockerd", *DOCKERD_FLAGS, "--data-root", str(self.data_root),
                 "--exec-root", str(self.exec_root), "--pidfile", str(self.pidfile),
                 "-H", self.host],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True,
            )  # fmt: skip
        deadline = time.monotonic() + ANSWER_WITHIN
        while time.monotonic() < deadline:
            if self.answers():
                return time.monotonic() - t0
            time.sleep(0.1)
        raise AssertionError(f"the private dockerd did not answer:\n{self.log.read_text()[-3000:]}")

    def answers(self) -> bool:
        if not (self.exec_root / "docker.sock").exists():
            return False
        try:
            client = docker.DockerClient(base_url=self.host, timeout=5)
        except docker.errors.DockerException:
            return False
        try:
            return bool(client.ping())
        except docker.errors.DockerException:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM, wait for it to exit (SIGKILL after 30 s); its containerd goes with it."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        leftovers = processes_with(str(self.exec_root))  # dockerd, or its containerd
        for left in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(left, signal.SIGKILL)

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=60)


def load_image(shared: docker.DockerClient, daemon: PrivateDaemon, image: str) -> None:
    """Copy ``image`` from the shared daemon unless the private one has the same image."""
    wanted = shared.images.get(image).id
    private = daemon.client()
    try:
        with contextlib.suppress(docker.errors.ImageNotFound):
            if private.images.get(image).id == wanted:
                return
    finally:
        private.close()
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    loaded = subprocess.run(
        ["docker", "-H", daemon.host, "load", "-q"], stdin=save.stdout, capture_output=True
    )
    save.wait(60)
    assert loaded.returncode == 0 and save.returncode == 0, loaded.stderr


@pytest.fixture
def private_dockerd(
    docker_client: docker.DockerClient, testbed_images: tuple[str, ...]
) -> Iterator[PrivateDaemon]:
    """A private dockerd with the servers image; stopped at the end, whatever happened."""
    if subprocess.run(["which", "dockerd", "setsid"], capture_output=True).returncode != 0:
        pytest.fail("dockerd or setsid is missing; run tests/testbed.sh")
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one private daemon per cache at a time
        # exec-root holds unix sockets (108-byte path limit): keep it short, under /tmp.
        exec_root = Path(tempfile.mkdtemp(prefix="mcpfd-", dir="/tmp"))
        daemon = PrivateDaemon(cache / "data", exec_root, cache / "dockerd.log")
        try:
            daemon.start()
            load_image(docker_client, daemon, SERVERS_IMAGE)
            yield daemon
        finally:
            daemon.stop()
            subprocess.run(["rm", "-rf", str(exec_root)], check=False)


def catalog() -> str:
    entries = "".join(f"  {name}:\n    image: {SERVERS_IMAGE}\n" for name in SERVERS)
    return f'version: "2"\nregistry:\n{entries}'


def test_fleet_converges_by_itself_after_dockerd_restarts(
    tmp_path: Path, private_dockerd: PrivateDaemon
) -> None:
    daemon = private_dockerd
    fleet = Fleet(tmp_path / "fleet", prefix="dockerd")
    fleet.write_catalog(catalog())
    fleet.set_registry(dict.fromkeys(SERVERS, True))
    client = daemon.client()
    controllers: list[subprocess.Popen[bytes]] = []
    try:
        with cleanup(fleet, controllers):
            ctl = fleet.start_controller(runtime="docker", env={"DOCKER_HOST": daemon.host})
            controllers.append(ctl)
            first = fleet.wait_status(lambda d: converged(d, set(SERVERS), pid=ctl.pid))
            before = {n: s["instance"] for n, s in servers_of(first).items()}

            t0 = time.monotonic()
            daemon.stop()
            down_for = time.monotonic() - t0
            fleet.wait_status(lambda d: "docker" in (d.get("runtime_errors") or {}), within=30)
            assert ctl.poll() is None, "the controller died with the daemon"

            t1 = time.monotonic()
            daemon.start()
            after = fleet.wait_status(
                lambda d: (
                    converged(d, set(SERVERS), pid=ctl.pid)
                    and not d.get("runtime_errors")
                    and all(s["instance"] != before[s["name"]] for s in d["servers"])
                ),
                within=60,
            )
            back_in = time.monotonic() - t1
            by_server = containers_by_server(client, fleet.name)
            assert set(by_server) == set(SERVERS), by_server
            for name, cs in by_server.items():
                assert [c.status for c in cs] == ["running"], f"{name}: {[c.status for c in cs]}"
                assert cs[0].id == servers_of(after)[name]["instance"]
            assert stop(ctl) == 0
            print(f"dockerd: stopped in {down_for:.1f} s, fleet Ready again {back_in:.1f} s "
                  "after the restart")  # fmt: skip
    finally:
        for c in client.containers.list(all=True):
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True)
        client.close()
