"""Which runtime runs which server, and building the runtimes a controller needs.

One fleet may mix kinds of servers, so the runtime is chosen per server:

- ``type: remote``: no runtime at all; the server is only routed to.
- ``process`` and no ``image``: a local process, whatever ``--runtime`` says
  (the process runtime is always there: it needs nothing installed).
- ``image`` and no ``process``: the container runtime chosen by
  ``--runtime`` (docker or kubernetes); under ``--runtime process`` the
  server cannot run and is marked Failed with reason ``RuntimeUnsupported``.
- both: the runtime chosen by ``--runtime`` (default ``process``).

``place`` is a pure function of the spec and the choice, so the planner can
call it; ``build_runtimes`` is the one place that constructs runtimes (the
Docker SDK is imported only when the docker runtime is asked for).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp_fleet.model import RuntimeKind, ServerSpec, ServerType
from mcp_fleet.runtimes.base import Runtime
from mcp_fleet.status import REASON_INVALID_SPEC, REASON_RUNTIME_UNSUPPORTED

CONTAINER_RUNTIMES = frozenset({RuntimeKind.DOCKER, RuntimeKind.KUBERNETES})


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a server runs, or why it cannot (``kind`` None, ``reason``/``message`` set)."""

    kind: RuntimeKind | None
    reason: str | None = None
    message: str | None = None


def place(
    spec: ServerSpec,
    *,
    preferred: RuntimeKind,
    available: frozenset[RuntimeKind],
) -> Placement:
    """Choose the runtime for ``spec`` given ``--runtime`` and the runtimes built."""
    entry = spec.entry
    if entry is None:
        return Placement(None, REASON_INVALID_SPEC, "no catalog entry")
    if entry.type is ServerType.REMOTE:
        if entry.remote is None:
            return Placement(None, REASON_INVALID_SPEC, "type: remote needs a remote.url")
        return Placement(RuntimeKind.REMOTE)
    has_process = entry.process is not None and bool(entry.process.command)
    has_image = bool(entry.image)
    if has_process and (not has_image or preferred not in CONTAINER_RUNTIMES):
        return _available(RuntimeKind.PROCESS, available)
    if has_image:
        if preferred in CONTAINER_RUNTIMES:
            return _available(preferred, available)
        return Placement(
            None,
            REASON_RUNTIME_UNSUPPORTED,
            f"image {entry.image} needs a container runtime and the entry has no `process:`"
            " to run locally; run the controller with --runtime docker",
        )
    return Placement(
        None, REASON_INVALID_SPEC, "the catalog entry has neither `image` nor `process.command`"
    )


def _available(kind: RuntimeKind, available: frozenset[RuntimeKind]) -> Placement:
    if kind in available:
        return Placement(kind)
    return Placement(
        None, REASON_RUNTIME_UNSUPPORTED, f"the {kind.value} runtime is not enabled here"
    )


def build_runtimes(
    preferred: RuntimeKind,
    *,
    fleet: str,
    state_dir: Path,
    options: dict[str, Any] | None = None,
) -> dict[RuntimeKind, Runtime]:
    """The runtimes a controller runs with: always ``process``, plus ``preferred``.

    ``options`` are passed to the docker runtime's constructor (e.g. a
    different daemon URL); the module is imported only when needed.
    """
    from mcp_fleet.runtimes.process import ProcessRuntime

    runtimes: dict[RuntimeKind, Runtime] = {
        RuntimeKind.PROCESS: ProcessRuntime(fleet=fleet, state_dir=state_dir)
    }
    if preferred is RuntimeKind.DOCKER:
        module = importlib.import_module("mcp_fleet.runtimes.docker")
        runtimes[RuntimeKind.DOCKER] = module.DockerRuntime(fleet=fleet, **(options or {}))
    elif preferred is not RuntimeKind.PROCESS:
        raise ValueError(f"runtime {preferred.value} is not available to the local controller")
    return runtimes
