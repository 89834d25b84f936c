"""An in-memory runtime for planner and loop tests: the Runtime protocol, no processes.

It behaves like a real runtime where the planner can tell the difference
(instances with ids, labels, config hashes, exits with codes, other fleets'
instances that must stay untouched) and lets a test script what the real
world would do: ``crash`` an instance, make a server's probe fail, make a
start fail, or plant instances (leftovers, another fleet's) before a pass.
Every call is recorded in ``calls`` so tests can assert what was done.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import replace

from mcp_fleet.endpoints import Endpoint, HttpEndpoint
from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.model import RuntimeKind, ServerSpec
from mcp_fleet.probe import ProbeError
from mcp_fleet.runtimes.base import Instance, ObservedState, RuntimeEvent


class FakeRuntime:
    """Instances kept in a dict; starts, stops and probes succeed unless told otherwise."""

    def __init__(
        self,
        *,
        fleet: str,
        kind: RuntimeKind = RuntimeKind.PROCESS,
        clock: float = 1000.0,
    ) -> None:
        self.kind = kind
        self.fleet = fleet
        self.instances: dict[str, Instance] = {}
        self.calls: list[tuple[str, str]] = []
        self.failing_probes: dict[str, str] = {}
        self.failing_starts: dict[str, str] = {}
        #: Servers whose instances exit at once with this code (like a broken server).
        self.exits_at_start: dict[str, int] = {}
        self.unsupported: dict[str, str] = {}
        self.unavailable: str | None = None
        self.clock = clock
        self._ids = itertools.count(1)
        self._events: asyncio.Queue[RuntimeEvent] = asyncio.Queue()

    # Scripting helpers for tests.

    def plant(self, instance: Instance) -> None:
        """Put an instance in place as if someone (a previous controller) started it."""
        self.instances[instance.instance_id] = instance

    def crash(self, instance_id: str, exit_code: int = 1) -> None:
        inst = self.instances[instance_id]
        self.instances[instance_id] = replace(inst, running=False, exit_code=exit_code)
        self._events.put_nowait(RuntimeEvent(inst.server, "exit", f"code {exit_code}"))

    def running(self, server: str | None = None) -> list[Instance]:
        return [
            i
            for i in self.instances.values()
            if i.running and (server is None or i.server == server)
        ]

    # The Runtime protocol.

    def unsupported_reason(self, spec: ServerSpec) -> str | None:
        return self.unsupported.get(spec.name)

    async def observe(self) -> ObservedState:
        self.calls.append(("observe", ""))
        if self.unavailable is not None:
            raise RuntimeFailure(self.unavailable)
        return ObservedState(tuple(sorted(self.instances.values(), key=lambda i: i.instance_id)))

    async def start(self, spec: ServerSpec) -> Instance:
        self.calls.append(("start", spec.name))
        if spec.name in self.failing_starts:
            raise RuntimeFailure(self.failing_starts[spec.name])
        self.clock += 1.0
        inst = Instance(
            server=spec.name,
            instance_id=f"{self.kind.value}-{next(self._ids)}",
            runtime=self.kind,
            fleet=self.fleet,
            config_hash=spec.config_hash(),
            running=True,
            started_at=self.clock,
            display=spec.name,
        )
        self.instances[inst.instance_id] = inst
        if spec.name in self.exits_at_start:
            self.crash(inst.instance_id, self.exits_at_start[spec.name])
        return inst

    async def stop(self, instance: Instance) -> None:
        self.calls.append(("stop", instance.instance_id))
        if instance.fleet != self.fleet:
            raise AssertionError(f"stopped an instance of another fleet: {instance}")
        self.instances.pop(instance.instance_id, None)

    async def endpoint(self, instance: Instance) -> Endpoint:
        return HttpEndpoint(
            server=instance.server,
            instance_id=instance.instance_id,
            url=f"http://fake.invalid/{instance.instance_id}",
        )

    async def probe(self, instance: Instance, *, timeout: float) -> None:
        self.calls.append(("probe", instance.instance_id))
        current = self.instances.get(instance.instance_id)
        if current is None or not current.running:
            raise ProbeError("the server closed its output before answering initialize")
        if instance.server in self.failing_probes:
            raise ProbeError(self.failing_probes[instance.server])

    async def logs(self, instance: Instance, *, tail: int = 100) -> list[str]:
        return [f"{instance.server}: log line"][-tail:]

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        while True:
            yield await self._events.get()

    async def aclose(self) -> None:
        return None
