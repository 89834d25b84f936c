"""What wakes the reconcile loop besides its timer: runtime events and edits of the fleet files.

Both only call ``wake`` (the loop is level-triggered: a missed event costs
latency, never correctness)::

    task = asyncio.create_task(follow_events(runtime, controller.wake))
    task = asyncio.create_task(watch_files(files, controller.wake, stop, debounce_ms=200))
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.logsetup import log_event
from mcp_fleet.model import FleetFiles
from mcp_fleet.runtimes.base import Runtime

log = logging.getLogger("mcp_fleet.controller")


async def follow_events(runtime: Runtime, wake: Callable[[], None]) -> None:
    """Call ``wake`` on every event of ``runtime`` (a child exits, a container dies), until
    its event stream ends or fails."""
    try:
        async for event in runtime.events():
            log_event(
                log,
                logging.DEBUG,
                "runtime event",
                server=event.server,
                kind=event.kind,
                detail=event.detail,
            )
            wake()
    except (RuntimeFailure, OSError) as exc:
        log_event(log, logging.WARNING, "runtime events ended", error=str(exc))


async def watch_files(
    files: FleetFiles, wake: Callable[[], None], stop: asyncio.Event, *, debounce_ms: int
) -> None:
    """Call ``wake`` when a fleet file changes (debounced), until ``stop`` is set; changes
    under the state directory do not count."""
    import watchfiles

    roots, wanted = watch_targets(files)
    if not roots:
        return
    state_dir = str(files.state_dir.resolve())

    def relevant(_change: Any, path: str) -> bool:
        if path.startswith(state_dir):
            return False
        return any(path == w or path.startswith(w + os.sep) for w in wanted)

    async for changes in watchfiles.awatch(
        *roots, watch_filter=relevant, debounce=debounce_ms, step=50,
        stop_event=stop, rust_timeout=500,
    ):  # fmt: skip
        log_event(
            log,
            logging.INFO,
            "fleet files changed",
            files=sorted({Path(p).name for _, p in changes}),
        )
        wake()


def watch_targets(files: FleetFiles) -> tuple[list[str], list[str]]:
    """Directories to watch and the paths under them that matter."""
    home = files.home.resolve()
    wanted = {str(home)}
    roots = {str(home)} if home.is_dir() else set()
    for path in (*files.catalogs, files.registry, files.config, files.tools, files.secrets):
        resolved = path.resolve()
        wanted.add(str(resolved))
        if not resolved.is_relative_to(home) and resolved.parent.is_dir():
            roots.add(str(resolved.parent))
    return sorted(roots), sorted(wanted)
