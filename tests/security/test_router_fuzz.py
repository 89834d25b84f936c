"""Fuzzed JSON-RPC and HTTP into a real router: an answer or a closed connection, never a crash.

Two real routers (``python -m mcp_fleet.router`` with the echo server as a
process backend), one on stdio and one on streamable HTTP, get what
hypothesis makes of JSON-RPC: malformed JSON, wrong types, huge, negative,
float, null and object ids, batches, unknown methods, duplicate ids, calls
and ``notifications/cancelled`` for them interleaved, responses to requests
never made, requests before ``initialize``; and, over raw sockets, what it
makes of HTTP: bad request lines, methods and headers, chunked, truncated
and oversized bodies, unknown sessions.

Checked after every example:

- every message is answered as JSON-RPC 2.0 says (``expected_reply``): a
  request with exactly one well-formed response carrying its id (a cancelled
  one with at most one), anything unparseable or invalid with an error whose
  id is null, a notification with nothing; over raw HTTP, every whole
  request before the first broken byte gets a well-formed HTTP answer, in
  order, then at most one refusal, then the close (never a 500);
- the router process still runs and still serves: a ping and a call on the
  stdio session, a second HTTP session (the victim) that makes ordinary calls
  the whole time;
- nothing leaks across sessions: every answer the victim gets is its own
  (same id, its own echo text) and nothing but broadcast notifications ever
  reaches its standalone stream, although the fuzzed session draws ids from
  the victim's range and cancels them;
- hostile connection patterns (many idle connections, partial requests and
  bodies left hanging, floods of header lines, huge and repeated headers,
  bodies on requests the gate refuses) get their 431, 403 or 413 and cost
  nothing lasting: ``/healthz`` answers within a second meanwhile, and the
  router's RSS stays within 64 MiB of where it began.

The stdio router runs with an audit log, so the gateway's per-call policy
sits in front of its session as it does over HTTP. Each input that once
broke the router is kept below as a plain regression test.

Bounded for CI: ``derandomize=True`` and no example database, so every run
tries the same 780 inputs; the whole file takes about 45 s on 2 cores. For
long runs on random inputs use bench/fuzz_router.py (atheris, in-process).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mcp_fleet.router.http_server import Request, Responder, start_server
from router_fuzz_strategies import (
    HEADER_BYTES_LIMIT,
    HEADER_COUNT_LIMIT,
    connection_moves,
    http_requests,
    line_of,
    pool_ids,
    raw_messages,
)
from router_fuzz_support import (
    MAX_BODY,
    HttpRouter,
    StdioRouter,
    Victim,
    _key,
    expected_reply,
    healthz_seconds,
    hostile_socket,
    http_answers,
    messages_of,
    raw_exchange,
    rss,
    send_and_read,
    valid_id,
    well_formed,
    whole_requests,
)

pytestmark = [pytest.mark.timeout(180)]

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_counter = itertools.count(1)


def cancelled_keys(bodies: list[bytes]) -> set[Any]:
    """Ids of requests a later ``notifications/cancelled`` among ``bodies`` may have cancelled."""
    asked: set[Any] = set()
    cancelled: set[Any] = set()
    for body in bodies:
        kind, mid = expected_reply(body)
        if kind == "id":
            asked.add(_key(mid))
            continue
        try:
            msg = orjson.loads(body)
        except orjson.JSONDecodeError:
            continue
        if isinstance(msg, dict) and msg.get("method") == "notifications/cancelled":
            params = msg.get("params")
            rid = params.get("requestId") if isinstance(params, dict) else None
            if msg.get("id") is None and valid_id(rid) and _key(rid) in asked:
                cancelled.add(_key(rid))
    return cancelled


# -- the stdio router ---------------------------------------------------------------------


class Live:
    """A router process, started again when an example killed it (so shrinking works)."""

    def __init__(self, make: Any, home: Path, **options: Any) -> None:
        self._make, self._home = make, home
        self.router = make(home, **options)

    def get(self) -> Any:
        if not self.router.alive():
            self.router.close()
            self.router = self._make(self._home)
        if not getattr(self.router, "ready", True):
            self.router.handshake()
        return self.router


@pytest.fixture(scope="module")
def stdio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    # Not initialized: the first test sends requests before initialize (others initialize).
    live = Live(StdioRouter, tmp_path_factory.mktemp("stdio"), initialize=False)
    yield live
    live.router.close()


def victim_call(router: StdioRouter) -> tuple[str, bytes]:
    mid = f"victim-{next(_counter)}"
    params = {"name": "echo", "arguments": {"text": mid}}
    return mid, orjson.dumps(
        {"jsonrpc": "2.0", "id": mid, "method": "tools/call", "params": params}
    )


def exchange_stdio(router: StdioRouter, lines: list[bytes], *, ready: bool = True) -> None:
    """Send ``lines`` between two ordinary calls; check every answer against the oracle
    (and, when the echo backend is ``ready``, that the ordinary calls got their own echo)."""
    first, first_line = victim_call(router)
    last, last_line = victim_call(router)
    sentinel = f"sentinel-{next(_counter)}"
    expected: Counter[Any] = Counter()
    for line in lines:
        kind, mid = expected_reply(line)
        if kind != "none":
            expected[_key(mid) if kind == "id" else _key(None)] += 1
    maybe = cancelled_keys(lines)
    for line in [first_line, *lines, last_line]:
        router.send(line)
    router.send(orjson.dumps({"jsonrpc": "2.0", "id": sentinel, "method": "ping"}))
    must = Counter({k: n for k, n in expected.items() if k not in maybe})
    must.update([_key(first), _key(last), _key(sentinel)])
    got = router.until(must, linger=0.15 if maybe else 0.0)  # sleeps last 0.05 s at most
    for mid in (first, last):
        (answer,) = got[_key(mid)]
        if ready:
            assert answer["result"]["content"][0]["text"] == mid, answer
    counts = Counter({k: len(v) for k, v in got.items()})
    for key in (_key(first), _key(last), _key(sentinel)):
        del counts[key]
    for key, n in counts.items():
        assert key in expected, f"an answer nobody asked for: {got[key]}"
        assert n <= expected[key], f"{n} answers to {expected[key]} requests: {got[key]}"
        assert key in maybe or n == expected[key], f"{key}: {n} answers, {expected[key]} asked"
    assert router.alive()


def test_requests_before_initialize_are_answered(stdio: Live) -> None:
    router = stdio.router
    if router.ready:  # not the first test of the module to use it: a fresh router
        router = stdio.router = StdioRouter(router.home, initialize=False)
    exchange_stdio(
        router,
        [b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', b"{", b"[]",
         b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo",'
         b'"arguments":{"text":"early"}}}'],
        ready=False,
    )  # fmt: skip
    router.handshake()
    exchange_stdio(router, [b'{"jsonrpc":"2.0","id":3,"method":"ping"}'])


@settings(FUZZ, max_examples=200)
@given(lines=st.lists(raw_messages().map(line_of), min_size=1, max_size=8))
def test_stdio_framing_answers_everything_and_survives(stdio: Live, lines: list[bytes]) -> None:
    exchange_stdio(stdio.get(), lines)


@settings(FUZZ, max_examples=60)
@given(
    rid=pool_ids,
    seconds=st.floats(0, 0.05),
    order=st.permutations(["call", "dup", "cancel", "cancel_other"]),
)
def test_stdio_duplicate_ids_and_interleaved_cancels(
    stdio: Live, rid: Any, seconds: float, order: list[str]
) -> None:
    call = {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"seconds": seconds}}}  # fmt: skip
    lines = {
        "call": orjson.dumps(call),
        "dup": orjson.dumps({**call, "params": {"name": "echo", "arguments": {"text": "d"}}}),
        "cancel": orjson.dumps(
            {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": rid, "reason": "fuzz"},
            }
        ),
        "cancel_other": orjson.dumps(
            {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": f"{rid}x"},
            }
        ),
    }
    exchange_stdio(stdio.get(), [lines[step] for step in order])


@pytest.mark.parametrize(
    ("line", "code", "says"),
    [  # each of these once ended the stdio router (exit 1), taking every call with it
        (b'{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":[1]}}',
         -32602, "log level"),
        (b'{"jsonrpc":"2.0","id":2,"method":"logging/setLevel","params":{"level":{}}}',
         -32602, "log level"),
        (b'{"jsonrpc":"2.0","id":3,"method":{}}', -32600, "method must be a string"),
        (b'{"jsonrpc":"2.0","id":4,"method":[1]}', -32600, "method must be a string"),
    ],
)  # fmt: skip
def test_lines_that_crashed_the_router_get_an_error(
    stdio: Live, line: bytes, code: int, says: str
) -> None:
    router = stdio.get()
    mid = _key(orjson.loads(line)["id"])
    router.send(line)
    (answer,) = router.until({mid})[mid]
    assert answer["error"]["code"] == code and says in answer["error"]["message"], answer
    assert router.alive()
    exchange_stdio(router, [b'{"jsonrpc":"2.0","id":5,"method":"ping"}'])


def test_a_duplicate_in_flight_id_is_refused_and_the_first_call_answered(stdio: Live) -> None:
    router = stdio.get()
    call = {"jsonrpc": "2.0", "id": "twice", "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"seconds": 0.3}}}  # fmt: skip
    router.send(orjson.dumps(call))
    router.send(orjson.dumps({**call, "params": {"name": "echo", "arguments": {"text": "2nd"}}}))
    refused, answered = router.until(Counter({_key("twice"): 2}))[_key("twice")]
    assert refused["error"] == {"code": -32600, "message": "duplicate request id: still in flight"}
    assert answered["result"]["content"][0]["text"] == "slept 0.3", answered


# -- the HTTP router ----------------------------------------------------------------------


class HttpFleet:
    def __init__(self, home: Path) -> None:
        self.live = Live(HttpRouter, home)
        self.victim = Victim(self.live.router)
        self.http = httpx.Client(timeout=10)
        self.sid = self.live.router.initialize(self.http)
        self.pool = ThreadPoolExecutor(8)

    def router(self) -> HttpRouter:
        router = self.live.get()
        if router is not self.victim.router:  # restarted after a crash: new sessions
            self.victim.close()
            self.victim = Victim(router)
            self.sid = router.initialize(self.http)
        return router  # type: ignore[no-any-return]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.victim.close()
        self.http.close()
        self.live.router.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpFleet]:
    fleet = HttpFleet(tmp_path_factory.mktemp("http"))
    yield fleet
    fleet.close()


def check_post(body: bytes, answer: httpx.Response, duplicate: bool, cancelled: bool) -> None:
    """One POST's answer against the oracle (``duplicate``: another POST used its id)."""
    kind, mid = expected_reply(body, http=True)
    replies = [m for m in messages_of(answer) if "method" not in m] if answer.content else []
    for msg in replies:
        assert well_formed(msg) is None, well_formed(msg)
    if kind == "none":
        assert answer.status_code == 202, (body, answer.status_code, answer.text)
    elif kind == "null":
        assert answer.status_code == 400 and [r["id"] for r in replies] == [None], answer.text
        assert "error" in replies[0]
    elif answer.status_code == 400 and duplicate and "duplicate request id" in answer.text:
        pass  # two concurrent POSTs with one id: the second is refused
    else:
        assert answer.status_code in (200, 400), (body, answer.status_code, answer.text)
        assert [r["id"] for r in replies] == [mid], (body, answer.text)
        assert answer.status_code == 200 or "error" in replies[0], answer.text
        if cancelled and "error" in replies[0]:
            assert replies[0]["error"]["code"] in (-32800, -32602, -32601, -32603, -32001)


