"""The router: one MCP endpoint in front of every Ready server of the fleet.

Every module of the package and its job, from the wire inwards:

Client side
  - ``frontend_stdio``: one client on our stdin/stdout (what a client's
    config launches), its first requests held by ``startup_gate`` until the
    fleet it connects to is there.
  - ``frontend_http``: streamable HTTP on ``/mcp`` and legacy SSE, on
    ``http_server`` (a small HTTP/1.1 server: httptools parsing, answers
    written from callbacks; ``http_messages``: what a handler sees;
    ``http_head``: a request's head within its limits; ``http_limits``: the
    limits, connection accounting and watchdog); ``http_service`` puts the gateway
    (``mcp_fleet.gateway``) around it; ``session_token`` signs session ids any
    replica can serve; ``callpolicy`` applies a client's allow-lists, limits,
    metrics and audit to each of its calls.
  - ``session``: ``RouterSession``, what one client sees (initialize, the
    aggregated lists, forwarding by name or URI, the call admission), and
    ``SessionHost``, all a session uses of the router; ``listing``: the lists
    a page at a time; ``outstanding``: a session's calls in flight or held,
    and the server-to-client requests awaiting its answer.

The router
  - ``router``: ``Router`` follows the controller's ``EndpointTable``,
    rebuilds the routing table (``table``: names, renames, routes) and tells
    clients what changed; ``clients``: ``ClientHub``, its base, keeps what
    client sessions share (subscriptions, log levels) and delivers server
    messages to the clients they concern.
  - ``lifecycle``: ``BackendLifecycle``, the shared backends from attach to
    release (retry with backoff, list refresh, idle release, the instances
    held); ``switchover``: make-before-break to a new instance, and the
    drain of the old one; ``attachment``: the record kept per published
    server and the steps of every attach.
  - ``activator``: on-demand servers while cold (cached lists, calls waiting
    for a start, activity for the controller).
  - ``per_client``: ``sessions: per-client`` servers, an instance per client
    session, started through ``session_launcher``.

Server side
  - ``backend``: one multiplexed MCP session per server, with id rewriting,
    deadlines and failure isolation; ``attach``: how each endpoint kind is
    reached and each list read page by page; ``http_backend``: a stream to a
    server over HTTP.
  - ``jsonrpc``, ``uri_match``: wire helpers (framing on the hot path;
    resource templates).

Running it: ``serve`` runs a router with one frontend (what ``mcp-fleet
router`` and ``mcp-fleet up`` share); ``__main__`` is ``python -m
mcp_fleet.router``.

Messages are forwarded as parsed JSON (orjson), not through the SDK's
high-level server: see bench/router_bench.py for why.

It serves whatever ``EndpointTable`` it is given and runs no server itself:
it imports the gateway, config and the shared modules, never the
controller (``reconcile``), the runtimes, the operator, ``kube`` or the
endpoint sources that fill its table (``mcp_fleet.sources``); per-client
instances come through the ``SessionLauncher`` it is handed
(``lint-imports``, pyproject.toml).
"""
