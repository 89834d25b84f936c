"""Endpoint sources: what feeds the router's endpoint table, and from where.

The router core (``mcp_fleet.router``) serves whatever ``EndpointTable`` it
is given; these modules fill that table for each way the router runs:

- ``adhoc``: servers named on the command line (``router --server NAME=CMD``).
- ``docker_fleet``: ``router --dir``: a fleet's containers run by a
  controller elsewhere, followed through the Docker API and the fleet files.
- ``kube_follow``, ``kube_router``, ``kube_demand``: the shared router in a
  cluster: MCPServer resources and their Services, and cold on-demand
  servers scaled up through their resources.
- ``demand_client``: the controller's demand socket (``router --dir`` beside
  a separate controller): asks it to start a cold on-demand server.
- ``session_runtimes``: per-client instances on the fleet's runtimes (the
  ``SessionLauncher`` ``mcp-fleet up`` gives its router).

(``mcp-fleet up`` feeds the table from its own controller, in ``reconcile``.)

May import the router core, the controller's packages (``reconcile``,
``runtimes``, ``config``) and ``kube``; never ``cli``, ``operator`` or
``bridge``. Enforced by the import-linter contracts in pyproject.toml.
"""
