"""Make-before-break on its own: the ``Switchover`` against a recording ``SwitchHost``.

The host hands out new backends when the test says so (``open_listed``
waits on a future per instance), so each decision can be looked at: switch
in one step while the old attachment is current, take the place of an old
one that died meanwhile, close a backend nobody wants any more, count a
failed attach and schedule its retry, and drain a replaced backend until its
calls are answered or its call timeout has passed. Backends are stand-ins
with the few fields a drain reads. The lifecycle around it is in
test_lifecycle.py; the whole router in test_router_switchover.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import support
from mcp_fleet.endpoints import EndpointEntry, StreamEndpoint
from mcp_fleet.model import CatalogEntry, ServerSpec
from mcp_fleet.router import jsonrpc, switchover
from mcp_fleet.router.attachment import Attachment
from mcp_fleet.router.backend import BackendError
from mcp_fleet.router.switchover import Switchover
from mcp_fleet.router.table import ServerLists

pytestmark = pytest.mark.timeout(30)

SPEC = ServerSpec(name="s", enabled=True, entry=CatalogEntry(name="s", source=Path("c.yaml")))


async def _never() -> Any:
    raise AssertionError("not opened by the test")


def entry(iid: str) -> EndpointEntry:
    return EndpointEntry(SPEC, StreamEndpoint("s", iid, _never))


class Backend:
    """What a drain reads of a backend, settable by the test."""

    def __init__(self, iid: str, *, pending: int = 0, call_timeout: float = 5.0) -> None:
        self.name = "s"
        self.instance_id = iid
        self.pending_count = pending
        self.call_timeout = call_timeout
        self.closed = False
        self.reason = ""

    async def aclose(self, reason: str = "") -> None:
        self.closed, self.reason = True, reason


class Host:
    """The backend lifecycle's side of a switchover, recorded."""

    def __init__(self) -> None:
        self.attached: dict[str, Attachment] = {}
        self.opening: dict[str, asyncio.Future[tuple[Backend, ServerLists]]] = {}
        self.taken: list[tuple[Attachment, Backend]] = []
        self.events: list[tuple[str, str, str]] = []
        self.holds_declared = 0
        self.wakes = 0

    def current(self, server: str) -> Attachment | None:
        return self.attached.get(server)

    async def open_listed(self, entry: EndpointEntry) -> tuple[Backend, ServerLists]:
        iid = entry.endpoint.instance_id
        future = self.opening[iid] = asyncio.get_running_loop().create_future()
        return await future

    def ready(self, iid: str) -> Backend:
        backend = Backend(iid)
        self.opening[iid].set_result((backend, ServerLists("s")))
        return backend

    def took(self, att: Attachment, backend: Any, lists: ServerLists) -> None:
        self.taken.append((att, backend))

    def declare_holds(self) -> None:
        self.holds_declared += 1

    def emit(self, event: str, server: str, detail: str) -> None:
        self.events.append((event, server, detail))

    def wake(self) -> None:
        self.wakes += 1


def setup(old: Backend) -> tuple[Host, Switchover, Attachment]:
    """A switchover whose server ``s`` is served by ``old``."""
    host = Host()
    att = Attachment(entry(old.instance_id), backend=old)
    host.attached["s"] = att
    return host, Switchover(host), att


async def until(predicate: Any, what: str = "") -> None:
    await support.until(predicate, within=10.0, every=0.005, what=what)


async def test_a_ready_new_instance_is_swapped_in_and_the_old_one_drained() -> None:
    old = Backend("a")
    host, switch, att = setup(old)
    switch.follow(att, entry("b"))
    await until(lambda: "b" in host.opening)
    assert att.backend is old and att.successor is not None  # the old one serves meanwhile
    new = host.ready("b")
    await until(lambda: host.taken, "switched")
    assert host.taken == [(att, new)]
    assert att.backend is new and att.successor is None and att.instance_id == "b"
    await until(lambda: old.closed, "the old one closed")
    assert old.reason == "replaced" and switch.draining == {}
    assert host.holds_declared >= 1  # the table hears the old instance is let go


