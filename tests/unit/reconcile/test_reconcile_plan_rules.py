"""The planner's rules, checked as golden plan text (what ``--dry-run`` prints)."""

from __future__ import annotations

import ast
from pathlib import Path

import mcp_fleet.reconcile.plan as plan_module
from mcp_fleet.errors import Diagnostic
from mcp_fleet.model import RuntimeKind
from mcp_fleet.reconcile.memory import Memory
from mcp_fleet.reconcile.plan import plan
from mcp_fleet.runtimes.base import ObservedState
from reconcile_builders import desired, instance, spec

P = RuntimeKind.PROCESS
D = RuntimeKind.DOCKER


def h(s) -> str:  # type: ignore[no-untyped-def]
    return s.config_hash()


def observed(*instances) -> ObservedState:  # type: ignore[no-untyped-def]
    return ObservedState(tuple(instances))


def test_empty_fleet_creates_every_enabled_server_in_name_order() -> None:
    b, a, off = spec("beta"), spec("alpha"), spec("off", enabled=False)
    result = plan(desired(b, a, off), observed(), Memory())
    assert str(result) == (
        f"create      server:alpha                             (absent) runtime=process"
        f" hash={h(a)[:8]}\n"
        f"create      server:beta                              (absent) runtime=process"
        f" hash={h(b)[:8]}"
    )


def test_converged_fleet_plans_nothing() -> None:
    a = spec("alpha")
    inst = instance("alpha", "pid:1:1", config_hash=h(a))
    mem = Memory(owned=frozenset({"pid:1:1"}), ready=frozenset({"pid:1:1"}))
    result = plan(desired(a), observed(inst), mem)
    assert not result
    assert str(result) == "nothing to do"


def test_changed_config_is_a_replace_naming_old_and_new_hash() -> None:
    old, new = spec("alpha", version="1"), spec("alpha", version="2")
    inst = instance("alpha", "pid:1:1", config_hash=h(old))
    mem = Memory(owned=frozenset({"pid:1:1"}), ready=frozenset({"pid:1:1"}))
    assert str(plan(desired(new), observed(inst), mem)) == (
        f"replace     server:alpha                             (config changed: {h(old)[:8]} ->"
        f" {h(new)[:8]}) old=pid:1:1 runtime=process hash={h(new)[:8]}"
    )


def test_old_instance_goes_once_the_new_one_is_ready() -> None:
    old, new = spec("alpha", version="1"), spec("alpha", version="2")
    a = instance("alpha", "pid:1:1", config_hash=h(old), started_at=1)
    b = instance("alpha", "pid:2:2", config_hash=h(new), started_at=2)
    owned = frozenset({"pid:1:1", "pid:2:2"})
    not_ready = plan(
        desired(new), observed(a, b), Memory(owned=owned, ready=frozenset({"pid:1:1"}))
    )
    assert str(not_ready) == (
        "probe       server:alpha/pid:2:2                     (not ready yet) retire=pid:1:1"
    )
    ready = plan(desired(new), observed(a, b), Memory(owned=owned, ready=owned))
    assert (
        str(ready) == "remove      server:alpha/pid:1:1                     (replaced by pid:2:2)"
    )


def test_disabled_and_removed_servers_are_removed_with_their_cause() -> None:
    off = spec("off", enabled=False)
    insts = observed(instance("off", "pid:1:1"), instance("gone", "pid:2:2"))
    assert str(plan(desired(off), insts, Memory(owned=frozenset({"pid:1:1", "pid:2:2"})))) == (
        "remove      server:gone/pid:2:2                      (orphaned: no registry entry)\n"
        "remove      server:off/pid:1:1                       (disabled)"
    )


def test_instances_of_other_fleets_and_unlabelled_ones_are_never_touched() -> None:
    a = spec("alpha")
    foreign = instance("alpha", "c1", fleet="someone-else", runtime=D)
    unlabelled = instance("", "c2", fleet="", runtime=D)
    stray = instance("beta", "c3", fleet="someone-else", runtime=D)
    result = plan(desired(a), observed(foreign, unlabelled, stray), Memory())
    assert [a.verb for a in result.actions] == ["create"]
    assert all(a.server == "alpha" for a in result.actions)


def test_process_leftovers_are_removed_before_a_fresh_one_starts() -> None:
    a = spec("alpha")
    leftover = instance("alpha", "pid:9:9", config_hash=h(a))
    assert str(plan(desired(a), observed(leftover), Memory())) == (
        "remove      server:alpha/pid:9:9                     (left over by a previous controller"
        " (its stdio cannot be taken over))\n"
        f"create      server:alpha                             (absent) runtime=process"
        f" hash={h(a)[:8]}"
    )


def test_labelled_containers_are_adopted_not_duplicated() -> None:
    a = spec("alpha", image="img", process=False)
    c = instance("alpha", "c1", config_hash=h(a), runtime=D)
    mem = Memory(preferred_runtime=D, available_runtimes=frozenset({P, D}))
    assert str(plan(desired(a), observed(c), mem)) == (
        "adopt       server:alpha/c1                          (labelled by this fleet, config"
        " unchanged)"
    )


