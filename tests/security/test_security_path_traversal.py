"""Names and volumes that would reach outside their place are refused, and nothing starts.

A server name becomes a container name, a label, a log file name
(``.state/logs/<name>.log``) and a pid file name; a catalog volume becomes
a bind mount. So a name such as ``../x`` or ``a/b`` and a volume such as
``../../etc:/x`` must be refused with a clear reason before anything runs.
The catalog below would run every one of them if it were accepted (each has
a ``process:`` command, or an image); a real controller pass
(``mcp-fleet controller --once --runtime docker``) must mark each Failed
with a message naming the bad name or volume, start no process and no
container for them, write no file outside the fleet's ``.state``, while a
good server beside them runs. The process runtime mounts nothing, yet the
same volumes on ``process:`` entries are refused the same way (a real
``controller --once`` with the default runtime; no Docker needed): an entry
never starts on one runtime with what the other refuses. ``server enable``
and ``logs`` refuse such names at the command line too (exit 2), without
touching any file.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from faults_support import ECHO, PY, fleet_containers, kill_all_with
from mcp_fleet.cli.main import app
from testbed_images import SERVERS_IMAGE
from typer.testing import CliRunner, Result

pytestmark = [pytest.mark.timeout(90)]

BAD_NAMES = ("../x", "../../../x", "a/b", "..", "x/../../y", "/abs", "-dash", "dot.", "a" * 64)
BAD_VOLUMES = {
    "up-relative": "../../etc:/x",
    "up-absolute": "/etc/../root:/x",
    "up-target": "data:/../../x",
    "home": "~/.ssh:/keys",
    "relative-target": "/tmp:relative",
    "template": "{{nobody.path}}:/x",
}


def files_under(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def cli(home: Path, fleet: str, *args: str, name: str | None = None) -> Result:
    """``mcp-fleet ARGS --dir HOME [-- NAME]`` in-process (``--`` so ``-dash`` is a name)."""
    env = {"MCP_FLEET_NAME": fleet, "COLUMNS": "300"}
    tail = [] if name is None else ["--", name]
    return CliRunner().invoke(app, [*args, "--dir", str(home), *tail], env=env)


@pytest.mark.docker
def test_bad_names_and_volumes_fail_alone_and_start_nothing(
    tmp_path: Path, docker_client: docker.DockerClient, testbed_images: tuple[str, ...]
) -> None:
    fleet = f"traversal-{uuid.uuid4().hex[:10]}"
    marker = f"mcpf-{fleet}"
    home = tmp_path / "fleet"
    (home / "catalogs").mkdir(parents=True)
    registry: dict[str, Any] = {
        name: {"process": {"command": [PY, str(ECHO), marker]}} for name in BAD_NAMES
    }
    for name, volume in BAD_VOLUMES.items():
        registry[name] = {"image": SERVERS_IMAGE, "volumes": [volume]}
    registry["good"] = {"process": {"command": [PY, str(ECHO), marker]}}
    (home / "catalogs" / "test.yaml").write_text(
        yaml.safe_dump({"version": "2", "registry": registry})
    )
    enabled: dict[str, Any] = {"registry": {name: {} for name in registry}}
    (home / "registry.yaml").write_text(yaml.safe_dump(enabled))
    outside = files_under(tmp_path)

    try:
        once = cli(home, fleet, "controller", "--once", "--json", "--runtime", "docker")
    finally:
        kill_all_with(marker)
    assert once.exit_code == 1, once.output
    servers = {s["name"]: s for s in json.loads(once.stdout)["servers"]}
    assert servers["good"]["state"] == "Ready"
    for name in BAD_NAMES:
        st = servers[name]
        assert (st["state"], st["reason"]) == ("Failed", "InvalidSpec"), st
        assert f"invalid server name {name!r}" in st["message"], st
        assert st["instance"] is None
    for name, volume in BAD_VOLUMES.items():
        st = servers[name]
        assert (st["state"], st["reason"]) == ("Failed", "InvalidSpec"), st
        assert "volumes" in st["message"] and volume.split(":")[0] in st["message"], st
    assert fleet_containers(docker_client, fleet) == []

    state = home / ".state"
    created = set(files_under(tmp_path)) - set(outside)
    strays = [p for p in created if not (tmp_path / p).resolve().is_relative_to(state)]
    assert strays == [], f"files written outside .state: {strays}"
    assert {p.name for p in (state / "logs").iterdir()} == {"good.log"}, "a bad server ran"


def started_marker(tmp_path: Path, name: str) -> list[str]:
    """A ``process:`` command that leaves ``ran-<name>`` in ``tmp_path``, then serves echo."""
    ran = str(tmp_path / f"ran-{name}")
    code = (
        f"import pathlib, runpy, sys; pathlib.Path({ran!r}).touch(); "
        f"sys.argv = [{str(ECHO)!r}]; runpy.run_path({str(ECHO)!r}, run_name='__main__')"
    )
    return [PY, "-c", code]


def test_bad_volumes_of_process_entries_fail_alone_and_start_nothing(tmp_path: Path) -> None:
    fleet = f"traversal-{uuid.uuid4().hex[:10]}"
    home = tmp_path / "fleet"
    (home / "catalogs").mkdir(parents=True)
    registry: dict[str, Any] = {
        name: {"process": {"command": started_marker(tmp_path, name)}, "volumes": [volume]}
        for name, volume in BAD_VOLUMES.items()
    }
    registry["good"] = {
        "process": {"command": started_marker(tmp_path, "good")},
        "volumes": ["/tmp:/data:ro"],  # a volume that stays in place is no reason to refuse
    }
    (home / "catalogs" / "test.yaml").write_text(
        yaml.safe_dump({"version": "2", "registry": registry})
    )
    enabled: dict[str, Any] = {"registry": {name: {} for name in registry}}
    (home / "registry.yaml").write_text(yaml.safe_dump(enabled))
    outside = files_under(tmp_path)

    once = cli(home, fleet, "controller", "--once", "--json")
    assert once.exit_code == 1, once.output
    servers = {s["name"]: s for s in json.loads(once.stdout)["servers"]}
    assert servers["good"]["state"] == "Ready", servers["good"]
    for name, volume in BAD_VOLUMES.items():
        st = servers[name]
        assert (st["state"], st["reason"]) == ("Failed", "InvalidSpec"), st
        assert "volumes" in st["message"] and volume.split(":")[0] in st["message"], st
        assert st["instance"] is None

    assert sorted(p.name for p in tmp_path.glob("ran-*")) == ["ran-good"], "a bad server ran"
    state = home / ".state"
    created = set(files_under(tmp_path)) - set(outside) - {"ran-good"}
    strays = [p for p in created if not (tmp_path / p).resolve().is_relative_to(state)]
    assert strays == [], f"files written outside .state: {strays}"
    assert {p.name for p in (state / "logs").iterdir()} == {"good.log"}


@pytest.mark.docker
def test_the_command_line_refuses_such_names_too(tmp_path: Path) -> None:
    home = tmp_path / "fleet"
    (home / "catalogs").mkdir(parents=True)
    catalog = {name: {"image": "example/x"} for name in (*BAD_NAMES, "ok")}
    (home / "catalogs" / "test.yaml").write_text(
        yaml.safe_dump({"version": "2", "registry": catalog})
    )
    (home / "registry.yaml").write_text("registry:\n  ok: {}\n")
    (home / ".state" / "logs").mkdir(parents=True)
    (tmp_path / "x.log").write_text("outside the fleet")
    before = files_under(tmp_path)
    for name in BAD_NAMES:
        enabled = cli(home, "cli-traversal", "server", "enable", name=name)
        assert enabled.exit_code == 2, enabled.output
        assert f"invalid server name {name!r}" in enabled.stderr
        logs = cli(home, "cli-traversal", "logs", name=name)
        assert logs.exit_code == 2, logs.output
        assert "outside the fleet" not in logs.output
    assert files_under(tmp_path) == before, "a refused command changed a file"
