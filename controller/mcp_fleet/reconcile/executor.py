"""The executor: carries out a plan through the runtimes, deciding nothing.

Each action has one fixed procedure (a create is start then probe; a replace
is start, probe, hand over, then stop the old instance only if the new one
is ready), and every outcome is reported to the ``Tracker``; what to do
about a failure is the next plan's business (level-triggered: a failed probe
shows up in memory, the planner removes the instance and schedules a restart
with backoff).

Why it is built this way:

- **Nothing waits for a slow server.** A server's first ``initialize`` answer
  may take the whole probe timeout (20 s by default), an image pull longer;
  a stop may take its grace period. So ``launch`` runs bookkeeping
  (``MarkFailed``) and ``Cancel`` at once and sends every other server's
  actions off as a *flight*: a background task per server, reported to the
  ``Tracker`` as ``InFlight`` (the planner leaves that server alone while it
  flies). A pass ends without waiting for flights; each landing, and each
  instance a flight starts, calls ``on_change`` (the loop wakes up and
  looks again, so status names the instance being probed). ``apply`` is
  ``launch`` plus waiting for what it launched: ``--once``, tests.
- **Never two copies.** Actions of one server run in plan order in one
  flight (a leftover is removed before its successor starts), and a server
  never has two flights: the planner plans nothing for a server in flight.
- **Cancelling leaks nothing.** ``Cancel`` (the server was disabled or
  changed mid-flight) interrupts a flight that waits for a start slot or for
  a probe answer, and the flight stops what it started. A runtime's start is
  never interrupted (a process being spawned, a container being created
  would be lost): the flight stops the new instance as soon as the start
  returns it. Either way the instance is owned (``Tracker.started``) from
  the moment it exists, so observation and the planner see it too.
- **Bounded.** At most ``concurrency`` starts and probes at a time (the
  others queue, shown as waiting for a slot); stops are not held behind
  them. A failure of one action never stops the others.
- **Make-before-break.** Between a replace's probe and the stop of the old
  instance comes ``handover`` (the controller's): publish the new endpoint
  and wait, bounded, until no router uses the old instance, as a rolling
  update waits for readiness and drains connections. The wait holds no
  start slot, and a ``Cancel`` (the server changed again, or was disabled)
  cuts it short: the old instance is stopped then and there.

A ``ScaleDown`` is the one conditional action: the plan was made from a
snapshot of the router's activity, and a call may have arrived since, so
the executor asks ``retire`` (the router, through ``Demand``) just before
stopping; a "no" leaves the instance running and the next plan sees why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from mcp_fleet import conventions
from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.logsetup import log_event
from mcp_fleet.model import RuntimeKind
from mcp_fleet.probe import ProbeError
from mcp_fleet.reconcile.actions import (
    Action,
    Adopt,
    Cancel,
    Create,
    MarkFailed,
    Plan,
    Probe,
    Remove,
    Replace,
    ScaleDown,
    describe,
)
from mcp_fleet.reconcile.memory import InFlight, Tracker
from mcp_fleet.runtimes.base import Instance, Runtime
from mcp_fleet.status import REASON_PROBE_FAILED, REASON_RUNTIME_ERROR
from mcp_fleet.transport import StreamClosed

log = logging.getLogger("mcp_fleet.executor")

#: Errors a runtime may raise for one action; anything else is a bug and propagates.
_ACTION_ERRORS = (RuntimeFailure, ProbeError, StreamClosed, OSError, TimeoutError)
_TAIL_LINES = 20
#: The error of an action a ``Cancel`` cut short (or never let begin).
CANCELLED = "cancelled"
#: Actions that start or probe an instance: they take a start slot and can be cancelled.
_STARTS = (Create, Replace, Adopt, Probe)
#: Phases in which a flight may be interrupted at once (nothing is half started).
_INTERRUPTIBLE = frozenset({"queued", "probing", "handing over"})
#: What a replace does between the new instance's probe and the old one's stop.
Handover = Callable[[Replace, Instance], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one action."""

    action: Action
    ok: bool
    error: str | None = None


