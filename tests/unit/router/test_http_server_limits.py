"""What the router's HTTP server lets one client hold: heads, bodies, connections, time.

Over real loopback sockets against ``http_server.start_server`` with a
trivial handler (tests/security/test_security_http_hostile.py runs the same
attacks against a real ``mcp-fleet up``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import resource
import time
import tracemalloc
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp_fleet.gateway.app import GatewaySettings
from mcp_fleet.gateway.callback import build_gateway_handler
from mcp_fleet.gateway.identity import AllowList, Identity
from mcp_fleet.gateway.metrics import FleetMetrics
from mcp_fleet.gateway.tokens import create_token
from mcp_fleet.router.http_limits import accept_backlog, connection_cap, peer_key, raise_fd_limit
from mcp_fleet.router.http_server import HttpConnection, Request, Responder, start_server
from mcp_fleet.router.http_service import count_refusals
from prometheus_client import CollectorRegistry
from support import until

pytestmark = pytest.mark.timeout(60)

KIB = 1024
MIB = 1024 * KIB


@dataclass
class Refusal:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class Served:
    port: int
    connections: set[HttpConnection]
    seen: list[Request] = field(default_factory=list)
    #: Responders the handler keeps unanswered (paths starting with /hold).
    held: list[Responder] = field(default_factory=list)


@contextlib.asynccontextmanager
async def serving(
    screen: Callable[[Request], Any] | None = None, **options: Any
) -> AsyncIterator[Served]:
    served: Served

    def handler(request: Request, responder: Responder) -> None:
        served.seen.append(request)
        if request.path.startswith("/hold"):
            served.held.append(responder)
            return
        values = ",".join(f"{k}={len(v)}" for k, v in sorted(request.headers.items()))
        responder.respond(200, [(b"content-type", b"text/plain")], values.encode())

    server, connections = await start_server(
        handler, host="127.0.0.1", port=0, screen=screen, **options
    )
    served = Served(server.sockets[0].getsockname()[1], connections)
    try:
        yield served
    finally:
        server.close()
        for conn in list(connections):
            conn.abort()
        await asyncio.wait_for(server.wait_closed(), 5)


async def connect(port: int, source: str | None = None) -> tuple[Any, Any]:
    local = (source, 0) if source else None
    return await asyncio.open_connection("127.0.0.1", port, local_addr=local)


def statuses(answer: bytes) -> list[int]:
    return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """What the server sends until it closes (a reset after its answer ends it too)."""
    chunks = []
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), 20):
            chunks.append(chunk)
    return b"".join(chunks)


async def answer_to(port: int, data: bytes, *, source: str | None = None) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it."""
    reader, writer = await connect(port, source)
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        return await read_all(reader)
    finally:
        writer.close()


async def read_one(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One answer with a ``content-length`` body from a keep-alive connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    return int(head.split()[1]), await reader.readexactly(length)


# -- heads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"".join(b"x-%d: v\r\n" % i for i in range(101)), 431),
        (b"x-big: " + b"a" * 70 * KIB + b"\r\n", 431),
        (b"".join(b"x-%d: " % i + b"a" * 700 + b"\r\n" for i in range(99)), 431),
        (b"".join(b"x-%d: v\r\n" % i for i in range(99)), 200),
        (b"".join(b"x-%d: " % i + b"a" * 600 + b"\r\n" for i in range(99)), 200),
    ],
    ids=["101-lines", "one-70KiB-value", "99-lines-69KiB", "99-lines", "99-lines-60KiB"],
)
async def test_a_head_over_the_limits_is_refused_with_431(head: bytes, status: int) -> None:
    async with serving() as served:
        started = time.monotonic()
        answer = await answer_to(
            served.port, b"GET /x HTTP/1.1\r\n" + head + b"connection: close\r\n\r\n"
        )
        assert statuses(answer) == [status], answer[:300]
        assert time.monotonic() - started < 5
        assert bool(served.seen) == (status == 200)


async def test_a_header_value_sent_slowly_is_counted_while_it_arrives() -> None:
    """A value httptools builds across many reads is counted by the reads (no callback
    fires until it ends): the refusal comes at the limit, not when the value ends."""
    async with serving() as served:
        reader, writer = await connect(served.port)
        answer = asyncio.create_task(read_all(reader))
        writer.write(b"GET /x HTTP/1.1\r\nx-long: ")
        for _ in range(200):  # 200 KiB of one value, never finished
            if answer.done():
                break
            writer.write(b"a" * KIB)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.sleep(0.001)
        refused = await asyncio.wait_for(answer, 20)
        writer.close()
    assert statuses(refused) == [431], refused[:300]


