"""A secret value reaches its server's environment and nothing else, on both runtimes.

Three servers get the same secret from secrets.env and misbehave with it:
``holder`` prints it to stderr and then serves (Ready), ``blurt`` answers
``initialize`` with it on stdout (its probe fails, quoting what it read),
``crash`` prints it to stderr and exits (its last words land in the
status). On Docker a fourth, ``failstart``, holds the secret and cannot be
created at all (a bind mount whose source does not exist). A real
``mcp-fleet controller`` runs them; then every place a user, a log shipper
or another local user can read is searched for the value, and for any 16
characters of it: the controller's log (JSON, ``-vv``), every file under
``.state`` (status, server logs, pid files), ``mcp-fleet status`` (table
and ``--json``), ``mcp-fleet logs``, ``mcp-fleet secret ls`` (table and
``--json``), the process list (``ps -eo args``), ``--once`` output, and
``docker inspect`` of every container but its ``Config.Env``. Each test
first proves the value really was delivered (the server's ``/proc`` environ
or ``Config.Env``, the raw container log), so a clean result means masked,
not absent.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from faults_support import (
    ECHO,
    PY,
    Fleet,
    cleanup,
    containers_by_server,
    remove_fleet_containers,
    servers_of,
    stop,
)
from mcp_fleet.cli.main import app
from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.model import CatalogEntry, ServerSpec, frozen_map
from mcp_fleet.runtimes.docker import DockerRuntime
from testbed_images import SERVERS_IMAGE, server_in_image
from typer.testing import CliRunner, Result

pytestmark = pytest.mark.timeout(120)

SECRET = "sEcReT-" + uuid.uuid4().hex
SECRETS_REF = [{"name": "api.token", "env": "TOKEN"}]


def code(name: str, echo: str) -> str:
    """The Python each misbehaving server runs (no shell: the image has none)."""
    return {
        "holder": "import os,sys,runpy; sys.stderr.write('token is '+os.environ['TOKEN']+'\\n');"
        f" sys.stderr.flush(); sys.argv=[{echo!r}]; runpy.run_path({echo!r}, run_name='__main__')",
        "blurt": "import os,sys,time; sys.stdin.readline();"
        " print('hello '+os.environ['TOKEN'], flush=True); time.sleep(600)",
        "crash": "import os,sys; sys.stderr.write('failed with token '+os.environ['TOKEN']+'\\n');"
        " sys.exit(3)",
    }[name]


def catalog(fleet: Fleet, *, docker_runtime: bool) -> str:
    registry: dict[str, Any] = {}
    for name in ("holder", "blurt", "crash"):
        body: dict[str, Any]
        if docker_runtime:
            command = ["-c", code(name, server_in_image(ECHO.name))]
            body = {"image": SERVERS_IMAGE, "command": command}
        else:
            body = {"process": {"command": [PY, "-c", code(name, str(ECHO)), fleet.marker]}}
        registry[name] = {**body, "secrets": SECRETS_REF}
    if docker_runtime:
        missing = f"/nonexistent-{uuid.uuid4().hex}/data:/data"
        registry["failstart"] = {
            "image": SERVERS_IMAGE, "volumes": [missing], "secrets": SECRETS_REF
        }  # fmt: skip
    return yaml.safe_dump({"version": "2", "registry": registry})


def prepare(fleet: Fleet, *, docker_runtime: bool) -> list[str]:
    fleet.write_catalog(catalog(fleet, docker_runtime=docker_runtime))
    names = ["holder", "blurt", "crash"] + (["failstart"] if docker_runtime else [])
    fleet.set_registry(dict.fromkeys(names, True))
    fleet.write_secrets({"api.token": SECRET})
    return names


def cli(fleet: Fleet, *args: str) -> Result:
    """A read-only ``mcp-fleet`` command, in-process (the same code as the command line)."""
    env = {"MCP_FLEET_NAME": fleet.name, "COLUMNS": "300"}
    return CliRunner().invoke(app, [*args, "--dir", str(fleet.home)], env=env)


def readable_places(fleet: Fleet, servers: list[str]) -> dict[str, str]:
    """Everything a user or another local user can read about the fleet, by name."""
    places = {
        f"file {p.relative_to(fleet.home)}": p.read_text(errors="replace")
        for p in sorted((fleet.home / ".state").rglob("*"))
        if p.is_file() and p.suffix != ".lock"
    }
    places["controller log"] = fleet.log.read_text(errors="replace")
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    places["ps -eo args"] = ps.stdout
    for args in (["status"], ["status", "--json"], ["secret", "ls"], ["secret", "ls", "--json"]):
        result = cli(fleet, *args)
        places[" ".join(args)] = result.output
    for server in servers:
        result = cli(fleet, "logs", server, "--tail", "50")
        places[f"logs {server}"] = result.output + str(result.exception or "")
    return places


def assert_nowhere(places: dict[str, str]) -> None:
    """Neither the value nor any 16 characters of it in any place."""
    pieces = {SECRET[i : i + 16] for i in range(len(SECRET) - 15)}
    for where, text in places.items():
        leaked = [p for p in pieces if p in text]
        assert not leaked, f"the secret value is in {where}: {text[:2000]}"


def blurt_and_crash_failed(doc: dict[str, Any]) -> bool:
    st = servers_of(doc)
    return (
        st.get("holder", {}).get("state") == "Ready"
        and "not JSON-RPC" in st.get("blurt", {}).get("message", "")
        and any("failed with token" in line for line in st.get("crash", {}).get("stderr_tail", []))
    )


def test_secrets_stay_out_of_everything_on_the_process_runtime(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path / "fleet", prefix="leak-process")
    servers = prepare(fleet, docker_runtime=False)
    controllers: list[subprocess.Popen[bytes]] = []
    with cleanup(fleet, controllers):
        ctl = fleet.start_controller(probe_timeout=10)
        controllers.append(ctl)
        doc = fleet.wait_status(blurt_and_crash_failed)
        holder_pid = int(servers_of(doc)["holder"]["instance"].split(":")[1])
        environ = Path(f"/proc/{holder_pid}/environ").read_bytes().split(b"\0")
        assert f"TOKEN={SECRET}".encode() in environ, "the secret did not reach the server"
        places = readable_places(fleet, servers)
        assert stop(ctl) == 0
    places["controller log"] = fleet.log.read_text(errors="replace")
    assert '"event":"started"' in places["controller log"]
    assert "token is ***" in places["logs holder"], places["logs holder"]
    assert "***" in servers_of(doc)["blurt"]["message"]
    assert_nowhere(places)


@pytest.mark.docker
def test_secrets_stay_out_of_everything_on_docker(
    tmp_path: Path, docker_client: docker.DockerClient, testbed_images: tuple[str, ...]
) -> None:
    fleet = Fleet(tmp_path / "fleet", prefix="leak-docker")
    servers = prepare(fleet, docker_runtime=True)
    try:
        once = subprocess.run(
            [PY, "-m", "mcp_fleet.cli.main", "-vv", "--log-format", "json", "controller",
             "--runtime", "docker", "--once", "--json", "--probe-timeout", "10",
             "--dir", str(fleet.home)],
            capture_output=True, text=True, timeout=90, env=fleet.env,
        )  # fmt: skip
        fleet.log.write_text(once.stderr)
        doc = json.loads(once.stdout)
        st = servers_of(doc)
        assert st["holder"]["state"] == "Ready", once.stdout
        assert "bind source path does not exist" in st["failstart"]["message"], st["failstart"]
        assert "not JSON-RPC" in st["blurt"]["message"], st["blurt"]
        assert any("failed with token ***" in line for line in st["crash"]["stderr_tail"]), st

        holder = docker_client.api.inspect_container(st["holder"]["instance"])
        assert f"TOKEN={SECRET}" in holder["Config"]["Env"], "the secret did not reach it"
        raw_log = docker_client.api.logs(holder["Id"], stdout=False, stderr=True).decode()
        assert SECRET in raw_log, "the server did not echo its secret: the test proves nothing"

        places = readable_places(fleet, servers)
        places["--once output"] = once.stdout
        for server, containers in containers_by_server(docker_client, fleet.name).items():
            for c in containers:
                info = docker_client.api.inspect_container(c.id)
                info["Config"]["Env"] = []
                places[f"docker inspect {server} {c.id[:12]}"] = json.dumps(info)
        assert "token is ***" in places["logs holder"], places["logs holder"]
        assert_nowhere(places)
    finally:
        remove_fleet_containers(docker_client, fleet.name)


@pytest.mark.docker
def test_a_refused_start_never_quotes_a_secret_back(
    docker_client: docker.DockerClient, testbed_images: tuple[str, ...]
) -> None:
    """The daemon quotes a refused variable, escaped (``"TOKEN=ab\\x00cd"``): masked too.

    The resolver no longer hands such a secret to a runtime (the server fails
    with a reason naming the secret), so the spec is built directly: this is
    the runtime's own last line of defence.
    """
    fleet = f"leak-start-{uuid.uuid4().hex[:8]}"
    value = f"{SECRET[:20]}\x00{SECRET[20:]}"
    entry = CatalogEntry(name="nul", source=Path("catalog.yaml"), image=SERVERS_IMAGE)
    spec = ServerSpec(name="nul", enabled=True, entry=entry, secret_env=frozen_map({"T": value}))
    runtime = DockerRuntime(fleet=fleet)

    async def start() -> str:
        try:
            await runtime.start(spec)
        except RuntimeFailure as exc:
            return str(exc)
        finally:
            await runtime.aclose()
        raise AssertionError("a NUL in the environment was accepted")

    try:
        message = asyncio.run(start())
    finally:
        remove_fleet_containers(docker_client, fleet)
    assert "null" in message or "invalid" in message, message
    for piece in (SECRET[:20], SECRET[20:]):
        assert piece not in message, f"the refused start quotes the secret: {message}"
