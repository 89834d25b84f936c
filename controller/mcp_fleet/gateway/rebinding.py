"""Host and Origin checks against DNS rebinding, as the MCP spec asks of HTTP servers.

A web page on ``evil.example`` can make its own name resolve to 127.0.0.1
and then talk to a gateway on the visitor's machine as if same-origin. The
browser still sends ``Host: evil.example:8811`` and ``Origin:
http://evil.example``, which is how such requests are told apart:

- ``Host`` must name us: ``localhost``, ``127.0.0.1`` or ``[::1]`` with the
  port we listen on (the ASGI scope's ``server``, or the address the
  server bound, so a random port needs no configuration), that address
  itself (an IP literal cannot be rebound), or one of ``allowed_hosts`` (``name``
  for any port, ``name:port`` for one; ``*`` turns the check off, for a
  gateway behind a proxy that checks Host itself).
  A server bound to every address (``0.0.0.0``, ``::``) is reached by
  whatever address the machine has, so any IP literal passes there too.
- ``Origin``, when present, must be one of ``allowed_origins`` (exact,
  e.g. ``https://console.example.com``; ``*`` allows all), a page of an
  allowed host (our own status page), or a loopback page on any port (a
  local tool such as an MCP inspector; a rebinding page always carries its
  own domain, never a loopback name, which is why the official MCP SDK
  allows these too). ``Origin: null`` is refused.

Requests without these headers (curl, MCP clients) pass: rebinding needs a
browser, and browsers always send ``Host`` and, on cross-origin or
non-GET requests, ``Origin``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "[::1]"})
WILDCARD_ADDRESSES: Final = frozenset({"0.0.0.0", "::", "[::]", ""})
_MAX_REMEMBERED: Final = 1024
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def split_host(value: str) -> tuple[str, int | None]:
    """``"[::1]:8811"`` -> ``("[::1]", 8811)``; ``"Example.com"`` -> ``("example.com", None)``."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, None
        host, rest = value[: end + 1], value[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = value.partition(":")
    if not port_text:
        return host, None
    try:
        return host, int(port_text)
    except ValueError:
        return host, -1


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host.lower()


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class HostPolicy:
    """Decides whether a request's ``Host`` and ``Origin`` are ours."""

    def __init__(
        self,
        *,
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        hosts = [h.strip().lower() for h in allowed_hosts if h.strip()]
        self.any_host = "*" in hosts
        self.host_names: frozenset[str] = frozenset(
            split_host(h)[0] for h in hosts if split_host(h)[1] is None and h != "*"
        )
        self.host_ports: frozenset[tuple[str, int | None]] = frozenset(
            split_host(h) for h in hosts if split_host(h)[1] is not None
        )
        origins = [o.strip().lower().rstrip("/") for o in allowed_origins if o.strip()]
        self.any_origin = "*" in origins
        self.origins = frozenset(origins)
        self._seen: dict[
            tuple[str | None, str | None, tuple[str, int] | None, str], tuple[str, str] | None
        ] = {}

    def host_allowed(
        self, host: str, port: int | None, server: tuple[str, int] | None, scheme: str
    ) -> bool:
        """Is ``host:port`` us? ``server`` is the local address (None: any port)."""
        if self.any_host or host in self.host_names or (host, port) in self.host_ports:
            return True
        if port is None:
            port = _DEFAULT_PORTS.get(scheme, 80)
        if server is not None and port != server[1]:
            return False
        if host in LOOPBACK_NAMES:
            return True
        if server is None:
            return False
        bound = _bracket(str(server[0]))
        return host == bound or (bound in WILDCARD_ADDRESSES and _is_ip_literal(host))

    def check(
        self,
        host: str | None,
        origin: str | None,
        *,
        server: tuple[str, int] | None,
        scheme: str = "http",
    ) -> tuple[str, str] | None:
        """None when the request may go on, else ``(field, reason)`` for a 403.

        Runs on every request, with the same few headers over and over: answers are
        remembered (a bounded table, emptied when full).
        """
        if not self.enabled:
            return None
        key = (host, origin, server, scheme)
        try:
            return self._seen[key]
        except KeyError:
            pass
        verdict = self._check(host, origin, server=server, scheme=scheme)
        if len(self._seen) >= _MAX_REMEMBERED:
            self._seen.clear()
        self._seen[key] = verdict
        return verdict

    def _check(
        self, host: str | None, origin: str | None, *, server: tuple[str, int] | None, scheme: str
    ) -> tuple[str, str] | None:
        if host is not None:
            name, port = split_host(host)
            if not self.host_allowed(name, port, server, scheme):
                return (
                    "host",
                    f"Host {host!r} is not an allowed host of this gateway (DNS rebinding "
                    "protection); add it to the allowed hosts to serve it",
                )
        if origin is not None:
            normalized = origin.strip().lower().rstrip("/")
            if self.any_origin or normalized in self.origins:
                return None
            url = urlsplit(normalized)
            ok = False
            if url.scheme in _DEFAULT_PORTS and _bracket(url.hostname or "") in LOOPBACK_NAMES:
                ok = True
            elif url.scheme in _DEFAULT_PORTS and url.hostname:
                try:
                    port = url.port or _DEFAULT_PORTS[url.scheme]
                except ValueError:
                    port = -1
                ok = self.host_allowed(_bracket(url.hostname), port, server, scheme)
            if not ok:
                return (
                    "origin",
                    f"Origin {origin!r} is not allowed (DNS rebinding protection); "
                    "add it to the allowed origins to serve it",
                )
        return None
