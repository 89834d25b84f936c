"""The controller on the Docker runtime, end to end: real dockerd, real files, real signals.

Each scenario edits a real fleet directory (catalog, registry.yaml,
secrets.env) and watches a real controller converge containers of the
test-bed images: a server becomes Ready only after an MCP initialize over
the attach; a changed config replaces its container (the new one answers
before the old one goes); a disabled server's container is removed; orphans
carrying our fleet label are removed while other fleets' and unlabelled
containers are left alone; a killed container comes back with backoff; a
crashing image ends in CrashLoop with its exit code and last words; a spec
Docker cannot run (a relative volume) or an image that cannot be pulled is
Failed with that reason, not CrashLoop; a broken registry stops nothing; a
missing secret fails only its server and no secret value leaks. A SIGKILLed
``mcp-fleet controller --runtime docker`` (a real subprocess) is followed by
one that adopts what runs: never two copies; ``--once`` and ``down`` too.

Every test has its own fleet name (``MCP_FLEET_NAME``) and removes every
container carrying it at the end, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from controller_support import Recorder, call_echo, passes, state, until
from mcp_fleet import conventions
from mcp_fleet.config import resolve_files
from mcp_fleet.endpoints import EndpointTable, StreamEndpoint
from mcp_fleet.logsetup import FleetFormatter
from mcp_fleet.model import RuntimeKind
from mcp_fleet.reconcile.backoff import BackoffPolicy
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.reconcile.snapshot import ServerStatus, StatusSnapshot
from mcp_fleet.runtimes.select import build_runtimes
from mcp_fleet.status import ServerState
from support import until as until_true
from support import until_sync
from testbed_images import SERVERS_IMAGE, TIME_IMAGE, hardened_container_options, server_in_image

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

PY = sys.executable
SECRET_VALUE = "s3cr3t-VALUE-" + uuid.uuid4().hex[:10]
BACKOFF = BackoffPolicy(initial=0.3, maximum=1.0, threshold=3, window=30.0)
SLEEPER = ["-c", "import time; time.sleep(300)"]  # SERVERS_IMAGE's entrypoint is python3
#: An image that is not present and cannot be pulled (nothing listens there): fails at once.
ABSENT_IMAGE = "127.0.0.1:9/mcp-fleet-test/absent:latest"


def catalog(*, echo_version: str = "1") -> str:
    return f"""version: "2"
registry:
  echo:
    title: Echo
    image: {SERVERS_IMAGE}
    env:
      - name: ECHO_VERSION
        value: "{echo_version}"
  time:
    image: {TIME_IMAGE}
  crash:
    image: {SERVERS_IMAGE}
    command: [{server_in_image("crash_server.py")}]
  needy:
    image: {SERVERS_IMAGE}
    secrets:
      - name: needy.token
        env: NEEDY_TOKEN
  holder:
    image: {SERVERS_IMAGE}
    secrets:
      - name: holder.token
        env: HOLDER_TOKEN
  badvolume:
    image: {SERVERS_IMAGE}
    volumes: [relative/data:/data]
  absent:
    image: {ABSENT_IMAGE}
