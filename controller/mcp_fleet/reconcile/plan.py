"""The planner: ``plan(desired, observed, memory) -> Plan``, a pure function.

Given what should be (``DesiredState``), what is (``ObservedState``, one
snapshot) and what the controller remembers (``Memory``, with ``now``), it
returns the actions that move the world one step closer, and nothing else:
no I/O, no clock, no client library, no randomness. The same inputs always
give the same plan (sorted by phase, then server, then resource), so plans
can be compared as text and ``--dry-run`` shows exactly what a pass would do.

The rules, per server:

- Actions still in flight (a start or probe under way, ``inflight``):
  nothing new; cancelled when the server was disabled, removed or changed.
- No registry entry: remove every instance ("orphaned"). Disabled: remove.
- Enabled but unusable (unknown catalog entry, missing secret, no runtime
  for it, a spec its runtime refuses as ``Memory.unsupported`` says): mark
  it failed, once per distinct reason; nothing is started for it. An instance still
  running from the last good configuration is left running and routed
  (last good state, per server); it is not restarted if it exits.
- Remote: nothing runs; the loop publishes its URL.
- On demand (``lifecycle: on-demand``, rules in ``demand``): an absent
  instance is created only while a call wants it; a ready one that nobody
  used for its idle timeout is scaled down (``ScaleDown``), and the plan
  names when it wants to look again (``wake_at``) while it is warm.
  ``sessions: per-client`` servers count as on demand and are never
  wanted: the router starts one instance per client session itself.
- Otherwise converge to exactly one running instance with the spec's
  config hash on the chosen runtime:
  leftovers of a previous controller that cannot be taken over (process
  instances: their stdio died with it) are removed before a fresh one is
  created; labelled containers are adopted; exited instances and instances
  whose probe failed are removed; duplicates are removed (the ready, then
  oldest, one stays); a changed hash is a replace (new one probed before the
  old one stops; an instance found not ready or adopted retires the old ones
  once it answers its probe); an absent one
  is created, unless a restart backoff is running, in which case the plan
  names the time it wants to be called again instead (``wake_at``).

Instances whose fleet label is not ours are never touched, whatever the
runtime reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mcp_fleet.model import DesiredState, RuntimeKind, ServerSpec
from mcp_fleet.reconcile.actions import (
    Action,
    Adopt,
    Create,
    MarkFailed,
    Plan,
    Probe,
    Remove,
    Replace,
    phase_of,
    short_hash,
)
from mcp_fleet.reconcile.demand import idle_check, is_on_demand, should_run
from mcp_fleet.reconcile.inflight import in_flight_check
from mcp_fleet.reconcile.memory import Memory
from mcp_fleet.runtimes.base import Instance, ObservedState
from mcp_fleet.runtimes.select import Placement, place
from mcp_fleet.status import (
    REASON_INVALID_SPEC,
    REASON_MISSING_SECRET,
    REASON_UNKNOWN_SERVER,
)

#: Runtimes whose instances a restarted controller can take over. A process's
#: stdio dies with the controller that spawned it, so leftovers are replaced.
ADOPTABLE = frozenset({RuntimeKind.DOCKER, RuntimeKind.KUBERNETES})


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the planner derives from one server's spec alone (cached, see ``prepare``)."""

    config_hash: str
    placement: Placement
    problem: tuple[str, str] | None
    #: ``lifecycle: on-demand`` (and not remote): started by demand, scaled to zero.
    on_demand: bool = False


def plan(desired: DesiredState | None, observed: ObservedState, memory: Memory) -> Plan:
    """The actions that converge ``observed`` towards ``desired`` (pure, deterministic).

    With no desired state at all (the fleet files never loaded), nothing is
    touched: we cannot tell an orphan from a server we just failed to read.
    """
    if desired is None:
        return Plan()
    ours: dict[str, list[Instance]] = {}
    for inst in observed.instances:
        if inst.fleet == desired.fleet and inst.server:
            ours.setdefault(inst.server, []).append(inst)
    blind = frozenset(kind for kind, _ in observed.unavailable)
    prepared = prepare(desired, memory)
    owned, ready, probe_failed = memory.owned, memory.ready, memory.probe_failed
    actions: list[Action] = []
    wake: list[float] = []
    for name in sorted(desired.servers.keys() | ours.keys() | memory.in_flight.keys()):
        insts = ours.get(name, [])
        spec = desired.servers.get(name)
        flight = memory.in_flight.get(name)
        if flight is not None:  # its actions are under way: nothing new, or cancel them
            now = prepared.get(name)
            cancel = in_flight_check(
                name, spec, flight, config_hash=now.config_hash if now else None,
                runtime=now.placement.kind if now else None,
            )  # fmt: skip
            actions += [cancel] if cancel is not None else []
            continue
        if spec is not None and spec.enabled and len(insts) == 1:
            # The steady state, kept cheap: one ready instance of the right spec.
            inst, prep = insts[0], prepared[name]
            if (
                inst.running
                and inst.runtime is prep.placement.kind
                and inst.config_hash == prep.config_hash
                and prep.problem is None
                and inst.instance_id in ready
                and inst.instance_id in owned
                and inst.instance_id not in probe_failed
            ):
                if prep.on_demand:
                    _idle(spec, inst, memory, actions, wake)
                continue
        if len(insts) > 1:
            insts = sorted(insts, key=lambda i: (i.started_at, i.instance_id))
        if spec is None:
            actions += [Remove(i, "orphaned: no registry entry") for i in insts]
        elif not spec.enabled:
            actions += [Remove(i, "disabled") for i in insts]
        else:
            _plan_enabled(spec, prepared[name], insts, memory, blind, actions, wake)
    actions.sort(key=phase_of)  # stable: within a phase, server order, then instance age
    return Plan(tuple(actions), min(wake) if wake else None)


