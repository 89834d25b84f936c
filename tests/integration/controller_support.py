"""Helpers shared by the controller's integration tests (process and Docker runtimes).

Both suites drive a real ``Controller`` in the test's own event loop and
wait on its status, then talk to a converged server the way the router
would: open its endpoint, initialize again, call a tool.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from mcp_fleet import conventions
from mcp_fleet.endpoints import StreamEndpoint
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.reconcile.snapshot import StatusSnapshot
from mcp_fleet.status import ServerState


async def until(
    ctl: Controller, check: Callable[[StatusSnapshot], bool], *, within: float = 30.0
) -> StatusSnapshot:
    """The first status that passes ``check``; fails with the last status after ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        snap = ctl.status()
        if check(snap):
            return snap
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met in {within} s; status: {ctl.status().to_json()}")


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
