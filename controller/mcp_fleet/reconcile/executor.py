"""The executor: carries out a plan through the runtimes, deciding nothing.

Each action has one fixed procedure (a create is start then probe; a replace
is start, probe, then stop the old instance only if the new one is ready), and
every outcome is reported to the ``Tracker``; what to do about a failure is
the next plan's business (level-triggered: a failed probe shows up in memory,
the planner removes the instance and schedules a restart with backoff).

Actions of one server run in plan order (a leftover is removed before its
successor starts: never two copies); different servers run in parallel,
at most ``concurrency`` at a time, so one slow server does not hold up the
others. A failure of one action never stops the others.

A ``ScaleDown`` is the one conditional action: the plan was made from a
snapshot of the router's activity, and a call may have arrived since, so
the executor asks ``retire`` (the router, through ``Demand``) just before
stopping; a "no" leaves the instance running and the next plan sees why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from mcp_fleet import conventions
from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.logsetup import log_event
from mcp_fleet.model import RuntimeKind
from mcp_fleet.probe import ProbeError
from mcp_fleet.reconcile.actions import (
    Action,
    Adopt,
    Create,
    MarkFailed,
    Plan,
    Probe,
    Remove,
    Replace,
    ScaleDown,
)
from mcp_fleet.reconcile.memory import Tracker
from mcp_fleet.runtimes.base import Instance, Runtime
from mcp_fleet.status import REASON_PROBE_FAILED, REASON_RUNTIME_ERROR
from mcp_fleet.transport import StreamClosed

log = logging.getLogger("mcp_fleet.executor")

#: Errors a runtime may raise for one action; anything else is a bug and propagates.
_ACTION_ERRORS = (RuntimeFailure, ProbeError, StreamClosed, OSError, TimeoutError)
_TAIL_LINES = 20


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
    ) -> None:
        self.runtimes = runtimes
        self.retire = retire
        self.tracker = tracker
        self.probe_timeout = probe_timeout
        self.clock = clock
        self._slots = asyncio.Semaphore(concurrency)

    async def apply(self, plan: Plan) -> list[Outcome]:
        """Run every action of ``plan``; returns the outcomes in plan order."""
        groups: dict[str, list[Action]] = {}
        for action in plan.actions:
            groups.setdefault(action.server, []).append(action)
        results = await asyncio.gather(*(self._run_group(g) for g in groups.values()))
        by_action = {id(o.action): o for group in results for o in group}
        return [by_action[id(a)] for a in plan.actions]

    async def _run_group(self, actions: list[Action]) -> list[Outcome]:
        async with self._slots:
            return [await self._run(action) for action in actions]

    async def _run(self, action: Action) -> Outcome:
        log_event(
            log,
            logging.INFO,
            action.verb,
            server=action.server,
            cause=action.cause,
            resource=action.resource,
        )
        try:
            error = await self._dispatch(action)
        except _ACTION_ERRORS as exc:
            error = _text(exc)
        if error is not None:
            log_event(
                log,
                logging.WARNING,
                f"{action.verb} failed",
                server=action.server,
                resource=action.resource,
                error=error,
            )
        return Outcome(action, error is None, error)

    async def _dispatch(self, action: Action) -> str | None:
        if isinstance(action, Remove):
            await self._runtime(action.instance.runtime).stop(action.instance)
            self.tracker.stopped(action.instance)
            return None
        if isinstance(action, ScaleDown):
            agreed = True if self.retire is None else self.retire(action.server)
            if not isinstance(agreed, bool):  # a router in another process: a round trip
                agreed = await agreed
            if not agreed:
                self.tracker.in_use(action.server, at=self.clock())
                log_event(log, logging.INFO, "scale-down skipped: in use", server=action.server)
                return None
            await self._runtime(action.instance.runtime).stop(action.instance)
            self.tracker.scaled_to_zero(action.instance, at=self.clock())
            return None
        if isinstance(action, MarkFailed):
            self.tracker.mark(action.server, action.cause)
            log_event(
                log,
                logging.WARNING,
                "server failed",
                server=action.server,
                reason=action.reason,
                message=action.message,
            )
            return None
        if isinstance(action, Adopt | Probe):
            if isinstance(action, Adopt):
                self.tracker.adopted(action.instance)
            error = await self._probe(action.instance)
            if error is None:
                for old in action.retire:
                    await self._runtime(old.runtime).stop(old)
                    self.tracker.stopped(old)
            return error
        if isinstance(action, Create | Replace):
            new = await self._start(action)
            if new is None:
                return "start failed"
            error = await self._probe(new)
            if error is None and isinstance(action, Replace):
                await self._runtime(action.old.runtime).stop(action.old)
                self.tracker.stopped(action.old)
            return error
        raise AssertionError(f"unknown action {action!r}")

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

    async def _probe(self, instance: Instance) -> str | None:
        runtime = self._runtime(instance.runtime)
        try:
            await runtime.probe(instance, timeout=self.probe_timeout)
        except _ACTION_ERRORS as exc:
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
        self.tracker.probe_succeeded(instance, at=self.clock())
        return None

    def _runtime(self, kind: RuntimeKind) -> Runtime:
        try:
            return self.runtimes[kind]
        except KeyError:
            raise RuntimeFailure(f"the {kind.value} runtime is not enabled here") from None


def _reason(exc: BaseException, default: str) -> str:
    """The status reason of a failure: the runtime's own (``RuntimeFailure.reason``), else
    ``default``."""
    return exc.reason if isinstance(exc, RuntimeFailure) else default


def _text(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, TimeoutError) and not text:
        return "timed out"
    return text or type(exc).__name__