@settings(FUZZ, max_examples=200)
@given(bodies=st.lists(raw_messages(), min_size=1, max_size=6))
def test_http_json_rpc_answers_everything_and_never_leaks(
    fleet: HttpFleet, bodies: list[bytes]
) -> None:
    router = fleet.router()
    since = fleet.victim.done
    headers = router.headers(fleet.sid)

    def post(body: bytes) -> httpx.Response:
        return fleet.http.post(router.url, content=body, headers=headers, timeout=10)

    answers = list(fleet.pool.map(post, bodies))
    keys = Counter(_key(m) for k, m in map(expected_reply, bodies) if k == "id")
    maybe = cancelled_keys(bodies)
    for body, answer in zip(bodies, answers, strict=True):
        _, mid = expected_reply(body)
        key = _key(mid)
        check_post(body, answer, keys[key] > 1, key in maybe)
        event(f"HTTP {answer.status_code}")
    fleet.victim.progress(since)
    assert router.alive()


@settings(FUZZ, max_examples=60)
@given(
    sid=st.text(max_size=40) | st.sampled_from(["", "0" * 32, "../x", "a" * 2000]),
    version=st.none() | st.sampled_from(["2025-06-18", "2024-11-05", "1999-01-01", ""]),
    body=raw_messages(),
)
def test_unknown_sessions_and_versions_are_refused(
    fleet: HttpFleet, sid: str, version: str | None, body: bytes
) -> None:
    router = fleet.router()
    since = fleet.victim.done
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    try:
        headers["mcp-session-id"] = sid
        if version is not None:
            headers["mcp-protocol-version"] = version
        answer = fleet.http.post(router.url, content=body, headers=headers)
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        return  # not sendable as a header: nothing reached the router
    if answer.status_code in (200, 202):  # only an initialize opens a session without one
        assert body and b"initialize" in body
    else:
        assert answer.status_code in (400, 403, 404), answer.text
        if answer.headers.get("content-type") == "application/json":
            assert well_formed(answer.json()) is None
        else:  # refused by the HTTP parser (a control character in a header): plain text
            assert answer.status_code == 400 and answer.text == "malformed HTTP request"
    fleet.victim.progress(since)


