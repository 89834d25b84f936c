"""Helpers for the gateway tests: a tiny inner handler, the gateway served around it, raw I/O.

The gateway is served as in production (``router.http_service``): a
``callback.GatewayHandler`` in front of the router's own HTTP server
(``http_server.start_server``) on 127.0.0.1, a free port, with the server's
body limit and request deadline taken from the settings and the handler's
``screen`` on every request head. Tests talk to it with httpx, or with raw
bytes where httpx would not send what they need (an unnormalised path, a
body that stalls).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
from mcp_fleet.gateway.app import Gateway, GatewaySettings
from mcp_fleet.gateway.callback import GatewayHandler, build_gateway_handler
from mcp_fleet.gateway.identity import Identity
from mcp_fleet.gateway.metrics import FleetMetrics
from mcp_fleet.gateway.web import StatusProvider
from mcp_fleet.router.http_server import Request, Responder, start_server
from prometheus_client import CollectorRegistry

Inner = Callable[[Request, Responder, Identity], None]

STATUS: dict[str, Any] = {
    "version": 1,
    "fleet": "demo-1234abcd",
    "updated_at": 1767225600.0,
    "all_ready": False,
    "file_errors": [],
    "runtime_errors": {},
    "servers": [
        {"name": "time", "state": "Ready", "reason": "Initialized", "runtime": "process",
         "tools": ["get_current_time", "convert_time"]},
        {"name": "github", "state": "Failed", "reason": "MissingSecret",
         "message": "GITHUB_TOKEN is not set", "runtime": "docker", "tools": 12},
    ],
}  # fmt: skip


def inner_handler(request: Request, responder: Responder, identity: Identity) -> None:
    """Stands in for the router: answers with the path, who called and the body's size."""
    body = orjson.dumps(
        {"path": request.path, "identity": identity.label, "body_bytes": len(request.body)}
    )
    responder.respond(200, [(b"content-type", b"application/json")], body)


def private_metrics() -> FleetMetrics:
    return FleetMetrics(registry=CollectorRegistry(), process_collectors=False)


def make_handler(
    home: Path,
    *,
    inner: Inner = inner_handler,
    status_provider: StatusProvider = lambda: STATUS,
    metrics: FleetMetrics | None = None,
    **settings: Any,
) -> GatewayHandler[Request, Responder]:
    """The gateway's handler, not served (for what building it decides)."""
    return build_gateway_handler(
        inner,
        settings=GatewaySettings(home=home, **settings),
        status_provider=status_provider,
        metrics=metrics or private_metrics(),
    )


class Served:
    """A gateway listening on 127.0.0.1: its handler, parts and address."""

    def __init__(self, handler: GatewayHandler[Request, Responder], port: int) -> None:
        self.handler = handler
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @property
    def gateway(self) -> Gateway:
        return self.handler.gateway

    def client(self, **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, **options)

    def rejections(self, reason: str) -> float:
        """``mcp_fleet_http_rejections_total{reason}`` (0 when never counted)."""
        registry = self.gateway.metrics.registry
        found = registry.get_sample_value("mcp_fleet_http_rejections_total", {"reason": reason})
        return found or 0.0

    async def raw(self, data: bytes, *, within: float = 10.0) -> bytes:
        """Send ``data`` as is and read the answer until the server closes the connection
        (ask for that with ``connection: close``, or send a request it must refuse)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(data)
            await writer.drain()
            return await asyncio.wait_for(reader.read(), within)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP answer."""
    return int(answer.split(b" ", 2)[1])


@contextlib.asynccontextmanager
async def serve_gateway(
    home: Path,
    *,
    inner: Inner = inner_handler,
    status_provider: StatusProvider = lambda: STATUS,
    metrics: FleetMetrics | None = None,
    **settings: Any,
) -> AsyncIterator[Served]:
    """Serve the gateway around ``inner`` as ``HttpService.open`` does; closed on exit."""
    handler = make_handler(
        home, inner=inner, status_provider=status_provider, metrics=metrics, **settings
    )
    options = handler.gateway.settings
    try:
        server, connections = await start_server(
            handler.handle,
            host="127.0.0.1",
            port=0,
            max_body_bytes=options.max_body_bytes,
            request_timeout=options.body_timeout_seconds,
            screen=handler.screen,
        )
    except BaseException:
        await handler.aclose()
        raise
    port = server.sockets[0].getsockname()[1]
    handler.server = ("127.0.0.1", port)
    try:
        yield Served(handler, port)
    finally:
        await handler.aclose()
        server.close()
        for conn in list(connections):
            conn.abort()
        await asyncio.wait_for(server.wait_closed(), 5)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 whose keys the test can rotate."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"keys": []}
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = json.dumps(outer.doc).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
