"""Fixtures every test folder shares: the Docker daemon, the test-bed images, a fleet folder.

Docker tests carry ``@pytest.mark.docker``. Such a test is skipped, with the
reason, when no Docker daemon answers, so the unit suite runs anywhere. In CI
(``CI=true``) the same situation fails the test instead: CI always has a
daemon and the images, and a suite that silently skips its Docker tests would
pass without testing anything. A daemon without the images is a test bed half
set up, which fails everywhere with the command that fixes it.

Image names come from tests/testbed_images.py; folders below keep their own
conftest for their own fixtures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import docker
import docker.errors
import pytest
from mcp_fleet import conventions
from testbed_images import ALL_IMAGES

SETUP_HINT = "run tests/testbed.sh"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _docker_unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: Docker tests must run in CI, not skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client for the local Docker daemon; skips (fails under CI) when none answers."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as exc:
        _docker_unavailable(f"no Docker daemon answers ({exc}); {SETUP_HINT}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def testbed_images(docker_client: docker.DockerClient) -> tuple[str, ...]:
    """The test-bed image names, after checking that each one exists."""
    missing = []
    for image in ALL_IMAGES:
        try:
            docker_client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(image)
    if missing:
        pytest.fail(f"test images missing: {', '.join(missing)}; {SETUP_HINT}", pytrace=False)
    return ALL_IMAGES


@pytest.fixture(autouse=True)
def _docker_marker_needs_daemon(request: pytest.FixtureRequest) -> None:
    """Give every ``@pytest.mark.docker`` test the daemon check, fixture or not."""
    if request.node.get_closest_marker("docker") is not None:
        request.getfixturevalue("docker_client")


@pytest.fixture
def fleet_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty fleet folder (with ``catalogs/``) that ``MCP_FLEET_HOME`` points at."""
    home = tmp_path / "fleet"
    (home / conventions.CATALOGS_DIR).mkdir(parents=True)
    monkeypatch.setenv(conventions.ENV_HOME, str(home))
    return home
