"""The team gateway: what makes the router safe to share over HTTP and easy to watch.

The router forwards MCP messages; everything that protects and observes it
lives here, in pieces wrapped around the router's HTTP front end, so the
router's hot path stays free of policy code and each piece is testable alone:

- ``identity``: who is calling and what they may call (allow-lists,
  the MCP error payloads for "forbidden").
- ``tokens``: bearer tokens in ``<fleet dir>/tokens.yaml``, hashed at rest.
- ``oidc``: optional JWT validation against an identity provider's JWKS.
- ``rebinding``: Host and Origin checks against DNS rebinding.
- ``cookies``: the status page's signed sign-in cookie.
- ``credentials``: bearer tokens, JWTs and cookies to identities.
- ``gate``: the per-request decision (rebinding checks, authentication),
  from plain values.
- ``auth``: the refusal to serve a non-loopback address without
  authentication, and the default body limit and deadline.
- ``callback``: the front door, a handler for the router's own HTTP server
  (``router.http_server``, which enforces the body limit and deadline): the
  gate on every request, the gateway's own pages, the rest to the router
  with the caller's identity.
- ``limits``: per-identity and per-server concurrency and rate limits.
- ``guard``: the per-call check the router makes (allow-list, limits,
  metrics, audit) in two calls, ``begin`` and ``finish``.
- ``audit``: one JSON line per call, written off the hot path.
- ``metrics``: Prometheus metrics and their ``/metrics`` route.
- ``web``: the status page, ``/api/status``, ``/healthz`` and ``/readyz``.
- ``app``: ``GatewaySettings`` and ``Gateway`` (every part, from one
  settings object).

Nothing is imported here, so ``import mcp_fleet.gateway.tokens`` (the CLI)
does not load prometheus_client or PyJWT.

Imports only ``config`` and the shared modules, never the router, the
controller or the runtimes (``lint-imports``, pyproject.toml): the router
uses the gateway, not the other way round.
"""
