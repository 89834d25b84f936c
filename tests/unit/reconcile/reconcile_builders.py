"""Small builders of desired states and instances for the reconciler's tests."""

from __future__ import annotations

from pathlib import Path

from mcp_fleet.errors import Diagnostic
from mcp_fleet.model import (
    CatalogEntry,
    DesiredState,
    FleetFiles,
    ProcessSpec,
    RemoteSpec,
    RuntimeKind,
    ServerSpec,
    ServerType,
    frozen_map,
)
from mcp_fleet.runtimes.base import Instance

FLEET = "fleet-test"
HOME = Path("/nonexistent/fleet")
FILES = FleetFiles(
    home=HOME,
    catalogs=(HOME / "catalogs" / "main.yaml",),
    registry=HOME / "registry.yaml",
    config=HOME / "config.yaml",
    tools=HOME / "tools.yaml",
    secrets=HOME / "secrets.env",
)


def spec(
    name: str,
    *,
    enabled: bool = True,
    version: str = "1",
    image: str | None = None,
    process: bool = True,
    remote: str | None = None,
    secrets: dict[str, str] | None = None,
    problems: tuple[Diagnostic, ...] = (),
    missing: bool = False,
) -> ServerSpec:
    if missing:
        return ServerSpec(name=name, enabled=enabled, entry=None, problems=problems)
    entry = CatalogEntry(
        name=name,
        source=FILES.catalogs[0],
        type=ServerType.REMOTE if remote else ServerType.SERVER,
        image=image,
        remote=RemoteSpec(url=remote) if remote else None,
        process=ProcessSpec(command=("python", "-m", name, "--v", version)) if process else None,
    )
    return ServerSpec(
        name=name,
        enabled=enabled,
        entry=entry,
        env=frozen_map({"VERSION": version}),
        secret_env=frozen_map(secrets or {}),
        problems=problems,
    )


def desired(*specs: ServerSpec, fleet: str = FLEET) -> DesiredState:
    return DesiredState(
        fleet=fleet,
        files=FILES,
        catalog=frozen_map({s.name: s.entry for s in specs if s.entry is not None}),
        servers=frozen_map({s.name: s for s in specs}),
    )


def instance(
    server: str,
    iid: str,
    *,
    config_hash: str = "",
    fleet: str = FLEET,
    running: bool = True,
    runtime: RuntimeKind = RuntimeKind.PROCESS,
    started_at: float = 100.0,
    exit_code: int | None = None,
) -> Instance:
    return Instance(
        server=server,
        instance_id=iid,
        runtime=runtime,
        fleet=fleet,
        config_hash=config_hash,
        running=running,
        started_at=started_at,
        exit_code=exit_code,
    )
