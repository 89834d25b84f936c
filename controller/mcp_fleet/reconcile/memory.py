"""What the controller knows beyond what it observes, and the frozen view the planner reads.

Observation says what runs; it cannot say which instance answered a probe,
which ones this controller started (a process left over by a killed
controller looks just like one of ours, but its stdio is gone), which
failures were already counted, or when a backed-off restart is due. The
``Tracker`` keeps those facts; the executor and the loop report outcomes to
it. Before each plan the loop takes a ``Memory``: an immutable snapshot with
``now`` in it, so ``plan(desired, observed, memory)`` stays a pure,
deterministic function. What the router reports about on-demand servers
(wanted, busy, last used) enters the same way, as facts of the snapshot.

Actions still under way are facts too (``InFlight``, per server): starting a
server and waiting for its first ``initialize`` answer can take as long as
the probe timeout, so the executor runs such work in the background and the
planner, seeing it in flight, leaves that server alone (or cancels the work
when the server was disabled or changed meanwhile) instead of waiting for it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

from mcp_fleet.logsetup import redactor
from mcp_fleet.model import RuntimeKind, frozen_map
from mcp_fleet.reconcile.backoff import BackoffPolicy, Health
from mcp_fleet.runtimes.base import Instance, ObservedState


@dataclass(frozen=True, slots=True)
class InFlight:
    """The actions of one server the executor is still carrying out (in the background)."""

    #: When they were launched (same clock as ``Memory.now``).
    since: float
    #: The actions, as plans print them (``describe``); status shows them as pending.
    actions: tuple[str, ...] = ()
    #: The config hash and runtime of the instance they start or probe; None when
    #: they only stop instances (nothing to cancel: a stop is left to finish).
    config_hash: str | None = None
    runtime: RuntimeKind | None = None
    #: Waiting for a start slot (the executor's limit on starts in flight).
    queued: bool = False
    #: Asked to stop short (the server was disabled or changed meanwhile).
    cancelling: bool = False

    @property
    def starts(self) -> bool:
        """True when they start or probe an instance (and can be cancelled)."""
        return self.config_hash is not None


@dataclass(frozen=True, slots=True)
class Memory:
    """The planner's view of the controller's memory at time ``now``."""

    now: float = 0.0
    #: Instances this controller started or adopted.
    owned: frozenset[str] = frozenset()
    #: Instances that answered an MCP initialize.
    ready: frozenset[str] = frozenset()
    #: Running instances whose readiness probe failed (to be replaced).
    probe_failed: frozenset[str] = frozenset()
    #: Per server: the failure last recorded by a mark-failed action.
    marked: Mapping[str, str] = field(default_factory=frozen_map)
    #: Per server: earliest time a (re)start is allowed, when backing off.
    next_start: Mapping[str, float] = field(default_factory=frozen_map)
    #: Per server: why it is being restarted (for the action's cause).
    restart_cause: Mapping[str, str] = field(default_factory=frozen_map)
    preferred_runtime: RuntimeKind = RuntimeKind.PROCESS
    available_runtimes: frozenset[RuntimeKind] = frozenset({RuntimeKind.PROCESS})
    #: Per server: why the runtime chosen for it cannot run it as configured
    #: (``Runtime.unsupported_reason``: a volume Docker refuses...). Retrying
    #: cannot fix these, so the planner marks the server failed instead.
    unsupported: Mapping[str, str] = field(default_factory=frozen_map)
    #: On-demand servers a call (or a first listing) is waiting for: start them.
    demanded: frozenset[str] = frozenset()
    #: On-demand servers with calls in flight or waiting: never scaled down.
    busy: frozenset[str] = frozenset()
    #: Per on-demand server: when a call last used it (same clock as ``now``).
    last_active: Mapping[str, float] = field(default_factory=frozen_map)
    #: Per server: when its last instance was scaled to zero (for status).
    scaled_down: Mapping[str, float] = field(default_factory=frozen_map)
    #: Per server: actions the executor is still carrying out (see ``InFlight``).
    in_flight: Mapping[str, InFlight] = field(default_factory=frozen_map)


class Tracker:
    """The controller's mutable memory; only the executor and the loop write to it."""

    def __init__(self, policy: BackoffPolicy | None = None) -> None:
        self.policy = policy or BackoffPolicy()
        self.owned: set[str] = set()
        self.ready: set[str] = set()
        self.probe_failed: set[str] = set()
        self.marked: dict[str, str] = {}
        self.health: dict[str, Health] = {}
        #: Instances we own, to spot the ones that exit or vanish.
        self._known: dict[str, Instance] = {}
        #: Instances whose exit was already reported by ``unexpected_exits``.
        self._exit_noted: set[str] = set()
        #: When each instance answered its probe.
        self.ready_since: dict[str, float] = {}
        #: Per server: when its last instance was scaled to zero.
        self.scaled_down: dict[str, float] = {}
        #: Per server: when the router last refused a scale-down (it was in use then).
        self.used_at: dict[str, float] = {}
        #: Per server: actions under way (the executor launches and lands them).
        self.in_flight: dict[str, InFlight] = {}

    def health_of(self, server: str) -> Health:
        return self.health.setdefault(server, Health())

    def memory(
        self,
        now: float,
        *,
        preferred: RuntimeKind = RuntimeKind.PROCESS,
        available: frozenset[RuntimeKind] = frozenset({RuntimeKind.PROCESS}),
        unsupported: Mapping[str, str] | None = None,
        demanded: frozenset[str] = frozenset(),
        busy: frozenset[str] = frozenset(),
        last_active: Mapping[str, float] | None = None,
        observed_in_flight: Mapping[str, InFlight] | None = None,
    ) -> Memory:
        """The planner's snapshot at ``now``.

        ``observed_in_flight`` are the flights that were under way when the
        observation the plan is made from was taken: one that has landed
        since counts as still in flight, since that observation may predate
        what it did (an instance started, another stopped).
        """
        next_start: dict[str, float] = {}
        causes: dict[str, str] = {}
        for server, h in self.health.items():
            due = h.next_start_at(self.policy)
            if due is not None:
                next_start[server] = due
            if h.streak:
                causes[server] = _restart_cause(h)
        return Memory(
            now=now,
            owned=frozenset(self.owned),
            ready=frozenset(self.ready),
            probe_failed=frozenset(self.probe_failed),
            marked=frozen_map(self.marked),
            next_start=frozen_map(next_start),
            restart_cause=frozen_map(causes),
            preferred_runtime=preferred,
            available_runtimes=available,
            unsupported=frozen_map() if unsupported is None else unsupported,
            demanded=demanded,
            busy=busy,
            last_active=frozen_map(_latest(last_active or {}, self.used_at)),
            scaled_down=frozen_map(self.scaled_down),
            in_flight=frozen_map({**(observed_in_flight or {}), **self.in_flight}),
        )

    # Outcomes reported by the executor.

    def started(self, instance: Instance, *, restart: bool) -> None:
        self.owned.add(instance.instance_id)
        self._known[instance.instance_id] = instance
        if restart:
            self.health_of(instance.server).record_start()

    def adopted(self, instance: Instance) -> None:
        self.owned.add(instance.instance_id)
        self._known[instance.instance_id] = instance

    def probe_succeeded(self, instance: Instance, *, at: float) -> None:
        self.ready.add(instance.instance_id)
        self.probe_failed.discard(instance.instance_id)
        self.ready_since[instance.instance_id] = at

    def failed(
        self,
        server: str,
        *,
        at: float,
        reason: str,
        message: str,
        instance: Instance | None = None,
        exit_code: int | None = None,
        stderr_tail: tuple[str, ...] = (),
    ) -> bool:
        """Count a failure (probe, start, exit); returns True when it was new.

        The message and the stderr lines are masked with the secret redactor
        here, where they enter the controller's memory: a server may echo a
        secret in what it writes, and everything shown later (status, the
        ``--once`` output, a status page) is built from what is kept here.
        """
        if instance is not None:
            self.ready.discard(instance.instance_id)
        mask = redactor().redact
        message = mask(message)
        stderr_tail = tuple(mask(line) for line in stderr_tail)
        return self.health_of(server).record_failure(
            self.policy,
            instance_id=None if instance is None else instance.instance_id,
            at=at,
            started_at=None if instance is None else instance.started_at,
            reason=reason,
            message=message,
            exit_code=exit_code,
            stderr_tail=stderr_tail,
        )

    def probe_failed_for(self, instance: Instance) -> None:
        self.probe_failed.add(instance.instance_id)

    def stopped(self, instance: Instance) -> None:
        iid = instance.instance_id
        self.owned.discard(iid)
        self.ready.discard(iid)
        self.probe_failed.discard(iid)
        self._known.pop(iid, None)
        self._exit_noted.discard(iid)
        self.ready_since.pop(iid, None)

    def scaled_to_zero(self, instance: Instance, *, at: float) -> None:
        """An idle on-demand instance was stopped on purpose: not a failure."""
        self.stopped(instance)
        self.scaled_down[instance.server] = at

    def in_use(self, server: str, *, at: float) -> None:
        """The router refused a scale-down: the server was used at ``at``."""
        self.used_at[server] = at

    def mark(self, server: str, key: str) -> None:
        self.marked[server] = key

    # Actions under way, reported by the executor.

    def launched(self, server: str, flight: InFlight) -> None:
        self.in_flight[server] = flight

    def queued(self, server: str, *, waiting: bool) -> None:
        """A start waits for a slot (``waiting``), or got one."""
        flight = self.in_flight.get(server)
        if flight is not None and flight.queued != waiting:
            self.in_flight[server] = replace(flight, queued=waiting)

    def cancelling(self, server: str) -> None:
        flight = self.in_flight.get(server)
        if flight is not None:
            self.in_flight[server] = replace(flight, cancelling=True)

    def landed(self, server: str) -> None:
        self.in_flight.pop(server, None)

    # Facts the loop derives from each observation.

    def unexpected_exits(
        self, observed: ObservedState, *, busy: Collection[str] = ()
    ) -> list[Instance]:
        """Instances we own that are observed exited or have vanished, not yet counted.

        Servers with actions in flight now or when ``observed`` was taken
        (``busy``) are left out: ``observed`` may predate an instance their
        flight started, and an instance that dies while it is probed is the
        probe's failure to report; an exit nobody counted is counted on the
        first look after the flight has landed.
        """
        seen = {i.instance_id: i for i in observed.instances}
        blind = {kind for kind, _ in observed.unavailable}
        out: list[Instance] = []
        for iid, known in sorted(self._known.items()):
            if known.runtime in blind or self._busy(known.server, busy):
                continue
            now_seen = seen.get(iid)
            if (now_seen is not None and now_seen.running) or iid in self._exit_noted:
                continue
            self._exit_noted.add(iid)
            out.append(now_seen if now_seen is not None else known)
        return out

    def forget_vanished(self, observed: ObservedState, *, busy: Collection[str] = ()) -> None:
        """Drop what we remember of instances that no runtime reports any more
        (servers in flight aside, as in ``unexpected_exits``)."""
        seen = {i.instance_id for i in observed.instances}
        blind = {kind for kind, _ in observed.unavailable}
        gone = [
            i for i, k in self._known.items()
            if i not in seen and k.runtime not in blind and not self._busy(k.server, busy)
        ]  # fmt: skip
        for iid in gone:
            self._known.pop(iid, None)
            self._exit_noted.discard(iid)
            self.ready.discard(iid)
            self.probe_failed.discard(iid)
            self.owned.discard(iid)
            self.ready_since.pop(iid, None)

    def _busy(self, server: str, busy: Collection[str]) -> bool:
        return server in self.in_flight or server in busy

    def note_healthy(self, observed: ObservedState, *, now: float) -> None:
        """Ready instances that stayed up for the window end their server's failure row."""
        for inst in observed.instances:
            since = self.ready_since.get(inst.instance_id)
            if inst.running and since is not None:
                self.health_of(inst.server).record_healthy(
                    at=now, started_at=inst.started_at, policy=self.policy
                )

    def clear_marks(self, keep: set[str]) -> None:
        """Forget mark-failed records of servers that are no longer failing."""
        for server in [s for s in self.marked if s not in keep]:
            del self.marked[server]


def _latest(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    out = dict(a)
    for key, value in b.items():
        out[key] = max(value, out.get(key, value))
    return out


def _restart_cause(h: Health) -> str:
    text = h.last_reason or "failure"
    if h.last_exit_code is not None:
        text += f", exit code {h.last_exit_code}"
    return f"restart after {text}; attempt {h.streak + 1}"
