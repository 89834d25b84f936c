"""kill -9 of the controller at random points of a reconcile: its successor converges cleanly.

For each seed a real ``mcp-fleet controller`` process runs a pass with work
to do (seed 0 starts every server from nothing; each later seed edits the
files under the controller that converged last: two servers get a new
config, which replaces them, and a third is toggled), and is SIGKILLed after
a random delay of 0 to 1.5 s (counted from its first status write, or from
the edit), so the kill lands anywhere in creating, starting, probing,
replacing or removing, or just before the pass. A new controller is then
started and must converge on its own, with:

- Docker: exactly one running container per enabled server, carrying the
  desired config hash; no container for anything else (no orphan, no
  duplicate, nothing left in ``created`` or ``exited``); every container
  that already ran the desired configuration when the first controller died
  is adopted (same id), never started twice.
- processes: exactly one process per enabled server (matched by a unique
  marker in its command line in ``/proc``), and none for disabled servers;
  the grandchild a ``sh -c`` server leaves behind when its controller dies
  is ended too, so no two copies of anything survive.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from faults_support import (
    ECHO,
    PY,
    Fleet,
    Status,
    alive,
    cleanup,
    containers_by_server,
    converged,
    processes_with,
    remove_fleet_containers,
    servers_of,
    settles,
    stop,
)
from mcp_fleet import conventions
from testbed_images import SERVERS_IMAGE, TIME_IMAGE

pytestmark = pytest.mark.timeout(150)

SEEDS = (11, 23, 37, 41)
MAX_KILL_DELAY = 1.5
DOCKER_SERVERS = ("a", "b", "c", "t")
PROCESS_SERVERS = ("p1", "p2", "gp")

#: What ran when the first controller died: server -> [(id, config hash)].
World = dict[str, list[tuple[str, str]]]
Check = Callable[[Status, set[str], World], None]


def docker_catalog(versions: dict[str, int]) -> str:
    entries = []
    for name in DOCKER_SERVERS:
        image = TIME_IMAGE if name == "t" else SERVERS_IMAGE
        entries.append(
            f"  {name}:\n    image: {image}\n"
            f'    env:\n      - name: VERSION\n        value: "{versions[name]}"\n'
        )
    return 'version: "2"\nregistry:\n' + "".join(entries)


def process_catalog(fleet: Fleet, versions: dict[str, int]) -> str:
    entries = []
    for name in PROCESS_SERVERS:
        tag = f"{fleet.marker}-{name}-v{versions[name]}"
        if name == "gp":  # a shell that leaves a grandchild behind, then runs the server
            straggler = f"{PY} -c 'import time; time.sleep(600)' {tag}-straggler"
            command = f'[sh, -c, "{straggler} & exec {PY} {ECHO} {tag}"]'
        else:
            command = f"[{PY}, {ECHO}, {tag}]"
        entries.append(f"  {name}:\n    process:\n      command: {command}\n")
    return 'version: "2"\nregistry:\n' + "".join(entries)


def started_by(pid: int) -> Callable[[Status], bool]:
    return lambda doc: doc.get("controller_pid") == pid


def converged_by(pid: int, wanted: set[str]) -> Callable[[Status], bool]:
    return lambda doc: converged(doc, wanted, pid=pid)


def run_seeds(
    fleet: Fleet,
    *,
    runtime: str,
    names: tuple[str, ...],
    catalog: Callable[[dict[str, int]], str],
    world: Callable[[], World],
    check: Check,
) -> list[dict[str, Any]]:
    """Kill the controller mid-pass once per seed, start another, check; returns figures.

    The controller that converged after one kill is the victim of the next
    seed: the seed's edit wakes it (file watcher) and the kill lands in the
    pass that edit started, so no seed pays for an extra controller start.
    """
    enabled = set(names)
    versions = dict.fromkeys(names, 0)
    figures = []
    controllers: list[subprocess.Popen[bytes]] = []
    with cleanup(fleet, controllers):
        for seed in SEEDS:
            rng = random.Random(seed)
            if controllers:  # give the pass work: two replacements and a toggle
                for name in rng.sample(sorted(names), k=2):
                    versions[name] += 1
                enabled ^= {rng.choice(sorted(names))}
            fleet.write_catalog(catalog(versions))
            fleet.set_registry({n: n in enabled for n in names})
            if not controllers:  # the first victim: wait until its first pass is under way
                controllers.append(fleet.start_controller(runtime=runtime))
                fleet.wait_status(started_by(controllers[-1].pid))
            victim = controllers[-1]
            delay = rng.uniform(0, MAX_KILL_DELAY)
            time.sleep(delay)
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            at_kill = world()
            mid_pass = bool(fleet.status().get("pending"))

            t0 = time.monotonic()
            successor = fleet.start_controller(runtime=runtime)
            controllers.append(successor)
            wanted = set(enabled)
            doc = fleet.wait_status(converged_by(successor.pid, wanted))
            took = time.monotonic() - t0
            check(doc, wanted, at_kill)
            figures.append(
                {"seed": seed, "kill_after": round(delay, 2), "mid_pass": mid_pass,
                 "converged_in": round(took, 2)}
            )  # fmt: skip
        assert stop(controllers[-1]) == 0, "the controller did not stop cleanly on SIGTERM"
    assert any(f["mid_pass"] for f in figures), f"no kill landed inside a pass: {figures}"
    return figures


@pytest.mark.docker
def test_sigkilled_controller_on_docker_never_duplicates_nor_orphans(
    tmp_path: Path, docker_client: docker.DockerClient, testbed_images: tuple[str, ...]
) -> None:
    fleet = Fleet(tmp_path / "fleet", prefix="kill-docker")

    def world() -> World:
        return {
            server: [(c.id, c.labels[conventions.LABEL_CONFIG_HASH]) for c in cs
                     if c.status == "running"]
            for server, cs in containers_by_server(docker_client, fleet.name).items()
        }  # fmt: skip

    def check(doc: Status, enabled: set[str], at_kill: World) -> None:
        by_server = containers_by_server(docker_client, fleet.name)
        assert set(by_server) == enabled, f"orphans or missing servers: {sorted(by_server)}"
        status = servers_of(doc)
        for server, cs in by_server.items():
            assert len(cs) == 1, f"{server}: {len(cs)} containers: {[c.status for c in cs]}"
            (c,) = cs
            assert c.status == "running"
            assert c.id == status[server]["instance"]
            label = c.labels[conventions.LABEL_CONFIG_HASH]
            assert label.startswith(status[server]["config_hash"])
            for old, old_hash in at_kill.get(server, []):
                if old_hash == label:
                    assert old == c.id, f"{server}: started again instead of adopted"
            assert status[server]["restarts"] == 0

    try:
        figures = run_seeds(
            fleet, runtime="docker", names=DOCKER_SERVERS, catalog=docker_catalog,
            world=world, check=check,
        )  # fmt: skip
    finally:
        remove_fleet_containers(docker_client, fleet.name)
    print("docker kill seeds:", figures)


def test_sigkilled_controller_on_processes_leaves_no_second_copy(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path / "fleet", prefix="kill-process")

    def copies(server: str) -> list[int]:
        return processes_with(f"{fleet.marker}-{server}-v")

    def world() -> World:
        return {s: [(str(p), "") for p in copies(s)] for s in PROCESS_SERVERS}

    def check(doc: Status, enabled: set[str], at_kill: World) -> None:
        status = servers_of(doc)
        # Leftovers of the killed controller are ended within the pass that converged.
        for server in PROCESS_SERVERS:
            pids = copies(server)
            if server not in enabled:
                assert pids == [], f"{server} is disabled but runs: {pids}"
                continue
            wanted = 2 if server == "gp" else 1  # gp: the server and its own grandchild
            assert len(pids) == wanted, f"{server}: {len(pids)} processes, not {wanted}"
            pid = int(status[server]["instance"].split(":")[1])
            assert pid in pids, f"{server}: status names {pid}, /proc has {pids}"
            for old, _ in at_kill.get(server, []):
                assert int(old) in pids or not alive(int(old)), f"{server}: {old} lives on"

    figures = run_seeds(
        fleet, runtime="process", names=PROCESS_SERVERS,
        catalog=lambda v: process_catalog(fleet, v), world=world, check=check,
    )  # fmt: skip
    assert settles(lambda: processes_with(fleet.marker) == []), "servers outlive the controller"
    print("process kill seeds:", figures)
