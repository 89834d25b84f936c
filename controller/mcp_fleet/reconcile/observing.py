"""Observing the runtimes for the controller: what runs, what was in flight, what exited.

::

    observer = Observer(runtimes, tracker)
    observed = await observer.observe()    # every runtime's instances
    await observer.note_exits(observed)    # exits and vanishings count as failures
    observer.in_flight                     # what was in flight when it was taken
    observer.runtime_errors                # runtimes that could not be listed, and why

A runtime that cannot be listed (the Docker daemon is down) is reported as
unavailable, logged once per distinct error, and the planner changes
nothing that runs there until it answers again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.logsetup import log_event
from mcp_fleet.model import RuntimeKind, frozen_map
from mcp_fleet.reconcile.memory import InFlight, Tracker
from mcp_fleet.runtimes.base import Instance, ObservedState, Runtime
from mcp_fleet.status import REASON_EXITED

log = logging.getLogger("mcp_fleet.controller")

#: Lines of an exited instance's stderr kept with its failure.
_EXIT_TAIL_LINES = 20


class Observer:
    """Lists ``runtimes`` and reports exits to ``tracker`` (see the module docstring)."""

    def __init__(
        self,
        runtimes: Mapping[RuntimeKind, Runtime],
        tracker: Tracker,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtimes = runtimes
        self.tracker = tracker
        self.clock = clock
        self._runtime_errors: dict[str, str] = {}
        self._in_flight: Mapping[str, InFlight] = frozen_map()

    @property
    def in_flight(self) -> Mapping[str, InFlight]:
        """What was in flight when the last observation was taken (see ``observe``)."""
        return self._in_flight

    @property
    def runtime_errors(self) -> dict[str, str]:
        """Runtimes the last observation could not list, by kind, and why."""
        return dict(self._runtime_errors)

    async def observe(self) -> ObservedState:
        """Every runtime's instances, and (noted first) what was in flight meanwhile.

        A flight may land while the runtimes are listed, after or before they
        saw what it did; until the next observation its server counts as in
        flight (``Tracker.memory``), so no plan or exit count is made from a
        listing older than what the flight did (a second start, an instance
        taken for vanished).
        """
        in_flight = frozen_map(self.tracker.in_flight)
        instances: list[Instance] = []
        unavailable = []
        errors: dict[str, str] = {}
        for kind, runtime in sorted(self.runtimes.items(), key=lambda kv: kv[0].value):
            try:
                observed = await runtime.observe()
            except (RuntimeFailure, OSError) as exc:
                unavailable.append((kind, str(exc)))
                errors[kind.value] = str(exc)
                continue
            instances.extend(observed.instances)
            unavailable.extend(observed.unavailable)
        for kind_value, error in errors.items():
            if self._runtime_errors.get(kind_value) != error:
                log_event(
                    log, logging.ERROR, "runtime unavailable", runtime=kind_value, error=error
                )
        self._runtime_errors = errors
        self._in_flight = in_flight
        return ObservedState(tuple(instances), tuple(unavailable))

    async def note_exits(self, observed: ObservedState) -> None:
        """Count instances of ours that exited or vanished as failures (backoff)."""
        now = self.clock()
        busy = self._in_flight.keys()
        for inst in self.tracker.unexpected_exits(observed, busy=busy):
            tail: tuple[str, ...] = ()
            runtime = self.runtimes.get(inst.runtime)
            if runtime is not None:
                with contextlib.suppress(RuntimeFailure, OSError):
                    tail = tuple(await runtime.logs(inst, tail=_EXIT_TAIL_LINES))
            code = inst.exit_code
            message = "exited" if code is None else f"exited with code {code}"
            if inst.running:
                message = "vanished"
            self.tracker.failed(
                inst.server,
                at=now,
                reason=REASON_EXITED,
                message=message,
                instance=inst,
                exit_code=code,
                stderr_tail=tail,
            )
            log_event(
                log,
                logging.WARNING,
                "server exited",
                server=inst.server,
                instance=inst.instance_id,
                exit_code=code,
                last_line=tail[-1] if tail else None,
            )
        self.tracker.forget_vanished(observed, busy=busy)
        self.tracker.note_healthy(observed, now=now)
