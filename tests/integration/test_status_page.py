"""The status page in a real browser: served as in production, rendered by headless Chromium.

The gateway runs as the router serves it (``callback.GatewayHandler`` in
front of the router's own HTTP server) on 127.0.0.1 (a free port) with a
token configured, so the browser goes through the real sign-in path:
``/?token=...`` answers 303 with the session cookie, ``/`` loads, and the
page's own script fetches ``api/status`` with that cookie and renders it. Two checks: ``--dump-dom``
must show the server names (only the script can have put them there: the
HTML holds no data), and ``--screenshot`` must be a real render: a PNG that
decodes, with many colours, including the green of a Ready badge and the
red of a Failed one, which exist only once the data arrived.

Skipped only when Chromium is missing outside CI (Debian package
``chromium``; tests/testbed.sh installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp_fleet.gateway.app import GatewaySettings
from mcp_fleet.gateway.callback import build_gateway_handler
from mcp_fleet.gateway.identity import AllowList, Identity
from mcp_fleet.gateway.metrics import FleetMetrics
from mcp_fleet.gateway.tokens import create_token
from mcp_fleet.router.http_server import Request, Responder, start_server
from prometheus_client import CollectorRegistry

PIL_Image = pytest.importorskip("PIL.Image")

SERVERS = ("alpha-clock", "bravo-issues", "charlie-search")
GREEN = (0x1F, 0x9D, 0x55)  # .badge.Ready
RED = (0xD0, 0x3B, 0x3B)  # .badge.Failed
STATUS: dict[str, Any] = {
    "fleet": "browser-test",
    "updated_at": 0,
    "servers": [
        {"name": SERVERS[0], "state": "Ready", "reason": "Initialized", "runtime": "process",
         "tools": ["get_current_time", "convert_time"]},
        {"name": SERVERS[1], "state": "Failed", "reason": "MissingSecret",
         "message": "GITHUB_TOKEN is not set", "runtime": "docker", "tools": 26},
        {"name": SERVERS[2], "state": "Starting", "reason": "Starting", "runtime": "docker",
         "tools": []},
    ],
}  # fmt: skip


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail("chromium is not installed (CI must run the browser test)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def inner(request: Request, responder: Responder, identity: Identity) -> None:
    """The router's place: nothing the page needs is there."""
    responder.respond(404, [], b"")


@contextlib.asynccontextmanager
async def serve(home: Path) -> AsyncIterator[str]:
    handler = build_gateway_handler(
        inner,
        settings=GatewaySettings(home=home, refresh_seconds=30),
        status_provider=lambda: STATUS,
        metrics=FleetMetrics(registry=CollectorRegistry(), process_collectors=False),
    )
    for _ in range(7):
        handler.gateway.guard.begin(None, "s", SERVERS[0], "get_current_time").finish(outcome="ok")  # type: ignore[union-attr]
    server, connections = await start_server(
        handler.handle, host="127.0.0.1", port=0, screen=handler.screen
    )
    port = server.sockets[0].getsockname()[1]
    handler.server = ("127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await handler.aclose()
        server.close()
        for conn in list(connections):
            conn.abort()
        await asyncio.wait_for(server.wait_closed(), timeout=10)


async def run_chromium(binary: str, profile: Path, *args: str) -> bytes:
    process = await asyncio.create_subprocess_exec(
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        "--window-size=1200,800",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


@pytest.mark.timeout(180)
async def test_status_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    binary = chromium()
    home = tmp_path / "fleet"
    token, _ = create_token(home / "tokens.yaml", "viewer", allow=AllowList.all())
    async with serve(home) as base:
        url = f"{base}/?token={token}"
        dom = (await run_chromium(binary, tmp_path / "p1", "--dump-dom", url)).decode()
        shot = tmp_path / "status.png"
        await run_chromium(binary, tmp_path / "p2", f"--screenshot={shot}", url)

    assert 'data-loaded="1"' in dom, dom[:2000]
    for name in SERVERS:
        assert name in dom
    assert "MissingSecret" in dom and "get_current_time" in dom
    assert "Loading..." not in dom
    assert token not in dom

    image = PIL_Image.open(shot)
    image.load()
    assert image.size == (1200, 800)
    rgb = image.convert("RGB")
    colours = rgb.getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 200, "a blank or flat screenshot"
    pixels = {colour for _, colour in colours}
    assert GREEN in pixels, "no Ready badge: the status data was not rendered"
    assert RED in pixels, "no Failed badge: the status data was not rendered"
