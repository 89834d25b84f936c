"""Helpers shared by the controller's integration tests (process and Docker runtimes).

Both suites drive a real ``Controller`` in the test's own event loop and
wait on its status, then talk to a converged server the way the router
would: open its endpoint, initialize again, call a tool.

"Nothing happened" is checked against the controller's own progress, never
a fixed wait: ``passes`` waits until the controller has completed more
reconcile passes (each one publishes a new status), and a ``Recorder``
around the runtime lists every start and stop it asked for, so a test can
assert that those passes took no action.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from mcp_fleet import conventions
from mcp_fleet.endpoints import StreamEndpoint
from mcp_fleet.model import ServerSpec
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.reconcile.snapshot import StatusSnapshot
from mcp_fleet.runtimes.base import Instance, Runtime
from mcp_fleet.status import ServerState
from support import until as _until


async def until(
    ctl: Controller, check: Callable[[StatusSnapshot], bool], *, within: float = 30.0
) -> StatusSnapshot:
    """The first status that passes ``check``; fails with the last status after ``within`` s."""

    def passed() -> StatusSnapshot | None:
        snap = ctl.status()
        return snap if check(snap) else None

    return await _until(  # type: ignore[no-any-return]
        passed, within=within, what="status condition",
        context=lambda: f"status: {ctl.status().to_json()}",
    )  # fmt: skip


async def passes(
    ctl: Controller, count: int = 2, *, after: float | None = None, within: float = 30.0
) -> StatusSnapshot:
    """Wait until ``ctl`` has completed ``count`` more reconcile passes; their last status.

    Every pass publishes a new ``StatusSnapshot`` (``ctl.status()``), so a new
    object is one more completed pass. Each pass is asked for (``ctl.wake()``)
    rather than waited for. Passes are serial: with ``count >= 2`` at least one
    whole pass began after this call. ``after`` (Unix time, the controller's
    clock) counts only passes that ended at or after it: what a pass would do
    once a backoff delay has run out.
    """
    seen = ctl.status()
    done = 0

    def more() -> StatusSnapshot | None:
        nonlocal seen, done
        snap = ctl.status()
        if snap is not seen:
            seen = snap
            done += after is None or snap.updated_at >= after
        if done >= count:
            return snap
        if after is None or time.time() >= after:
            ctl.wake()
        return None

    return await _until(  # type: ignore[no-any-return]
        more, within=within, every=0.02, what=f"{count} more reconcile passes",
        context=lambda: f"status: {json.dumps(ctl.status().to_json())}",
    )  # fmt: skip


class Recorder:
    """A real runtime, with the order of starts, successful probes and stops noted.

    Only observes: every call goes to the runtime unchanged. ``calls`` holds
    ``("start", server)``, ``("ready", instance id)`` and ``("stop", instance id)``.
    """

    def __init__(self, inner: Runtime) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.calls: list[tuple[str, str]] = []
        #: When each server's starts were asked for (``time.monotonic``).
        self.start_times: dict[str, list[float]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def probe(self, instance: Instance, *, timeout: float) -> None:
        await self.inner.probe(instance, timeout=timeout)
        self.calls.append(("ready", instance.instance_id))

    async def stop(self, instance: Instance) -> None:
        self.calls.append(("stop", instance.instance_id))
        await self.inner.stop(instance)

    async def start(self, spec: ServerSpec) -> Instance:
        self.calls.append(("start", spec.name))
        self.start_times.setdefault(spec.name, []).append(time.monotonic())
        return await self.inner.start(spec)

    def actions_since(self, mark: int) -> list[tuple[str, str]]:
        """The starts and stops asked for after ``calls[:mark]``."""
        return [c for c in self.calls[mark:] if c[0] in ("start", "stop")]


def state(name: str, wanted: ServerState) -> Callable[[StatusSnapshot], bool]:
    """A check for ``until``: server ``name`` is in state ``wanted``."""

    def check(snap: StatusSnapshot) -> bool:
        st = snap.server(name)
        return st is not None and st.state is wanted

    return check


async def call_echo(endpoint: StreamEndpoint, text: str) -> str:
    """Take the probed instance over as a router would: initialize again, call ``echo``."""
    stream = await endpoint.open()
    try:
        params = {"protocolVersion": conventions.MCP_PROTOCOL_VERSION, "capabilities": {},
                  "clientInfo": {"name": "t", "version": "0"}}  # fmt: skip
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}
        await stream.send(json.dumps(init).encode())
        await answer(stream, 1)
        await stream.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": text}}}  # fmt: skip
        await stream.send(json.dumps(call).encode())
        result = await answer(stream, 2)
        return str(result["result"]["content"][0]["text"])
    finally:
        await stream.aclose()


async def answer(stream: Any, rid: int) -> dict[str, Any]:
    """The response to request ``rid`` (notifications and other ids are skipped)."""
    while True:
        doc = json.loads(await asyncio.wait_for(stream.receive(), 10))
        if doc.get("id") == rid:
            return dict(doc)
