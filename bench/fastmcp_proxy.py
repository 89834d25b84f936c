"""The FastMCP proxy in front of a stdio server, for the router benchmark.

Usage (with the benchmark's peer interpreter): ``fastmcp_proxy.py PORT COMMAND ARGS...``.
Serves streamable HTTP on 127.0.0.1:PORT/mcp, the way FastMCP's docs build a proxy.
"""

from __future__ import annotations

import sys

from fastmcp.server import create_proxy


def main() -> None:
    port = int(sys.argv[1])
    command, *args = sys.argv[2:]
    config = {"mcpServers": {"echo": {"command": command, "args": args}}}
    proxy = create_proxy(config, name="fastmcp-proxy")
    proxy.run(transport="http", host="127.0.0.1", port=port, show_banner=False, log_level="warning")


if __name__ == "__main__":
    main()
