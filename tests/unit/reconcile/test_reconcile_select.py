"""Which runtime runs which server."""

from __future__ import annotations

from mcp_fleet.model import RuntimeKind
from mcp_fleet.runtimes.select import place
from reconcile_builders import spec

P, D = RuntimeKind.PROCESS, RuntimeKind.DOCKER
BOTH = frozenset({P, D})


def test_process_only_entries_run_as_processes_under_any_runtime() -> None:
    s = spec("a")
    assert place(s, preferred=P, available=frozenset({P})).kind is P
    assert place(s, preferred=D, available=BOTH).kind is P


def test_image_only_entries_need_a_container_runtime() -> None:
    s = spec("a", image="img", process=False)
    assert place(s, preferred=D, available=BOTH).kind is D
    refused = place(s, preferred=P, available=frozenset({P}))
    assert refused.kind is None and refused.reason == "RuntimeUnsupported"
    assert "--runtime docker" in (refused.message or "")


def test_entries_with_both_follow_the_chosen_runtime() -> None:
    s = spec("a", image="img")
    assert place(s, preferred=P, available=BOTH).kind is P
    assert place(s, preferred=D, available=BOTH).kind is D


def test_remote_entries_need_no_runtime() -> None:
    s = spec("a", remote="http://127.0.0.1:1/mcp", process=False)
    assert place(s, preferred=P, available=frozenset({P})).kind is RuntimeKind.REMOTE


def test_entries_with_nothing_to_run_are_invalid() -> None:
    s = spec("a", process=False)
    assert place(s, preferred=P, available=frozenset({P})).reason == "InvalidSpec"
