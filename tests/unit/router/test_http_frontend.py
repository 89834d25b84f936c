"""The HTTP frontend's protocol edges: sessions, headers, origins, legacy SSE.

A router with no servers is enough: everything here is answered by the
frontend or the router itself. Served by uvicorn on a free port and
driven with plain HTTP requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import pytest_asyncio
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.router.http_service import serve_http
from mcp_fleet.router.router import Router

pytestmark = pytest.mark.timeout(30)

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest_asyncio.fixture
async def url() -> AsyncIterator[str]:
    router = Router(EndpointTable(), settle_timeout=0.1)
    urls: asyncio.Queue[str] = asyncio.Queue()
    follower = asyncio.create_task(router.run())
    server = asyncio.create_task(serve_http(router, port=0, ready=urls.put_nowait))
    try:
        yield await asyncio.wait_for(urls.get(), 10)
    finally:
        server.cancel()
        follower.cancel()
        await asyncio.gather(server, follower, return_exceptions=True)


async def test_session_lifecycle(url: str) -> None:
    async with httpx.AsyncClient() as http:
        first = await http.post(url, content=orjson.dumps(INIT), headers=ACCEPT)
        assert first.status_code == 200 and first.headers["content-type"] == "application/json"
        sid = first.headers["mcp-session-id"]
        assert first.json()["result"]["protocolVersion"] == "2025-06-18"
        headers = {**ACCEPT, "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"}
        note = await http.post(
            url, content=b'{"jsonrpc":"2.0","method":"notifications/initialized"}', headers=headers
        )
        assert note.status_code == 202
        ping = await http.post(
            url, content=b'{"jsonrpc":"2.0","id":"p","method":"ping"}', headers=headers
        )
        assert ping.json() == {"jsonrpc": "2.0", "id": "p", "result": {}}
        tools = await http.post(
            url, content=b'{"jsonrpc":"2.0","id":2,"method":"tools/list"}', headers=headers
        )
        assert tools.json()["result"] == {"tools": []}
        assert (await http.delete(url, headers=headers)).status_code == 200
        gone = await http.post(
            url, content=b'{"jsonrpc":"2.0","id":3,"method":"ping"}', headers=headers
        )
        assert gone.status_code == 404


async def test_requests_without_a_valid_session_or_version_are_refused(url: str) -> None:
    async with httpx.AsyncClient() as http:
        ping = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
        assert (await http.post(url, content=ping, headers=ACCEPT)).status_code == 400
        unknown = {**ACCEPT, "mcp-session-id": "nope"}
        assert (await http.post(url, content=ping, headers=unknown)).status_code == 404
        sid = (await http.post(url, content=orjson.dumps(INIT), headers=ACCEPT)).headers[
            "mcp-session-id"
        ]
        bad_version = {**ACCEPT, "mcp-session-id": sid, "mcp-protocol-version": "1999-01-01"}
        assert (await http.post(url, content=ping, headers=bad_version)).status_code == 400
        batch = await http.post(
            url, content=b"[" + ping + b"]", headers={**ACCEPT, "mcp-session-id": sid}
        )
        assert batch.status_code == 400 and "batch" in batch.json()["error"]["message"]
        garbage = await http.post(url, content=b"{oops", headers={**ACCEPT, "mcp-session-id": sid})
        assert garbage.status_code == 400 and garbage.json()["error"]["code"] == -32700
        no_sse = await http.get(url, headers={"mcp-session-id": sid})
        assert no_sse.status_code == 406
        assert (await http.put(url, content=b"")).status_code == 405


async def test_foreign_origins_are_refused(url: str) -> None:
    async with httpx.AsyncClient() as http:
        evil = await http.post(
            url, content=orjson.dumps(INIT), headers={**ACCEPT, "origin": "https://evil.example"}
        )
        assert evil.status_code == 403
        local = await http.post(
            url, content=orjson.dumps(INIT), headers={**ACCEPT, "origin": "http://localhost:3000"}
        )
        assert local.status_code == 200


async def test_legacy_sse_transport(url: str) -> None:
    base = url.rsplit("/", 1)[0]
    async with httpx.AsyncClient(timeout=10) as http, http.stream("GET", base + "/sse") as events:
        lines = events.aiter_lines()
        assert await anext(lines) == "event: endpoint"
        endpoint = (await anext(lines)).removeprefix("data: ")
        assert endpoint.startswith("/messages?session_id=")
        posted = await http.post(base + endpoint, content=orjson.dumps(INIT))
        assert posted.status_code == 202
        data = ""
        async for line in lines:
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                break
        assert orjson.loads(data)["result"]["serverInfo"]["name"] == "mcp-fleet"


async def test_sessions_per_identity_are_capped_oldest_idle_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that never sends DELETE cannot pile sessions up: past the cap its least
    recently used idle session goes (404 afterwards); with every one busy, 429."""
    from mcp_fleet.router import frontend_http

    monkeypatch.setattr(frontend_http, "MAX_SESSIONS_PER_IDENTITY", 2)
    router = Router(EndpointTable(), settle_timeout=0.1)
    urls: asyncio.Queue[str] = asyncio.Queue()
    tasks = [
        asyncio.create_task(router.run()),
        asyncio.create_task(serve_http(router, port=0, ready=urls.put_nowait)),
    ]
    try:
        url = await asyncio.wait_for(urls.get(), 10)
        async with httpx.AsyncClient() as http:
            sids = []
            for _ in range(3):
                reply = await http.post(url, content=orjson.dumps(INIT), headers=ACCEPT)
                assert reply.status_code == 200
                sids.append(reply.headers["mcp-session-id"])
            ping = b'{"jsonrpc":"2.0","id":"p","method":"ping"}'

            def headers(sid: str) -> dict[str, str]:
                return {**ACCEPT, "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"}

            assert (await http.post(url, content=ping, headers=headers(sids[0]))).status_code == 404
            for sid in sids[1:]:
                assert (await http.post(url, content=ping, headers=headers(sid))).status_code == 200
            for sid in sids[1:]:
                assert (await http.delete(url, headers=headers(sid))).status_code == 200

            # Two legacy SSE connections: both sessions busy (their streams are open).
            base = url.rsplit("/", 1)[0]
            async with (
                http.stream("GET", f"{base}/sse") as one,
                http.stream("GET", f"{base}/sse") as two,
            ):
                assert one.status_code == two.status_code == 200
                refused = await http.post(url, content=orjson.dumps(INIT), headers=ACCEPT)
                assert refused.status_code == 429
                assert "too many open sessions" in refused.json()["error"]["message"]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
