"""Restart backoff and crash-loop detection, per server.

A server that exits (or fails its readiness probe, or cannot be started) is
restarted, but not at once forever: each failure in a row doubles the wait
(tenacity's ``wait_exponential``: ``initial``, ``2*initial``, ... capped at
``maximum``). The row ("streak") ends when an instance has stayed up for
``window`` seconds: a server that crashes once a day restarts after
``initial`` every time, one that crashes at once climbs to ``maximum``.

After ``threshold`` failures in a row the server is in ``CrashLoop``: status
shows the last exit code and the tail of its stderr, and restarts go on at
the backed-off pace (a fixed server comes back by itself; a broken one does
not spin).

Everything here is plain arithmetic on timestamps handed in by the caller, so
the planner stays pure and the tests need no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tenacity

from mcp_fleet import conventions

# tenacity's wait strategies read the attempt number from a RetryCallState.
_RETRYING = tenacity.Retrying()


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How restarts are paced; the defaults come from ``conventions``."""

    initial: float = conventions.BACKOFF_INITIAL_SECONDS
    maximum: float = conventions.BACKOFF_MAX_SECONDS
    threshold: int = conventions.CRASHLOOP_THRESHOLD
    window: float = conventions.CRASHLOOP_WINDOW_SECONDS

    def delay(self, streak: int) -> float:
        """Seconds to wait before the next start after ``streak`` failures in a row."""
        if streak <= 0:
            return 0.0
        wait = tenacity.wait_exponential(multiplier=self.initial, max=self.maximum)
        state = tenacity.RetryCallState(retry_object=_RETRYING, fn=None, args=(), kwargs={})
        state.attempt_number = streak
        return float(wait(state))


@dataclass(slots=True)
class Health:
    """What the controller remembers about one server's failures (mutable, per server)."""

    #: Failures in a row (reset once an instance stayed up for the window).
    streak: int = 0
    #: Restarts over the controller's life, as ``kubectl get pods`` counts them.
    restarts: int = 0
    last_failure_at: float | None = None
    last_exit_code: int | None = None
    #: A status reason (``Exited``, ``ProbeFailed``, ``RuntimeError``...).
    last_reason: str | None = None
    last_message: str | None = None
    #: The last lines the failed instance wrote to stderr (secrets redacted).
    stderr_tail: tuple[str, ...] = ()
    #: The last failure was a start that did not happen (no instance ran):
    #: the server is Failed with that reason, not crash-looping.
    start_failed: bool = False
    #: Instance ids already counted, so one failure is never counted twice.
    counted: set[str] = field(default_factory=set)

    def next_start_at(self, policy: BackoffPolicy) -> float | None:
        """When the next start is allowed (None: no failure, start now)."""
        if self.last_failure_at is None or self.streak == 0:
            return None
        return self.last_failure_at + policy.delay(self.streak)

    def crashlooping(self, policy: BackoffPolicy) -> bool:
        return self.streak >= policy.threshold

    def record_failure(
        self,
        policy: BackoffPolicy,
        *,
        instance_id: str | None,
        at: float,
        started_at: float | None,
        reason: str,
        message: str,
        exit_code: int | None = None,
        stderr_tail: tuple[str, ...] = (),
    ) -> bool:
        """Count one failure; returns False when this instance was already counted.

        A second report about the same instance (a probe failure, then its
        exit) only fills in what is new (the exit code, the tail).
        """
        if instance_id is not None and instance_id in self.counted:
            if exit_code is not None:
                self.last_exit_code = exit_code
            if stderr_tail:
                self.stderr_tail = stderr_tail
            return False
        if instance_id is not None:
            self.counted.add(instance_id)
            if len(self.counted) > 64:  # only recent ids matter
                self.counted = set(sorted(self.counted)[-32:])
        if started_at is not None and at - started_at >= policy.window:
            self.streak = 0  # it ran fine for a while: a fresh row starts
        self.streak += 1
        self.last_failure_at = at
        if exit_code is not None or self.streak == 1:
            # A failure reported without a code (a probe that lost its instance, which
            # was then removed before its exit was seen) keeps the row's last known code.
            self.last_exit_code = exit_code
        self.last_reason = reason
        self.last_message = message
        self.stderr_tail = stderr_tail
        self.start_failed = instance_id is None
        return True

    def record_start(self) -> None:
        """A new instance was started to replace a failed one."""
        if self.streak:
            self.restarts += 1

    def record_healthy(self, *, at: float, started_at: float, policy: BackoffPolicy) -> None:
        """An instance has been Ready since ``started_at``; end the row after the window."""
        if self.streak and at - started_at >= policy.window:
            self.streak = 0
