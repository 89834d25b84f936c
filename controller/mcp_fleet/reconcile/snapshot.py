"""The status model: what ``mcp-fleet status`` shows, derived after every pass.

Status is computed, never stored as truth: from the desired state, the last
observation and the controller's memory, each server gets one state from
``status.ServerState`` with a reason and a message. The same snapshot is
returned by ``Controller.status()``, written to the status file for other
processes, rendered as a table and printed as JSON; ``to_json`` is the
stable form (documented in ``statusfile``).

State rules, per enabled server: a running instance that answered the probe
is Ready (even while a replacement is being tried, or while the current
configuration has a problem: the last good instance keeps serving); one that
has not answered yet is Starting; with nothing running it is CrashLoop after
``threshold`` failures in a row, Failed when it cannot run as configured (or
cannot be started at all), else Pending (first start, or waiting out a
backoff). A server whose last start did not even happen (the runtime
refused it: image unavailable, daemon down...) is Failed with the runtime's
reason, not CrashLoop: nothing crashed. Disabled servers are Stopped once
nothing of them runs, Stopping until then (orphans too, while removed). An
on-demand server with nothing running and no call waiting for it is
Stopped with reason ScaledToZero (unless it is failing or crash-looping):
cold is its normal state, and ``all_ready`` counts it as fine. A
``sessions: per-client`` server never has a shared instance (the router
starts one per client session, ``router.session_launcher``), so with none
running it is Stopped with reason PerClient, whatever a shared instance of
it did before, and fine too; a process that runs both the controller and
the router (``mcp-fleet up``) adds how many session instances run
(``with_session_instances``; ``session_instances`` in the status file).

Actions in flight (``Memory.in_flight``: a start or a probe the executor
carries out in the background) count as well: a server being started is
Starting even before its instance exists (an image pull), or Pending while
it waits for a start slot; a crash-looping or failed one stays so while it
is retried; a disabled one is Stopping until its flight has landed. What is in
flight is listed in ``pending`` too (``pending_lines``), after what the last
plan still had to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mcp_fleet.errors import Diagnostic, Severity
from mcp_fleet.model import DesiredState, RuntimeKind, ServerSpec
from mcp_fleet.reconcile.actions import Plan
from mcp_fleet.reconcile.backoff import Health
from mcp_fleet.reconcile.demand import is_per_client
from mcp_fleet.reconcile.memory import InFlight, Memory, Tracker
from mcp_fleet.reconcile.plan import Prepared, prepare
from mcp_fleet.runtimes.base import Instance, ObservedState
from mcp_fleet.status import (
    REASON_CONFIG_CHANGED,
    REASON_CRASHLOOP,
    REASON_DISABLED,
    REASON_IDLE,
    REASON_INITIALIZED,
    REASON_PER_CLIENT,
    REASON_RUNTIME_ERROR,
    REASON_STARTING,
    ServerState,
)

SCHEMA_VERSION = 1
_TAIL = 10
#: States a server keeps while a start of it is retried (until an instance runs).
_KEPT_WHILE_RETRIED = frozenset({ServerState.CRASHLOOP, ServerState.FAILED})


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """One server's line in ``mcp-fleet status``."""

    name: str
    desired: str  # "enabled", "disabled" or "absent" (an orphan being removed)
    state: ServerState
    reason: str
    message: str = ""
    runtime: str | None = None
    instance: str | None = None
    restarts: int = 0
    started_at: float | None = None
    exit_code: int | None = None
    stderr_tail: tuple[str, ...] = ()
    config_hash: str | None = None
    #: Per-client servers only: the session instances the router runs (None: unknown,
    #: no router in the process that wrote the status).
    session_instances: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "desired": self.desired,
            "state": self.state.value,
            "reason": self.reason,
            "message": self.message,
            "runtime": self.runtime,
            "instance": self.instance,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "exit_code": self.exit_code,
            "stderr_tail": list(self.stderr_tail),
            "config_hash": self.config_hash,
            "session_instances": self.session_instances,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ServerStatus:
        return cls(
            name=str(doc["name"]),
            desired=str(doc.get("desired", "enabled")),
            state=ServerState(doc.get("state", ServerState.UNKNOWN.value)),
            reason=str(doc.get("reason", "")),
            message=str(doc.get("message", "")),
            runtime=doc.get("runtime"),
            instance=doc.get("instance"),
            restarts=int(doc.get("restarts", 0)),
            started_at=doc.get("started_at"),
            exit_code=doc.get("exit_code"),
            stderr_tail=tuple(doc.get("stderr_tail", ())),
            config_hash=doc.get("config_hash"),
            session_instances=_count(doc.get("session_instances")),
        )


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """The whole fleet as of one pass, plus the current file error if any."""

    fleet: str | None
    home: str
    updated_at: float
    runtime: str
    controller_pid: int | None = None
    servers: tuple[ServerStatus, ...] = ()
    #: Why the fleet files do not load right now (the last good state is in use).
    file_errors: tuple[Diagnostic, ...] = ()
    #: Warnings from the last successful load.
    warnings: tuple[Diagnostic, ...] = ()
    #: What the next pass would still do (empty when converged).
    pending: tuple[str, ...] = ()
    runtime_errors: Mapping[str, str] = field(default_factory=dict)

    def server(self, name: str) -> ServerStatus | None:
        return next((s for s in self.servers if s.name == name), None)

    @property
    def all_ready(self) -> bool:
        """True when every enabled server is Ready, or on demand and cold, or per-client
        (the ``--once`` success rule)."""
        return all(
            s.state is ServerState.READY
            or (s.state is ServerState.STOPPED and s.reason in (REASON_IDLE, REASON_PER_CLIENT))
            for s in self.servers
            if s.desired == "enabled"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SCHEMA_VERSION,
            "fleet": self.fleet,
            "home": self.home,
            "updated_at": self.updated_at,
            "runtime": self.runtime,
            "controller_pid": self.controller_pid,
            "file_errors": [d.to_json() for d in self.file_errors],
            "warnings": [d.to_json() for d in self.warnings],
            "runtime_errors": dict(sorted(self.runtime_errors.items())),
            "pending": list(self.pending),
            "all_ready": self.all_ready,
            "servers": [s.to_json() for s in self.servers],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> StatusSnapshot:
        return cls(
            fleet=doc.get("fleet"),
            home=str(doc.get("home", "")),
            updated_at=float(doc.get("updated_at", 0.0)),
            runtime=str(doc.get("runtime", "")),
            controller_pid=doc.get("controller_pid"),
            servers=tuple(ServerStatus.from_json(s) for s in doc.get("servers", ())),
            file_errors=tuple(_diag(d) for d in doc.get("file_errors", ())),
            warnings=tuple(_diag(d) for d in doc.get("warnings", ())),
            pending=tuple(doc.get("pending", ())),
            runtime_errors=dict(doc.get("runtime_errors", {})),
        )


def with_session_instances(snapshot: StatusSnapshot, counts: Mapping[str, int]) -> StatusSnapshot:
    """``snapshot`` with each per-client server's running session instances (``counts``,
    by server; a server missing from it runs none), as the router of the same process
    knows them."""
    servers = tuple(
        _sessions(s, counts.get(s.name, 0)) if _is_per_client_status(s) else s
        for s in snapshot.servers
    )
    return replace(snapshot, servers=servers)


def _is_per_client_status(st: ServerStatus) -> bool:
    return st.state is ServerState.STOPPED and st.reason == REASON_PER_CLIENT


def _sessions(st: ServerStatus, count: int) -> ServerStatus:
    if count <= 0:
        message = "per-client: no session instance runs; a client session's first call starts one"
    else:
        message = f"per-client: {count} session instance{'s' if count != 1 else ''} running"
    return replace(st, message=message, session_instances=max(0, count))


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _diag(doc: Mapping[str, Any]) -> Diagnostic:
    from pathlib import Path

    return Diagnostic(
        message=str(doc.get("message", "")),
        file=Path(doc["file"]) if doc.get("file") else None,
        line=doc.get("line"),
        field=doc.get("field"),
        severity=Severity(doc.get("severity", "error")),
        server=doc.get("server"),
    )


def server_statuses(
    desired: DesiredState | None,
    observed: ObservedState,
    tracker: Tracker,
    memory: Memory,
) -> tuple[ServerStatus, ...]:
    """One status per registry entry (and per orphan still being removed)."""
    by_server: dict[str, list[Instance]] = {}
    for inst in observed.instances:
        if desired is None or inst.fleet == desired.fleet:
            by_server.setdefault(inst.server, []).append(inst)
    names = set(by_server) | (set(desired.servers) if desired else set())
    blind = dict(observed.unavailable)
    prepared = prepare(desired, memory) if desired else {}
    out = []
    for name in sorted(names):
        insts = by_server.get(name, [])
        health = tracker.health.get(name) or Health()
        spec = desired.servers.get(name) if desired else None
        if spec is None:
            out.append(_absent(name, insts, health, loaded=desired is not None))
        elif not spec.enabled:
            out.append(_disabled(name, insts, health, busy=name in memory.in_flight))
        else:
            view = _Enabled(spec, prepared[name], insts, health)
            out.append(_enabled(view, blind, tracker, memory))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Enabled:
    """What the status of one enabled server is made from."""

    spec: ServerSpec
    prep: Prepared
    insts: list[Instance]
    health: Health


def _absent(name: str, insts: list[Instance], health: Health, *, loaded: bool) -> ServerStatus:
    """A server with instances but no registry entry: being removed (or, before the fleet
    files have loaded, left alone)."""
    st = ServerStatus(name, "absent", ServerState.STOPPING, "Orphaned", "being removed")
    if not loaded:  # the planner touches nothing before the files load
        st = ServerStatus(
            name, "absent", ServerState.UNKNOWN, "NotLoaded",
            "left alone until the fleet files load",
        )  # fmt: skip
    return _with_instance(st, insts[0] if insts else None, health)


def _disabled(name: str, insts: list[Instance], health: Health, *, busy: bool) -> ServerStatus:
    """A disabled server: Stopped once nothing runs (or flies) for it, else Stopping."""
    if insts or busy:  # Stopped means nothing runs: until then Stopping
        st = ServerStatus(name, "disabled", ServerState.STOPPING, REASON_DISABLED, "being stopped")
        return _with_instance(st, insts[0] if insts else None, health)
    return ServerStatus(
        name, "disabled", ServerState.STOPPED, REASON_DISABLED, restarts=health.restarts
    )


def _enabled(
    view: _Enabled, blind: Mapping[RuntimeKind, str], tracker: Tracker, memory: Memory
) -> ServerStatus:
    """An enabled server: remote, unobservable, ready, failed, starting or down."""
    name, prep, health = view.spec.name, view.prep, view.health
    placement, problem, config_hash = prep.placement, prep.problem, prep.config_hash
    running = [i for i in view.insts if i.running]
    ready = [i for i in running if i.instance_id in memory.ready]
    if placement.kind is RuntimeKind.REMOTE and problem is None:
        entry = view.spec.entry
        url = entry.remote.url if entry and entry.remote else ""
        return ServerStatus(
            name, "enabled", ServerState.READY, "Remote", url, runtime="remote",
            config_hash=config_hash[:12],
        )  # fmt: skip
    if placement.kind is not None and placement.kind in blind and not ready:
        return ServerStatus(
            name, "enabled", ServerState.UNKNOWN, REASON_RUNTIME_ERROR, blind[placement.kind],
            runtime=placement.kind.value,
        )  # fmt: skip
    if ready:
        return _ready(name, ready, problem, config_hash, health)
    if problem is not None:
        return ServerStatus(
            name, "enabled", ServerState.FAILED, problem[0], problem[1],
            restarts=health.restarts, config_hash=config_hash[:12],
        )  # fmt: skip
    if running:
        st = ServerStatus(
            name, "enabled", ServerState.STARTING, REASON_STARTING,
            "waiting for the MCP initialize answer",
        )  # fmt: skip
        return _with_instance(st, running[0], health)
    return _not_running(view, tracker, memory)


def _ready(
    name: str,
    ready: list[Instance],
    problem: tuple[str, str] | None,
    config_hash: str,
    health: Health,
) -> ServerStatus:
    """A server with a ready instance: of the current spec, or of the last good one."""
    best = next((i for i in ready if i.config_hash == config_hash), ready[0])
    reason, message = REASON_INITIALIZED, ""
    if problem is not None:
        reason = problem[0]
        message = f"{problem[1]} (the last good configuration keeps running)"
    elif best.config_hash != config_hash:
        reason = REASON_CONFIG_CHANGED
        message = "runs the previous configuration"
        if health.streak:
            message += f"; the new one failed: {health.last_message}"
    st = ServerStatus(name, "enabled", ServerState.READY, reason, message)
    return _with_instance(st, best, health)


def _not_running(view: _Enabled, tracker: Tracker, memory: Memory) -> ServerStatus:
    """A usable server with nothing running: per-client, being started, cold or down."""
    name, prep, health = view.spec.name, view.prep, view.health
    kind, config_hash = prep.placement.kind, prep.config_hash
    if is_per_client(view.spec):  # the router runs its instances, one per client session
        return _per_client(name, health, kind, config_hash)
    down = _down(name, health, tracker, memory, kind, config_hash)
    flight = memory.in_flight.get(name)
    if flight is not None and flight.starts and down.state not in _KEPT_WHILE_RETRIED:
        return _starting(down, flight, memory)
    if prep.on_demand and name not in memory.demanded and down.state is ServerState.PENDING:
        return _cold(down, memory)
    return down


def pending_lines(rest: Plan, memory: Memory) -> tuple[str, ...]:
    """What is still to do (the last plan's actions), then what is under way."""
    lines = str(rest).splitlines() if rest else []
    for _, flight in sorted(memory.in_flight.items()):
        note = "waiting for a start slot" if flight.queued else "in flight"
        if flight.cancelling:
            note = "being cancelled"
        lines += [f"{line} [{note}]" for line in flight.actions]
    return tuple(lines)


def _starting(down: ServerStatus, flight: InFlight, memory: Memory) -> ServerStatus:
    """A server whose start is under way and whose instance does not run yet."""
    state, message = ServerState.STARTING, "being started"
    if flight.queued:
        state, message = ServerState.PENDING, "waiting for a start slot"
    message += f" for {max(0.0, memory.now - flight.since):.0f} s"
    if down.message:
        message += f" (last failure: {down.message})"
    return ServerStatus(
        down.name, down.desired, state, REASON_STARTING, message,
        runtime=down.runtime, restarts=down.restarts, exit_code=down.exit_code,
        stderr_tail=down.stderr_tail, config_hash=down.config_hash,
    )  # fmt: skip


def _per_client(
    name: str, health: Health, kind: RuntimeKind | None, config_hash: str
) -> ServerStatus:
    """A per-client server with no shared instance: its normal state (``with_session_instances``
    says how many session instances run, where that is known)."""
    return ServerStatus(
        name, "enabled", ServerState.STOPPED, REASON_PER_CLIENT,
        "per-client: one instance per client session, started by the router",
        runtime=kind.value if kind else None, restarts=health.restarts,
        config_hash=config_hash[:12],
    )  # fmt: skip


def _cold(down: ServerStatus, memory: Memory) -> ServerStatus:
    """An on-demand server that nothing needs right now: Stopped, ScaledToZero."""
    message = "on demand: starts on the next call"
    at = memory.scaled_down.get(down.name)
    if at is not None:
        ago = max(0.0, memory.now - at)
        message = f"idle: scaled to zero {ago:.0f} s ago; starts on the next call"
    if down.message:
        message += f" (last failure: {down.message})"
    return ServerStatus(
        down.name, down.desired, ServerState.STOPPED, REASON_IDLE, message,
        runtime=down.runtime, restarts=down.restarts, exit_code=down.exit_code,
        stderr_tail=down.stderr_tail, config_hash=down.config_hash,
    )  # fmt: skip


def _down(
    name: str,
    health: Health,
    tracker: Tracker,
    memory: Memory,
    kind: RuntimeKind | None,
    config_hash: str,
) -> ServerStatus:
    """A server with nothing running: Pending, Failed or CrashLoop."""
    message = health.last_message or ""
    due = memory.next_start.get(name)
    if due is not None and due > memory.now:
        message = f"{message}; next start in {due - memory.now:.1f} s".lstrip("; ")
    if health.streak and health.start_failed:
        state, reason = ServerState.FAILED, health.last_reason or REASON_RUNTIME_ERROR
    elif health.crashlooping(tracker.policy):
        state, reason = ServerState.CRASHLOOP, REASON_CRASHLOOP
        if health.last_exit_code is not None:
            message = f"exit code {health.last_exit_code}: {message}"
    elif health.streak:
        state, reason = ServerState.PENDING, health.last_reason or REASON_STARTING
    else:
        state, reason = ServerState.PENDING, REASON_STARTING
    return ServerStatus(
        name, "enabled", state, reason, message,
        runtime=kind.value if kind else None, restarts=health.restarts,
        exit_code=health.last_exit_code, stderr_tail=health.stderr_tail[-_TAIL:],
        config_hash=config_hash[:12],
    )  # fmt: skip


def _with_instance(st: ServerStatus, inst: Instance | None, health: Health) -> ServerStatus:
    if inst is None:
        return st
    return ServerStatus(
        st.name, st.desired, st.state, st.reason, st.message,
        runtime=inst.runtime.value, instance=inst.instance_id, restarts=health.restarts,
        started_at=inst.started_at, exit_code=health.last_exit_code,
        stderr_tail=health.stderr_tail[-_TAIL:] if health.streak else (),
        config_hash=inst.config_hash[:12],
    )  # fmt: skip
