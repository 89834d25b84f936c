"""The ``Controller``: a level-triggered reconcile loop over one fleet directory.

API (what ``mcp-fleet controller``, ``mcp-fleet up`` and the router use)::

    table = EndpointTable()
    runtimes = build_runtimes(RuntimeKind.PROCESS, fleet=fleet_name(files.home),
                              state_dir=files.state_dir)
    controller = Controller(files, runtimes, table, resync_seconds=30.0, watch=True)
    snapshot = await controller.reconcile_once()  # converge once, return the status
    task = asyncio.create_task(controller.run())  # keep converging until cancelled
    controller.status()                           # the latest StatusSnapshot
    controller.wake()                             # ask for a pass now
    controller.after_pass.append(hook)            # hook(PassResult) after every pass
    task.cancel(); await controller.aclose()      # stops process children, not containers

One pass reads the fleet files (``fleet_reader``), observes every runtime
(``observing``: exits count as failures, for the backoff), plans (``plan``,
pure) and launches the plan (``executor``); then it publishes, into the
``EndpointTable``, an endpoint per Ready server and the set of on-demand
servers (``publishing``, which also hands a replaced server over to its
new instance before the old one stops), writes the status file
(``statusfile``, with what is still under way as ``pending``) and calls the
after-pass hooks. Before each plan the loop awaits
``table.demand.refresh()``, which asks a router in another process over the
demand socket (``reconcile.demand_server``); ``table.demand`` wakes the
loop when a call wants a cold on-demand server.

Two hooks let a caller add to a pass without knowing its insides (``up``
adds metrics, its start-up signal and the router's session counts):
``amend_status`` rewrites each snapshot before it is stored and written
(the last one, left by ``aclose``, too); every ``after_pass`` callable then
gets a ``PassResult``: the snapshot stored, or the error that ended the
pass, and how long it took.

Why it is built this way:

- **Level-triggered.** Every pass reads the files, observes every runtime,
  plans purely and applies. File changes (watchfiles, debounced ~200 ms),
  runtime events (a child exits, a container dies) and a periodic resync
  (30 s) only wake the loop (``wakeups``); a missed event costs latency,
  never correctness. A pass repeats observe-plan-apply (at most
  ``max_rounds`` times) until the plan is empty, so one pass converges
  what it can.
- **A slow server holds nothing back.** Applying a plan launches each
  server's actions in the background (``executor``) and a pass never waits
  for them: a server whose first ``initialize`` takes the whole probe
  timeout is shown Starting while edits of the files, restarts of the
  others and status writes go on; the planner leaves a server in flight
  alone, or cancels its flight when it was disabled or changed. Each
  landing wakes the loop, which observes and plans again. ``run`` works
  that way; ``reconcile_once`` outside ``run`` (``--once``, tests) also
  waits for what it launched and passes again, so it returns converged.
- **Last good state.** When a file breaks, the error is reported in the
  status (file, line, field) and the loop keeps reconciling the last
  DesiredState that loaded; fixing the file resumes. Before any good load,
  nothing is touched (``fleet_reader``).
- **One controller per fleet.** An exclusive lock on
  ``.state/controller.lock`` (``lock``: released by the kernel even on
  SIGKILL), so two controllers never start two copies of a server.
- **Secrets masked everywhere.** Every value of secrets.env and of the
  servers' secrets is masked in logs and status (``fleet_reader``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from mcp_fleet import conventions
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.errors import Diagnostic, Severity
from mcp_fleet.logsetup import log_event
from mcp_fleet.model import DesiredState, FleetFiles, RuntimeKind
from mcp_fleet.reconcile.actions import Plan
from mcp_fleet.reconcile.backoff import BackoffPolicy
from mcp_fleet.reconcile.executor import Executor
from mcp_fleet.reconcile.fleet_reader import FleetReader, Loader, default_loader
from mcp_fleet.reconcile.lock import LOCK_FILE, ControllerBusy, ControllerLock
from mcp_fleet.reconcile.memory import Memory, Tracker
from mcp_fleet.reconcile.observing import Observer
from mcp_fleet.reconcile.plan import plan, prepare
from mcp_fleet.reconcile.publishing import (
    DEFAULT_RELEASE_TIMEOUT_SECONDS,
    ON_DEMAND_CACHE_DIR,
    Publisher,
)
from mcp_fleet.reconcile.snapshot import (
    ServerStatus,
    StatusSnapshot,
    pending_lines,
    server_statuses,
)
from mcp_fleet.reconcile.statusfile import status_path, write_status
from mcp_fleet.reconcile.wakeups import follow_events, watch_files
from mcp_fleet.runtimes.base import ObservedState, Runtime
from mcp_fleet.status import ServerState

__all__ = [
    "DEFAULT_RELEASE_TIMEOUT_SECONDS",
    "LANDING_BATCH_SECONDS",
    "LOCK_FILE",
    "ON_DEMAND_CACHE_DIR",
    "REASON_CONTROLLER_EXITED",
    "AfterPass",
    "Controller",
    "ControllerBusy",
    "Loader",
    "PassResult",
    "StatusAmender",
    "default_loader",
]

log = logging.getLogger("mcp_fleet.controller")

#: Reason shown for process servers once their controller has stopped.
REASON_CONTROLLER_EXITED = "ControllerExited"
#: While actions are in flight, how long a woken loop waits to take more landings at once.
LANDING_BATCH_SECONDS = 0.025


@dataclass(frozen=True, slots=True)
class PassResult:
    """What one pass came to, as the ``after_pass`` hooks see it."""

    #: The snapshot stored and written (amended); None when the pass failed.
    snapshot: StatusSnapshot | None
    #: How long the pass took, waiting for a pass under way included.
    seconds: float
    #: What ended the pass, when it failed (the loop logs it and passes again).
    error: Exception | None = None


#: Called after every pass, in the loop's task; it must not block.
AfterPass = Callable[[PassResult], None]
#: Rewrites each snapshot before it is stored and written (what ``status()`` returns).
StatusAmender = Callable[[StatusSnapshot], StatusSnapshot]


class Controller:
    """Keeps the servers of one fleet directory converged (see the module docstring)."""

    def __init__(
        self,
        files: FleetFiles,
        runtimes: Mapping[RuntimeKind, Runtime],
        endpoints: EndpointTable,
        *,
        preferred_runtime: RuntimeKind = RuntimeKind.PROCESS,
        resync_seconds: float = conventions.DEFAULT_RESYNC_SECONDS,
        watch: bool = True,
        debounce_ms: int = conventions.WATCH_DEBOUNCE_MS,
        start_concurrency: int = conventions.DEFAULT_START_CONCURRENCY,
        probe_timeout: float = conventions.DEFAULT_PROBE_TIMEOUT_SECONDS,
        backoff: BackoffPolicy | None = None,
        loader: Loader = default_loader,
        write_status_file: bool = True,
        lock: bool = True,
        max_rounds: int = 5,
        clock: Callable[[], float] = time.time,
        release_timeout: float = DEFAULT_RELEASE_TIMEOUT_SECONDS,
        after_pass: Iterable[AfterPass] = (),
        amend_status: StatusAmender | None = None,
    ) -> None:
        self.files = files
        self.runtimes = dict(runtimes)
        self.endpoints = endpoints
        self.preferred_runtime = preferred_runtime
        self.resync_seconds = resync_seconds
        self.watch = watch
        self.debounce_ms = debounce_ms
        self.write_status_file = write_status_file
        self.max_rounds = max_rounds
        self.clock = clock
        #: Called with each pass's ``PassResult`` (see the module docstring).
        self.after_pass: list[AfterPass] = list(after_pass)
        #: Applied to each snapshot before it is stored and written.
        self.amend_status = amend_status
        self.reader = FleetReader(
            files, self.runtimes, preferred_runtime=preferred_runtime, loader=loader,
            resync_seconds=resync_seconds, clock=clock,
        )  # fmt: skip
        self.publisher = Publisher(
            endpoints, self.runtimes, state_dir=files.state_dir, desired=lambda: self.desired,
            memory=self._memory, flying=self._flying, release_timeout=release_timeout,
        )  # fmt: skip
        self.tracker = Tracker(backoff)
        self.observer = Observer(self.runtimes, self.tracker, clock=clock)
        self.executor = Executor(
            self.runtimes, self.tracker, concurrency=start_concurrency,
            probe_timeout=probe_timeout, clock=clock, retire=endpoints.demand.retire_async,
            on_change=self.wake, handover=self.publisher.hand_over,
        )  # fmt: skip
        endpoints.demand.subscribe(self.wake)
        self._lock = ControllerLock(files.state_dir, home=files.home) if lock else None
        self._snapshot = StatusSnapshot(
            fleet=None, home=str(files.home), updated_at=clock(),
            runtime=preferred_runtime.value, controller_pid=os.getpid(),
        )  # fmt: skip
        #: The last snapshot whose changes were logged (passes log once, at their end).
        self._logged = self._snapshot
        self._wake = asyncio.Event()
        self._wake_at: float | None = None
        self._pass_lock = asyncio.Lock()
        #: A pass has run (so ``aclose`` has a status worth writing).
        self._ran = False
        #: ``run`` is looping: a pass does not wait for the actions it launched.
        self._looping = False

    # Public API.

    @property
    def desired(self) -> DesiredState | None:
        """The last DesiredState that loaded (kept while the files are broken)."""
        return self.reader.desired

    @property
    def file_errors(self) -> tuple[Diagnostic, ...]:
        """Why the fleet files did not load at the last read (empty when they did)."""
        return self.reader.file_errors

    @property
    def status_file(self) -> Path:
        return status_path(self.files.state_dir)

    def status(self) -> StatusSnapshot:
        """The status as of the last pass."""
        return self._snapshot

    def wake(self) -> None:
        """Ask for a pass as soon as possible."""
        self._wake.set()

    def claim(self) -> None:
        """Take the fleet's controller lock now rather than in ``run``.

        ``mcp-fleet up`` calls it before it starts serving, so a second ``up``
        on the same fleet fails at once with ``ControllerBusy`` instead of
        serving an empty fleet. Idempotent; ``aclose`` releases it.
        """
        if self._lock is not None:
            self._lock.acquire()

    async def preview(self) -> Plan:
        """The plan a pass would apply now, without applying it (``--dry-run``)."""
        desired = await self.reader.load()
        observed = await self.observer.observe()
        await self._refresh_demand()
        return plan(desired, observed, self._memory())

    async def reconcile_once(self) -> StatusSnapshot:
        """One pass: load, observe, plan, apply (repeated until nothing is left to do).

        Inside ``run`` the pass returns without waiting for the actions it
        launched (their landing wakes the loop). Called on its own (``--once``,
        tests) it waits for them and passes again, at most ``max_rounds``
        times, so what it returns is converged as far as one call can.
        """
        self.claim()
        self._ran = True
        if self._looping:
            return await self._pass()
        self._wake.clear()  # nobody waits on it here; landings set it
        snapshot = await self._pass()
        for _ in range(self.max_rounds):
            # Done once nothing flies, nothing flew when the runtimes were last
            # listed (that listing may miss what a flight did) and nothing is left.
            if not (self.executor.in_flight or self.observer.in_flight or snapshot.pending):
                break
            await self.executor.settle()
            self._wake.clear()
            snapshot = await self._pass()
        return snapshot

    async def run(self) -> None:
        """Reconcile until cancelled, woken by files, runtime events, landings of
        actions in flight and the resync timer."""
        self.claim()
        self._looping = True
        stop = asyncio.Event()
        helpers = [
            asyncio.create_task(follow_events(r, self.wake), name=f"events:{k.value}")
            for k, r in self.runtimes.items()
        ]
        if self.watch:
            watcher = watch_files(self.files, self.wake, stop, debounce_ms=self.debounce_ms)
            helpers.append(asyncio.create_task(watcher, name="watch-files"))
        try:
            while True:
                self._wake.clear()
                try:
                    await self.reconcile_once()
                except Exception:  # a bug must not end the loop; the next pass retries
                    log.exception("reconcile pass failed")
                await self._sleep()
                if self.executor.in_flight:
                    # Landings come in bursts while many servers start: a moment's
                    # wait lets one pass take several (a hundred starts: ~60 passes
                    # without it, half the controller's CPU).
                    await asyncio.sleep(LANDING_BATCH_SECONDS)
        finally:
            self._looping = False
            stop.set()
            for task in helpers:
                task.cancel()
            if helpers:  # bounded: a stuck watcher thread must not hold up shutdown
                _, stuck = await asyncio.wait(helpers, timeout=5.0)
                for task in stuck:
                    log_event(log, logging.WARNING, "helper did not stop", task=task.get_name())

    async def aclose(self, *, stop_processes: bool = True) -> None:
        """Release the runtimes and the lock; process children are stopped (they cannot
        outlive the controller anyway), containers keep running; actions in flight
        are cut short (a container being probed is left for a successor to adopt)."""
        if self._ran and self.amend_status is not None:  # the last status, amended too
            self._snapshot = self.amend_status(self._snapshot)
        await self.executor.aclose()
        process = self.runtimes.get(RuntimeKind.PROCESS)
        stop_all = getattr(process, "stop_all", None)
        stopped = stop_processes and stop_all is not None
        if stop_all is not None and stopped:
            await stop_all()
        await self.publisher.withdraw()
        for runtime in self.runtimes.values():
            with contextlib.suppress(Exception):
                await runtime.aclose()
        # A controller that only claimed the lock (``up`` failing to bind) leaves no status.
        if self.write_status_file and self._lock is not None and self._lock.held and self._ran:
            final = _final_status(self._snapshot, processes_stopped=stopped)
            self._snapshot = final
            with contextlib.suppress(OSError):
                write_status(self.status_file, final)
        if self._lock is not None:
            self._lock.release()

    # One pass, step by step.

    async def _pass(self) -> StatusSnapshot:
        """One pass, then the ``after_pass`` hooks (told of a failed pass too)."""
        started = time.perf_counter()
        try:
            async with self._pass_lock:
                snapshot = await self._converge()
        except Exception as exc:
            self._report(PassResult(None, time.perf_counter() - started, exc))
            raise
        self._report(PassResult(snapshot, time.perf_counter() - started))
        return snapshot

    async def _converge(self) -> StatusSnapshot:
        """Load, then observe-plan-launch until the plan is empty; publish and store."""
        desired = await self.reader.load()
        observed = await self.observer.observe()
        memory = self._memory()
        current = Plan()
        for round_ in range(self.max_rounds):
            await self.observer.note_exits(observed)
            await self._refresh_demand()
            memory = self._memory()
            if desired is not None:
                self.tracker.clear_marks(_failing(desired, memory))
            current = plan(desired, observed, memory)
            if not current:
                break
            if round_ and self._wake.is_set():
                # Woken during the last round (a file edit, an exit, a landing):
                # end the pass so the next one re-reads the files first.
                break
            await self.executor.launch(current)
            observed = await self.observer.observe()
        self._wake_at = current.wake_at
        snapshot = self._build_snapshot(desired, observed, current)
        _log_changes(self._logged, snapshot)
        self._logged = snapshot
        # Endpoints first: a call waiting for an on-demand server goes on at once,
        # and status() still never says Ready before the endpoint is out.
        await self.publisher.publish(desired, observed, snapshot)
        await self._set_status(snapshot)
        return self._snapshot

    def _report(self, result: PassResult) -> None:
        for hook in list(self.after_pass):
            try:
                hook(result)
            except Exception:  # a hook's bug must not stop the loop
                log.exception("after-pass hook failed")

    async def _set_status(self, snapshot: StatusSnapshot) -> None:
        if self.amend_status is not None:
            snapshot = self.amend_status(snapshot)
        if self.write_status_file:
            await asyncio.to_thread(write_status, self.status_file, snapshot)
        self._snapshot = snapshot  # after the file: status() is never ahead of it

    async def _refresh_demand(self) -> None:
        """Fresh activity from a router in another process (``demand_ipc``); a no-op
        for a router in this process, whose answers are read directly."""
        try:
            await self.endpoints.demand.refresh()
        except Exception:  # a router bug must not stop the controller
            log.exception("asking the router for its activity failed")

    def _memory(self) -> Memory:
        now = self.clock()
        try:
            activity = self.endpoints.demand.activity()
        except Exception:  # a router bug must not stop the controller
            log.exception("reading the router's activity failed")
            activity = {}
        return self.tracker.memory(
            now, preferred=self.preferred_runtime, available=frozenset(self.runtimes),
            unsupported=self.reader.unsupported,
            demanded=frozenset(s for s, a in activity.items() if a.waiting),
            busy=frozenset(s for s, a in activity.items() if a.waiting or a.inflight),
            last_active={s: now - a.idle_seconds for s, a in activity.items()},
            observed_in_flight=self.observer.in_flight,
        )  # fmt: skip

    def _flying(self) -> set[str]:
        """Servers in flight now, or when the runtimes were last listed."""
        return set(self.executor.in_flight) | set(self.observer.in_flight)

    def _build_snapshot(
        self, desired: DesiredState | None, observed: ObservedState, rest: Plan
    ) -> StatusSnapshot:
        now = self._memory()
        servers = server_statuses(desired, observed, self.tracker, now)
        return StatusSnapshot(
            fleet=desired.fleet if desired else None,
            home=str(self.files.home),
            updated_at=self.clock(),
            runtime=self.preferred_runtime.value,
            controller_pid=os.getpid(),
            servers=servers,
            file_errors=self.reader.file_errors,
            warnings=tuple(
                d for d in (desired.diagnostics if desired else ())
                if d.severity is Severity.WARNING
            ),
            pending=pending_lines(rest, now),
            runtime_errors=self.observer.runtime_errors,
        )  # fmt: skip

    async def _sleep(self) -> None:
        timeout = self.resync_seconds
        if self._wake_at is not None:
            timeout = min(timeout, max(0.0, self._wake_at - self.clock()) + 0.01)
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the
        # result when a cancel (SIGTERM) and the wake-up arrive together, and the
        # cancel is lost: the loop would run on.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()


def _final_status(snapshot: StatusSnapshot, *, processes_stopped: bool) -> StatusSnapshot:
    """The status a stopped controller leaves: no pid; its process servers Stopped."""
    servers = tuple(
        replace(s, state=ServerState.STOPPED, reason=REASON_CONTROLLER_EXITED,
                message="process servers end with their controller", instance=None,
                started_at=None)
        if processes_stopped and s.runtime == RuntimeKind.PROCESS.value else s
        for s in snapshot.servers
    )  # fmt: skip
    return replace(snapshot, controller_pid=None, servers=servers)


def _failing(desired: DesiredState, memory: Memory) -> set[str]:
    prepared = prepare(desired, memory)
    return {n for n, s in desired.servers.items() if s.enabled and prepared[n].problem is not None}


def _log_changes(before: StatusSnapshot, after: StatusSnapshot) -> None:
    """Log each server whose state or reason changed between two passes, and each gone."""
    old = {s.name: s for s in before.servers}
    for st in after.servers:
        prev: ServerStatus | None = old.get(st.name)
        if prev is not None and (prev.state, prev.reason) == (st.state, st.reason):
            continue
        bad = st.state in (ServerState.FAILED, ServerState.CRASHLOOP)
        log_event(
            log,
            logging.WARNING if bad else logging.INFO,
            "state",
            server=st.name,
            **{"from": prev.state.value if prev else None},
            to=st.state.value,
            reason=st.reason,
            message=st.message or None,
            instance=st.instance,
        )
    for name in sorted(set(old) - {s.name for s in after.servers}):
        log_event(log, logging.INFO, "state", server=name, to="gone", reason="Removed")
