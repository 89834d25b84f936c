"""The router: one MCP endpoint in front of every Ready server of the fleet.

Layout, from the wire inwards:

- ``frontend_stdio`` / ``frontend_http`` (on ``http_server``): client
  transports (stdio; streamable HTTP and legacy SSE), one ``RouterSession``
  per client.
- ``session``: what one client sees: initialize, aggregated lists with
  pagination, forwarding by name or URI, per-client state.
- ``router``: follows the controller's ``EndpointTable``, attaches and
  detaches backends, rebuilds the routing table (``table``) and fans
  notifications out; shared client state (subscriptions, log level).
- ``backend`` (over ``attach``, ``http_backend``): one multiplexed MCP
  session per server, with id rewriting, deadlines and failure isolation.
- ``jsonrpc``, ``uri_match``: wire helpers; ``serve``, ``adhoc``,
  ``follow``, ``client_config``: what the CLI commands build on.

Messages are forwarded as parsed JSON (orjson), not through the SDK's
high-level server: see bench/router_bench.py for why.
"""
