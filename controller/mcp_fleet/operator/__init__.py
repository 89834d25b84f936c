"""The MCPServer operator: custom resources in, Deployments, Services and status out.

Layers, from pure to I/O (planning imports no Kubernetes client):

- ``mcp_fleet.kube.spec``: the MCPServer ``spec`` as a typed, validated model (shared
  with the cluster's router).
- ``k8s_plan``: spec -> desired child manifests (Deployment or StatefulSet, Services,
  NetworkPolicy); ``k8s_diff``: the actions that turn observed children into them.
- ``k8s_status``: observations + probe result -> ``status`` (conditions with the
  vocabulary of ``mcp_fleet.status``).
- ``readiness``: a real MCP ``initialize`` over HTTP against a server's Service.
- ``mcp_fleet.kube.client``: the few Kubernetes API calls it makes (kubernetes_asyncio).
- ``handlers``: kopf wiring, the work queue and the reconcile pass.
- ``registry_sync``: a registry ConfigMap's data -> the MCPServers it asks for (pure);
  ``registry_watch``: follows that one ConfigMap and applies the difference.
- ``main``: ``mcp-fleet operator``. (The stdio bridge its pods run is ``mcp_fleet.bridge``.)

Imports ``kube``, ``runtimes.docker_spec`` (container limits' grammar),
config and the shared modules; never the router, the endpoint sources or
the CLI (``lint-imports``, pyproject.toml).
"""
