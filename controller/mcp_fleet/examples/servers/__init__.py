"""Small MCP servers used by the example fleet, the tests and the benchmarks.

- ``notes``: shared in-memory notes on the official ``mcp`` SDK (tools, a
  resource template and a prompt), the way most real servers are written.
- ``calc``: a dependency-free calculator speaking MCP over stdio with the
  standard library only, so it starts in tens of milliseconds; the scale
  tests start a hundred of them, where the SDK's ~1.5 s import would dominate.
"""
