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
    task.cancel(); await controller.aclose()      # stops process children, not containers

After every pass the controller publishes, into the ``EndpointTable``, one
``EndpointEntry(spec, endpoint)`` per Ready server (remote servers too, as
``HttpEndpoint``) and the set of on-demand servers (``publish_on_demand``:
the router lists them while they are cold, and ``table.demand`` wakes this
loop when a call wants one; before each plan the loop awaits
``table.demand.refresh()``, which asks a router in another process over the
demand socket, ``reconcile.demand_server``), then writes the status file
(``statusfile``), with what is still under way as ``pending``.

A replacement does not wait for the end of a pass to be published: as soon
as the new instance answers its probe, the executor's ``handover`` publishes
its endpoint in place of the old one, then waits until every router has let
the old instance go (``EndpointTable.wait_released``: the router attaches
the new instance, switches to it and drains the old one's calls; at most
``release_timeout``, or the server's call timeout if longer), and only then
is the old instance stopped. Until that flight has landed and been
observed, each pass publishes the new endpoint for the server, whatever an
older observation says.

Why it is built this way:

- **Level-triggered.** Every pass reads the files, observes every runtime,
  plans purely and applies. File changes (watchfiles, debounced ~200 ms),
  runtime events (a child exits, a container dies) and a periodic resync
  (30 s) only wake the loop; a missed event costs latency, never
  correctness. A pass repeats observe-plan-apply (at most ``max_rounds``
  times) until the plan is empty, so one pass converges what it can.
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
  nothing is touched.
- **One controller per fleet.** An exclusive lock on
  ``.state/controller.lock`` (released by the kernel even on SIGKILL), so
  two controllers never start two copies of a server. Taking it makes
  ``.state`` private first (0700, its files 0600: ``private_files``).
- **Secrets masked everywhere.** The log redactor is fed every value of
  secrets.env and of the servers' secrets at each load, a failed one too,
  so a value pasted into another file is masked in the error quoting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from mcp_fleet import conventions
from mcp_fleet.config.resolve import current_catalogs
from mcp_fleet.endpoints import EndpointEntry, EndpointTable, HttpEndpoint
from mcp_fleet.errors import Diagnostic, FleetConfigError, RuntimeFailure, Severity
from mcp_fleet.logsetup import log_event, redactor
from mcp_fleet.model import DesiredState, FleetFiles, RuntimeKind, ServerSpec, frozen_map
from mcp_fleet.private_files import FILE_MODE, make_private
from mcp_fleet.reconcile.actions import Plan, Replace
from mcp_fleet.reconcile.backoff import BackoffPolicy
from mcp_fleet.reconcile.executor import Executor
from mcp_fleet.reconcile.memory import InFlight, Memory, Tracker
from mcp_fleet.reconcile.plan import plan, prepare
from mcp_fleet.reconcile.snapshot import (
    ServerStatus,
    StatusSnapshot,
    pending_lines,
    server_statuses,
)
from mcp_fleet.reconcile.statusfile import status_path, write_status
from mcp_fleet.runtimes.base import Instance, ObservedState, Runtime
from mcp_fleet.runtimes.select import place
from mcp_fleet.status import REASON_EXITED, ServerState

log = logging.getLogger("mcp_fleet.controller")

Loader = Callable[[FleetFiles], DesiredState]
LOCK_FILE = "controller.lock"
#: Reason shown for process servers once their controller has stopped.
REASON_CONTROLLER_EXITED = "ControllerExited"
#: Under the state directory: the router's cached lists of on-demand servers.
ON_DEMAND_CACHE_DIR = "cache"
#: While actions are in flight, how long a woken loop waits to take more landings at once.
LANDING_BATCH_SECONDS = 0.025
#: At most this long (or the server's call timeout, if longer) a replaced server's old
#: instance keeps running after the new one is published, while routers drain it.
DEFAULT_RELEASE_TIMEOUT_SECONDS = 30.0
#: A secrets.env larger than this is not read for masking (the loader refuses it anyway).
_SECRETS_MASK_READ_LIMIT = 1024 * 1024


def default_loader(files: FleetFiles) -> DesiredState:
    from mcp_fleet.config import load_fleet

    return load_fleet(files)


class ControllerBusy(RuntimeFailure):
    """Another controller already manages this fleet directory."""


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
    ) -> None:
        self.files = files
        self.runtimes = dict(runtimes)
        self.endpoints = endpoints
        self.preferred_runtime = preferred_runtime
        self.resync_seconds = resync_seconds
        self.watch = watch
        self.debounce_ms = debounce_ms
        self.loader = loader
        self.write_status_file = write_status_file
        self.lock = lock
        self.max_rounds = max_rounds
        self.clock = clock
        self.release_timeout = release_timeout
        self.tracker = Tracker(backoff)
        self.executor = Executor(
            self.runtimes, self.tracker, concurrency=start_concurrency,
            probe_timeout=probe_timeout, clock=clock, retire=endpoints.demand.retire_async,
            on_change=self.wake, handover=self._hand_over,
        )  # fmt: skip
        #: Replaced servers whose new endpoint is out before their flight has landed.
        self._handovers: dict[str, EndpointEntry] = {}
        endpoints.demand.subscribe(self.wake)
        self._desired: DesiredState | None = None
        self._unsupported: Mapping[str, str] = frozen_map()
        self._file_errors: tuple[Diagnostic, ...] = ()
        self._runtime_errors: dict[str, str] = {}
        self._snapshot = StatusSnapshot(
            fleet=None, home=str(files.home), updated_at=clock(),
            runtime=preferred_runtime.value, controller_pid=os.getpid(),
        )  # fmt: skip
        #: The last snapshot whose changes were logged (passes log once, at their end).
        self._logged = self._snapshot
        self._wake = asyncio.Event()
        self._wake_at: float | None = None
        self._pass_lock = asyncio.Lock()
        self._lock_file: IO[str] | None = None
        #: A pass has run (so ``aclose`` has a status worth writing).
        self._ran = False
        #: ``run`` is looping: a pass does not wait for the actions it launched.
        self._looping = False
        #: What was in flight when the last observation was taken (see ``_observe``).
        self._observed_in_flight: Mapping[str, InFlight] = frozen_map()
        self._signature: tuple[tuple[str, int, int, int], ...] = ()
        self._loaded_at = float("-inf")

    # Public API.

    @property
    def desired(self) -> DesiredState | None:
        """The last DesiredState that loaded (kept while the files are broken)."""
        return self._desired

    @property
    def file_errors(self) -> tuple[Diagnostic, ...]:
        """Why the fleet files did not load at the last read (empty when they did)."""
        return self._file_errors

    def status(self) -> StatusSnapshot:
        """The status as of the last pass."""
        return self._snapshot

    def wake(self) -> None:
        """Ask for a pass as soon as possible."""
        self._wake.set()

    async def preview(self) -> Plan:
        """The plan a pass would apply now, without applying it (``--dry-run``)."""
        desired = await self._load()
        observed = await self._observe()
        await self._refresh_demand()
        return plan(desired, observed, self._memory())

    async def reconcile_once(self) -> StatusSnapshot:
        """One pass: load, observe, plan, apply (repeated until nothing is left to do).

        Inside ``run`` the pass returns without waiting for the actions it
        launched (their landing wakes the loop). Called on its own (``--once``,
        tests) it waits for them and passes again, at most ``max_rounds``
        times, so what it returns is converged as far as one call can.
        """
        self._acquire_lock()
        self._ran = True
        if self._looping:
            return await self._pass()
        self._wake.clear()  # nobody waits on it here; landings set it
        snapshot = await self._pass()
        for _ in range(self.max_rounds):
            # Done once nothing flies, nothing flew when the runtimes were last
            # listed (that listing may miss what a flight did) and nothing is left.
            if not (self.executor.in_flight or self._observed_in_flight or snapshot.pending):
                break
            await self.executor.settle()
            self._wake.clear()
            snapshot = await self._pass()
        return snapshot

    async def _pass(self) -> StatusSnapshot:
        async with self._pass_lock:
            desired = await self._load()
            observed = await self._observe()
            memory = self._memory()
            current = Plan()
            for round_ in range(self.max_rounds):
                await self._note_exits(observed)
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
                observed = await self._observe()
            self._wake_at = current.wake_at
            snapshot = self._build_snapshot(desired, observed, memory, current)
            self._log_changes(self._logged, snapshot)
            self._logged = snapshot
            # Endpoints first: a call waiting for an on-demand server goes on at once,
            # and status() still never says Ready before the endpoint is out.
            await self._publish(desired, observed, snapshot)
            await self._set_status(snapshot)
            return snapshot

    async def run(self) -> None:
        """Reconcile until cancelled, woken by files, runtime events, landings of
        actions in flight and the resync timer."""
        self._acquire_lock()
        self._looping = True
        stop = asyncio.Event()
        helpers = [
            asyncio.create_task(self._follow_events(r), name=f"events:{k.value}")
            for k, r in self.runtimes.items()
        ]
        if self.watch:
            helpers.append(asyncio.create_task(self._watch_files(stop), name="watch-files"))
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
        await self.executor.aclose()
        process = self.runtimes.get(RuntimeKind.PROCESS)
        stop_all = getattr(process, "stop_all", None)
        stopped = stop_processes and stop_all is not None
        if stop_all is not None and stopped:
            await stop_all()
        await self.endpoints.publish({})
        await self.endpoints.publish_on_demand({})
        for runtime in self.runtimes.values():
            with contextlib.suppress(Exception):
                await runtime.aclose()
        # A controller that only claimed the lock (``up`` failing to bind) leaves no status.
        if self.write_status_file and self._lock_file is not None and self._ran:
            servers = tuple(
                replace(s, state=ServerState.STOPPED, reason=REASON_CONTROLLER_EXITED,
                        message="process servers end with their controller", instance=None,
                        started_at=None)
                if stopped and s.runtime == RuntimeKind.PROCESS.value else s
                for s in self._snapshot.servers
            )  # fmt: skip
            final = replace(self._snapshot, controller_pid=None, servers=servers)
            self._snapshot = final
            with contextlib.suppress(OSError):
                write_status(self.status_file, final)
        self._release_lock()

    @property
    def status_file(self) -> Path:
        return status_path(self.files.state_dir)

    # One pass, step by step.

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
            unsupported=self._unsupported,
            demanded=frozenset(s for s, a in activity.items() if a.waiting),
            busy=frozenset(s for s, a in activity.items() if a.waiting or a.inflight),
            last_active={s: now - a.idle_seconds for s, a in activity.items()},
            observed_in_flight=self._observed_in_flight,
        )  # fmt: skip

    async def _load(self) -> DesiredState | None:
        """Read the fleet files (in a thread: parsing YAML must not stall a router on this loop).

        Skipped when no file changed since the last read (same size, mtime and
        inode), unless a resync period has passed: a pass woken by a server
        exit does not re-parse a hundred catalog entries.
        """
        signature = _signature(self.files)
        fresh = self.clock() - self._loaded_at < self.resync_seconds
        if signature == self._signature and fresh and (self._desired or self._file_errors):
            return self._desired
        self._signature, self._loaded_at = signature, self.clock()
        try:
            desired = await asyncio.to_thread(self.loader, self.files)
        except FleetConfigError as exc:
            await self._mask_secrets(self._desired)
            self._set_file_errors(exc.diagnostics)
            return self._desired
        except Exception as exc:  # a loader bug must not tear the fleet down either
            await self._mask_secrets(self._desired)
            log.exception("loading the fleet files failed")
            self._set_file_errors((Diagnostic(f"cannot load the fleet: {exc}"),))
            return self._desired
        if self._file_errors:
            log_event(log, logging.INFO, "fleet files valid again", home=str(self.files.home))
        self._file_errors = ()
        await self._mask_secrets(desired)
        if desired is not self._desired:
            self._unsupported = self._unsupported_by_runtimes(desired)
        self._desired = desired
        return desired

    async def _mask_secrets(self, desired: DesiredState | None) -> None:
        """Feed the redactor every secret value: of ``desired``'s servers and of secrets.env.

        All of secrets.env, not only the values servers use, and on a failed
        load too: a value pasted into registry.yaml is quoted by the error
        about it (log, status file, status page) before any load succeeds.
        """
        values = set(await asyncio.to_thread(_secrets_file_values, self.files))
        if desired is not None:
            values.update(v for spec in desired.servers.values() for v in spec.secret_env.values())
        redactor().set_secrets(values)

    def _unsupported_by_runtimes(self, desired: DesiredState) -> Mapping[str, str]:
        """Ask each enabled server's runtime whether it can run the spec at all.

        Done once per loaded DesiredState, before any start, so a spec the
        runtime refuses (a volume Docker cannot mount...) is Failed at once
        instead of being started, refused and retried with backoff forever.
        """
        available = frozenset(self.runtimes)
        out: dict[str, str] = {}
        for name, spec in desired.servers.items():
            if not spec.enabled or spec.entry is None:
                continue
            kind = place(spec, preferred=self.preferred_runtime, available=available).kind
            runtime = self.runtimes.get(kind) if kind is not None else None
            if runtime is None:
                continue
            try:
                why = runtime.unsupported_reason(spec)
            except Exception:  # a runtime bug must not stop the others from loading
                log.exception("checking %s against the %s runtime failed", name, kind)
                continue
            if why:
                out[name] = why.removeprefix(f"{name}: ")
        return frozen_map(out)

    async def _set_status(self, snapshot: StatusSnapshot) -> None:
        if self.write_status_file:
            await asyncio.to_thread(write_status, self.status_file, snapshot)
        self._snapshot = snapshot  # after the file: status() is never ahead of it

    def _set_file_errors(self, diagnostics: tuple[Diagnostic, ...]) -> None:
        if diagnostics != self._file_errors:
            for diag in diagnostics:
                log_event(
                    log,
                    logging.ERROR,
                    "fleet file invalid",
                    error=str(diag),
                    keeping="last good state" if self._desired else "nothing",
                )
        self._file_errors = diagnostics or (Diagnostic("the fleet files do not load"),)

    async def _observe(self) -> ObservedState:
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
        self._observed_in_flight = in_flight
        return ObservedState(tuple(instances), tuple(unavailable))

    async def _note_exits(self, observed: ObservedState) -> None:
        """Count instances of ours that exited or vanished as failures (backoff)."""
        now = self.clock()
        busy = self._observed_in_flight.keys()
        for inst in self.tracker.unexpected_exits(observed, busy=busy):
            tail: tuple[str, ...] = ()
            runtime = self.runtimes.get(inst.runtime)
            if runtime is not None:
                with contextlib.suppress(RuntimeFailure, OSError):
                    tail = tuple(await runtime.logs(inst, tail=20))
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

    def _build_snapshot(
        self, desired: DesiredState | None, observed: ObservedState, memory: Memory, rest: Plan
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
            file_errors=self._file_errors,
            warnings=tuple(
                d for d in (desired.diagnostics if desired else ())
                if d.severity is Severity.WARNING
            ),
            pending=pending_lines(rest, now),
            runtime_errors=dict(self._runtime_errors),
        )  # fmt: skip

    async def _publish(
        self, desired: DesiredState | None, observed: ObservedState, snapshot: StatusSnapshot
    ) -> None:
        if desired is None:
            return
        prepared = prepare(desired, self._memory())
        await self.endpoints.publish_on_demand(
            {
                name: spec
                for name, spec in desired.servers.items()
                if spec.enabled and prepared[name].on_demand and prepared[name].problem is None
            },
            cache_dir=self.files.state_dir / ON_DEMAND_CACHE_DIR,
        )
        by_id = {i.instance_id: i for i in observed.instances}
        entries: dict[str, EndpointEntry] = {}
        for st in snapshot.servers:
            spec = desired.servers.get(st.name)
            if spec is None or st.state is not ServerState.READY:
                continue
            if st.runtime == RuntimeKind.REMOTE.value:
                remote = spec.entry.remote if spec.entry else None
                if remote is not None:
                    entries[st.name] = EndpointEntry(spec, HttpEndpoint(
                        server=st.name, instance_id=f"remote:{st.config_hash}", url=remote.url,
                        transport=remote.transport_type, headers=remote.headers,
                    ))  # fmt: skip
                continue
            inst = by_id.get(st.instance or "")
            runtime = self.runtimes.get(inst.runtime) if inst else None
            if inst is None or runtime is None:
                continue
            try:
                entries[st.name] = EndpointEntry(spec, await runtime.endpoint(inst))
            except (RuntimeFailure, OSError) as exc:
                log_event(log, logging.WARNING, "no endpoint", server=st.name, error=str(exc))
        self._hand_overs_into(desired, entries)
        await self.endpoints.publish(entries)

    def _hand_overs_into(self, desired: DesiredState, entries: dict[str, EndpointEntry]) -> None:
        """Keep the endpoint of a replacement published early until its flight has landed
        and an observation since has seen the outcome (an older one may still name the
        old instance, being stopped)."""
        flying = set(self.executor.in_flight) | set(self._observed_in_flight)
        for name, entry in list(self._handovers.items()):
            spec = desired.servers.get(name)
            if name not in flying:
                del self._handovers[name]
            elif spec is not None and spec.enabled:
                entries[name] = entry if entry.spec == spec else EndpointEntry(spec, entry.endpoint)

    async def _hand_over(self, action: Replace, new: Instance) -> None:
        """The executor's ``handover``: the new instance of ``action`` is Ready; publish it
        now and wait (bounded) until no router uses the old one any more."""
        server, old = action.server, action.old
        runtime = self.runtimes.get(new.runtime)
        try:
            endpoint = await runtime.endpoint(new) if runtime is not None else None
        except (RuntimeFailure, OSError) as exc:
            log_event(log, logging.WARNING, "no endpoint", server=server, error=str(exc))
            endpoint = None
        if endpoint is not None:
            desired = self._desired.servers.get(server) if self._desired else None
            spec = desired if desired is not None and desired.enabled else action.spec
            entry = EndpointEntry(spec, endpoint)
            self._handovers[server] = entry
            await self.endpoints.publish({**self.endpoints.snapshot(), server: entry})
        remote = self.endpoints.demand.remote
        if remote is None and not self.endpoints.held(server, old.instance_id):
            return  # no router uses it: nothing to wait for
        timeout = max(self.release_timeout, _call_timeout(action.spec))
        started = time.monotonic()
        released = await self.endpoints.wait_released(server, old.instance_id, timeout=timeout)
        log_event(
            log, logging.INFO if released else logging.WARNING,
            "old instance released" if released else "old instance still in use; stopping it",
            server=server, instance=old.instance_id,
            seconds=round(time.monotonic() - started, 3),
        )  # fmt: skip

    def _log_changes(self, before: StatusSnapshot, after: StatusSnapshot) -> None:
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

    # Waking up.

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

    async def _follow_events(self, runtime: Runtime) -> None:
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
                self._wake.set()
        except (RuntimeFailure, OSError) as exc:
            log_event(log, logging.WARNING, "runtime events ended", error=str(exc))

    async def _watch_files(self, stop: asyncio.Event) -> None:
        import watchfiles

        roots, wanted = _watch_targets(self.files)
        if not roots:
            return
        state_dir = str(self.files.state_dir.resolve())

        def relevant(_change: Any, path: str) -> bool:
            if path.startswith(state_dir):
                return False
            return any(path == w or path.startswith(w + os.sep) for w in wanted)

        async for changes in watchfiles.awatch(
            *roots, watch_filter=relevant, debounce=self.debounce_ms, step=50,
            stop_event=stop, rust_timeout=500,
        ):  # fmt: skip
            log_event(
                log,
                logging.INFO,
                "fleet files changed",
                files=sorted({Path(p).name for _, p in changes}),
            )
            self._wake.set()

    # The lock.

    def claim(self) -> None:
        """Take the fleet's controller lock now rather than in ``run``.

        ``mcp-fleet up`` calls it before it starts serving, so a second ``up``
        on the same fleet fails at once with ``ControllerBusy`` instead of
        serving an empty fleet. Idempotent; ``aclose`` releases it.
        """
        self._acquire_lock()

    def _acquire_lock(self) -> None:
        if not self.lock or self._lock_file is not None:
            return
        make_private(self.files.state_dir)  # also what an older version left readable
        path = self.files.state_dir / LOCK_FILE
        handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, FILE_MODE), "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise ControllerBusy(
                f"another controller (pid {holder}) already manages {self.files.home}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                self._lock_file.close()
            self._lock_file = None


