"""``router --dir`` reads the fleet files off the event loop, and only when they changed.

A slow ``load_fleet`` (a big catalog, a slow disk) used to run on the
router's event loop every 2 s, stalling every client. Here the load blocks
in its thread until the test's event loop, still running, releases it: on
the loop it would deadlock (and the test time out).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from mcp_fleet.config import resolve_files
from mcp_fleet.sources import docker_fleet as follow
from mcp_fleet.sources.docker_fleet import FleetReader

pytestmark = pytest.mark.timeout(30)


def fleet(tmp_path: Path) -> Path:
    home = tmp_path / "fleet"
    (home / "catalogs").mkdir(parents=True)
    (home / "catalogs" / "a.yaml").write_text('version: "2"\nregistry:\n  one:\n    image: img:1\n')
    (home / "registry.yaml").write_text("registry:\n  one: {}\n")
    return home


async def test_a_slow_load_runs_off_the_loop_and_only_when_the_files_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = fleet(tmp_path)
    files = resolve_files(home)
    release = threading.Event()
    began = asyncio.Event()
    loop = asyncio.get_running_loop()
    loads: list[int] = []
    real = follow.load_fleet

    def slow_load(files: Any) -> Any:
        loads.append(1)
        loop.call_soon_threadsafe(began.set)
        assert release.wait(20), "the event loop never ran while the fleet loaded"
        return real(files)

    monkeypatch.setattr(follow, "load_fleet", slow_load)
    reader = FleetReader(files)
    reading = asyncio.create_task(reader.read())
    await began.wait()  # the load has begun (in its thread)
    assert not reading.done()
    release.set()  # only a loop that is not blocked gets here
    desired = await reading
    assert desired is not None and "one" in desired.servers

    assert await reader.read() is desired and len(loads) == 1  # unchanged: not read again

    (home / "registry.yaml").write_text("registry:\n  one: {}\n  two: {}\n")
    again = await reader.read()
    assert len(loads) == 2 and again is not None and "two" in again.servers


async def test_a_broken_edit_keeps_the_last_good_state(tmp_path: Path) -> None:
    home = fleet(tmp_path)
    reader = FleetReader(resolve_files(home))
    good = await reader.read()
    assert good is not None
    (home / "registry.yaml").write_text("registry: [unclosed\n")
    assert await reader.read() is good