async def test_a_url_over_the_limit_is_refused_with_414() -> None:
    async with serving() as served:
        answer = await answer_to(served.port, b"GET /" + b"a" * 70 * KIB + b" HTTP/1.1\r\n\r\n")
    assert statuses(answer) == [414], answer[:300]


async def test_repeated_headers_are_joined_in_order_in_linear_time() -> None:
    """100,000 repeated lines (with the limits lifted) take well under a second to collect:
    joining each to the last, as before, took minutes."""
    lines = 100_000
    async with serving(max_header_count=lines + 10, max_header_bytes=64 * MIB) as served:
        head = b"".join(b"x-a: %010d\r\n" % i for i in range(lines))
        started = time.monotonic()
        answer = await answer_to(
            served.port, b"GET /x HTTP/1.1\r\n" + head + b"connection: close\r\n\r\n"
        )
        took = time.monotonic() - started
        assert statuses(answer) == [200], answer[:300]
        (request,) = served.seen
    values = request.headers["x-a"].split(", ")
    assert values == [f"{i:010d}" for i in range(lines)]
    assert took < 5, f"{took:.1f} s to collect {lines} repeated headers"


async def lag_meter(lags: list[float], stop: asyncio.Event) -> None:
    """How late the event loop runs a 10 ms timer, over and over."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.01)
        lags.append(loop.time() - before - 0.01)


async def test_a_header_flood_is_cut_off_and_others_are_served_meanwhile() -> None:
    async with serving() as served:
        lags: list[float] = []
        stop = asyncio.Event()
        meter = asyncio.create_task(lag_meter(lags, stop))
        reader, writer = await connect(served.port)
        writer.write(b"GET /nope HTTP/1.1\r\n")
        got = asyncio.create_task(reader.read(64))
        other, other_writer = await connect(served.port)
        answered: list[float] = []
        line = b"X-A: " + b"a" * 60 + b"\r\n"
        for _ in range(100):  # 100,000 lines, 1,000 at a time, until the server answers
            if got.done():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(line * 1000)
                await writer.drain()
            started = time.monotonic()
            other_writer.write(b"GET /ok HTTP/1.1\r\n\r\n")
            status, _ = await read_one(other)
            answered.append(time.monotonic() - started)
            assert status == 200
        flood_answer = await asyncio.wait_for(got, 10)
        stop.set()
        await meter
        writer.close()
        other_writer.close()
    assert statuses(flood_answer) == [431], flood_answer
    assert answered and max(answered) < 1.0, answered
    assert max(lags) < 1.0, f"the event loop stalled {max(lags):.2f} s"


# -- bodies --------------------------------------------------------------------------------


def refuse_posts(request: Request) -> Refusal | None:
    """A screen: POST needs ``authorization``; the rest passes with a context."""
    if request.method == "POST" and "authorization" not in request.headers:
        return Refusal(401, [(b"content-type", b"text/plain")], b"who are you")
    request.context = ("screened", request.path)
    return None


async def test_a_refused_body_is_read_but_never_kept() -> None:
    body = b"x" * (8 * MIB)
    async with serving(refuse_posts) as served:
        reader, writer = await connect(served.port)
        tracemalloc.start()
        try:
            writer.write(b"POST /mcp HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % len(body))
            view = memoryview(body)
            for start in range(0, len(body), 64 * KIB):  # so the client buffers little
                writer.write(view[start : start + 64 * KIB])
                await writer.drain()
            status, text = await read_one(reader)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (status, text) == (401, b"who are you")
        assert peak < 3 * MIB, f"{peak / MIB:.1f} MiB held while refusing an 8 MiB body"
        # The connection goes on: the refused body was read to its end.
        writer.write(b"GET /after HTTP/1.1\r\n\r\n")
        assert (await read_one(reader))[0] == 200
        writer.close()
    assert [r.path for r in served.seen] == ["/after"]
    assert served.seen[0].context == ("screened", "/after")


async def test_answers_keep_their_order_when_the_screen_refuses_one() -> None:
    async with serving(refuse_posts) as served:
        post = b"POST /a HTTP/1.1\r\n%scontent-length: 3\r\n\r\nabc"
        answer = await answer_to(
            served.port,
            post % b"authorization: x\r\n"
            + post % b""
            + b"GET /b HTTP/1.1\r\nconnection: close\r\n\r\n",
        )
    assert statuses(answer) == [200, 401, 200], answer
    assert [(r.path, r.body, r.context) for r in served.seen] == [
        ("/a", b"abc", ("screened", "/a")),
        ("/b", b"", ("screened", "/b")),
    ]


async def test_a_refusal_reaches_a_client_that_is_still_sending() -> None:
    """413 for a chunked body past the limit, while the client sends on: the server reads
    and drops the rest for a while (a lingering close), so the client gets the 413 rather
    than a reset."""
    async with serving(max_body_bytes=64 * KIB) as served:
        chunk = b"%x\r\n" % (64 * KIB) + b"x" * 64 * KIB + b"\r\n"
        data = b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n" + chunk * 32
        answer = await answer_to(served.port, data + b"0\r\n\r\n")
    assert statuses(answer) == [413], answer[:300]


async def test_bodies_in_flight_share_one_budget() -> None:
    async with serving(max_buffered_bytes=1 * MIB) as served:
        first, first_writer = await connect(served.port)
        first_writer.write(b"POST /a HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % (900 * KIB))
        first_writer.write(b"x" * 600 * KIB)
        await first_writer.drain()
        table = None

        def holding() -> bool:
            nonlocal table
            table = next(iter(served.connections))._table
            return table.buffered >= 600 * KIB

        await until(holding, within=10, what="the first body is being read")
        second = await answer_to(
            served.port,
            b"POST /b HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % (600 * KIB) + b"y" * 600 * KIB,
        )
        assert statuses(second) == [503], second[:300]
        first_writer.write(b"x" * 300 * KIB)
        assert (await read_one(first))[0] == 200
        first_writer.close()
        assert table is not None
        await until(lambda: table.buffered == 0, within=10, what="every body let go")
    assert [(r.path, len(r.body)) for r in served.seen] == [("/a", 900 * KIB)]


async def test_a_closed_connection_is_freed_by_reference_counting() -> None:
    """No cycle keeps a connection (nor the body it read) once it is closed: the router
    freezes its heap and collects rarely, so only reference counting frees in time."""
    async with serving(refuse_posts) as served:
        refs: list[weakref.ref[HttpConnection]] = []
        gc.collect()
        gc.disable()
        try:
            for auth in (b"authorization: x\r\n", b""):
                reader, writer = await connect(served.port)
                await until(lambda: served.connections, within=10, what="accepted")
                refs.append(weakref.ref(next(iter(served.connections))))
                writer.write(b"POST /x HTTP/1.1\r\n%scontent-length: %d\r\n\r\n" % (auth, MIB))
                writer.write(b"x" * MIB)
                await read_one(reader)
                writer.close()
                await until(lambda: not served.connections, within=10, what="closed")
            served.seen.clear()
            await until(lambda: all(ref() is None for ref in refs), within=5, what="freed")
        finally:
            gc.enable()


async def test_the_gateway_screens_heads_and_checks_each_request_once(tmp_path: Path) -> None:
    """The gateway's screen refuses an unauthenticated request before its body is kept and
    hands the identity it found to ``handle``: one gate check per request."""
    token, _ = create_token(tmp_path / "tokens.yaml", "alice", allow=AllowList.parse(["*"]))
    calls: list[tuple[str, str, int]] = []

    def inner(request: Request, responder: Responder, identity: Identity) -> None:
        calls.append((request.path, identity.label, len(request.body)))
        responder.respond(200, [], b"in")

    handler = build_gateway_handler(
        inner,
        settings=GatewaySettings(home=tmp_path),
        status_provider=dict,
        metrics=FleetMetrics(registry=CollectorRegistry(), process_collectors=False),
    )
    checks: list[str] = []
    check = handler.gateway.gate.check

    def counted(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        checks.append(path)
        return check(method, path, *args, **kwargs)

    handler.gateway.gate.check = counted  # type: ignore[method-assign]
    server, connections = await start_server(
        handler.handle, host="127.0.0.1", port=0, screen=handler.screen
    )
    port = server.sockets[0].getsockname()[1]
    handler.server = ("127.0.0.1", port)
    host = b"host: 127.0.0.1:%d\r\n" % port
    try:
        reader, writer = await connect(port)
        body = b"x" * MIB
        for auth in (b"authorization: Bearer " + token.encode() + b"\r\n", b""):
            writer.write(b"POST /mcp HTTP/1.1\r\n" + host + auth)
            writer.write(b"content-length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
        assert (await read_one(reader))[0] == 200
        status, text = await read_one(reader)
        assert status == 401 and b"Bearer" in text
        form = b"token=" + token.encode()
        writer.write(b"POST /login HTTP/1.1\r\n" + host)
        writer.write(b"content-length: %d\r\n\r\n" % len(form) + form)
        assert (await read_one(reader))[0] == 303  # decided on its body, in ``handle``
        writer.close()
        # A request nobody screened is checked in ``handle``, as before.
        unscreened = Request("POST", "/mcp", "", {"host": f"127.0.0.1:{port}"}, b"{}")
        answers: list[int] = []

        class Answers:
            def respond(self, status: int, headers: Any = (), body: bytes = b"") -> None:
                answers.append(status)

        handler.handle(unscreened, Answers())  # type: ignore[arg-type]
        assert answers == [401]
    finally:
        await handler.aclose()
        server.close()
        for conn in list(connections):
            conn.abort()
    assert calls == [("/mcp", "token:alice", MIB)]
    assert checks == ["/mcp", "/mcp", "/login", "/mcp"]


# -- refusals, reported ---------------------------------------------------------------------


async def test_each_refusal_of_its_own_is_reported_once() -> None:
    """``on_refused`` hears each refusal once, with its status, however much the refused
    client still sends; the answers before a refusal are no refusals."""
    refused: list[int] = []
    chunk = b"%x\r\n" % (16 * KIB) + b"x" * 16 * KIB + b"\r\n"
    cases = [
        (b"GET /x HTTP/1.1\r\n" + b"".join(b"x-%d: v\r\n" % i for i in range(101)) + b"\r\n", 431),
        (b"GET /" + b"a" * 70 * KIB + b" HTTP/1.1\r\n\r\n", 414),
        (b"POST /x HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % MIB, 413),
        (b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n" + chunk * 16, 413),
        (b"\x00\x01 not HTTP\r\n\r\n", 400),
    ]
    async with serving(on_refused=refused.append, max_body_bytes=64 * KIB) as served:
        for data, status in cases:
            answer = await answer_to(served.port, data)
            assert statuses(answer) == [status], answer[:300]
        pipelined = b"GET /a HTTP/1.1\r\n\r\n" + cases[2][0]
        assert statuses(await answer_to(served.port, pipelined)) == [200, 413]
    assert refused == [status for _, status in cases] + [413]


async def test_the_caps_and_deadlines_report_their_refusals() -> None:
    refused: list[int] = []
    async with serving(
        on_refused=refused.append, max_connections_per_peer=1, head_timeout=0.3
    ) as served:
        # A silent connection: 408 once its head is late.
        silent, silent_writer = await connect(served.port)
        assert statuses(await read_all(silent)) == [408]
        silent_writer.close()
        await until(lambda: not served.connections, within=10, what="the silent one closed")
        assert refused == [408]
        # One that waits for its answer holds its place: the next one is refused (503).
        reader, writer = await connect(served.port)
        writer.write(b"GET /hold HTTP/1.1\r\n\r\n")
        await until(lambda: served.held, within=10, what="an answer pending")
        assert statuses(await answer_to(served.port, b"GET /x HTTP/1.1\r\n\r\n")) == [503]
        assert refused == [408, 503]
        served.held[0].respond(200, [], b"done")
        assert await read_one(reader) == (200, b"done")
        writer.close()


async def test_the_servers_own_refusals_count_as_the_gateways_rejections(
    tmp_path: Path,
) -> None:
    """A 413 and a 431 the server answers before the gateway sees the request are counted
    in ``mcp_fleet_http_rejections_total``, wired as ``HttpService`` wires them."""
    handler = build_gateway_handler(
        lambda request, responder, identity: responder.respond(200, [], b"in"),
        settings=GatewaySettings(home=tmp_path, max_body_bytes=64 * KIB),
        status_provider=dict,
        metrics=FleetMetrics(registry=CollectorRegistry(), process_collectors=False),
    )
    registry = handler.gateway.metrics.registry

    def rejections(reason: str) -> float:
        found = registry.get_sample_value("mcp_fleet_http_rejections_total", {"reason": reason})
        return found or 0.0

    server, connections = await start_server(
        handler.handle,
        host="127.0.0.1",
        port=0,
        max_body_bytes=handler.gateway.settings.max_body_bytes,
        screen=handler.screen,
        on_refused=count_refusals(handler.gateway),
    )
    port = server.sockets[0].getsockname()[1]
    handler.server = ("127.0.0.1", port)
    host = b"host: 127.0.0.1:%d\r\n" % port
    try:
        too_large = b"POST /mcp HTTP/1.1\r\n" + host + b"content-length: %d\r\n\r\n" % MIB
        assert statuses(await answer_to(port, too_large)) == [413]
        assert rejections("body_too_large") == 1
        flood = b"".join(b"x-%d: v\r\n" % i for i in range(101))
        assert statuses(await answer_to(port, b"GET /mcp HTTP/1.1\r\n" + host + flood)) == [431]
        assert rejections("headers_too_large") == 1
        assert rejections("body_too_large") == 1
        assert rejections("unauthenticated") == 0, "the gate never saw them"
    finally:
        await handler.aclose()
        server.close()
        for conn in list(connections):
            conn.abort()


# -- connections -----------------------------------------------------------------------


async def test_one_address_gets_room_from_its_idle_connections_then_is_refused() -> None:
    async with serving(max_connections_per_peer=4) as served:
        silent = [await connect(served.port) for _ in range(4)]
        await until(lambda: len(served.connections) == 4, within=10, what="4 accepted")
        # A fifth: the oldest silent one makes room (503 and closed), the new one is served.
        answer = await answer_to(served.port, b"GET /x HTTP/1.1\r\nconnection: close\r\n\r\n")
        assert statuses(answer) == [200]
        evicted = await read_all(silent[0][0])
        assert statuses(evicted) == [503], evicted
        # Four connections each waiting for an answer hold something: no room is made.
        for _, writer in silent:
            writer.close()
        busy = [await connect(served.port) for _ in range(4)]
        for i, (_, writer) in enumerate(busy):
            writer.write(b"GET /hold/%d HTTP/1.1\r\n\r\n" % i)
        await until(lambda: len(served.held) == 4, within=10, what="4 answers pending")
        refused = await answer_to(served.port, b"GET /x HTTP/1.1\r\n\r\n")
        assert statuses(refused) == [503] and b"too many connections" in refused
        # Another address is not affected.
        other = await answer_to(
            served.port, b"GET /x HTTP/1.1\r\nconnection: close\r\n\r\n", source="127.0.0.2"
        )
        assert statuses(other) == [200]
        for responder in served.held:
            responder.respond(200, [], b"late")
        for reader, writer in busy:
            assert (await read_one(reader)) == (200, b"late")
            writer.close()


async def test_the_overall_cap_counts_every_address() -> None:
    async with serving(max_connections=3) as served:
        busy = []
        for i in range(3):
            reader, writer = await connect(served.port, f"127.0.0.{i + 2}")
            writer.write(b"GET /hold/%d HTTP/1.1\r\n\r\n" % i)
            busy.append((reader, writer))
        await until(lambda: len(served.held) == 3, within=10, what="3 answers pending")
        refused = await answer_to(served.port, b"GET /x HTTP/1.1\r\n\r\n", source="127.0.0.9")
        assert statuses(refused) == [503]
        served.held[0].respond(200, [], b"done")
        assert await read_one(busy[0][0]) == (200, b"done")
        busy[0][1].close()
        await until(lambda: len(served.connections) == 2, within=10, what="one closed")
        answer = await answer_to(
            served.port, b"GET /x HTTP/1.1\r\nconnection: close\r\n\r\n", source="127.0.0.9"
        )
        assert statuses(answer) == [200]
        for _, writer in busy[1:]:
            writer.close()


async def test_silent_and_idle_connections_are_closed() -> None:
    async with serving(head_timeout=0.3, idle_timeout=0.6) as served:
        silent, silent_writer = await connect(served.port)
        idle, idle_writer = await connect(served.port)
        idle_writer.write(b"GET /x HTTP/1.1\r\n\r\n")
        assert (await read_one(idle))[0] == 200
        # A connection that never sent a head: 408 and closed, sooner than an idle one.
        assert statuses(await read_all(silent)) == [408]
        assert not idle.at_eof()
        assert await read_all(idle) == b""  # closed without a word
        silent_writer.close()
        idle_writer.close()
        await until(lambda: not served.connections, within=10, what="both gone")


def test_the_caps_follow_the_descriptor_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip("needs a hard descriptor limit of 2048 at least")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        assert connection_cap(4096) == 1024 - 256
        assert connection_cap(100) == 100
        assert accept_backlog() == 128
        assert raise_fd_limit(2048) == 2048
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 2048
        assert connection_cap(4096) == 2048 - 512
        assert raise_fd_limit(1024) == 2048, "never lowered"
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize(
    ("peername", "key"),
    [
        (("10.1.2.3", 5555), "10.1.2.3"),
        (("2001:db8:1:2:aaaa::1", 80, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:bbbb::9", 80, 0, 0), "2001:db8:1:2::/64"),
        (("::ffff:10.1.2.3", 80, 0, 0), "10.1.2.3"),
        ("", ""),
        (None, ""),
    ],
)
def test_connections_are_counted_by_address(peername: object, key: str) -> None:
    assert peer_key(peername) == key
