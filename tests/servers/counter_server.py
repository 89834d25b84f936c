"""A stateful MCP server over stdio for tests: a counter that lives as long as its process.

``increment`` adds one to a counter held in this process and answers
``count=<n> pid=<pid> host=<hostname>``: two clients sharing one instance
see their counts interleave, two clients with instances of their own each
count 1, 2, 3; the pid (and, in a container, the hostname, which is the
container's id) tells the instances apart. ``announce`` sends a log message
before it answers, to see which client a server's notifications reach.

Runs as a local process (``python tests/servers/counter_server.py``) and in
the ``mcp-fleet-test/servers`` image (``/servers/counter_server.py``), on the
official SDK's ``MCPServer``.
"""

from __future__ import annotations

import os
import socket

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("counter", instructions="Test server: a per-process counter.")
_count = 0


@server.tool()
def increment() -> str:
    """Add one to this process's counter and say where it stands."""
    global _count
    _count += 1
    return f"count={_count} pid={os.getpid()} host={socket.gethostname()}"


@server.tool()
async def announce(text: str, ctx: Context) -> str:
    """Send ``text`` as a log message, then return it."""
    await ctx.info(f"{text} pid={os.getpid()}")
    return text


if __name__ == "__main__":
    server.run("stdio")