"""


class Fleet:
    """A fleet directory on disk, edited as a user would, with its own fleet name."""

    def __init__(self, home: Path, name: str) -> None:
        self.home = home
        self.name = name
        (home / "catalogs").mkdir(parents=True)
        self.write_catalog()
        secrets = home / "secrets.env"
        secrets.write_text(f"holder.token={SECRET_VALUE}\n")
        secrets.chmod(0o600)
        self.set_registry()

    def write_catalog(self, **kw: str) -> None:
        (self.home / "catalogs" / "test.yaml").write_text(catalog(**kw))

    def set_registry(self, **enabled: bool) -> None:
        lines = ["registry:"]
        for server, on in enabled.items():
            lines += [f"  {server}:", f"    enabled: {'true' if on else 'false'}"]
        (self.home / "registry.yaml").write_text("\n".join(lines) + "\n")

    @property
    def status_file(self) -> Path:
        return self.home / ".state" / "status.json"


def fleet_containers(client: docker.DockerClient, fleet: str) -> list[Any]:
    """Every container (any state) carrying ``fleet``'s ownership label.

    The SDK lists, then inspects each container: one the controller removes in
    between raises NotFound, so the listing is simply taken again.
    """
    filters = {"label": f"{conventions.LABEL_FLEET}={fleet}"}
    for _ in range(10):
        with contextlib.suppress(docker.errors.NotFound):
            return list(client.containers.list(all=True, filters=filters))
    return list(client.containers.list(all=True, filters=filters))


def by_server(client: docker.DockerClient, fleet: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in fleet_containers(client, fleet):
        out.setdefault(c.labels.get(conventions.LABEL_SERVER, ""), []).append(c.id)
    return out


def remove_fleet(client: docker.DockerClient, fleet: str) -> None:
    for c in fleet_containers(client, fleet):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            c.remove(force=True)


def exists(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.api.inspect_container(container_id)
    except docker.errors.NotFound:
        return False
    return True


@pytest.fixture
def fleet(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_client: docker.DockerClient,
    testbed_images: tuple[str, ...],
) -> Iterator[Fleet]:
    """A fleet directory with a fleet name of its own; its containers are removed at the end."""
    name = f"ctltest-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv(conventions.ENV_FLEET_NAME, name)
    try:
        yield Fleet(tmp_path / "fleet", name)
    finally:
        remove_fleet(docker_client, name)


@pytest.fixture
async def running(fleet: Fleet) -> AsyncIterator[tuple[Fleet, Controller, Recorder]]:
    """A controller with the Docker runtime watching ``fleet``, as ``mcp-fleet controller`` runs."""
    files = resolve_files(fleet.home)
    runtimes = build_runtimes(
        RuntimeKind.DOCKER, fleet=fleet.name, state_dir=files.state_dir,
        options={"stop_timeout": 2},
    )  # fmt: skip
    recorder = Recorder(runtimes[RuntimeKind.DOCKER])
    runtimes[RuntimeKind.DOCKER] = recorder
    ctl = Controller(
        files, runtimes, EndpointTable(), preferred_runtime=RuntimeKind.DOCKER,
        resync_seconds=2.0, debounce_ms=50, probe_timeout=20.0, backoff=BACKOFF,
    )  # fmt: skip
    task = asyncio.create_task(ctl.run())
    try:
        yield fleet, ctl, recorder
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=15)
        assert done, "the controller did not stop when cancelled"
        await asyncio.wait_for(ctl.aclose(), 15)


def server(snap: StatusSnapshot, name: str) -> ServerStatus:
    st = snap.server(name)
    assert st is not None, f"{name} not in status {snap.to_json()}"
    return st


def replaced(name: str, old: str | None) -> Callable[[StatusSnapshot], bool]:
    def check(snap: StatusSnapshot) -> bool:
        st = snap.server(name)
        return st is not None and st.state is ServerState.READY and st.instance != old

    return check


async def settles(check: Callable[[], bool], *, what: str, within: float = 10.0) -> None:
    """Wait until ``check`` (a blocking Docker call, run in a thread) holds."""
    await until_true(lambda: asyncio.to_thread(check), within=within, what=what, every=0.1)


# -- scenarios with a controller in this process -------------------------------


async def test_enable_change_disable(
    running: tuple[Fleet, Controller, Recorder], docker_client: docker.DockerClient
) -> None:
    fleet, ctl, recorder = running
    await until(ctl, lambda s: s.fleet == fleet.name and not s.servers)

    fleet.set_registry(echo=True)
    first = server(await until(ctl, state("echo", ServerState.READY)), "echo")
    assert first.reason == "Initialized" and first.runtime == "docker" and first.instance
    info = docker_client.api.inspect_container(first.instance)
    labels = info["Config"]["Labels"]
    assert info["State"]["Running"]
    assert labels[conventions.LABEL_FLEET] == fleet.name
    assert labels[conventions.LABEL_SERVER] == "echo"
    assert first.config_hash and labels[conventions.LABEL_CONFIG_HASH].startswith(first.config_hash)
    entry = ctl.endpoints.snapshot()["echo"]
    assert isinstance(entry.endpoint, StreamEndpoint)
    assert entry.endpoint.instance_id == first.instance
    assert await call_echo(entry.endpoint, "hello") == "hello"  # the probe left it serving

    fleet.write_catalog(echo_version="2")
    second = server(await until(ctl, replaced("echo", first.instance)), "echo")
    assert second.instance
    new_info = docker_client.api.inspect_container(second.instance)
    new_hash = new_info["Config"]["Labels"][conventions.LABEL_CONFIG_HASH]
    assert new_hash != labels[conventions.LABEL_CONFIG_HASH]
    assert "ECHO_VERSION=2" in new_info["Config"]["Env"]
    # The replacement is Ready as soon as it answered; the old container goes right after.
    await settles(lambda: not exists(docker_client, first.instance), what="the old one is gone")
    assert by_server(docker_client, fleet.name) == {"echo": [second.instance]}
    calls = recorder.calls
    assert ("ready", second.instance) in calls and ("stop", first.instance) in calls
    assert calls.index(("ready", second.instance)) < calls.index(("stop", first.instance)), (
        f"the old container was stopped before the new one answered: {calls}"
    )

    fleet.set_registry(echo=False)
    snap = await until(ctl, state("echo", ServerState.STOPPED))
    assert server(snap, "echo").reason == "Disabled"
    assert fleet_containers(docker_client, fleet.name) == []
    assert "echo" not in ctl.endpoints.snapshot()


async def test_orphans_go_strangers_stay_and_a_killed_server_comes_back(
    running: tuple[Fleet, Controller, Recorder], docker_client: docker.DockerClient
) -> None:
    fleet, ctl, recorder = running
    other_fleet = f"other-{uuid.uuid4().hex[:8]}"
    created: list[Any] = []

    def sleeper(labels: dict[str, str]) -> Any:
        c = docker_client.containers.run(
            SERVERS_IMAGE, SLEEPER, detach=True, labels=labels, **hardened_container_options()
        )
        created.append(c)
        return c

    try:
        fleet.set_registry(echo=True)
        ready = server(await until(ctl, state("echo", ServerState.READY)), "echo")

        mark = len(recorder.calls)
        orphan = sleeper({conventions.LABEL_FLEET: fleet.name, conventions.LABEL_SERVER: "ghost",
                          conventions.LABEL_CONFIG_HASH: "0" * 64})  # fmt: skip
        stranger = sleeper({conventions.LABEL_FLEET: other_fleet,
                            conventions.LABEL_SERVER: "echo"})  # fmt: skip
        unlabelled = sleeper({})
        await settles(lambda: not exists(docker_client, orphan.id), what="orphan removed")
        # Whole passes since (each saw the stranger and the unlabelled container):
        # the orphan's removal is all the controller did.
        snap = await passes(ctl, 2)
        touched = [c for c in recorder.actions_since(mark) if c != ("stop", orphan.id)]
        assert touched == [], f"more than the orphan was touched: {touched}"
        for c in (stranger, unlabelled):
            c.reload()
            assert c.status == "running", f"{c.name} was touched"
        assert snap.server("ghost") is None
        assert server(snap, "echo").instance == ready.instance

        assert ready.instance
        killed_at = time.monotonic()
        docker_client.api.kill(ready.instance)
        snap = await until(ctl, replaced("echo", ready.instance))
        back = server(snap, "echo")
        assert back.restarts == 1
        restarted_at = recorder.start_times["echo"][-1]
        assert restarted_at - killed_at >= BACKOFF.initial, "restarted without backoff"
        assert by_server(docker_client, fleet.name) == {"echo": [back.instance]}
    finally:
        for c in created:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                c.remove(force=True)


async def test_servers_that_cannot_run_fail_alone_and_no_secret_leaks(
    running: tuple[Fleet, Controller, Recorder],
    docker_client: docker.DockerClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fleet, ctl, recorder = running
    caplog.set_level(logging.DEBUG, logger="mcp_fleet")
    fleet.set_registry(crash=True, needy=True, holder=True, badvolume=True, absent=True)
    snap = await until(
        ctl,
        lambda s: (
            state("crash", ServerState.CRASHLOOP)(s)
            and state("needy", ServerState.FAILED)(s)
            and state("holder", ServerState.READY)(s)
            and state("badvolume", ServerState.FAILED)(s)
            and state("absent", ServerState.FAILED)(s)
        ),
        within=45,
    )
    crash = server(snap, "crash")
    assert crash.reason == "CrashLoopBackOff" and crash.exit_code == 3
    assert "exit code 3" in crash.message
    assert any("refusing to start" in line for line in crash.stderr_tail), crash.stderr_tail
    assert crash.restarts >= 2

    needy = server(snap, "needy")
    assert needy.reason == "MissingSecret" and "needy.token" in needy.message
    badvolume = server(snap, "badvolume")
    assert badvolume.reason == "InvalidSpec" and "relative/data:/data" in badvolume.message
    absent = server(snap, "absent")
    assert absent.reason == "ImageUnavailable" and ABSENT_IMAGE in absent.message
    assert set(by_server(docker_client, fleet.name)) <= {"crash", "holder"}
    # What retrying cannot fix is not retried: not even by passes after the longest backoff.
    await passes(ctl, 2, after=time.time() + BACKOFF.maximum)
    assert not {"needy", "badvolume"} & set(recorder.start_times), recorder.calls

    holder = server(snap, "holder")
    assert holder.instance
    info = docker_client.api.inspect_container(holder.instance)
    assert f"HOLDER_TOKEN={SECRET_VALUE}" in info["Config"]["Env"]
    info["Config"]["Env"] = []
    formatter = FleetFormatter("json")
    places = {
        "docker inspect (but Config.Env)": json.dumps(info),
        "status file": fleet.status_file.read_text(),
        "status": json.dumps(ctl.status().to_json()),
        "log records": "\n".join(formatter.format(r) for r in caplog.records),
    }
    assert "holder" in places["status file"] and '"to":"CrashLoop"' in places["log records"]
    for where, text in places.items():
        assert SECRET_VALUE not in text, f"the secret value is in the {where}"


async def test_broken_registry_stops_nothing_and_a_fix_resumes(
    running: tuple[Fleet, Controller, Recorder], docker_client: docker.DockerClient
) -> None:
    fleet, ctl, recorder = running
    fleet.set_registry(echo=True)
    ready = server(await until(ctl, state("echo", ServerState.READY)), "echo")
    assert ready.instance

    mark = len(recorder.calls)
    (fleet.home / "registry.yaml").write_text("registry:\n  echo:\n    enabled: [oops\n")
    await until(ctl, lambda s: bool(s.file_errors))
    shown = await asyncio.to_thread(
        subprocess.run,
        [PY, "-m", "mcp_fleet.cli.main", "status", "--json", "--dir", str(fleet.home)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["controller_running"] is True
    (error,) = doc["file_errors"]
    assert error["file"].endswith("registry.yaml") and isinstance(error["line"], int)
    assert f"registry.yaml:{error['line']}" in error["text"]
    (echo,) = doc["servers"]
    assert (echo["state"], echo["instance"]) == ("Ready", ready.instance)
    # Passes with the broken file: none starts or stops anything; the container runs on.
    snap = await passes(ctl, 2)
    assert snap.file_errors and recorder.actions_since(mark) == [], recorder.calls[mark:]
    assert docker_client.api.inspect_container(ready.instance)["State"]["Running"]
    assert server(snap, "echo").instance == ready.instance

    fleet.set_registry(echo=True, time=True)
    snap = await until(ctl, state("time", ServerState.READY))
    assert not snap.file_errors
    assert server(snap, "echo").instance == ready.instance
    assert sorted(by_server(docker_client, fleet.name)) == ["echo", "time"]


# -- `mcp-fleet controller --runtime docker` as a real process -------------------


def mcp_fleet(fleet: Fleet, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run the ``mcp-fleet`` command for ``fleet`` and wait for it."""
    return subprocess.run(
        [PY, "-m", "mcp_fleet.cli.main", *args, "--dir", str(fleet.home)],
        capture_output=True, text=True, timeout=60, env=os.environ.copy(), **kw,
    )  # fmt: skip


