"""What the operator observed -> ``MCPServer.status``, in the fleet's one vocabulary.

Pure: the reconcile pass gathers observations (the workload's status, the
pods' container states, the readiness probe's answer) and this module turns
them into the status document, with the states, condition types and reasons
of ``mcp_fleet.status`` so ``kubectl get mcpservers`` and ``mcp-fleet status``
say the same things in the same words.

Conditions follow the Kubernetes conventions: ``Ready``, ``Progressing`` and
``Degraded``, each with ``status``, a CamelCase ``reason``, a human
``message``, the ``observedGeneration`` it describes, and a
``lastTransitionTime`` that only moves when ``status`` flips (so an unchanged
status compares equal and is never written again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mcp_fleet import status as s
from mcp_fleet.operator.k8s_plan import ChildPlan

IMAGE_REASONS = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The answer of a readiness probe (a real MCP initialize and tools/list)."""

    ok: bool
    server_name: str = ""
    server_version: str = ""
    protocol_version: str = ""
    tools: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class WorkloadObservation:
    """The Deployment's or StatefulSet's own view of its rollout."""

    desired: int
    ready: int
    updated: int
    current: int
    rolled_out: bool

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> WorkloadObservation:
        spec = obj.get("spec") or {}
        st = obj.get("status") or {}
        desired = int(spec.get("replicas", 1))
        updated = int(st.get("updatedReplicas", 0) or 0)
        current = int(st.get("replicas", 0) or 0)
        generation = (obj.get("metadata") or {}).get("generation")
        observed = st.get("observedGeneration")
        caught_up = generation is None or (observed is not None and observed >= generation)
        return cls(
            desired=desired,
            ready=int(st.get("readyReplicas", 0) or 0),
            updated=updated,
            current=current,
            rolled_out=caught_up and updated >= desired and current <= desired,
        )


@dataclass(frozen=True, slots=True)
class PodProblem:
    """Why pods do not come up, from their container states."""

    reason: str
    message: str
    state: s.ServerState


def diagnose_pods(pods: Sequence[Mapping[str, Any]]) -> PodProblem | None:
    """The first problem (pods in name order) that explains missing readiness, if any."""
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        name = (pod.get("metadata") or {}).get("name", "?")
        st = pod.get("status") or {}
        statuses = [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]
        for cs in statuses:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            detail = waiting.get("message") or ""
            where = f"pod {name} container {cs.get('name')}"
            if reason in IMAGE_REASONS:
                return PodProblem(
                    s.REASON_IMAGE_UNAVAILABLE,
                    f"{where}: {reason}: {detail}".rstrip(": "),
                    s.ServerState.FAILED,
                )
            if reason == "CreateContainerConfigError":
                kind = (
                    s.REASON_MISSING_SECRET if "secret" in detail.lower() else s.REASON_INVALID_SPEC
                )
                return PodProblem(kind, f"{where}: {detail or reason}", s.ServerState.FAILED)
            if reason == "CrashLoopBackOff":
                last = (cs.get("lastState") or {}).get("terminated") or {}
                code = last.get("exitCode")
                exit_text = (
                    f" (last exit code {code}, {last.get('reason', 'Error')})" if code else ""
                )
                return PodProblem(
                    s.REASON_CRASHLOOP,
                    f"{where} keeps exiting{exit_text}; "
                    f"see kubectl logs {name} -c {cs.get('name')}",
                    s.ServerState.CRASHLOOP,
                )
            if reason in ("CreateContainerError", "RunContainerError"):
                return PodProblem(
                    s.REASON_RUNTIME_ERROR, f"{where}: {detail or reason}", s.ServerState.FAILED
                )
        for cond in st.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return PodProblem(
                    s.REASON_RUNTIME_ERROR,
                    f"pod {name} cannot be scheduled: "
                    f"{cond.get('message', cond.get('reason', ''))}",
                    s.ServerState.PENDING,
                )
    return None


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class _Cond:
    status: bool
    reason: str
    message: str


