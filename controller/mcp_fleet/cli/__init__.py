"""The ``mcp-fleet`` command line (typer + rich).

``main`` builds the application from command modules; each module exposes
``register(app)`` so a new command group is one line in ``main``. ``common``
holds what every command shares: the fleet options (``--dir`` and Docker's
per-file flags), error-to-exit-code mapping and output helpers.

A command parses its options, maps errors to exit codes and prints; what
it runs lives elsewhere. ``mcp-fleet up`` is the largest: ``up_cmd`` parses
and handles signals and the console, ``up_app`` wires the application
(controller, router, gateway) so a test can run it in its own event loop,
and ``up_controller`` holds the hooks ``up`` attaches to the controller.

What it may import: everything below it (it is the top layer; nothing but
``python -m mcp_fleet.router`` imports it; ``lint-imports``, pyproject.toml).
What it must not import when the application is built: every command
module is imported for ``mcp-fleet --help``, so each keeps its heavy
imports (the config loader, the controller, the router, the MCP SDK, the
Docker and Kubernetes clients, even asyncio) inside its command functions;
``up_app`` and ``up_controller`` are imported only when ``up`` runs.
"""
