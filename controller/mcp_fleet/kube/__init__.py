"""What the operator and the cluster's router share about Kubernetes.

- ``spec``: the MCPServer ``spec`` as a typed, validated model (errors name the field).
- ``client``: the few Kubernetes API calls mcp-fleet makes (kubernetes_asyncio).

Pure vocabulary and thin API calls: imports only the shared modules
(``mcp_fleet.errors``, ``mcp_fleet.conventions``, ...), never the operator,
the router or the controller. Enforced by the import-linter contracts in
pyproject.toml.
"""
