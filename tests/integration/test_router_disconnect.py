"""A client that goes away cancels its calls at the backend; a token hears only its servers.

Two signal servers (tests/servers/signal_server.py: ``x`` and ``y``, real
processes) sit behind a router served over HTTP in the test's loop, with
the team gateway and two tokens: ``admin`` for everything and ``xonly`` for
server ``x``. Each signal server writes down every call it begins and every
``notifications/cancelled`` it receives, with the id the router gave the
call, so the tests see exactly what reached the backend.

- A POST whose connection closes mid-call (answer still pending as JSON, or
  already an SSE stream) cancels that call at its backend within a second,
  and the router forgets it: no pending call at the backend session, no
  ticket, ``mcp_fleet_calls_in_flight`` back to zero. Another client's call
  to the same backend, running meanwhile, completes.
- DELETE of a session cancels all its calls, on every backend.
- A stdio client closing the router's stdin cancels its calls.
- Log messages reach a session only from servers its token may see.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_fleet.gateway.app import GatewaySettings
from mcp_fleet.gateway.identity import AllowList
from mcp_fleet.gateway.metrics import FleetMetrics
from mcp_fleet.gateway.tokens import create_token, tokens_path
from mcp_fleet.router.frontend_http import HttpSession
from mcp_fleet.router.http_service import HttpService
from mcp_fleet.router.router import Router
from mcp_fleet.sources.adhoc import AdhocFleet
from prometheus_client.parser import text_string_to_metric_families
from router_support import PY, ROOT, SERVERS, ClientRunner, Recorder, wait_for

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

SIGNAL = str(SERVERS / "signal_server.py")
#: How soon a cancellation must reach the backend after the client is gone.
PROMPT = 1.0


def records(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def started_id(path: Path, tag: str) -> str | None:
    """The backend-side id of the call tagged ``tag``, once the backend has begun it."""
    for words in records(path):
        if words[0] == "started" and words[2] == tag:
            return words[1]
    return None


def cancelled(path: Path, bid: str) -> bool:
    return any(words[:2] == ["cancelled", bid] for words in records(path))


async def wait_started(path: Path, tag: str) -> str:
    await wait_for(lambda: started_id(path, tag) is not None, timeout=10)
    bid = started_id(path, tag)
    assert bid is not None
    return bid


async def wait_cancelled(path: Path, bid: str) -> float:
    """Seconds until the backend saw ``notifications/cancelled`` for ``bid``."""
    began = time.monotonic()
    await wait_for(lambda: cancelled(path, bid), timeout=PROMPT)
    return time.monotonic() - began


def call(mid: int, tool: str, arguments: dict[str, Any], **meta: Any) -> bytes:
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    return orjson.dumps({"jsonrpc": "2.0", "id": mid, "method": "tools/call", "params": params})


INIT = orjson.dumps(
    {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
)
INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'


@dataclass
class Fleet:
    router: Router
    service: HttpService
    records: dict[str, Path]
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/")[0])

    def headers(self, token: str, sid: str | None = None) -> dict[str, str]:
        h = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            "authorization": f"Bearer {self.tokens[token]}",
        }
        if sid is not None:
            h["mcp-session-id"] = sid
        return h

    async def open_session(self, http: httpx.AsyncClient, token: str) -> str:
        opened = await http.post(self.url, content=INIT, headers=self.headers(token))
        assert opened.status_code == 200, opened.text
        sid = opened.headers["mcp-session-id"]
        done = await http.post(self.url, content=INITIALIZED, headers=self.headers(token, sid))
        assert done.status_code == 202
        return sid

    def session(self, sid: str) -> HttpSession:
        return self.service.frontend.sessions[sid]

    def pending(self, server: str) -> int:
        return int(self.router.status()["servers"][server]["pending"])

    async def in_flight(self, http: httpx.AsyncClient) -> dict[str, float]:
        text = (
            await http.get(self.url.replace("/mcp", "/metrics"), headers=self.headers("admin"))
        ).text
        return {
            sample.labels["server"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "mcp_fleet_calls_in_flight"
        }

    async def raw_post(
        self, body: bytes, token: str, sid: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A POST on a connection of its own, left open for the caller to read or drop."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = ["POST /mcp HTTP/1.1", f"host: 127.0.0.1:{self.port}"]
        head += [f"{k}: {v}" for k, v in self.headers(token, sid).items()]
        head.append(f"content-length: {len(body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        return reader, writer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    tmp = tmp_path_factory.mktemp("disconnect")
    home = tmp / "fleet"
    home.mkdir()
    tokens = {
        "admin": create_token(tokens_path(home), "admin", allow=AllowList.all())[0],
        "xonly": create_token(tokens_path(home), "xonly", allow=AllowList.parse(["x"]))[0],
    }
    recs = {name: tmp / f"{name}.record" for name in ("x", "y")}
    async with AdhocFleet() as adhoc:
        for name, rec in recs.items():
            await adhoc.add(name, [PY, SIGNAL, name, str(rec)])
        router = Router(adhoc.table)
        follower = asyncio.create_task(router.run())
        service = await HttpService.open(
            router,
            port=0,
            settings=GatewaySettings(home=home, host="127.0.0.1"),
            metrics=FleetMetrics(),
        )
        serving = asyncio.create_task(service.serve())
        try:
            await asyncio.wait_for(router.settled.wait(), 20)
            assert {"x_block", "y_block"} <= set(router.table.tool_routes)
            yield Fleet(router, service, recs, tokens)
        finally:
            serving.cancel()
            follower.cancel()
            await asyncio.gather(serving, follower, return_exceptions=True)


async def test_a_dropped_post_cancels_its_call_and_other_calls_go_on(fleet: Fleet) -> None:
    tag, other = uuid.uuid4().hex, uuid.uuid4().hex
    async with httpx.AsyncClient(timeout=20) as http:
        sid = await fleet.open_session(http, "admin")
        bystander = await fleet.open_session(http, "xonly")
        slow = asyncio.create_task(
            http.post(
                fleet.url,
                content=call(7, "x_wait", {"seconds": 1.5, "tag": other}),
                headers=fleet.headers("xonly", bystander),
            )
        )
        await wait_started(fleet.records["x"], other)
        _, writer = await fleet.raw_post(call(1, "x_block", {"tag": tag}), "admin", sid)
        bid = await wait_started(fleet.records["x"], tag)
        assert fleet.pending("x") == 2 and (await fleet.in_flight(http))["x"] == 2
        writer.close()  # the client goes away before the answer
        assert await wait_cancelled(fleet.records["x"], bid) < PROMPT
        assert ["cancelled", bid, "client_disconnected"] in records(fleet.records["x"])
        hs = fleet.session(sid)
        assert not hs.session.inflight and not hs.exchanges
        assert hs.policy is not None and not hs.policy.tickets
        assert fleet.pending("x") == 1  # only the bystander's call is left
        answer = await slow
        assert answer.status_code == 200
        assert answer.json()["result"]["content"][0]["text"] == "wait done"
        assert fleet.pending("x") == 0 and (await fleet.in_flight(http))["x"] == 0
        # The session itself lives on: the client may come back with new requests.
        ping = b'{"jsonrpc":"2.0","id":9,"method":"ping"}'
        again = await http.post(fleet.url, content=ping, headers=fleet.headers("admin", sid))
        assert again.json() == {"jsonrpc": "2.0", "id": 9, "result": {}}


async def test_a_dropped_event_stream_cancels_its_call(fleet: Fleet) -> None:
    tag = uuid.uuid4().hex
    async with httpx.AsyncClient(timeout=20) as http:
        sid = await fleet.open_session(http, "xonly")
        body = call(1, "x_block", {"tag": tag}, progressToken="p1")
        async with http.stream(
            "POST", fleet.url, content=body, headers=fleet.headers("xonly", sid)
        ) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    progress = orjson.loads(line[5:])
                    assert progress["params"]["progressToken"] == "p1"
                    break
        bid = await wait_started(fleet.records["x"], tag)
        await wait_cancelled(fleet.records["x"], bid)
        await wait_for(lambda: fleet.pending("x") == 0, timeout=PROMPT)
        assert not fleet.session(sid).session.inflight
        assert (await fleet.in_flight(http))["x"] == 0


async def test_deleting_a_session_cancels_all_its_calls(fleet: Fleet) -> None:
    tags = {"x": uuid.uuid4().hex, "y": uuid.uuid4().hex}
    async with httpx.AsyncClient(timeout=20) as http:
        sid = await fleet.open_session(http, "admin")
        posts = [  # kept referenced: a dropped writer would close its connection
            await fleet.raw_post(call(i, f"{server}_block", {"tag": tag}), "admin", sid)
            for i, (server, tag) in enumerate(tags.items())
        ]
        ids = {s: await wait_started(fleet.records[s], tag) for s, tag in tags.items()}
        hs = fleet.session(sid)
        assert len(hs.session.inflight) == 2
        gone = await http.delete(fleet.url, headers=fleet.headers("admin", sid))
        assert gone.status_code == 200
        for server, bid in ids.items():
            await wait_cancelled(fleet.records[server], bid)
        assert sid not in fleet.service.frontend.sessions
        assert (
            not hs.session.inflight
            and not hs.exchanges
            and fleet.router.sessions.isdisjoint({hs.session})
        )
        assert fleet.pending("x") == 0 and fleet.pending("y") == 0
        for reader, _ in posts:  # each open POST is answered: the session is over
            answer = await asyncio.wait_for(reader.read(4096), 5)
            assert answer.startswith(b"HTTP/1.1 200") and b"session terminated" in answer
        assert (await fleet.in_flight(http)) == {"x": 0, "y": 0}


async def test_stdio_eof_cancels_the_calls_in_flight(tmp_path: Path) -> None:
    record = tmp_path / "x.record"
    proc = await asyncio.create_subprocess_exec(
        *[PY, "-m", "mcp_fleet.router", "--server", f"x={PY} {SIGNAL} x {record}"],
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(INIT + b"\n" + INITIALIZED + b"\n")
        proc.stdin.write(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}\n')
        listed: dict[str, Any] = {}
        while listed.get("id") != 1:  # the list comes once x is attached
            listed = orjson.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        assert "x_block" in {t["name"] for t in listed["result"]["tools"]}
        proc.stdin.write(call(2, "x_block", {"tag": "stdio"}) + b"\n")
        bid = await wait_started(record, "stdio")
        proc.stdin.close()  # the client is gone
        await wait_cancelled(record, bid)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        words = records(record)
        assert words.index(["cancelled", bid, "client_disconnected"]) < words.index(["eof"])
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def mcp_client(fleet: Fleet, token: str) -> AsyncIterator[tuple[Any, Recorder]]:
    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Any]:
        http = create_mcp_http_client(headers={"authorization": f"Bearer {fleet.tokens[token]}"})
        async with http, streamable_http_client(fleet.url, http_client=http) as streams:
            yield streams

    runner = ClientRunner(connect)
    try:
        yield await runner.session(), runner.recorder
    finally:
        await runner.aclose()


async def test_log_messages_reach_only_sessions_allowed_their_server(fleet: Fleet) -> None:
    def heard(recorder: Recorder) -> list[Any]:
        return [entry.data for entry in recorder.logs]

    async with (
        mcp_client(fleet, "admin") as (admin, everything),
        mcp_client(fleet, "xonly") as (restricted, only_x),
    ):
        await admin.call_tool("x_shout", {"message": "from-x", "level": "warning"})
        await admin.call_tool("y_shout", {"message": "from-y", "level": "warning"})
        await wait_for(lambda: {"from-x", "from-y"} <= set(heard(everything)), timeout=10)
        # Fan-out to every session happened before the admin heard it; a message of
        # the restricted session's own comes after anything it could have been sent.
        await restricted.call_tool("x_shout", {"message": "barrier", "level": "info"})
        await wait_for(lambda: "barrier" in heard(only_x), timeout=10)
        assert sorted(heard(only_x)) == ["barrier", "from-x"]
        assert {entry.logger for entry in only_x.logs} == {"x"}
        await wait_for(lambda: "barrier" in heard(everything), timeout=10)
        assert sorted(heard(everything)) == ["barrier", "from-x", "from-y"]