def start_controller(fleet: Fleet, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PY, "-m", "mcp_fleet.cli.main", "-vv", "--log-format", "json", "controller",
         "--runtime", "docker", "--resync", "1", "--dir", str(fleet.home)],
        stdout=subprocess.DEVNULL, stderr=log.open("ab"), env=os.environ.copy(),
    )  # fmt: skip


def wait_status(fleet: Fleet, log: Path, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    doc: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        nonlocal doc
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads(fleet.status_file.read_text())
        return doc if doc and check(doc) else None

    return until_sync(  # type: ignore[no-any-return]
        reached, within=45, what="status",
        context=lambda: f"{doc}\ncontroller log:\n{log.read_text()[-4000:]}",
    )  # fmt: skip


def states(doc: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["state"] for s in doc.get("servers", [])}


def test_sigkilled_controller_is_adopted_then_once_and_down(
    fleet: Fleet, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    log = tmp_path / "controller.log"
    wanted = {"echo", "time", "holder"}
    fleet.set_registry(echo=True, time=True, holder=True)
    first = start_controller(fleet, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        # Kill it mid-reconcile: as soon as one container of the fleet runs.
        until_sync(
            lambda: first.poll() is not None
            or any(c.status == "running" for c in fleet_containers(docker_client, fleet.name)),
            within=45, what="a container of the fleet running",
            context=lambda: log.read_text()[-3000:],
        )  # fmt: skip
        assert first.poll() is None, log.read_text()[-3000:]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        at_kill = {
            c.labels[conventions.LABEL_SERVER]: c.id
            for c in fleet_containers(docker_client, fleet.name)
            if c.status == "running"
        }
        assert at_kill, "nothing ran when the controller was killed"

        second = start_controller(fleet, log)
        pid = second.pid
        doc = wait_status(
            fleet, log,
            lambda d: d["controller_pid"] == pid and states(d) == dict.fromkeys(wanted, "Ready"),
        )  # fmt: skip
        final = by_server(docker_client, fleet.name)
        assert set(final) == wanted, f"orphans or missing servers: {final}"
        assert all(len(ids) == 1 for ids in final.values()), f"two copies: {final}"
        for name, cid in at_kill.items():
            assert final[name] == [cid], f"{name} was not adopted"
        assert {s["name"]: s["instance"] for s in doc["servers"]} == {
            n: ids[0] for n, ids in final.items()
        }

        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0
        running = {c.id for c in fleet_containers(docker_client, fleet.name)
                   if c.status == "running"}  # fmt: skip
        assert running == {ids[0] for ids in final.values()}, "containers outlive the controller"

        once = mcp_fleet(fleet, "controller", "--runtime", "docker", "--once", "--json")
        assert once.returncode == 0, once.stdout + once.stderr
        once_doc = json.loads(once.stdout)
        assert once_doc["all_ready"] is True
        assert by_server(docker_client, fleet.name) == final, "--once adopts, starts nothing"

        fleet.set_registry(echo=True, time=True, holder=True, needy=True)
        failing = mcp_fleet(fleet, "controller", "--runtime", "docker", "--once", "--json")
        assert failing.returncode == 1, failing.stdout + failing.stderr
        assert states(json.loads(failing.stdout))["needy"] == "Failed"

        down = mcp_fleet(fleet, "down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert fleet_containers(docker_client, fleet.name) == []

        outputs = {
            "controller stderr": log.read_text(),
            "--once output": once.stdout + once.stderr + failing.stdout + failing.stderr,
            "down output": down.stdout + down.stderr,
        }
        assert '"event":"state"' in outputs["controller stderr"].replace(" ", "")
        for where, text in outputs.items():
            assert SECRET_VALUE not in text, f"the secret value is in the {where}"
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
