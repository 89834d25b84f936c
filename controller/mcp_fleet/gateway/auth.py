"""The rule about serving without authentication, and the default request bounds.

``refuse_unauthenticated_bind`` is the start-up rule: serving anything but
loopback without authentication needs an explicit ``--allow-unauthenticated``
(anyone who can reach the port could call every tool of the fleet).

The per-request checks (Host and Origin against DNS rebinding, then the
credential) are ``gate.RequestGate``'s, run by ``callback.GatewayHandler``
in front of the router's own HTTP server, which enforces the body bounds
below: a body over ``max_body_bytes`` is refused with 413, a request that
has not arrived whole within ``body_timeout_seconds`` (a slow client holding
a connection) with 408.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from mcp_fleet.errors import RuntimeFailure

#: Default ``GatewaySettings.max_body_bytes``.
DEFAULT_MAX_BODY_BYTES: Final = 32 * 1024 * 1024
#: Default ``GatewaySettings.body_timeout_seconds``.
DEFAULT_BODY_TIMEOUT_SECONDS: Final = 30.0


class UnsafeBindError(RuntimeFailure):
    """Serving a non-loopback address without authentication, not explicitly allowed."""


def is_loopback_host(host: str) -> bool:
    """``localhost`` and loopback IP literals (``127.0.0.1``, ``::1``, ``[::1]``)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def refuse_unauthenticated_bind(
    host: str, auth_configured: bool, allow_unauthenticated: bool
) -> None:
    """Raise ``UnsafeBindError`` unless ``host`` is loopback, auth is set up, or it is allowed."""
    if is_loopback_host(host) or auth_configured or allow_unauthenticated:
        return
    raise UnsafeBindError(
        f"refusing to listen on {host} without authentication: anyone who can reach it "
        "could call every tool of the fleet. Create a token (mcp-fleet token create NAME), "
        "configure OIDC (oidc.yaml in the fleet directory), listen on 127.0.0.1, "
        "or pass --allow-unauthenticated"
    )


__all__ = [
    "DEFAULT_BODY_TIMEOUT_SECONDS",
    "DEFAULT_MAX_BODY_BYTES",
    "UnsafeBindError",
    "is_loopback_host",
    "refuse_unauthenticated_bind",
]
