"""The actions a plan is made of, and the plan itself.

As in docker compose, every action names the resource it acts on
(``server:time`` or ``server:time/pid:123:456``) and why (``absent``,
``config changed``, ``disabled``...), and a plan prints as stable text: one
line per action, in a fixed order. Tests compare that text (golden plans) and
``mcp-fleet controller --dry-run`` prints it.

Actions are frozen dataclasses with no behaviour: the executor gives them
meaning. ``Plan.wake_at`` is when the planner wants to be asked again even if
nothing happens (the end of a restart backoff): waiting is not an action, so
a converged fleet plans to an empty list.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp_fleet.model import RuntimeKind, ServerSpec
from mcp_fleet.runtimes.base import Instance


def short_hash(config_hash: str) -> str:
    """The first 8 hex digits of a config hash, as plans and status show it."""
    return config_hash[:8]


class _OnInstance:
    """An action on one running instance: named ``server:NAME/INSTANCE``."""

    __slots__ = ()
    instance: Instance

    @property
    def server(self) -> str:
        return self.instance.server

    @property
    def resource(self) -> str:
        return f"server:{self.instance.server}/{self.instance.instance_id}"


class _OnSpec:
    """An action that starts an instance of a spec: named ``server:NAME``."""

    __slots__ = ()
    spec: ServerSpec

    @property
    def server(self) -> str:
        return self.spec.name

    @property
    def resource(self) -> str:
        return f"server:{self.spec.name}"


@dataclass(frozen=True, slots=True)
class Remove(_OnInstance):
    """Stop and remove an instance (disabled, gone, orphaned, stale, exited, leftover)."""

    instance: Instance
    cause: str

    verb = "remove"


@dataclass(frozen=True, slots=True)
class ScaleDown(_OnInstance):
    """Stop the idle instance of an on-demand server (scale to zero).

    Unlike ``Remove`` it is conditional: the executor first asks the router
    (``Demand.retire``) and leaves the instance running when a call arrived
    since the plan was made.
    """

    instance: Instance
    cause: str

    verb = "scale-down"


@dataclass(frozen=True, slots=True)
class Create(_OnSpec):
    """Start a first instance of a server and probe it (absent, or restarting after an exit)."""

    spec: ServerSpec
    runtime: RuntimeKind
    cause: str

    verb = "create"


@dataclass(frozen=True, slots=True)
class Replace(_OnSpec):
    """Start a new instance for a changed spec, probe it, then stop the old one."""

    spec: ServerSpec
    runtime: RuntimeKind
    old: Instance
    cause: str

    verb = "replace"


@dataclass(frozen=True, slots=True)
class Adopt(_OnInstance):
    """Take ownership of an instance a previous controller started, and probe it.

    ``retire`` are older instances of the server (another config hash) to stop
    once this one is ready.
    """

    instance: Instance
    cause: str
    retire: tuple[Instance, ...] = ()

    verb = "adopt"


@dataclass(frozen=True, slots=True)
class Probe(_OnInstance):
    """Run the readiness probe (MCP initialize) against a running instance.

    ``retire`` are older instances of the server to stop once this one is ready.
    """

    instance: Instance
    cause: str
    retire: tuple[Instance, ...] = ()

    verb = "probe"


@dataclass(frozen=True, slots=True)
class MarkFailed:
    """Record that a server cannot run as configured (no I/O)."""

    server: str
    reason: str
    message: str

    @property
    def resource(self) -> str:
        return f"server:{self.server}"

    @property
    def cause(self) -> str:
        return f"{self.reason}: {self.message}"

    verb = "mark-failed"


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cut short a server's actions still in flight (a start or a probe under way).

    Planned when the server was disabled, removed or changed while they ran.
    The executor cancels them and stops what they started; the next plan,
    with nothing in flight, does the rest (removes, or starts the new config).
    """

    server: str
    cause: str

    @property
    def resource(self) -> str:
        return f"server:{self.server}"

    verb = "cancel"


Action = Remove | ScaleDown | Create | Replace | Adopt | Probe | MarkFailed | Cancel

#: The order actions print and run in: removals first (so a leftover is gone
#: before its successor starts: never two copies), then bookkeeping, then
#: starts and probes.
PHASES: dict[str, int] = {
    "cancel": 0,
    "remove": 0,
    "scale-down": 0,
    "mark-failed": 1,
    "adopt": 2,
    "probe": 3,
    "replace": 4,
    "create": 5,
}


def phase_of(action: Action) -> int:
    return PHASES[action.verb]


def describe(action: Action) -> str:
    """One stable line: verb, resource, cause (and what a replace replaces)."""
    line = f"{action.verb:<11} {action.resource:<40} ({action.cause})"
    if isinstance(action, Replace):
        line += f" old={action.old.instance_id}"
    if isinstance(action, Adopt | Probe) and action.retire:
        line += " retire=" + ",".join(i.instance_id for i in action.retire)
    if isinstance(action, Create | Replace):
        line += f" runtime={action.runtime.value} hash={short_hash(action.spec.config_hash())}"
    return line.rstrip()


@dataclass(frozen=True, slots=True)
class Plan:
    """What one pass will do, in execution order, and when to look again."""

    actions: tuple[Action, ...] = ()
    #: Earliest time (same clock as ``Memory.now``) a backed-off start is due.
    wake_at: float | None = None

    def __bool__(self) -> bool:
        return bool(self.actions)

    def __len__(self) -> int:
        return len(self.actions)

    def __str__(self) -> str:
        if not self.actions:
            return "nothing to do"
        return "\n".join(describe(a) for a in self.actions)

    def for_server(self, server: str) -> list[Action]:
        return [a for a in self.actions if a.server == server]
