"""Example material shipped with mcp-fleet: the fleet ``mcp-fleet init`` writes and tiny servers.

Kept import-free so ``python -m mcp_fleet.examples.servers.calc`` starts in
tens of milliseconds: nothing here may import the rest of the package.
"""
