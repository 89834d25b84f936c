"""Observed children -> the writes that make them what the plan says (pure).

The operator lists the children carrying its MCPServer's label, and this
module compares them with ``ChildPlan.manifests`` by the
``mcp-fleet.dev/applied-hash`` each carries: missing ones are created, ones
with another hash are applied again, ours that are no longer wanted are
deleted. Ownership decides what may be touched, as in the Kubernetes
sample-controller: an object with a wanted name that this MCPServer does not
control is a conflict, reported and never adopted or overwritten; an
object controlled by another MCPServer is never deleted. Every action
carries its cause, and ``str(action)`` is the stable line the operator logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mcp_fleet import conventions as c
from mcp_fleet.operator.k8s_plan import ChildPlan, Manifest


@dataclass(frozen=True, slots=True)
class ChildAction:
    """One write to do: apply a manifest or delete an object, with its cause."""

    verb: Literal["create", "apply", "delete"]
    kind: str
    api_version: str
    name: str
    cause: str
    manifest: Manifest | None = None

    def __str__(self) -> str:
        return f"{self.verb} {self.kind}/{self.name}: {self.cause}"


@dataclass(frozen=True, slots=True)
class ChildDiff:
    actions: tuple[ChildAction, ...]
    #: Objects with our names that belong to someone else: never touched, reported.
    conflicts: tuple[str, ...] = ()


def diff_children(plan: ChildPlan, observed: Sequence[Mapping[str, Any]], *, uid: str) -> ChildDiff:
    """Actions turning ``observed`` (objects carrying our server label) into ``plan``.

    Objects with a desired name but another owner are conflicts, left alone.
    Ours that are no longer desired (a kind switched, a Service dropped) are removed.
    """
    seen: dict[tuple[str, str], Mapping[str, Any]] = {}
    for obj in observed:
        seen[(str(obj.get("kind")), str(obj.get("metadata", {}).get("name")))] = obj
    actions: list[ChildAction] = []
    conflicts: list[str] = []
    desired_keys: set[tuple[str, str]] = set()
    for manifest in plan.manifests:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        desired_keys.add((kind, name))
        current = seen.get((kind, name))
        want = manifest["metadata"]["annotations"][c.K8S_ANNOTATION_APPLIED_HASH]
        if current is None:
            actions.append(_action("create", manifest, "missing"))
        elif not is_controlled_by(current, uid):
            conflicts.append(f"{kind} {name} exists and is not controlled by this MCPServer")
        else:
            have = current.get("metadata", {}).get("annotations", {}) or {}
            if have.get(c.K8S_ANNOTATION_APPLIED_HASH) != want:
                actions.append(_action("apply", manifest, "changed"))
    for (kind, name), obj in sorted(seen.items()):
        if (kind, name) not in desired_keys and is_controlled_by(obj, uid):
            actions.append(
                ChildAction("delete", kind, str(obj.get("apiVersion")), name, "no longer desired")
            )
    return ChildDiff(tuple(actions), tuple(conflicts))


def is_controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def _action(verb: Literal["create", "apply"], manifest: Manifest, cause: str) -> ChildAction:
    return ChildAction(
        verb,
        manifest["kind"],
        manifest["apiVersion"],
        manifest["metadata"]["name"],
        cause,
        manifest,
    )