def build_status(
    *,
    generation: int,
    previous: Mapping[str, Any],
    now: datetime,
    spec_problem: str | None = None,
    plan: ChildPlan | None = None,
    apply_problem: str | None = None,
    workload: WorkloadObservation | None = None,
    pods: PodProblem | None = None,
    probe: ProbeResult | None = None,
) -> dict[str, Any]:
    """The complete ``status`` for one pass (keys absent here keep their previous value)."""
    out: dict[str, Any] = {"observedGeneration": generation}
    if spec_problem is not None or plan is None:
        message = spec_problem or "no plan"
        bad = _Cond(False, s.REASON_INVALID_SPEC, message)
        state, ready, progressing = (
            s.ServerState.FAILED,
            bad,
            _Cond(False, s.REASON_INVALID_SPEC, "fix the spec"),
        )
        degraded = _Cond(True, s.REASON_INVALID_SPEC, message)
        return _finish(out, previous, now, generation, state, ready, progressing, degraded)

    out["configHash"] = plan.config_hash
    out["endpoint"] = plan.endpoint
    out["warnings"] = list(plan.notes) or None
    if probe is not None and probe.ok:
        out["tools"] = list(probe.tools)
        out["serverInfo"] = {
            "name": probe.server_name,
            "version": probe.server_version,
            "protocolVersion": probe.protocol_version,
        }
    ok_ready = _ready_condition(probe)
    if plan.remote_url is not None:
        state = s.ServerState.READY if probe is not None and probe.ok else s.ServerState.FAILED
        ready = ok_ready or _Cond(False, s.REASON_STARTING, "not probed yet")
        progressing = _Cond(False, s.REASON_INITIALIZED, "remote server: nothing to roll out")
        degraded = _Cond(not ready.status, ready.reason, ready.message)
        if apply_problem:
            degraded = _Cond(True, s.REASON_RUNTIME_ERROR, apply_problem)
        return _finish(out, previous, now, generation, state, ready, progressing, degraded)

    w = workload or WorkloadObservation(plan.replicas, 0, 0, 0, plan.replicas == 0)
    out["replicas"] = plan.replicas
    out["readyReplicas"] = w.ready
    out["selector"] = plan.selector
    if plan.idle and w.ready == 0:
        idle = _Cond(
            False,
            s.REASON_IDLE,
            "no traffic within idleTimeout: scaled to zero until the next call",
        )
        state = s.ServerState.STOPPED
        ready, progressing, degraded = idle, idle, _Cond(False, s.REASON_IDLE, "idle")
    elif plan.replicas == 0 and w.ready == 0:
        off = _Cond(False, s.REASON_DISABLED, "spec.replicas is 0")
        state = s.ServerState.STOPPED
        ready, progressing, degraded = (
            off,
            off,
            _Cond(False, s.REASON_DISABLED, "stopped on purpose"),
        )
    else:
        if w.rolled_out:
            progressing = _Cond(False, s.REASON_INITIALIZED, "rollout complete")
        elif w.ready == 0 and w.updated == 0:
            progressing = _Cond(True, s.REASON_STARTING, f"starting pods: 0/{w.desired} ready")
        else:
            progressing = _Cond(
                True, s.REASON_CONFIG_CHANGED, f"rolling out: {w.updated}/{w.desired} pods updated"
            )
        if w.ready == 0:
            if pods is not None:
                state = pods.state
                ready = _Cond(False, pods.reason, pods.message)
            else:
                state = s.ServerState.STARTING
                ready = _Cond(False, s.REASON_STARTING, f"waiting for pods: 0/{w.desired} ready")
        elif ok_ready is None:
            state = s.ServerState.STARTING
            ready = _Cond(False, s.REASON_STARTING, "pods are ready; MCP initialize not probed yet")
        else:
            ready = ok_ready
            state = s.ServerState.READY if ready.status else s.ServerState.FAILED
        if pods is not None:
            degraded = _Cond(True, pods.reason, pods.message)
        elif w.ready > 0 and not ready.status:
            degraded = _Cond(True, ready.reason, ready.message)
        else:
            degraded = _Cond(
                False, ready.reason if ready.status else s.REASON_STARTING, "no problem seen"
            )
    if apply_problem:
        degraded = _Cond(True, s.REASON_RUNTIME_ERROR, apply_problem)
        progressing = _Cond(False, s.REASON_RUNTIME_ERROR, apply_problem)
    return _finish(out, previous, now, generation, state, ready, progressing, degraded)


def _ready_condition(probe: ProbeResult | None) -> _Cond | None:
    if probe is None:
        return None
    if probe.ok:
        who = f"{probe.server_name} {probe.server_version}".strip() or "the server"
        return _Cond(
            True, s.REASON_INITIALIZED, f"{who} answered initialize; {len(probe.tools)} tools"
        )
    return _Cond(False, s.REASON_PROBE_FAILED, f"MCP initialize failed: {probe.error}")


def _finish(
    out: dict[str, Any],
    previous: Mapping[str, Any],
    now: datetime,
    generation: int,
    state: s.ServerState,
    ready: _Cond,
    progressing: _Cond,
    degraded: _Cond,
) -> dict[str, Any]:
    old = {c.get("type"): c for c in previous.get("conditions") or [] if isinstance(c, Mapping)}
    conditions = []
    for ctype, cond in (
        (s.ConditionType.READY, ready),
        (s.ConditionType.PROGRESSING, progressing),
        (s.ConditionType.DEGRADED, degraded),
    ):
        status_text = "True" if cond.status else "False"
        before = old.get(ctype.value) or {}
        since = before.get("lastTransitionTime") if before.get("status") == status_text else None
        conditions.append(
            {
                "type": ctype.value,
                "status": status_text,
                "reason": cond.reason,
                "message": cond.message[:1000],
                "observedGeneration": generation,
                "lastTransitionTime": since or rfc3339(now),
            }
        )
    out["state"] = state.value
    out["conditions"] = conditions
    return out


def status_changed(new: Mapping[str, Any], previous: Mapping[str, Any]) -> bool:
    """Would writing ``new`` (a merge patch) change ``previous``?"""
    for key, value in new.items():
        if value is None:
            if previous.get(key) is not None:
                return True
        elif previous.get(key) != value:
            return True
    return False