class Executor:
    """Applies plans through ``runtimes`` and reports every outcome to ``tracker``."""

    def __init__(
        self,
        runtimes: Mapping[RuntimeKind, Runtime],
        tracker: Tracker,
        *,
        concurrency: int = conventions.DEFAULT_START_CONCURRENCY,
        probe_timeout: float = conventions.DEFAULT_PROBE_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
        retire: Callable[[str], bool | Awaitable[bool]] | None = None,
        on_change: Callable[[], None] | None = None,
        handover: Handover | None = None,
    ) -> None:
        self.runtimes = runtimes
        self.retire = retire
        #: Replace: publish the new instance and wait until the old one is let go.
        self.handover = handover
        self.tracker = tracker
        self.probe_timeout = probe_timeout
        self.clock = clock
        self.on_change = on_change
        #: Starts and probes under way at once (the others wait for a slot).
        self._slots = asyncio.Semaphore(concurrency)
        self._flights: dict[str, _Flight] = {}

    @property
    def in_flight(self) -> frozenset[str]:
        """Servers whose actions are still being carried out."""
        return frozenset(self._flights)

    async def apply(self, plan: Plan) -> list[Outcome]:
        """Run every action of ``plan`` to its end; returns the outcomes in plan order."""
        done, flights = await self._launch(plan)
        cancelled = [
            self._flights[a.server] for a in plan.actions
            if isinstance(a, Cancel) and a.server in self._flights
        ]  # fmt: skip
        results = await asyncio.gather(*(f.task for f in flights if f.task is not None))
        await self._wait({f.task for f in cancelled if f.task is not None})
        by_action = {id(o.action): o for o in done}
        by_action.update({id(o.action): o for group in results for o in group})
        return [by_action[id(a)] for a in plan.actions]

    async def launch(self, plan: Plan) -> list[Outcome]:
        """Start carrying out ``plan`` without waiting for its slow parts.

        Bookkeeping and cancels are done at once (their outcomes are
        returned); each server's other actions become one flight, whose
        landing calls ``on_change``.
        """
        done, _ = await self._launch(plan)
        return done

    async def settle(self) -> None:
        """Wait until nothing is in flight (flights landing meanwhile included)."""
        while self._flights:
            await self._wait({f.task for f in self._flights.values() if f.task is not None})

    async def aclose(self, *, timeout: float = 10.0) -> None:
        """Cut every flight short without stopping what it started (the controller is
        going away: containers stay for a successor to adopt, the process runtime
        stops its children itself)."""
        for flight in list(self._flights.values()):
            flight.abandon = True
            self._cancel(flight)
        tasks = {f.task for f in self._flights.values() if f.task is not None}
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=timeout)
            for task in stuck:
                log_event(log, logging.WARNING, "action did not stop", task=task.get_name())

    # Launching and landing.

    async def _launch(self, plan: Plan) -> tuple[list[Outcome], list[_Flight]]:
        groups: dict[str, list[Action]] = {}
        for action in plan.actions:
            groups.setdefault(action.server, []).append(action)
        done: list[Outcome] = []
        flights: list[_Flight] = []
        for server, actions in groups.items():
            while actions and isinstance(actions[0], MarkFailed | Cancel):
                done.append(await self._run(actions.pop(0)))
            if not actions:
                continue
            if server in self._flights:  # the planner never does this; a caller might
                busy = "another action of this server is in flight"
                done += [Outcome(a, False, busy) for a in actions]
                continue
            flights.append(self._fly(server, tuple(actions)))
        return done, flights

    def _fly(self, server: str, actions: tuple[Action, ...]) -> _Flight:
        flight = _Flight(server, actions)
        target = next((a for a in actions if isinstance(a, _STARTS)), None)
        config_hash: str | None = None
        runtime: RuntimeKind | None = None
        if isinstance(target, Create | Replace):
            config_hash, runtime = target.spec.config_hash(), target.runtime
        elif isinstance(target, Adopt | Probe):
            config_hash, runtime = target.instance.config_hash, target.instance.runtime
        self.tracker.launched(server, InFlight(
            since=self.clock(), actions=tuple(describe(a) for a in actions),
            config_hash=config_hash, runtime=runtime,
        ))  # fmt: skip
        self._flights[server] = flight
        verb = "+".join(a.verb for a in actions)
        flight.task = asyncio.create_task(self._carry(flight), name=f"{verb}:{server}")
        return flight

    async def _carry(self, flight: _Flight) -> list[Outcome]:
        """One flight: its actions in order, until done or cancelled; then it lands."""
        out: list[Outcome] = []
        try:
            for action in flight.actions:
                if flight.cancelling:
                    break
                out.append(await self._run(action, flight))
        except asyncio.CancelledError:
            if not flight.cancelling:
                raise  # not ours (the event loop is going away)
            # Interrupted by ``_cancel`` while queued or probing: the cancel is
            # handled here (so the stop below runs normally), and what this
            # flight started is stopped.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            await self._undo(flight)
        except Exception:  # a bug must not leave the server in flight forever
            log.exception("actions of %s failed", flight.server)
        finally:
            if self._flights.get(flight.server) is flight:
                del self._flights[flight.server]
            self.tracker.landed(flight.server)
            self._changed()
        finished = {id(o.action) for o in out}
        out += [Outcome(a, False, CANCELLED) for a in flight.actions if id(a) not in finished]
        return out

    def _cancel(self, flight: _Flight) -> None:
        flight.cancelling = True
        self.tracker.cancelling(flight.server)
        if flight.phase in _INTERRUPTIBLE and flight.task is not None:
            flight.task.cancel()

    async def _undo(self, flight: _Flight) -> None:
        """Stop the instance a cancelled flight started, or the old instance a cancelled
        handover was draining (unless the flight is abandoned)."""
        new, flight.started = flight.started, None
        old, flight.retiring = flight.retiring, None
        for inst in (new, old):
            if inst is None or flight.abandon:
                continue
            try:
                await self._runtime(inst.runtime).stop(inst)
            except _ACTION_ERRORS as exc:  # it stays owned: the next plan removes it
                log_event(log, logging.WARNING, "stop failed", server=inst.server, error=_text(exc))
                continue
            self.tracker.stopped(inst)
            log_event(log, logging.INFO, "stopped", server=inst.server, instance=inst.instance_id)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    @staticmethod
    async def _wait(tasks: set[asyncio.Task[list[Outcome]]]) -> None:
        if tasks:
            await asyncio.wait(tasks)

    # One action.

    async def _run(self, action: Action, flight: _Flight | None = None) -> Outcome:
        log_event(
            log,
            logging.INFO,
            action.verb,
            server=action.server,
            cause=action.cause,
            resource=action.resource,
        )
        try:
            error = await self._dispatch(action, flight)
        except _ACTION_ERRORS as exc:
            error = _text(exc)
        if error == CANCELLED:
            log_event(log, logging.INFO, f"{action.verb} cancelled", server=action.server)
        elif error is not None:
            log_event(
                log,
                logging.WARNING,
                f"{action.verb} failed",
                server=action.server,
                resource=action.resource,
                error=error,
            )
        return Outcome(action, error is None, error)

    async def _dispatch(self, action: Action, flight: _Flight | None) -> str | None:
        if isinstance(action, Cancel | MarkFailed | Remove | ScaleDown):
            await self._apply_at_once(action)
            return None
        flight = flight or _Flight(action.server, (action,))
        async with self._slot(flight):
            if isinstance(action, Adopt | Probe):
                return await self._take_over(action, flight)
            if not isinstance(action, Create | Replace):
                raise AssertionError(f"unknown action {action!r}")
            flight.phase = "starting"  # never interrupted: what it starts must be known
            new = await self._start(action)
            if new is None:
                return "start failed"
            flight.started = new
            self._changed()  # a new instance: status can name it while it is probed
            if flight.cancelling:
                await self._undo(flight)
                return CANCELLED
            error = await self._probe(new, flight)
            flight.started = None  # probed: no longer the flight's to undo
        if error is None and isinstance(action, Replace):  # out of the slot: drains take long
            await self._hand_over(action, new, flight)
            await self._runtime(action.old.runtime).stop(action.old)
            self.tracker.stopped(action.old)
        return error

    async def _apply_at_once(self, action: Cancel | MarkFailed | Remove | ScaleDown) -> None:
        """The actions that take no start slot: bookkeeping, cancels and stops."""
        if isinstance(action, Cancel):
            if action.server in self._flights:
                self._cancel(self._flights[action.server])
        elif isinstance(action, MarkFailed):
            self.tracker.mark(action.server, action.cause)
            log_event(
                log,
                logging.WARNING,
                "server failed",
                server=action.server,
                reason=action.reason,
                message=action.message,
            )
        elif isinstance(action, Remove):
            await self._runtime(action.instance.runtime).stop(action.instance)
            self.tracker.stopped(action.instance)
        else:
            await self._scale_down(action)

    async def _scale_down(self, action: ScaleDown) -> None:
        """Stop an idle on-demand instance, unless the router says it is in use now."""
        agreed = True if self.retire is None else self.retire(action.server)
        if not isinstance(agreed, bool):  # a router in another process: a round trip
            agreed = await agreed
        if not agreed:
            self.tracker.in_use(action.server, at=self.clock())
            log_event(log, logging.INFO, "scale-down skipped: in use", server=action.server)
            return
        await self._runtime(action.instance.runtime).stop(action.instance)
        self.tracker.scaled_to_zero(action.instance, at=self.clock())

    async def _take_over(self, action: Adopt | Probe, flight: _Flight) -> str | None:
        """Adopt or probe an instance that runs; once it answers, retire what it replaces."""
        if isinstance(action, Adopt):
            self.tracker.adopted(action.instance)
        error = await self._probe(action.instance, flight)
        if error is None:
            for old in action.retire:
                await self._runtime(old.runtime).stop(old)
                self.tracker.stopped(old)
        return error

    async def _hand_over(self, action: Replace, new: Instance, flight: _Flight) -> None:
        """Publish ``new`` and wait until the routers let the old instance go (``handover``);
        a cancel meanwhile stops the old instance at once (``_undo``)."""
        if self.handover is None or flight.cancelling:
            return
        flight.retiring = action.old
        flight.phase = "handing over"
        try:
            await self.handover(action, new)
        except Exception:  # a bug in the handover must not keep the old instance forever
            log.exception("handing %s over to its new instance failed", action.server)
        finally:
            flight.phase = "running"
        flight.retiring = None

    @contextlib.asynccontextmanager
    async def _slot(self, flight: _Flight) -> AsyncIterator[None]:
        """One of the ``concurrency`` start slots; the flight shows as queued meanwhile."""
        flight.phase = "queued"
        if self._slots.locked():
            self.tracker.queued(flight.server, waiting=True)
        async with self._slots:
            self.tracker.queued(flight.server, waiting=False)
            flight.phase = "running"
            try:
                yield
            finally:
                flight.phase = "running"

    async def _start(self, action: Create | Replace) -> Instance | None:
        server = action.spec.name
        restart = self.tracker.health_of(server).streak > 0
        try:
            instance = await self._runtime(action.runtime).start(action.spec)
        except _ACTION_ERRORS as exc:
            self.tracker.failed(
                server, at=self.clock(), reason=_reason(exc, REASON_RUNTIME_ERROR),
                message=_text(exc),
            )  # fmt: skip
            return None
        self.tracker.started(instance, restart=restart)
        log_event(
            log,
            logging.INFO,
            "started",
            server=server,
            instance=instance.instance_id,
            runtime=instance.runtime.value,
        )
        return instance

    async def _probe(self, instance: Instance, flight: _Flight) -> str | None:
        runtime = self._runtime(instance.runtime)
        flight.phase = "probing"  # a cancel may interrupt the wait for the answer
        try:
            await runtime.probe(instance, timeout=self.probe_timeout)
        except _ACTION_ERRORS as exc:
            flight.phase = "running"
            message = _text(exc)
            try:
                tail = tuple(await runtime.logs(instance, tail=_TAIL_LINES))
            except _ACTION_ERRORS:
                tail = ()
            self.tracker.probe_failed_for(instance)
            self.tracker.failed(
                instance.server,
                at=self.clock(),
                reason=_reason(exc, REASON_PROBE_FAILED),
                message=message,
                instance=instance,
                stderr_tail=tail,
            )
            return message
        flight.phase = "running"
        self.tracker.probe_succeeded(instance, at=self.clock())
        return None

    def _runtime(self, kind: RuntimeKind) -> Runtime:
        try:
            return self.runtimes[kind]
        except KeyError:
            raise RuntimeFailure(f"the {kind.value} runtime is not enabled here") from None


@dataclass(slots=True)
class _Flight:
    """One server's actions under way (mutable, the executor's own)."""

    server: str
    actions: tuple[Action, ...]
    task: asyncio.Task[list[Outcome]] | None = None
    #: ``running``, ``queued`` (for a start slot), ``starting``, ``probing`` or
    #: ``handing over``.
    phase: str = "running"
    #: The instance this flight started and has not probed yet (stopped if cancelled).
    started: Instance | None = None
    #: The old instance of a replace while routers let it go (stopped if cancelled).
    retiring: Instance | None = None
    cancelling: bool = False
    #: Cancelled because the controller goes away: leave what it started running.
    abandon: bool = False


def _reason(exc: BaseException, default: str) -> str:
    """The status reason of a failure: the runtime's own (``RuntimeFailure.reason``), else
    ``default``."""
    return exc.reason if isinstance(exc, RuntimeFailure) else default


def _text(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, TimeoutError) and not text:
        return "timed out"
    return text or type(exc).__name__