def test_duplicates_keep_the_ready_one() -> None:
    a = spec("alpha")
    x = instance("alpha", "pid:1:1", config_hash=h(a), started_at=1)
    y = instance("alpha", "pid:2:2", config_hash=h(a), started_at=2)
    mem = Memory(owned=frozenset({"pid:1:1", "pid:2:2"}), ready=frozenset({"pid:2:2"}))
    assert str(plan(desired(a), observed(x, y), mem)) == (
        "remove      server:alpha/pid:1:1                     (duplicate of pid:2:2)"
    )


def test_exited_instance_is_cleaned_and_restart_waits_for_backoff() -> None:
    a = spec("alpha")
    dead = instance("alpha", "pid:1:1", config_hash=h(a), running=False, exit_code=3)
    mem = Memory(
        now=10.0,
        owned=frozenset({"pid:1:1"}),
        next_start={"alpha": 12.5},
        restart_cause={"alpha": "restart after Exited, exit code 3; attempt 2"},
    )
    waiting = plan(desired(a), observed(dead), mem)
    assert str(waiting) == (
        "remove      server:alpha/pid:1:1                     (exited with code 3)"
    )
    assert waiting.wake_at == 12.5
    due = plan(desired(a), observed(), Memory(now=13.0, next_start={"alpha": 12.5},
                                               restart_cause=mem.restart_cause))  # fmt: skip
    assert [(x.verb, x.cause) for x in due.actions] == [
        ("create", "restart after Exited, exit code 3; attempt 2")
    ]


def test_failed_probe_instance_is_removed() -> None:
    a = spec("alpha")
    inst = instance("alpha", "pid:1:1", config_hash=h(a))
    mem = Memory(owned=frozenset({"pid:1:1"}), probe_failed=frozenset({"pid:1:1"}))
    assert [x.verb for x in plan(desired(a), observed(inst), mem).actions] == [
        "remove",
        "create",
    ]


def test_unusable_server_is_marked_failed_once_and_others_go_on() -> None:
    problem = Diagnostic("required secret api.token is not set", field="secrets.api.token")
    bad, good = spec("bad", problems=(problem,)), spec("good")
    first = plan(desired(bad, good), observed(), Memory())
    assert str(first).splitlines()[0] == (
        "mark-failed server:bad                               (MissingSecret: required secret"
        " api.token is not set)"
    )
    assert [x.verb for x in first.actions] == ["mark-failed", "create"]
    again = plan(
        desired(bad, good),
        observed(),
        Memory(marked={"bad": "MissingSecret: required secret api.token is not set"}),
    )
    assert [x.verb for x in again.actions] == ["create"]


def test_last_good_instance_of_a_now_broken_server_keeps_running() -> None:
    good = spec("alpha", version="1")
    broken = spec("alpha", version="2", problems=(Diagnostic("required secret x is not set"),))
    inst = instance("alpha", "pid:1:1", config_hash=h(good))
    mem = Memory(owned=frozenset({"pid:1:1"}), ready=frozenset({"pid:1:1"}))
    assert [x.verb for x in plan(desired(broken), observed(inst), mem).actions] == ["mark-failed"]


def test_image_only_server_under_the_process_runtime_is_runtime_unsupported() -> None:
    a = spec("alpha", image="local/alpha", process=False)
    (action,) = plan(desired(a), observed(), Memory()).actions
    assert action.verb == "mark-failed"
    assert action.cause.startswith("RuntimeUnsupported: image local/alpha needs a container")


def test_unknown_catalog_entry_is_unknown_server() -> None:
    a = spec("ghost", missing=True, problems=(Diagnostic("no catalog has 'ghost'"),))
    (action,) = plan(desired(a), observed(), Memory()).actions
    assert action.cause == "UnknownServer: no catalog has 'ghost'"


def test_remote_servers_run_nothing() -> None:
    r = spec("web", remote="http://127.0.0.1:9/mcp", process=False)
    assert not plan(desired(r), observed(), Memory())


def test_runtime_switch_replaces_the_container_with_a_process() -> None:
    both = spec("alpha", image="img")
    c = instance("alpha", "c1", config_hash=h(both), runtime=D)
    mem = Memory(owned=frozenset({"c1"}), ready=frozenset({"c1"}),
                 available_runtimes=frozenset({P, D}))  # fmt: skip
    (action,) = plan(desired(both), observed(c), mem).actions
    assert action.verb == "replace"
    assert action.cause == "runtime changed: docker -> process"


def test_nothing_changes_on_a_runtime_that_could_not_be_observed() -> None:
    a = spec("alpha", image="img", process=False)
    mem = Memory(preferred_runtime=D, available_runtimes=frozenset({P, D}))
    blind = ObservedState((), ((D, "daemon down"),))
    assert not plan(desired(a), blind, mem)


def test_no_desired_state_touches_nothing() -> None:
    inst = instance("alpha", "pid:1:1")
    assert not plan(None, observed(inst), Memory())


def test_the_planner_imports_no_client_library() -> None:
    tree = ast.parse(Path(plan_module.__file__).read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    forbidden = {"docker", "kubernetes", "kubernetes_asyncio", "kopf", "httpx", "asyncio"}
    assert not {str(m).split(".")[0] for m in imported} & forbidden
