"""Containers run hardened as documented, checked on the daemon and from inside.

The rules (runtimes/docker_spec.py, DESIGN.md "Reliability we promise"):
every capability dropped, ``no-new-privileges``, a read-only root unless the
entry says ``readOnly: false``, memory (swap included) and CPU limits (the
entry's, else 2g and 1 CPU), a pids limit, an init process, no network
unless the catalog asks for one (``network: true`` or ``allowHosts``, and
never with ``disableNetwork: true``), bounded logs, and never privileged.

Containers are started by the Docker runtime itself from specs the loader
resolved from a real catalog (what the controller does for each start);
``docker inspect`` must show the rules, and a ``docker exec`` inside the
default container must feel them: no effective capability, the
no-new-privileges bit set, ``/`` not writable but ``/tmp`` writable, no
network interface but loopback, not root.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from faults_support import remove_fleet_containers
from mcp_fleet.config import load_fleet, resolve_files
from mcp_fleet.runtimes.docker import DockerRuntime
from testbed_images import SERVERS_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.timeout(90)]

GIB = 1024**3
SLEEP = '["-c", "import time; time.sleep(600)"]'
CATALOG = f"""version: "2"
registry:
  plain:
    image: {SERVERS_IMAGE}
    command: {SLEEP}
  relaxed:
    image: {SERVERS_IMAGE}
    command: {SLEEP}
    readOnly: false
    memory: 512m
    cpus: 0.5
    network: true
  hosts:
    image: {SERVERS_IMAGE}
    command: {SLEEP}
    allowHosts: [api.example.com]
  offline:
    image: {SERVERS_IMAGE}
    command: {SLEEP}
    allowHosts: [api.example.com]
    disableNetwork: true
"""
INSIDE = """
import json, os
status = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)
def writable(path):
    try:
        with open(os.path.join(path, 'probe'), 'w') as f:
            f.write('x')
        return True
    except OSError:
        return False
print(json.dumps({
    'uid': os.getuid(),
    'no_new_privs': status['NoNewPrivs'].strip(),
    'cap_eff': status['CapEff'].strip(),
    'cap_bnd': status['CapBnd'].strip(),
    'root_writable': writable('/'),
    'etc_writable': writable('/etc'),
    'tmp_writable': writable('/tmp'),
    'interfaces': sorted(os.listdir('/sys/class/net')),
}))
"""


@pytest.fixture(scope="module")
def inspected(
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: docker.DockerClient,
    testbed_images: tuple[str, ...],
) -> Iterator[dict[str, dict[str, Any]]]:
    """Each catalog entry started by the Docker runtime, as ``docker inspect`` shows it."""
    home = tmp_path_factory.mktemp("hardening") / "fleet"
    (home / "catalogs").mkdir(parents=True)
    (home / "catalogs" / "test.yaml").write_text(CATALOG)
    (home / "registry.yaml").write_text(
        "registry:\n" + "".join(f"  {n}: {{}}\n" for n in ("plain", "relaxed", "hosts", "offline"))
    )
    fleet = f"harden-{uuid.uuid4().hex[:10]}"
    state = load_fleet(resolve_files(home), fleet=fleet)
    runtime = DockerRuntime(fleet=fleet)

    async def start_all() -> dict[str, str]:
        try:
            started = await asyncio.gather(*(runtime.start(s) for s in state.servers.values()))
        finally:
            await runtime.aclose()
        return {i.server: i.instance_id for i in started}

    try:
        ids = asyncio.run(start_all())
        yield {name: docker_client.api.inspect_container(cid) for name, cid in ids.items()}
    finally:
        remove_fleet_containers(docker_client, fleet)


def test_defaults_are_hardened(inspected: dict[str, dict[str, Any]]) -> None:
    host = inspected["plain"]["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Privileged"] is False
    assert host["ReadonlyRootfs"] is True
    assert host["Memory"] == 2 * GIB and host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 1_000_000_000
    assert host["PidsLimit"] == 512
    assert host["NetworkMode"] == "none"
    assert host["Init"] is True
    assert "nosuid" in host["Tmpfs"]["/tmp"] and "size=64m" in host["Tmpfs"]["/tmp"]
    assert host["LogConfig"]["Config"] == {"max-size": "10m", "max-file": "2"}
    assert inspected["plain"]["Config"]["User"] not in ("", "0", "root")


def test_the_catalog_relaxes_only_what_it_names(inspected: dict[str, dict[str, Any]]) -> None:
    relaxed = inspected["relaxed"]["HostConfig"]
    assert relaxed["ReadonlyRootfs"] is False
    assert relaxed["Memory"] == 512 * 1024**2 and relaxed["MemorySwap"] == relaxed["Memory"]
    assert relaxed["NanoCpus"] == 500_000_000
    assert relaxed["NetworkMode"] == "default"
    assert relaxed["CapDrop"] == ["ALL"] and relaxed["SecurityOpt"] == ["no-new-privileges"]
    assert inspected["hosts"]["HostConfig"]["NetworkMode"] == "default"
    assert inspected["offline"]["HostConfig"]["NetworkMode"] == "none"


def test_inside_the_default_container_nothing_is_granted(
    inspected: dict[str, dict[str, Any]], docker_client: docker.DockerClient
) -> None:
    container = docker_client.containers.get(inspected["plain"]["Id"])
    code, out = container.exec_run(["python3", "-c", INSIDE])
    assert code == 0, out
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen["uid"] != 0
    assert seen["no_new_privs"] == "1"
    assert int(seen["cap_eff"], 16) == 0 and int(seen["cap_bnd"], 16) == 0
    assert not seen["root_writable"] and not seen["etc_writable"]
    assert seen["tmp_writable"]
    assert seen["interfaces"] == ["lo"]
