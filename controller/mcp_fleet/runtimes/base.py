"""The one small interface every runtime implements, and what it observes.

The controller's loop is: ``observe()`` a snapshot, ``plan()`` purely, apply
each action through ``start``/``stop``. A runtime decides nothing: it reports
what runs (only what carries our fleet's ownership marks) and does what it is
told. ``endpoint`` says how the router reaches a running instance, ``probe``
performs the readiness check (a real MCP ``initialize``), ``logs`` returns
what the server wrote to stderr, and ``events`` wakes the loop when something
exits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mcp_fleet.endpoints import Endpoint
from mcp_fleet.model import RuntimeKind, ServerSpec


@dataclass(frozen=True, slots=True)
class Instance:
    """One running (or exited) instance of a server, as a runtime observed it.

    ``instance_id`` is the container id, or ``pid:start-time`` for a process:
    unique for the life of the machine, so a pid reused by the kernel is never
    taken for our child.
    """

    server: str
    instance_id: str
    runtime: RuntimeKind
    fleet: str
    config_hash: str
    running: bool
    started_at: float
    exit_code: int | None = None
    #: Human name (container name, command) for status output.
    display: str = ""


@dataclass(frozen=True, slots=True)
class ObservedState:
    """A snapshot of every instance the fleet owns; no API calls while planning."""

    instances: tuple[Instance, ...] = ()
    #: Runtimes that could not be observed this pass (e.g. dockerd down), with why.
    unavailable: tuple[tuple[RuntimeKind, str], ...] = ()

    def by_server(self) -> dict[str, list[Instance]]:
        out: dict[str, list[Instance]] = {}
        for inst in self.instances:
            out.setdefault(inst.server, []).append(inst)
        return out


@dataclass(frozen=True, slots=True)
class RuntimeEvent:
    """Something happened that the loop should look at (an exit, a daemon restart)."""

    server: str | None
    kind: str  # "exit", "start", "die", "daemon"
    detail: str = ""


@runtime_checkable
class Runtime(Protocol):
    """Where servers run. Implementations: process, docker, kubernetes, fake (tests)."""

    kind: RuntimeKind

    def unsupported_reason(self, spec: ServerSpec) -> str | None:
        """Why this runtime cannot run ``spec`` (None when it can)."""

    async def observe(self) -> ObservedState:
        """Every instance carrying this fleet's marks, running or exited."""

    async def start(self, spec: ServerSpec) -> Instance:
        """Start a new instance of ``spec``; raises ``RuntimeFailure`` with the reason."""

    async def stop(self, instance: Instance) -> None:
        """Stop and remove ``instance``; idempotent."""

    async def endpoint(self, instance: Instance) -> Endpoint:
        """How to reach a running instance."""

    async def probe(self, instance: Instance, *, timeout: float) -> None:
        """Readiness: an MCP ``initialize`` handshake; raises on failure."""

    async def logs(self, instance: Instance, *, tail: int = 100) -> list[str]:
        """The last ``tail`` lines the instance wrote to stderr (or its log)."""

    def events(self) -> AsyncIterator[RuntimeEvent]:
        """Events that should wake the reconcile loop (exits, daemon restarts)."""

    async def aclose(self) -> None:
        """Release clients and watchers (does not stop what runs)."""
