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
object, ``generated_at`` and the viewer's ``identity``.

What a viewer may see: every string of the answer goes through the
process's secret redactor (``logsetup.redactor``), as the status file and
the logs do, whoever asks (a controller's in-memory status is not masked
yet: an error may quote a value pasted into registry.yaml). A viewer whose
allow-list names only some servers (not ``*``) sees only those: their rows,
the file errors and warnings about them (others are counted in one line),
the ``pending`` lines naming them, which runtimes have errors but not the
errors; never ``home`` nor ``controller_pid``, which say where the fleet
lives and which process runs it. ``/metrics`` is only for a viewer that may
use every server (``gate.FULL_ACCESS_PATHS``).

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
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from importlib import resources
from typing import Any, Final

import orjson

from mcp_fleet.gateway.gate import Answer
from mcp_fleet.gateway.identity import Identity, identity_from_scope
from mcp_fleet.gateway.metrics import FleetMetrics
from mcp_fleet.logsetup import redactor

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
#: Keys of the status only a viewer that may use every server gets.
FULL_ACCESS_KEYS: Final = ("home", "controller_pid")
#: The server a ``pending`` line acts on (``create      server:NAME ...``, ``server:NAME/ID``).
_PENDING_SERVER: Final = re.compile(r"\bserver:([A-Za-z0-9][A-Za-z0-9_.-]*)")


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
        if identity is not None and not identity.allow.everything:
            _restrict(doc, identity)
        redacted: dict[str, Any] = redactor().redact_document(doc)
        return redacted

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


def _restrict(doc: dict[str, Any], identity: Identity) -> None:
    """Cut ``doc`` down to what a viewer allowed only some servers may see (module doc)."""
    for key in FULL_ACCESS_KEYS:
        doc.pop(key, None)
    for key in ("file_errors", "warnings"):
        if key in doc:
            doc[key] = _visible_diagnostics(doc[key], identity, key)
    errors = doc.get("runtime_errors")
    if isinstance(errors, Mapping):
        doc["runtime_errors"] = {
            str(runtime): "unavailable (the error is shown to a token that may use every server)"
            for runtime in errors
        }
    pending = doc.get("pending")
    if isinstance(pending, list | tuple):
        doc["pending"] = [line for line in pending if _pending_seen(line, identity)]


def _visible_diagnostics(items: Any, identity: Identity, key: str) -> list[Any]:
    """The diagnostics about servers ``identity`` sees (file name only, not its path), then
    one line counting the others."""
    kept: list[Any] = []
    hidden = 0
    for item in items if isinstance(items, list | tuple) else ():
        server = item.get("server") if isinstance(item, Mapping) else None
        if not isinstance(server, str) or not identity.sees(server):
            hidden += 1
            continue
        diagnostic = dict(item)
        if isinstance(diagnostic.get("file"), str):
            diagnostic["file"] = diagnostic["file"].replace("\\", "/").rsplit("/", 1)[-1]
        kept.append(diagnostic)
    if hidden:
        what = "error" if key == "file_errors" else "warning"
        text = (
            f"{hidden} other {what}{'s' if hidden > 1 else ''} in the fleet files "
            "(shown to a token that may use every server)"
        )
        kept.append(
            {"severity": what, "file": None, "line": None, "field": None, "server": None,
             "message": text, "text": text}
        )  # fmt: skip
    return kept


def _pending_seen(line: Any, identity: Identity) -> bool:
    found = _PENDING_SERVER.search(line) if isinstance(line, str) else None
    return found is not None and identity.sees(found.group(1))
