"""mcp-fleet: a reconciling controller and router for fleets of MCP servers.

The package is layered (checked in CI by a test that inspects imports):

- ``conventions``, ``errors``, ``model``, ``status``, ``transport``: the
  vocabulary every other part speaks; they import nothing of ours but each
  other.
- ``config``: reads the fleet directory into a ``DesiredState``.
- ``reconcile``: the pure planner (imports no client library) and the
  executor/loop that apply plans through a ``Runtime``.
- ``runtimes``: process, docker (and kubernetes) implementations.
- ``router``: the MCP front door that aggregates and forwards.
- ``operator``: the kopf operator for ``MCPServer`` resources.
- ``cli``: the typer application on top of all of it.
"""

__version__ = "0.1.0"
