"""The team gateway: what makes the router safe to share over HTTP and easy to watch.

The router forwards MCP messages; everything that protects and observes it
lives here, as plain ASGI pieces the router's HTTP app is wrapped in, so the
router's hot path stays free of policy code and each piece is testable alone:

- ``identity``: who is calling and what they may call (allow-lists,
  the MCP error payloads for "forbidden").
- ``tokens``: bearer tokens in ``<fleet dir>/tokens.yaml``, hashed at rest.
- ``oidc``: optional JWT validation against an identity provider's JWKS.
- ``rebinding``: Host and Origin checks against DNS rebinding.
- ``auth``: the ASGI middleware (rebinding, authentication, body limits) and
  the refusal to serve a non-loopback address without authentication.
- ``limits``: per-identity and per-server concurrency and rate limits.
- ``audit``: one JSON line per call, written off the hot path.
- ``metrics``: Prometheus metrics and their ``/metrics`` route.
- ``web``: the status page, ``/api/status``, ``/healthz`` and ``/readyz``.
- ``app``: ``build_gateway_app`` puts them together around the router.

Nothing is imported here, so ``import mcp_fleet.gateway.tokens`` (the CLI)
does not load prometheus_client or PyJWT.
"""
