"""Runtimes: where the controller runs servers (local processes, Docker).

Each runtime implements the small ``Runtime`` protocol of ``runtimes.base``.
The planner never imports a runtime; the executor calls one.

Imports only the shared modules at the top of ``mcp_fleet`` (never the
controller, the router, the gateway or config: ``lint-imports``,
pyproject.toml). Pods are run by the operator (``mcp_fleet.operator``), not
by a runtime here.
"""
