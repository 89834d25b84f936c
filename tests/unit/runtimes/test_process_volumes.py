"""The process runtime refuses the volumes the docker runtime refuses, with the same reason.

A local process mounts nothing, but a catalog entry whose volumes would
reach outside their place (``../../etc:/x``) must start nothing on either
runtime (tests/security/test_security_path_traversal.py runs it for real).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp_fleet.model import CatalogEntry, ProcessSpec, ServerSpec
from mcp_fleet.runtimes import docker_spec
from mcp_fleet.runtimes.process import ProcessRuntime

BAD = ["../../etc:/x", "/etc/../root:/x", "data:/../../x", "~/.ssh:/keys", "/tmp:relative",
       "{{nobody.path}}:/x", "/tmp:/x:rwx", "nocolon"]  # fmt: skip
GOOD = ["/tmp:/data", "/tmp:/data:ro", "named-volume:/cache"]


def spec(*volumes: str, image: str | None = None) -> ServerSpec:
    entry = CatalogEntry(
        name="s",
        source=Path("c.yaml"),
        image=image,
        process=ProcessSpec(command=("prog",)),
        volumes=tuple(volumes),
    )
    return ServerSpec(name="s", enabled=True, entry=entry)


@pytest.fixture
def runtime(tmp_path: Path) -> ProcessRuntime:
    return ProcessRuntime(fleet="f", state_dir=tmp_path / ".state")


@pytest.mark.parametrize("volume", BAD)
def test_a_volume_docker_refuses_is_refused_with_dockers_reason(
    runtime: ProcessRuntime, volume: str
) -> None:
    why = runtime.unsupported_reason(spec("/tmp:/ok", volume))
    assert why is not None and why.startswith(f"s: volumes: {volume!r}: "), why
    assert why == docker_spec.problem(spec("/tmp:/ok", volume, image="example/x"))


async def test_start_refuses_it_too(runtime: ProcessRuntime) -> None:
    with pytest.raises(docker_spec.RuntimeFailure, match=r"volumes: '\.\./\.\./etc:/x'"):
        await runtime.start(spec("../../etc:/x"))
    assert not (runtime.state_dir / "processes").exists()


def test_volumes_that_stay_in_place_are_no_reason(runtime: ProcessRuntime) -> None:
    assert runtime.unsupported_reason(spec(*GOOD)) is None
    assert runtime.unsupported_reason(spec()) is None