async def test_the_old_backend_drains_its_calls_before_it_is_closed() -> None:
    old = Backend("a", pending=1)
    host, switch, att = setup(old)
    switch.follow(att, entry("b"))
    await until(lambda: "b" in host.opening)
    host.ready("b")
    await until(lambda: ("s", "a") in switch.draining, "draining")
    assert not old.closed  # a call is still in flight on it
    old.pending_count = 0
    await until(lambda: old.closed, "closed once drained")
    assert old.reason == "replaced" and ("s", "a") not in switch.draining


async def test_a_drain_ends_past_the_call_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(switchover, "DRAIN_SLACK_SECONDS", 0.0)
    old = Backend("a", pending=1, call_timeout=0.05)
    host, switch, att = setup(old)
    switch.follow(att, entry("b"))
    await until(lambda: "b" in host.opening)
    host.ready("b")
    await until(lambda: old.closed, "closed past its call timeout")
    assert old.reason == "replaced; past its call timeout"


async def test_a_failed_new_instance_is_retried_while_the_old_one_serves() -> None:
    old = Backend("a")
    host, switch, att = setup(old)
    switch.follow(att, entry("b"))
    await until(lambda: "b" in host.opening)
    error = BackendError("s", jsonrpc.BACKEND_UNAVAILABLE, "no luck")
    host.opening["b"].set_exception(error)
    await until(lambda: host.events, "the failure reported")
    succ = att.successor
    assert succ is not None and succ.failures == 1 and succ.last_error == "no luck"
    assert succ.retry_at > time.monotonic() and not succ.due(time.monotonic())
    assert host.events == [("failed", "s", "no luck")] and host.wakes == 1
    assert att.backend is old and not old.closed
    switch.start(att, succ)  # the retry (the lifecycle starts it once due)
    await until(lambda: not host.opening["b"].done())
    new = host.ready("b")
    await until(lambda: att.backend is new)


async def test_a_new_instance_takes_the_place_of_an_old_one_that_died() -> None:
    old = Backend("a")
    host, switch, att = setup(old)
    switch.follow(att, entry("b"))
    await until(lambda: "b" in host.opening)
    succ = att.successor
    assert succ is not None
    host.attached["s"] = succ  # the old one died: its successor stands for the server
    new = host.ready("b")
    await until(lambda: host.taken, "taken over")
    assert host.taken == [(succ, new)] and succ.backend is new
    assert switch.draining == {}  # nothing to drain: the old one is gone already


async def test_a_new_instance_nobody_wants_any_more_is_closed() -> None:
    old = Backend("a")
    host, switch, att = setup(old)
    switch.follow(att, entry("b"))
    await until(lambda: "b" in host.opening)
    del host.attached["s"]  # removed from the fleet meanwhile
    new = host.ready("b")
    await until(lambda: new.closed, "closed")
    assert new.reason == "superseded" and host.taken == []


async def test_publishing_another_new_instance_drops_the_one_being_attached() -> None:
    old = Backend("a")
    host, switch, att = setup(old)
    switch.follow(att, entry("b"))
    await until(lambda: "b" in host.opening)
    first = att.successor
    assert first is not None and first.task is not None
    switch.follow(att, entry("c"))
    await until(lambda: first.task.done() and "c" in host.opening)
    assert first.task.cancelled()
    assert att.successor is not None and att.successor.instance_id == "c"
    switch.follow(att, entry("c"))  # the same one again: nothing new is started
    assert att.successor.task is not None and not att.successor.task.done()


async def test_closing_closes_what_still_drains() -> None:
    old = Backend("a", pending=1)
    host, switch, att = setup(old)
    switch.follow(att, entry("b"))
    await until(lambda: "b" in host.opening)
    host.ready("b")
    await until(lambda: ("s", "a") in switch.draining)
    await switch.aclose()
    assert old.closed and old.reason == "router stopped" and switch.draining == {}
