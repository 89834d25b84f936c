"""``Router.wait_settled``: bounded once, from the router's start, however many requests wait.

A router whose fleet never settles (here: the table is never published)
lets each waiting request go at ``settle_timeout`` after its start, not
``settle_timeout`` after each request began to wait; a shorter ``timeout``
cuts one wait short; once settled, nobody waits.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.router.router import Router

pytestmark = pytest.mark.timeout(20)


async def test_waits_end_at_one_deadline_from_the_start() -> None:
    published = asyncio.Event()  # never set: the router never settles
    router = Router(EndpointTable(), settle_timeout=0.6, published=published)
    following = asyncio.create_task(router.run())
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        await router.wait_settled(timeout=0.2)
        assert 0.15 <= loop.time() - started < 0.45  # cut short by its own timeout
        await router.wait_settled()
        await router.wait_settled()  # a second request does not wait again
        assert 0.5 <= loop.time() - started < 1.0
        assert not router.settled.is_set()
        published.set()
        await asyncio.wait_for(router.settled.wait(), 5)
        before = loop.time()
        await router.wait_settled()
        assert loop.time() - before < 0.05
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