_CacheKey = tuple[DesiredState, RuntimeKind, frozenset[RuntimeKind], Mapping[str, str]]
_cache: list[tuple[_CacheKey, dict[str, Prepared]]] = []


def prepare(desired: DesiredState, memory: Memory) -> dict[str, Prepared]:
    """Every server's config hash, placement and problem, computed once per DesiredState.

    Hashing a spec costs ~25 us and the loop plans the same desired state
    many times, so the last few results are kept, keyed by the identity of
    the (immutable) ``DesiredState`` and the runtime choice. Invisible from
    outside: ``plan`` stays a pure function.
    """
    preferred, available = memory.preferred_runtime, memory.available_runtimes
    unsupported = memory.unsupported
    for (cached, pref, avail, unsup), result in _cache:
        if cached is desired and pref is preferred and avail == available and unsup == unsupported:
            return result
    result = {}
    for name, spec in desired.servers.items():
        placement = placement_of(spec, memory)
        problem = problem_of(spec, placement, unsupported=unsupported.get(name))
        result[name] = Prepared(spec.config_hash(), placement, problem, is_on_demand(spec))
    _cache.insert(0, ((desired, preferred, available, unsupported), result))
    del _cache[4:]
    return result


def placement_of(spec: ServerSpec, memory: Memory) -> Placement:
    return place(spec, preferred=memory.preferred_runtime, available=memory.available_runtimes)


def problem_of(
    spec: ServerSpec, placement: Placement, *, unsupported: str | None = None
) -> tuple[str, str] | None:
    """Why an enabled server cannot run, as ``(reason, message)``; None when it can.

    ``unsupported`` is what the chosen runtime said it cannot do with the spec.
    """
    if spec.entry is None:
        detail = "; ".join(d.message for d in spec.problems) or "no catalog has it"
        return REASON_UNKNOWN_SERVER, detail
    if spec.problems:
        message = "; ".join(d.message for d in spec.problems)
        secret = any("secret" in f"{d.field or ''} {d.message}".lower() for d in spec.problems)
        return (REASON_MISSING_SECRET if secret else REASON_INVALID_SPEC), message
    if placement.kind is None:
        return placement.reason or REASON_INVALID_SPEC, placement.message or "cannot run"
    if unsupported:
        return REASON_INVALID_SPEC, unsupported
    return None


def _plan_enabled(
    spec: ServerSpec,
    prep: Prepared,
    insts: list[Instance],
    memory: Memory,
    blind: frozenset[RuntimeKind],
    actions: list[Action],
    wake: list[float],
) -> None:
    config_hash, placement, problem = prep.config_hash, prep.placement, prep.problem
    if problem is not None:
        _plan_unusable(spec, problem, insts, memory, actions)
        return
    kind = placement.kind
    assert kind is not None
    if kind is RuntimeKind.REMOTE:
        actions += [Remove(i, "remote server: routed only, nothing runs") for i in insts]
        return
    if kind in blind:
        return  # its runtime could not be observed this pass: change nothing
    if not insts:
        if not should_run(spec, memory):
            return  # on demand and not wanted: stays cold
        _create_when_due(spec, prep, kind, memory, actions, wake)
        return

    live = _live(insts, memory, actions)
    current = [i for i in live if i.runtime is kind and i.config_hash == config_hash]
    stale = [i for i in live if not (i.runtime is kind and i.config_hash == config_hash)]
    if current:
        _keep_one(spec, prep, current, stale, memory, actions, wake)
        return

    due = memory.next_start.get(spec.name)
    if due is not None and due > memory.now:
        wake.append(due)
        return
    if stale:
        _replace_stale(spec, config_hash, kind, stale, memory, actions)
        return
    if not should_run(spec, memory):
        return  # what ran of it is gone; on demand and not wanted: stays cold
    actions.append(Create(spec, kind, _start_cause(spec.name, prep, memory)))