def _secrets_file_values(files: FleetFiles) -> list[str]:
    """The values of secrets.env, to mask them (none when it is missing, huge or broken)."""
    from mcp_fleet.config.secrets import parse_secrets

    try:
        if files.secrets.stat().st_size > _SECRETS_MASK_READ_LIMIT:
            return []
        text = files.secrets.read_text(encoding="utf-8-sig")
        return list(parse_secrets(text, files.secrets).values())
    except (OSError, UnicodeDecodeError, ValueError, FleetConfigError):
        return []


def _call_timeout(spec: ServerSpec) -> float:
    """The server's own call timeout, when its catalog entry sets one (else 0)."""
    entry = spec.entry
    return float(entry.call_timeout_seconds or 0) if entry is not None else 0.0


def _failing(desired: DesiredState, memory: Memory) -> set[str]:
    prepared = prepare(desired, memory)
    return {n for n, s in desired.servers.items() if s.enabled and prepared[n].problem is not None}


def _signature(files: FleetFiles) -> tuple[tuple[str, int, int, int], ...]:
    """Size, mtime and inode of every fleet file: a cheap "did anything change"."""
    out = []
    for path in (
        *current_catalogs(files),
        files.registry,
        files.config,
        files.tools,
        files.secrets,
    ):
        try:
            st = path.stat()
        except OSError:
            out.append((str(path), -1, -1, -1))
            continue
        out.append((str(path), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def _watch_targets(files: FleetFiles) -> tuple[list[str], list[str]]:
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
