"""mcp-fleet: a reconciling controller and router for fleets of MCP servers.

The package is layered; each layer imports only the layers below it, and
``lint-imports`` (contracts in pyproject.toml) checks it in CI:

- ``cli``: the ``mcp-fleet`` command on top of all of it.
- ``operator`` (the kopf operator for ``MCPServer`` resources) and
  ``bridge`` (stdio served over HTTP in a pod), independent of each other.
- ``sources``: what feeds the router's endpoint table when it runs alone
  (a Docker fleet, ad-hoc servers, a cluster, the demand socket).
- ``router`` (the MCP front door that aggregates and forwards; it runs no
  server and reads no fleet), ``reconcile`` (the pure planner and the loop
  that applies plans through a ``Runtime``) and ``kube`` (the MCPServer
  spec and Kubernetes API calls), independent of each other.
- ``gateway`` (who may do what over HTTP) and ``runtimes`` (process and
  docker), independent of each other.
- ``config``: reads the fleet directory into a ``DesiredState``.
- the modules at the top of the package (``model``, ``errors``, ``status``,
  ``conventions``, ``endpoints``, ``transport``, ``probe``, ``logsetup``,
  ``private_files``, ``docker_attach``): the vocabulary every other part
  speaks; they import no package of ours.
"""

__version__ = "0.1.0"
