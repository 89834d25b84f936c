"""Over legacy SSE, a duplicate request id cannot free another call's permit.

Attack (from an outside review): with ``--max-calls-per-identity 1`` and a
4 s tool, POSTing the same request id twice to ``/messages?session_id=...``
got the duplicate refused, and that refusal's answer released the original
call's permit: many long calls then ran at once, each audited as an error
after 1-2 ms. Here a real ``mcp-fleet up`` is driven over the legacy SSE
transport by hand: the duplicate is refused, a second call (another id)
stays refused with -32029 while the first runs, the first ends ok, and the
audit log says so with its real duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import until
from support.fleet_up import ECHO, create_token, process_entry, running_up, write_fleet

pytestmark = [pytest.mark.timeout(120)]

LIMITED = -32029
SLEEP = 4


class LegacySse:
    """One legacy SSE session: the GET stream's messages, and POSTs to its endpoint."""

    def __init__(self, http: httpx.AsyncClient, base: str) -> None:
        self.http = http
        self.base = base
        self.endpoint = ""
        self.messages: list[dict[str, Any]] = []

    async def read(self, response: httpx.Response, ready: asyncio.Future[str]) -> None:
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
                if event == "endpoint" and not ready.done():
                    ready.set_result(data)
                elif data:
                    self.messages.append(json.loads(data))

    async def post(self, msg: dict[str, Any]) -> None:
        answer = await self.http.post(self.base + self.endpoint, json={"jsonrpc": "2.0", **msg})
        assert answer.status_code == 202, answer.text

    def answer(self, mid: int, nth: int = 0) -> dict[str, Any] | None:
        found = [m for m in self.messages if m.get("id") == mid and "method" not in m]
        return found[nth] if len(found) > nth else None


@contextlib.asynccontextmanager
async def legacy_session(base: str, token: str) -> AsyncIterator[LegacySse]:
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        sse = LegacySse(http, base)
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        async with http.stream("GET", base + "/sse", headers={"accept": "text/event-stream"}) as r:
            assert r.status_code == 200
            reader = asyncio.create_task(sse.read(r, ready))
            try:
                sse.endpoint = await asyncio.wait_for(ready, 30)
                await sse.post(
                    {"id": 0, "method": "initialize", "params": {
                        "protocolVersion": "2024-11-05", "capabilities": {},
                        "clientInfo": {"name": "t", "version": "1"}}}
                )  # fmt: skip
                await until(lambda: sse.answer(0), what="initialize answered")
                await sse.post({"method": "notifications/initialized"})
                yield sse
            finally:
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader


async def test_a_duplicate_id_over_sse_keeps_the_first_calls_permit(tmp_path: Path) -> None:
    home = write_fleet(tmp_path, {"echo": process_entry(ECHO)})
    token = create_token(home, "alice")
    audit = tmp_path / "audit.jsonl"
    limits = ("--max-calls-per-identity", "1", "--audit-log", str(audit))
    async with running_up(home, *limits) as up, legacy_session(up.base, token) as sse:
        listed = 100

        async def echo_listed() -> bool:
            nonlocal listed
            listed += 1
            await sse.post({"id": listed, "method": "tools/list"})
            reply = await until(lambda: sse.answer(listed), what="tools/list answered")
            return "sleep" in {t["name"] for t in reply["result"]["tools"]}

        await until(echo_listed, within=60, what="echo attached")
        call = {
            "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"seconds": SLEEP}},
        }
        await sse.post({"id": 1, **call})
        await sse.post({"id": 1, **call})  # the duplicate
        duplicate = await until(lambda: sse.answer(1), what="the duplicate refused")
        assert "duplicate request id" in duplicate["error"]["message"]
        await sse.post({"id": 2, **call})  # the first call still holds the only permit
        second = await until(lambda: sse.answer(2), what="the second call answered")
        assert second["error"]["code"] == LIMITED, second
        first = await until(lambda: sse.answer(1, 1), within=60, what="the first call answered")
        assert first["result"]["content"][0]["text"] == f"slept {float(SLEEP)}", first
    lines = [json.loads(x) for x in audit.read_text().splitlines() if x.strip()]
    calls = [(x["outcome"], x["duration_ms"]) for x in lines if x["method"] == "tools/call"]
    assert sorted(o for o, _ in calls) == ["limited", "ok"], calls
    assert next(d for o, d in calls if o == "ok") >= SLEEP * 1000 * 0.9
