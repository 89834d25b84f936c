"""A tiny MCP server over stdio for tests: ``echo``, ``add`` and ``sleep``.

Runs the same way as a local process (``python tests/servers/echo_server.py``)
and inside the ``mcp-fleet-test/servers`` image (``/servers/echo_server.py``),
so process-runtime and Docker-runtime tests drive one and the same server.

Built on the official SDK's ``MCPServer`` (the high-level API): a real server
as users write them, with schemas derived from the typed functions. Its start
time is dominated by importing the ``mcp`` package itself, which the lowlevel
server pays just the same, so the high-level API costs nothing extra here.
"""

from __future__ import annotations

import anyio
from mcp.server.mcpserver import MCPServer

server = MCPServer("echo", instructions="Test server: echo, add and sleep.")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def add(a: float, b: float) -> float:
    """Return a + b."""
    return a + b


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep for the given number of seconds, then say how long it slept."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


if __name__ == "__main__":
    server.run("stdio")
