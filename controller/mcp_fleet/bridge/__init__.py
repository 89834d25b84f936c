"""``mcp-fleet bridge``: a stdio MCP server served over streamable HTTP, in its pod.

- ``serve``: the HTTP side (one backend shared by every client, or one
  process per session with ``--per-session``) and the command's options.
- ``hub``: the stdio side: the child process, its FIFOs, and the
  multiplexing of client requests onto it.

Runs inside a server's pod, so it stands alone: it imports only the shared
modules (``transport``, ``probe``), never the operator, the router or the
controller. Enforced by the import-linter contracts in pyproject.toml.
"""
