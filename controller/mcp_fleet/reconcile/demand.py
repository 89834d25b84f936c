"""On-demand servers in the plan: when to start one, and when to scale it to zero.

A server with ``lifecycle: on-demand`` is not started because it is enabled
but because a call needs it (the router says so through ``Demand``), and it
is stopped once nobody has used it for its ``idleTimeout``. What the router
knows reaches the planner as plain facts in ``Memory`` (which servers are
wanted, which are busy, when each was last used), so these rules stay pure
functions of their inputs, like the rest of ``plan``: the same memory at the
same ``now`` gives the same answer.

The rules:

- Cold (nothing runs) and not wanted: nothing to do; status shows it
  Stopped with reason ScaledToZero. Wanted: created like any absent server
  (restart backoff still applies).
- Warm and ready: busy (calls in flight or waiting) means it stays, and the
  planner looks again one idle period later; otherwise it scales down once
  ``now`` is an idle period past its last use (or its start, if it was never
  used), else the planner asks to be woken exactly then.
- Remote servers run nowhere, so their lifecycle changes nothing.
- ``sessions: per-client`` servers never run a shared instance: every
  client session gets its own, which the router starts and stops
  (``router.per_client``). For the planner they are on demand and never
  wanted; a shared instance still running (the entry was ``shared``
  before) is scaled down at once, as nothing routes calls to it.
"""

from __future__ import annotations

from typing import Final

from mcp_fleet.model import Lifecycle, ServerSpec, ServerType, SessionMode
from mcp_fleet.reconcile.actions import ScaleDown
from mcp_fleet.reconcile.memory import Memory
from mcp_fleet.runtimes.base import Instance

#: Idle time after which an on-demand server without ``idleTimeout`` is stopped.
DEFAULT_IDLE_TIMEOUT_SECONDS: Final = 600.0


def is_on_demand(spec: ServerSpec) -> bool:
    """True for a server we run that should only run while it is used (``lifecycle:
    on-demand``), or never as a shared instance (``sessions: per-client``)."""
    entry = spec.entry
    return (
        entry is not None
        and (entry.lifecycle is Lifecycle.ON_DEMAND or entry.sessions is SessionMode.PER_CLIENT)
        and entry.type is ServerType.SERVER
    )


def is_per_client(spec: ServerSpec) -> bool:
    """True for a server we run whose client sessions each get an instance of their own."""
    entry = spec.entry
    return (
        entry is not None
        and entry.sessions is SessionMode.PER_CLIENT
        and entry.type is ServerType.SERVER
    )


def idle_timeout(spec: ServerSpec) -> float:
    """The server's ``idleTimeout`` in seconds (the default when it sets none)."""
    entry = spec.entry
    if entry is not None and entry.idle_timeout_seconds is not None:
        return max(0.0, float(entry.idle_timeout_seconds))
    return DEFAULT_IDLE_TIMEOUT_SECONDS


def should_run(spec: ServerSpec, memory: Memory) -> bool:
    """Whether an absent instance of ``spec`` should be started now (demand aside, always)."""
    return not is_on_demand(spec) or spec.name in memory.demanded


def last_use(spec: ServerSpec, instance: Instance, memory: Memory) -> float:
    """When the instance was last used: the router's word, but never before it started."""
    used = memory.last_active.get(spec.name)
    return instance.started_at if used is None else max(used, instance.started_at)


def idle_check(
    spec: ServerSpec, instance: Instance, memory: Memory
) -> tuple[ScaleDown | None, float | None]:
    """For a ready instance of an on-demand server: a scale-down now, or when to look again."""
    if is_per_client(spec) and spec.name not in memory.busy:
        return ScaleDown(instance, "per-client: each client session runs its own instance"), None
    timeout = idle_timeout(spec)
    if spec.name in memory.busy or spec.name in memory.demanded:
        return None, memory.now + max(timeout, 0.1)
    due = last_use(spec, instance, memory) + timeout
    if due <= memory.now:
        return ScaleDown(instance, f"idle for {timeout:g} s: scaled to zero"), None
    return None, due
