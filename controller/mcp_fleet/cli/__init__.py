"""The ``mcp-fleet`` command line (typer + rich).

``main`` builds the application from command modules; each module exposes
``register(app)`` so a new command group is one line in ``main``. ``common``
holds what every command shares: the fleet options (``--dir`` and Docker's
per-file flags), error-to-exit-code mapping and output helpers.
"""