# -- raw HTTP -----------------------------------------------------------------------------


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_raw_http_gets_an_http_answer_or_a_close(fleet: HttpFleet, data: st.DataObject) -> None:
    """Each whole request before the first broken byte is answered, in order; then at most
    one refusal; then the close (the client half-closes after sending)."""
    router = fleet.router()
    since = fleet.victim.done
    sid = router.initialize(fleet.http)  # its own: a fuzzed DELETE may end it
    host = f"{router.host}:{router.port}"
    sent = b"".join(data.draw(st.lists(http_requests(sid, host), min_size=1, max_size=2)))
    answer = raw_exchange(router.host, router.port, sent)
    statuses = http_answers(answer) if answer else []
    asked = whole_requests(sent)
    assert all(100 <= code < 600 for code in statuses), answer[:300]
    assert len(statuses) <= asked + 1, f"{len(statuses)} answers to {asked} requests: {answer!r}"
    if asked:
        assert statuses, f"a whole request was never answered: {sent[:300]!r}"
    for code in statuses:
        assert code != 500, answer[:300]
        event(f"HTTP {code}")
    if not statuses:
        event("closed without an answer")
    fleet.victim.progress(since)
    assert router.alive()


@pytest.mark.parametrize(
    ("behind", "statuses"),
    [
        (b"NNNN\xff\xff\r\n\r\n", [200]),
        (b"GET /healthz HTTP/1.1\r\nhost: {host}\r\n\r\n", [200]),
    ],
)
def test_bytes_behind_a_closing_request_never_cost_its_answer(
    fleet: HttpFleet, behind: bytes, statuses: list[int]
) -> None:
    """Regression: bytes pipelined behind an HTTP/1.0 request (which closes the connection)
    made the parser fail while the gateway was still answering, and the connection was
    closed with no answer at all."""
    router = fleet.router()
    host = f"{router.host}:{router.port}".encode()
    first = b"GET /healthz HTTP/1.0\r\nhost: " + host + b"\r\n\r\n"
    answer = raw_exchange(router.host, router.port, first + behind.replace(b"{host}", host))
    assert http_answers(answer) == statuses, answer


