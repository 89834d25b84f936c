"""The last-activity throttle and ``KubeDemand``, with a hand-driven clock.

``RefreshThrottle`` decides when an on-demand MCPServer's annotation gets a
new stamp; ``KubeDemand`` turns the activator's wants and activity into
those stamps through a patcher. Here the patcher records what it is asked
(or fails on purpose) and the activity is set by the test, so every rule
is checked without an API server and without waiting for real time; the
end-to-end path through kmock and the operator is in ``test_on_demand_kube``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest
from mcp_fleet.endpoints import Activity
from mcp_fleet.sources.kube_demand import (
    KubeDemand,
    RefreshThrottle,
    Target,
    refresh_interval,
)

ANNOTATION = "mcp-fleet.dev/last-activity"
LAZY = Target("team", "lazy", "uid-1", idle_timeout=600.0)  # refresh interval 150 s
QUICK = Target("team", "quick", "uid-2", idle_timeout=20.0)  # refresh interval 15 s (minimum)
WALL = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Patcher:
    """Records patches; fails the next ``fail`` of them; can hold them until released."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.fail = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise RuntimeError("API error 503: unavailable")
        self.calls.append((namespace, name, dict(annotations)))


class Usage:
    """The activator's side: what ``activity`` answers."""

    def __init__(self) -> None:
        self.now: dict[str, Activity] = {}

    def activity(self) -> Mapping[str, Activity]:
        return dict(self.now)

    def retire(self, server: str) -> bool:
        return True


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def make_demand() -> tuple[KubeDemand, Patcher, Clock, Usage]:
    patcher, clock, usage = Patcher(), Clock(), Usage()
    targets = {"lazy": LAZY, "quick": QUICK}
    demand = KubeDemand(targets.get, patch=patcher, clock=clock, wall_clock=lambda: WALL)
    demand.serve(usage)
    return demand, patcher, clock, usage


def test_refresh_interval_is_a_quarter_of_the_idle_timeout_and_at_least_15_s() -> None:
    assert refresh_interval(600) == 150
    assert refresh_interval(60) == 15
    assert refresh_interval(10) == 15
    assert refresh_interval(3600, minimum=30) == 900


def test_throttle_rules() -> None:
    t = RefreshThrottle()
    key = LAZY.key
    # Never stamped: due when needed or used recently, not for an old use or no use.
    assert t.due(key, now=0, idle_timeout=600, needed=True)
    assert t.due(key, now=100, idle_timeout=600, last_use=90)
    assert not t.due(key, now=1000, idle_timeout=600, last_use=100)
    assert not t.due(key, now=0, idle_timeout=600)
    t.stamped(key, at=0)
    # Within the interval nothing is due, even a call in flight or waiting.
    assert not t.due(key, now=149, idle_timeout=600, needed=True)
    # After it: due only when something used the server since the stamp.
    assert t.due(key, now=150, idle_timeout=600, needed=True)
    assert t.due(key, now=150, idle_timeout=600, last_use=10)
    assert not t.due(key, now=10_000, idle_timeout=600, last_use=0)
    assert not t.due(key, now=10_000, idle_timeout=600)
    # Failures back off exponentially up to 30 s, then a success resets the backoff.
    assert [t.failed(key, now=200) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert not t.due(key, now=229, idle_timeout=600, needed=True)
    assert t.due(key, now=230, idle_timeout=600, needed=True)
    t.stamped(key, at=230)
    assert t.failed(key, now=231) == 1
    # Servers no longer followed are forgotten.
    t.forget({QUICK.key})
    assert t.records == {}


async def test_want_stamps_at_once_and_once_for_concurrent_calls() -> None:
    demand, patcher, clock, _ = make_demand()
    woken: list[int] = []
    demand.subscribe(lambda: woken.append(1))
    patcher.gate = asyncio.Event()
    for _ in range(50):  # fifty first calls for a cold server
        demand.want("lazy")
    assert len(woken) == 50  # local listeners still hear every want
    assert demand.writing() == 1
    patcher.gate.set()
    await settle()
    assert patcher.calls == [("team", "lazy", {ANNOTATION: "2026-05-01T12:00:00Z"})]
    assert demand.writing() == 0
    # A later call within the refresh interval needs no new stamp (the operator has it).
    clock.now += 60
    demand.want("lazy")
    await settle()
    assert len(patcher.calls) == 1
    # A server that is not an on-demand MCPServer the router follows is never patched.
    demand.want("always-on")
    await settle()
    assert len(patcher.calls) == 1


async def test_calls_in_flight_refresh_the_stamp_once_per_interval() -> None:
    demand, patcher, clock, usage = make_demand()
    usage.now = {"lazy": Activity(idle_seconds=0.0, inflight=2)}
    demand.stamp_used()
    await settle()
    assert len(patcher.calls) == 1
    # Busy all along: one stamp per 150 s however often the loop looks.
    for _ in range(149):
        clock.now += 1
        demand.stamp_used()
        await settle()
    assert len(patcher.calls) == 1
    clock.now += 1
    demand.stamp_used()
    await settle()
    assert len(patcher.calls) == 2
    # Idle since that stamp: no more writes, and the operator may scale it down.
    clock.now += 1000
    usage.now = {"lazy": Activity(idle_seconds=1000.0)}
    demand.stamp_used()
    await settle()
    assert len(patcher.calls) == 2
    # A short idle timeout still waits the 15 s minimum.
    usage.now = {"quick": Activity(idle_seconds=0.0, inflight=1)}
    demand.stamp_used()
    clock.now += 14
    demand.stamp_used()
    await settle()
    assert [c[1] for c in patcher.calls] == ["lazy", "lazy", "quick"]
    clock.now += 1
    demand.stamp_used()
    await settle()
    assert [c[1] for c in patcher.calls] == ["lazy", "lazy", "quick", "quick"]


async def test_a_failed_write_is_logged_and_retried_while_a_call_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mcp_fleet.sources.kube_demand")
    demand, patcher, clock, usage = make_demand()
    patcher.fail = 2
    demand.want("lazy")  # never raises: the call keeps waiting
    await settle()
    assert patcher.calls == []
    assert "MCPServer team/lazy: cannot mark activity (RuntimeError: API error 503" in caplog.text
    usage.now = {"lazy": Activity(idle_seconds=0.0, waiting=1)}
    demand.stamp_used()  # backing off: not yet
    await settle()
    clock.now += 1
    demand.stamp_used()  # second failure
    await settle()
    assert patcher.calls == []
    clock.now += 1.5
    demand.stamp_used()  # still backing off (2 s)
    await settle()
    clock.now += 0.5
    demand.stamp_used()
    await settle()
    assert patcher.calls == [("team", "lazy", {ANNOTATION: "2026-05-01T12:00:00Z"})]


async def test_run_refreshes_in_the_background_and_cancels_cleanly() -> None:
    demand, patcher, _, usage = make_demand()
    demand.tick = 0.01
    usage.now = {"lazy": Activity(idle_seconds=0.0, inflight=1)}
    task = asyncio.create_task(demand.run())
    for _ in range(100):
        await asyncio.sleep(0.01)
        if patcher.calls:
            break
    assert [c[1] for c in patcher.calls] == ["lazy"]
    patcher.gate = asyncio.Event()  # a write that never ends...
    demand.want("quick")
    await settle()
    assert demand.writing() == 1
    task.cancel()  # ...is cancelled with the loop
    with pytest.raises(asyncio.CancelledError):
        await task
    assert demand.writing() == 0
