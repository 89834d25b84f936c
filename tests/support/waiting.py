"""Wait on something observable, never a fixed time; and a free loopback port."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def until(
    check: Callable[[], Any | Awaitable[Any]],
    *,
    within: float = 30.0,
    what: str = "",
    every: float = 0.05,
    context: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; return that.

    Fails with ``what`` (and ``context()``, e.g. a process's log) after ``within`` s.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            extra = f"\n{context()}" if context is not None else ""
            raise AssertionError(f"not reached in {within:g} s: {what}{extra}")
        await asyncio.sleep(every)


def until_sync(
    check: Callable[[], Any],
    *,
    within: float = 30.0,
    what: str = "",
    every: float = 0.05,
    context: Callable[[], str] | None = None,
) -> Any:
    """``until`` for code without an event loop: poll ``check`` until it returns something
    truthy; return that. Fails with ``what`` (and ``context()``) after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{context()}" if context is not None else ""
            raise AssertionError(f"not reached in {within:g} s: {what}{extra}")
        time.sleep(every)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
