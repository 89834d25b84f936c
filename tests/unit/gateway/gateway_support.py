"""Helpers for the gateway tests: a tiny inner MCP app, a gateway around it, a client."""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
from mcp_fleet.gateway.app import GatewayApp, GatewaySettings, build_gateway_app
from mcp_fleet.gateway.identity import identity_from_scope
from mcp_fleet.gateway.metrics import FleetMetrics
from prometheus_client import CollectorRegistry

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

BASE_URL = "http://127.0.0.1:8811"

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


async def inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Stands in for the router: answers with who called and how big the body was."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    identity = identity_from_scope(scope)
    body = orjson.dumps(
        {
            "path": scope["path"],
            "identity": identity.label if identity else None,
            "body_bytes": size,
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def private_metrics() -> FleetMetrics:
    return FleetMetrics(registry=CollectorRegistry(), process_collectors=False)


def make_gateway(home: Path, **settings: Any) -> GatewayApp:
    return build_gateway_app(
        inner_app,
        settings=GatewaySettings(home=home, **settings),
        status_provider=lambda: STATUS,
        metrics=private_metrics(),
    )


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)


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
