"""``mcp-fleet router --dir``: which containers of a fleet the router attaches to."""

from __future__ import annotations

from pathlib import Path

from mcp_fleet.endpoints import DockerAttachEndpoint
from mcp_fleet.errors import Diagnostic
from mcp_fleet.model import (
    CatalogEntry,
    DesiredState,
    FleetFiles,
    RuntimeKind,
    ServerSpec,
    frozen_map,
)
from mcp_fleet.runtimes.base import Instance, ObservedState
from mcp_fleet.sources.docker_fleet import endpoints_for

HOME = Path("/nonexistent")
FILES = FleetFiles(HOME, (), HOME / "r", HOME / "c", HOME / "t", HOME / "s")


def spec(
    name: str, *, enabled: bool = True, image: str = "img:1", broken: bool = False
) -> ServerSpec:
    entry = CatalogEntry(name=name, source=HOME / "catalog.yaml", image=image)
    problems = (Diagnostic("missing secret"),) if broken else ()
    return ServerSpec(name=name, enabled=enabled, entry=entry, problems=problems)


def container(
    s: ServerSpec, cid: str, *, running: bool = True, started: float = 1.0, stale: bool = False
) -> Instance:
    return Instance(
        server=s.name, instance_id=cid, runtime=RuntimeKind.DOCKER, fleet="f",
        config_hash="old" if stale else s.config_hash(), running=running, started_at=started,
    )  # fmt: skip


def test_only_running_containers_of_the_current_spec_of_enabled_servers_are_routed() -> None:
    a, b, c, d = spec("a"), spec("b", enabled=False), spec("c", broken=True), spec("d")
    desired = DesiredState("f", FILES, frozen_map(), frozen_map({s.name: s for s in (a, b, c, d)}))
    observed = ObservedState(
        (
            container(a, "a-old", started=1.0),
            container(a, "a-new", started=2.0),
            container(a, "a-stale", started=3.0, stale=True),
            container(b, "b1"),
            container(c, "c1"),
            container(d, "d1", running=False),
        )
    )
    entries = endpoints_for(desired, observed)
    assert list(entries) == ["a"]
    endpoint = entries["a"].endpoint
    assert isinstance(endpoint, DockerAttachEndpoint) and endpoint.container_id == "a-new"
    assert entries["a"].spec is a