# -- hostile connections ------------------------------------------------------------------

#: Bytes one move sends at most (a flood is cut off long before).
MOVE_BYTES = 2_000_000
MIB = 1024 * 1024


def hostile_request(move: tuple[Any, ...], host: str) -> tuple[bytes, set[int]]:
    """The bytes of a ``headers`` or ``refused-body`` move and the answers allowed for it."""
    if move[0] == "headers":
        _, count, size, repeated = move
        count = min(count, max(1, MOVE_BYTES // (size + 10)))
        value = b"a" * size
        names = [b"x-a" if repeated else b"x-%d" % i for i in range(count)]
        fixed = [(b"host", host.encode()), (b"connection", b"close")]
        headers = fixed + [(name, value) for name in names]
        head = b"".join(name + b": " + v + b"\r\n" for name, v in headers)
        counted = len(b"/healthz") + sum(len(n) + len(v) + 4 for n, v in headers)
        if len(headers) > HEADER_COUNT_LIMIT or counted > HEADER_BYTES_LIMIT:
            allowed = {431}
        else:  # the raw bytes read are a little more than what is counted: near, either
            allowed = {200, 431} if counted > HEADER_BYTES_LIMIT - 200 else {200}
        return b"GET /healthz HTTP/1.1\r\n" + head + b"\r\n", allowed
    _, why, size, chunked = move
    lines = [
        b"POST /mcp HTTP/1.1",
        b"host: " + (b"evil.example" if why == "host" else host.encode()),
        b"content-type: text/plain",
        b"connection: close",
    ]
    if why == "origin":
        lines.append(b"origin: http://evil.example")
    body = b"x" * size
    if chunked:
        lines.append(b"transfer-encoding: chunked")
        body = (b"%x\r\n" % size + body + b"\r\n" if size else b"") + b"0\r\n\r\n"
    else:
        lines.append(b"content-length: %d" % size)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body, {413} if size > MAX_BODY else {403}


def play(router: HttpRouter, moves: list[tuple[Any, ...]], seen: list[str]) -> float:
    """Make ``moves`` from 127.0.0.2-11 (each answered as allowed, noted in ``seen``), and
    with every connection they leave hanging still open, time ``/healthz``."""
    host = f"{router.host}:{router.port}"
    hanging: list[socket.socket] = []
    sources = itertools.cycle(f"127.0.0.{i}" for i in range(2, 12))
    try:
        for move in moves:
            kind = move[0]
            if kind == "idle":
                hanging += [hostile_socket(router.host, router.port, next(sources))
                            for _ in range(move[1])]  # fmt: skip
            elif kind in ("partial", "slow-body"):
                size = move[1] if kind == "slow-body" else 100
                request = (
                    b"POST /mcp HTTP/1.1\r\nhost: " + host.encode()
                    + b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % size
                    + b"x" * size
                )  # fmt: skip
                cut = move[1] if kind == "partial" else len(request) - size // 2
                sock = hostile_socket(router.host, router.port, next(sources))
                sock.sendall(request[:cut])
                hanging.append(sock)
            else:
                data, allowed = hostile_request(move, host)
                with hostile_socket(router.host, router.port, next(sources)) as sock:
                    answer = send_and_read(sock, data)
                statuses = http_answers(answer)
                assert len(statuses) == 1 and statuses[0] in allowed, (move, answer[:300])
                seen.append(f"{kind} -> HTTP {statuses[0]}")
        return healthz_seconds(router.host, router.port)
    finally:
        for sock in hanging:
            sock.close()


def test_hostile_connections_leave_the_router_serving_and_its_memory_flat(
    fleet: HttpFleet,
) -> None:
    router = fleet.router()
    warm_up = [("idle", 5), ("partial", 50), ("slow-body", MAX_BODY),
               ("headers", 1000, 10, True), ("headers", 50, 700, False),
               ("refused-body", "origin", 4 * MAX_BODY, True),
               ("refused-body", "host", MAX_BODY, False)]  # fmt: skip
    for _ in range(3):  # what the first requests allocate for good is not growth
        play(router, warm_up, [])
    baseline = rss(router.proc.pid)
    latencies: list[float] = []

    @settings(FUZZ, max_examples=60)
    @given(moves=connection_moves())
    def hostile(moves: list[tuple[Any, ...]]) -> None:
        since = fleet.victim.done
        seen: list[str] = []
        latencies.append(play(router, moves, seen))
        for outcome in seen:
            event(outcome)
        assert latencies[-1] < 2.0, f"/healthz took {latencies[-1]:.2f} s (target: 1 s)"
        fleet.victim.progress(since)
        assert router.alive()

    hostile()
    grown = rss(router.proc.pid) - baseline
    assert grown < 64 * MIB, f"RSS grew {grown / MIB:.0f} MiB over the hostile examples"
    latencies.sort()
    median, worst = latencies[len(latencies) // 2], latencies[-1]
    print(f"{len(latencies)} hostile examples: RSS +{grown / MIB:.1f} MiB, /healthz median "
          f"{median * 1000:.1f} ms, max {worst * 1000:.1f} ms")  # fmt: skip
    assert latencies[-2] < 1.0, latencies[-5:]


def test_a_refusal_comes_after_the_answers_it_follows(fleet: HttpFleet) -> None:
    """Two pipelined requests and then garbage: two answers in order, a 400, the close."""
    router = fleet.router()
    host = f"{router.host}:{router.port}".encode()
    ping = b'{"jsonrpc":"2.0","id":"p","method":"ping"}'
    post = (
        b"POST /mcp HTTP/1.1\r\nhost: " + host + b"\r\ncontent-type: application/json\r\n"
        b"accept: application/json, text/event-stream\r\nmcp-session-id: "
        + router.initialize(fleet.http).encode()
        + b"\r\ncontent-length: %d\r\n\r\n" % len(ping)
        + ping
    )
    answer = raw_exchange(router.host, router.port, post + post + b"\x00garbage\r\n\r\n")
    assert http_answers(answer) == [200, 200, 400], answer
    assert answer.count(b'"id":"p","result":{}') == 2


def test_a_cancelled_post_is_answered_not_left_hanging(fleet: HttpFleet) -> None:
    """Regression: the POST of a cancelled call hung until the client gave up (and kept its
    session from ever being swept); it now ends with REQUEST_CANCELLED, as the SDK's does."""
    router = fleet.router()
    headers = router.headers(router.initialize(fleet.http))
    call = {"jsonrpc": "2.0", "id": "long", "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"seconds": 5}}}  # fmt: skip
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled",
              "params": {"requestId": "long", "reason": "changed my mind"}}  # fmt: skip
    pending = fleet.pool.submit(
        fleet.http.post, router.url, content=orjson.dumps(call), headers=headers
    )
    for _ in range(40):  # a cancel that overtakes the call changes nothing: send until one lands
        sent = fleet.http.post(router.url, content=orjson.dumps(cancel), headers=headers)
        assert sent.status_code == 202
        try:
            answer = pending.result(timeout=0.1)
            break
        except TimeoutError:
            continue
    else:
        pytest.fail("the cancelled call's POST never ended")
    (reply,) = [m for m in messages_of(answer) if "method" not in m]
    assert reply["id"] == "long" and reply["error"]["code"] == -32800, reply


def test_odd_methods_over_http_are_answered_at_once(fleet: HttpFleet) -> None:
    """Regression: ``"method": null`` with an id left its POST open for ever; ``"method": {}``
    made the call policy raise (500), and its id stayed taken for the rest of the session."""
    router = fleet.router()
    headers = router.headers(router.initialize(fleet.http))
    null = fleet.http.post(
        router.url, content=b'{"jsonrpc":"2.0","id":1,"method":null}', headers=headers, timeout=5
    )
    assert null.status_code == 202  # a response to nothing, as on stdio
    for _ in range(2):
        odd = fleet.http.post(
            router.url, content=b'{"jsonrpc":"2.0","id":7,"method":{}}', headers=headers
        )
        assert odd.status_code == 400 and odd.json()["id"] == 7, odd.text
        assert odd.json()["error"]["message"] == "method must be a string"


def test_a_client_that_closes_its_side_mid_call_is_gone_and_the_router_goes_on(
    fleet: HttpFleet,
) -> None:
    """EOF from the client means it is gone (as nginx and uvicorn judge it): the router
    closes at once rather than holding the connection for an answer nobody reads, and
    serves the next client (tests/integration/test_router_disconnect.py proves the call
    is cancelled at its server)."""
    router = fleet.router()
    host = f"{router.host}:{router.port}".encode()
    call = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                         "params": {"name": "echo", "arguments": {"text": "bye"}}})  # fmt: skip
    post = (
        b"POST /mcp HTTP/1.1\r\nhost: " + host + b"\r\ncontent-type: application/json\r\n"
        b"accept: application/json, text/event-stream\r\nmcp-session-id: "
        + router.initialize(fleet.http).encode()
        + b"\r\ncontent-length: %d\r\n\r\n" % len(call)
        + call
    )
    answer = raw_exchange(router.host, router.port, post)  # sends, then shuts its side
    assert http_answers(answer) in ([], [200]), answer  # closed, or answered first: no error
    assert router.initialize(fleet.http)  # the router goes on


async def test_a_failing_handler_lets_go_of_its_answer() -> None:
    """A handler that raises: its close callbacks run (state it kept for the answer is let
    go), the client gets a 500, the connection serves the next request."""
    let_go: list[str] = []

    def handler(request: Request, responder: Responder) -> None:
        if request.path == "/boom":
            responder.on_close.append(lambda: let_go.append(request.path))
            raise RuntimeError("a bug")
        responder.respond(200, [], b"fine")

    server, _ = await start_server(handler, host="127.0.0.1", port=0, request_timeout=None)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /boom HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n")
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    finally:
        server.close()
    assert http_answers(answer) == [500, 200] and answer.endswith(b"fine"), answer
    assert let_go == ["/boom"]
