"""What a server's container looks like: hardening, labels, names, network rule, volumes.

Pure checks of ``docker_spec`` (no daemon): the integration tests confirm
the daemon applies the same settings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp_fleet import conventions
from mcp_fleet.model import CatalogEntry, RuntimeKind, ServerSpec, ServerType, frozen_map
from mcp_fleet.runtimes import docker_spec
from mcp_fleet.runtimes.docker_spec import InvalidContainerSpec

SECRET = "hunter2-very-secret"
DOCKER_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


def make_spec(name: str = "time", **entry: Any) -> ServerSpec:
    entry.setdefault("image", "mcp-fleet-test/time:latest")
    return ServerSpec(
        name=name,
        enabled=True,
        entry=CatalogEntry(name=name, source=Path("catalog.yaml"), **entry),
        env=frozen_map({"TZ": "UTC"}),
        secret_env=frozen_map({"API_TOKEN": SECRET}),
    )


def test_hardened_by_default() -> None:
    plan = docker_spec.build(make_spec(), fleet="f1")
    host = plan.host
    assert host["security_opt"] == ["no-new-privileges"]
    assert host["cap_drop"] == ["ALL"]
    assert host["read_only"] is True
    assert host["init"] is True
    assert host["network_mode"] == "none"
    assert host["nano_cpus"] == int(conventions.DEFAULT_CPUS * 1e9)
    assert host["mem_limit"] == docker_spec.parse_memory(conventions.DEFAULT_MEMORY)
    assert host["memswap_limit"] == host["mem_limit"]
    assert host["pids_limit"] == docker_spec.DEFAULT_PIDS_LIMIT
    assert "/tmp" in host["tmpfs"]
    assert host["log_config"]["Config"]["max-size"]


def test_stdio_container_is_detached_with_stdin_open_and_no_tty() -> None:
    plan = docker_spec.build(make_spec(), fleet="f1")
    kwargs = plan.create_kwargs({"hc": 1})
    # detach=True is what keeps the SDK from setting StdinOnce.
    assert kwargs["detach"] is True
    assert kwargs["stdin_open"] is True
    assert kwargs["tty"] is False
    assert kwargs["host_config"] == {"hc": 1}


def test_catalog_overrides_limits_user_and_read_only() -> None:
    spec = make_spec(cpus=0.5, memory="256m", user="1000:1000", read_only=False)
    plan = docker_spec.build(spec, fleet="f1")
    assert plan.host["nano_cpus"] == 500_000_000
    assert plan.host["mem_limit"] == 256 * 1024**2
    assert plan.host["read_only"] is False
    assert plan.user == "1000:1000"


def test_labels_name_the_fleet_server_hash_and_runtime() -> None:
    spec = make_spec()
    plan = docker_spec.build(spec, fleet="f1")
    assert plan.labels == {
        conventions.LABEL_FLEET: "f1",
        conventions.LABEL_SERVER: "time",
        conventions.LABEL_CONFIG_HASH: spec.config_hash(),
        conventions.LABEL_RUNTIME: RuntimeKind.DOCKER.value,
    }


def test_secret_only_in_environment_and_hidden_from_repr() -> None:
    spec = make_spec(command=("--verbose",))
    plan = docker_spec.build(spec, fleet="f1")
    kwargs = plan.create_kwargs({})
    assert f"API_TOKEN={SECRET}" in kwargs["environment"]
    assert "TZ=UTC" in kwargs["environment"]
    everything_but_env = {k: v for k, v in kwargs.items() if k != "environment"}
    assert SECRET not in repr(everything_but_env)
    assert SECRET not in repr(plan)
    assert SECRET not in plan.name


def test_command_is_passed_as_arguments_or_left_to_the_image() -> None:
    with_cmd = docker_spec.build(make_spec(command=("--local-timezone", "UTC")), fleet="f")
    assert with_cmd.create_kwargs({})["command"] == ["--local-timezone", "UTC"]
    without = docker_spec.build(make_spec(), fleet="f")
    assert without.create_kwargs({})["command"] is None


def test_name_is_valid_and_changes_with_the_config_hash() -> None:
    a = docker_spec.build(make_spec(), fleet="fleet-1a2b3c4d", hardening=None)
    b = docker_spec.build(make_spec(memory="1g"), fleet="fleet-1a2b3c4d")
    assert a.name.startswith("mcpf-fleet-1a2b3c4d-time-")
    assert DOCKER_NAME_RE.match(a.name)
    assert a.name != b.name


@settings(max_examples=60, deadline=None)
@given(fleet=st.text(min_size=1, max_size=80), server=st.from_regex(conventions.SERVER_NAME_RE))
def test_container_names_are_always_valid_docker_names(fleet: str, server: str) -> None:
    name = docker_spec.container_name(fleet, server, "ab" * 32)
    assert DOCKER_NAME_RE.match(name), name
    assert name.endswith("abababababab")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({}, "none"),
        ({"allow_hosts": ("api.example.com:443",)}, None),
        ({"allow_hosts": ("api.example.com:443",), "disable_network": True}, "none"),
        ({"extra": frozen_map({"network": True})}, None),
        ({"extra": frozen_map({"network": "true"})}, None),
        ({"extra": frozen_map({"network": False})}, "none"),
        ({"extra": frozen_map({"network": "mcp-net"})}, "mcp-net"),
        ({"extra": frozen_map({"network": True}), "disable_network": True}, "none"),
    ],
)
def test_network_only_when_the_catalog_asks(entry: dict[str, Any], expected: str | None) -> None:
    plan = docker_spec.build(make_spec(**entry), fleet="f")
    assert plan.host.get("network_mode") == expected


def test_bad_network_name_is_refused() -> None:
    with pytest.raises(InvalidContainerSpec, match="network"):
        docker_spec.build(make_spec(extra=frozen_map({"network": "bad name!"})), fleet="f")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2g", 2 * 1024**3),
        ("512m", 512 * 1024**2),
        ("256MiB", 256 * 1024**2),
        ("1.5g", 1536 * 1024**2),
        ("104857600", 104857600),
    ],
)
def test_memory_sizes(text: str, expected: int) -> None:
    assert docker_spec.parse_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "2x", "-1g", "1k"])
def test_bad_memory_names_the_server_and_field(text: str) -> None:
    with pytest.raises(InvalidContainerSpec, match=r"^time: memory: "):
        docker_spec.build(make_spec(memory=text), fleet="f")


def test_volumes_bind_and_named() -> None:
    spec = make_spec(volumes=("/srv/data:/data:ro", "cache-vol:/cache"))
    mounts = docker_spec.build(spec, fleet="f").host["mounts"]
    assert mounts == [
        {"Type": "bind", "Source": "/srv/data", "Target": "/data", "ReadOnly": True},
        {"Type": "volume", "Source": "cache-vol", "Target": "/cache", "ReadOnly": False},
    ]


def test_volume_on_tmp_replaces_the_tmpfs() -> None:
    host = docker_spec.build(make_spec(volumes=("scratch:/tmp",)), fleet="f").host
    assert "tmpfs" not in host


@pytest.mark.parametrize(
    ("volume", "why"),
    [
        ("/srv/../etc:/data", "'..'"),
        ("relative/path:/data", "absolute host path or a volume name"),
        ("~/data:/data", "absolute host path or a volume name"),
        ("/srv:data", "target must be an absolute path"),
        ("/srv:/data/../etc", "target must be an absolute path"),
        ("/srv:/data:rwx", "mode must be ro or rw"),
        ("/srv", "expected source:target"),
        ("{{fs.paths}}:/projects", "unresolved template"),
    ],
)
def test_bad_volumes_are_refused_with_the_reason(volume: str, why: str) -> None:
    spec = make_spec(volumes=(volume,))
    with pytest.raises(InvalidContainerSpec, match=re.escape(why)):
        docker_spec.build(spec, fleet="f")
    reason = docker_spec.problem(spec)
    assert reason is not None and why in reason and reason.startswith("time: volumes: ")


def test_two_volumes_on_one_target_are_refused() -> None:
    with pytest.raises(InvalidContainerSpec, match="share one target"):
        docker_spec.build(make_spec(volumes=("a:/data", "b:/data")), fleet="f")


def test_problem_explains_what_docker_cannot_run() -> None:
    assert docker_spec.problem(make_spec()) is None
    assert "no image" in (docker_spec.problem(make_spec(image=None)) or "")
    assert "remote" in (docker_spec.problem(make_spec(type=ServerType.REMOTE)) or "")
    no_entry = ServerSpec(name="ghost", enabled=True, entry=None)
    assert "no catalog entry" in (docker_spec.problem(no_entry) or "")
    http = make_spec(transport="streamable-http", port=8080)
    assert "stdio" in (docker_spec.problem(http) or "")