def _plan_unusable(
    spec: ServerSpec,
    problem: tuple[str, str],
    insts: list[Instance],
    memory: Memory,
    actions: list[Action],
) -> None:
    """An enabled server that cannot run: marked failed (once per distinct reason); what
    still runs of its last good configuration is left alone, what exited is removed."""
    reason, message = problem
    if memory.marked.get(spec.name) != f"{reason}: {message}":
        actions.append(MarkFailed(spec.name, reason, message))
    actions += [Remove(i, _exit_cause(i)) for i in insts if not i.running]


def _create_when_due(
    spec: ServerSpec,
    prep: Prepared,
    kind: RuntimeKind,
    memory: Memory,
    actions: list[Action],
    wake: list[float],
) -> None:
    """Create the server's instance now, or once its restart backoff is over (``wake``)."""
    due = memory.next_start.get(spec.name)
    if due is not None and due > memory.now:
        wake.append(due)
    else:
        actions.append(Create(spec, kind, _start_cause(spec.name, prep, memory)))


def _live(insts: list[Instance], memory: Memory, actions: list[Action]) -> list[Instance]:
    """The instances worth keeping; the others (exited, left over by a previous
    controller, failed their probe) are removed."""
    live: list[Instance] = []
    for inst in insts:
        if not inst.running:
            actions.append(Remove(inst, _exit_cause(inst)))
        elif inst.runtime not in ADOPTABLE and inst.instance_id not in memory.owned:
            actions.append(
                Remove(inst, "left over by a previous controller (its stdio cannot be taken over)")
            )
        elif inst.instance_id in memory.probe_failed:
            actions.append(Remove(inst, "readiness probe failed"))
        else:
            live.append(inst)
    return live


def _keep_one(
    spec: ServerSpec,
    prep: Prepared,
    current: list[Instance],
    stale: list[Instance],
    memory: Memory,
    actions: list[Action],
    wake: list[float],
) -> None:
    """Instances of the current spec run: keep the best one (adopted or probed first, if
    need be), remove its duplicates, and retire the stale ones once it is ready."""
    keep = _best(current, memory)
    actions += [Remove(i, f"duplicate of {keep.instance_id}") for i in current if i is not keep]
    retire = tuple(stale)
    if keep.instance_id not in memory.owned:
        actions.append(Adopt(keep, "labelled by this fleet, config unchanged", retire))
    elif keep.instance_id not in memory.ready:
        actions.append(Probe(keep, "not ready yet", retire))
    else:
        actions += [Remove(i, f"replaced by {keep.instance_id}") for i in stale]
        if prep.on_demand and not stale:
            _idle(spec, keep, memory, actions, wake)


def _replace_stale(
    spec: ServerSpec,
    config_hash: str,
    kind: RuntimeKind,
    stale: list[Instance],
    memory: Memory,
    actions: list[Action],
) -> None:
    """Only instances of an older spec (or another runtime) run: replace the best one,
    remove the others."""
    old = _best(stale, memory)
    actions += [Remove(i, f"superseded by {old.instance_id}") for i in stale if i is not old]
    if old.runtime is not kind:
        cause = f"runtime changed: {old.runtime.value} -> {kind.value}"
    else:
        cause = f"config changed: {short_hash(old.config_hash)} -> {short_hash(config_hash)}"
    actions.append(Replace(spec, kind, old, cause))


def _start_cause(name: str, prep: Prepared, memory: Memory) -> str:
    default = "demanded: a call is waiting" if prep.on_demand else "absent"
    return memory.restart_cause.get(name, default)


def _idle(
    spec: ServerSpec, inst: Instance, memory: Memory, actions: list[Action], wake: list[float]
) -> None:
    """The idle rule for a ready instance of an on-demand server (see ``demand``)."""
    scale_down, due = idle_check(spec, inst, memory)
    if scale_down is not None:
        actions.append(scale_down)
    if due is not None:
        wake.append(due)


def _best(candidates: Sequence[Instance], memory: Memory) -> Instance:
    """The instance to keep: ready first, then owned, then the oldest; ties by id."""
    if len(candidates) == 1:
        return candidates[0]
    return min(
        candidates,
        key=lambda i: (
            i.instance_id not in memory.ready,
            i.instance_id not in memory.owned,
            i.started_at,
            i.instance_id,
        ),
    )


def _exit_cause(inst: Instance) -> str:
    if inst.exit_code is None:
        return "exited"
    return f"exited with code {inst.exit_code}"
