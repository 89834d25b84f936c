"""The status page, ``/api/status``, ``/healthz`` and ``/readyz``.

All of it reads one ``StatusProvider``: a callable returning a dict (or an
awaitable of one), so the same pages serve the local controller (its status
file or ``Controller.status()``), a router alone, and later the cluster. The
dict is the status file's shape (``reconcile.statusfile``), of which these
keys are used, all optional::

    {
      "fleet": "my-fleet-1a2b3c4d", "updated_at": 1767225600.0,
      "ready": true,                 # /readyz: else "all_ready", else true
      "all_ready": true,
      "file_errors": [{"text": "registry.yaml:7: ..."}],
      "runtime_errors": {"docker": "..."},
      "servers": [{"name": "time", "state": "Ready", "reason": "Initialized",
                   "message": "", "runtime": "process",
                   "tools": ["get_current_time", ...]}]   # or a count; the router adds it
    }

``/api/status`` answers that dict with, per server, the last minute's
``calls_per_minute``, ``errors_per_minute``, ``calls_total``,
``errors_total`` and ``in_flight`` from ``FleetMetrics``, a ``totals``
object, ``generated_at`` and the viewer's ``identity``. A viewer whose
allow-list names only some servers sees only those.

``GET /`` is a static page (HTML, CSS and JS shipped as package data in
``mcp_fleet/web/``, read once at start, no external assets) whose script
fetches ``api/status`` and renders it every ``refresh_seconds``; data is
inserted as text, and a strict Content-Security-Policy allows nothing but
our own script, style and fetches. ``/healthz`` says the process answers;
``/readyz`` says the fleet is ready (503 otherwise); neither needs auth or
reveals anything but that.
"""

from __future__ import annotations

import html
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from importlib import resources
from typing import Any, Final

import orjson

from mcp_fleet.gateway.gate import Answer
from mcp_fleet.gateway.identity import Identity, identity_from_scope
from mcp_fleet.gateway.metrics import FleetMetrics

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
StatusProvider = Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]

PAGE_CSP: Final = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")
_JSON: Final = (b"content-type", b"application/json")
_SECURITY: Final = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
_METRIC_KEYS: Final = (
    "calls_per_minute", "errors_per_minute", "calls_total", "errors_total", "in_flight",
)  # fmt: skip
PATHS: Final = frozenset(
    {"/", "/api/status", "/healthz", "/readyz", "/static/status.css", "/static/status.js"}
)


def _asset(name: str) -> bytes:
    return (resources.files("mcp_fleet") / "web" / name).read_bytes()


class StatusPages:
    """Serves ``PATHS``; anything else under it is 404."""

    def __init__(
        self,
        provider: StatusProvider,
        *,
        metrics: FleetMetrics | None = None,
        title: str = "mcp-fleet",
        refresh_seconds: float = 5.0,
    ) -> None:
        self.provider = provider
        self.metrics = metrics
        page = _asset("status.html").decode()
        page = page.replace("{{title}}", html.escape(title)).replace(
            "{{refresh}}", html.escape(f"{refresh_seconds:g}")
        )
        self._page = page.encode()
        self._css = _asset("status.css")
        self._js = _asset("status.js")

    async def _provided(self) -> dict[str, Any]:
        value = self.provider()
        if inspect.isawaitable(value):
            value = await value
        return dict(value)

    async def status(self, identity: Identity | None = None) -> dict[str, Any]:
        """The ``/api/status`` document as ``identity`` may see it."""
        doc = await self._provided()
        recent = self.metrics.recent() if self.metrics is not None else {}
        servers: list[dict[str, Any]] = []
        for raw in doc.get("servers") or ():
            if not isinstance(raw, Mapping):
                continue
            name = str(raw.get("name", ""))
            if identity is not None and not identity.sees(name):
                continue
            server = dict(raw)
            stats = recent.get(name, {})
            for key in _METRIC_KEYS:
                server[key] = stats.get(key, 0)
            servers.append(server)
        doc["servers"] = servers
        doc["totals"] = {
            "servers": len(servers),
            "ready": sum(1 for s in servers if s.get("state") == "Ready"),
            **{k: sum(int(s[k]) for s in servers) for k in _METRIC_KEYS},
        }
        doc["generated_at"] = time.time()
        doc["identity"] = identity.label if identity is not None else None
        return doc

    async def ready(self) -> bool:
        try:
            doc = await self._provided()
        except Exception:
            log.exception("status provider failed")
            return False
        value = doc.get("ready", doc.get("all_ready", True))
        return bool(value)

    async def answer(self, method: str, path: str, identity: Identity | None) -> Answer:
        """The response to ``method path`` (one of ``PATHS``) for ``identity``."""
        if method not in ("GET", "HEAD"):
            return Answer(405, [_TEXT, (b"allow", b"GET, HEAD")], b"Method Not Allowed")
        if path == "/healthz":
            return Answer(200, [_TEXT, *_SECURITY], b"ok")
        if path == "/readyz":
            ready = await self.ready()
            return Answer(
                200 if ready else 503, [_JSON, *_SECURITY], orjson.dumps({"ready": ready})
            )
        if path == "/api/status":
            try:
                doc = await self.status(identity)
            except Exception:
                log.exception("status provider failed")
                body = orjson.dumps({"error": "status unavailable"})
                return Answer(503, [_JSON, *_SECURITY], body)
            body = orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS)
            return Answer(200, [_JSON, *_SECURITY], body)
        if path == "/":
            headers = [(b"content-type", b"text/html; charset=utf-8"), *_SECURITY]
            return Answer(200, [*headers, (b"content-security-policy", PAGE_CSP)], self._page)
        if path == "/static/status.css":
            return Answer(
                200, [(b"content-type", b"text/css; charset=utf-8"), *_SECURITY], self._css
            )
        if path == "/static/status.js":
            js_type = (b"content-type", b"text/javascript; charset=utf-8")
            return Answer(200, [js_type, *_SECURITY], self._js)
        return Answer(404, [_TEXT, *_SECURITY], b"Not Found")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI form of ``answer``."""
        answer = await self.answer(
            scope.get("method", "GET"), scope["path"], identity_from_scope(scope)
        )
        await send(
            {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
        )
        await send({"type": "http.response.body", "body": answer.body})
