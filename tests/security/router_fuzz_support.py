"""Real router processes and the message oracle the router fuzz tests share.

The router under test is the one users run: ``python -m mcp_fleet.router``
with the echo server (tests/servers/echo_server.py) as a process backend,
spoken to over its stdio (``StdioRouter``) or its own HTTP server
(``HttpRouter``). Both are plain blocking code (pipes, sockets, httpx), so
hypothesis drives them from ordinary test functions, and a router that dies
shows as a process exit code rather than as a lost task. A router found dead
is started again before the next example, so hypothesis shrinks a crash to
its smallest input instead of replaying "router is gone" forever.

``expected_reply`` is JSON-RPC 2.0's rule for one message, the oracle every
example is checked against: a request gets exactly one response with its id,
a notification or a response none, anything unparseable or invalid an error
whose id is null.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import httptools
import httpx
import orjson

ROOT = Path(__file__).resolve().parents[2]
ECHO = f"{sys.executable} {ROOT / 'tests' / 'servers' / 'echo_server.py'}"
PROTOCOL = "2025-06-18"
INIT_PARAMS = {
    "protocolVersion": PROTOCOL,
    "capabilities": {},
    "clientInfo": {"name": "fuzz", "version": "1"},
}
JSON_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
#: Body limit the HTTP router runs with, so oversized bodies stay cheap to send.
MAX_BODY = 65536
#: Notifications the router may legitimately send any session unasked.
BROADCASTS = frozenset(
    {
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
        "notifications/resources/list_changed",
        "notifications/message",
    }
)


def valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def expected_reply(raw: bytes, *, http: bool = False) -> tuple[str, Any]:
    """What JSON-RPC promises for one message: ("none", None), ("null", None) or ("id", id).

    A blank line is no message on stdio; a blank HTTP body is a parse error.
    """
    if not raw.strip():
        return ("null", None) if http else ("none", None)
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "null", None
    if not isinstance(msg, dict):
        return "null", None
    method, mid = msg.get("method"), msg.get("id")
    if method is None:
        return "none", None  # a response from the client
    if not isinstance(method, str):
        return ("id", mid) if valid_id(mid) else ("null", None)
    if mid is None:
        return "none", None
    return ("id", mid) if valid_id(mid) else ("null", None)


def well_formed(msg: Any) -> str | None:
    """Why ``msg`` is not a well-formed JSON-RPC message from a server (None: it is)."""
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
        return f"not a JSON-RPC 2.0 object: {msg!r:.200}"
    if "method" in msg:
        return None if isinstance(msg["method"], str) else f"bad method: {msg!r:.200}"
    if "id" not in msg or not (msg["id"] is None or valid_id(msg["id"])):
        return f"response without a valid id: {msg!r:.200}"
    if ("result" in msg) == ("error" in msg):
        return f"needs exactly one of result and error: {msg!r:.200}"
    err = msg.get("error")
    if err is not None and not (
        isinstance(err, dict)
        and type(err.get("code")) is int
        and isinstance(err.get("message"), str)
    ):
        return f"malformed error object: {msg!r:.200}"
    if err is not None and err["message"].startswith("Internal error handling"):
        return f"a handler of the router raised (see its log): {msg!r:.200}"
    return None


def _start(argv: list[str], home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MCP_FLEET_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mcp_fleet.router", "--server", f"echo={ECHO}", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(ROOT),
        env=env,
        start_new_session=True,
    )


def _pump(pipe: IO[bytes], into: queue.Queue[bytes | None]) -> None:
    for line in pipe:
        into.put(line)
    into.put(None)


def _stop(proc: subprocess.Popen[bytes], *, terminate: bool = False) -> None:
    """End a router: EOF on stdin (stdio) or SIGTERM (HTTP), then its whole process group."""
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()
    if terminate:
        proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # a backend left behind


class StdioRouter:
    """A router serving one client on its stdio; the test is that client."""

    def __init__(self, home: Path, *, initialize: bool = True) -> None:
        self.home = home
        # The audit log puts the gateway's per-call policy in front of the session.
        self.proc = _start(["--audit-log", str(home / "audit.log")], home)
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.stderr: queue.Queue[bytes | None] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=_pump, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=_pump, args=(self.proc.stderr, self.stderr), daemon=True).start()
        self.ready = False
        if initialize:
            self.handshake()

    def handshake(self) -> None:
        """``initialize``, ``notifications/initialized``, then wait for the echo backend."""
        self.ready = True
        self.send(orjson.dumps({"jsonrpc": "2.0", "id": "init", "method": "initialize",
                                "params": INIT_PARAMS}))  # fmt: skip
        init = self.until({_key("init")}, timeout=30)
        assert init[_key("init")][0].get("result"), init
        self.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
        deadline = time.monotonic() + 30
        while "echo" not in str(self.call("tools/list", "warm")):
            assert time.monotonic() < deadline, "the echo backend never attached"
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def call(self, method: str, mid: str, params: dict[str, Any] | None = None) -> Any:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": mid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(orjson.dumps(msg))
        return self.until({_key(mid)})[_key(mid)][0]

    def until(
        self, keys: set[Any] | Counter[Any], *, timeout: float = 10.0, linger: float = 0.0
    ) -> dict[Any, list[Any]]:
        """Read messages until every id key (``_key``) of ``keys`` has had a response (as many
        as a ``Counter`` says), then ``linger`` seconds more (answers that may or may not
        come); returns every response read, by id key."""
        need = keys if isinstance(keys, Counter) else Counter(keys)
        got: dict[Any, list[Any]] = {}
        deadline = time.monotonic() + timeout
        settled: float | None = None
        while settled is None or time.monotonic() < settled:
            missing = [k for k, n in need.items() if len(got.get(k, ())) < n]
            if settled is None and not missing:
                settled = time.monotonic() + linger
                continue
            left = (settled or deadline) - time.monotonic()
            if settled is None and left <= 0:
                raise TimeoutError(f"no response for {sorted(map(repr, missing))}")
            try:
                line = self.lines.get(timeout=max(left, 0.001))
            except queue.Empty:
                continue
            if line is None:
                raise EOFError(f"router exited with {self.proc.wait()}: {self.stderr_text()}")
            msg = orjson.loads(line)
            problem = well_formed(msg)
            assert problem is None, problem
            if "method" not in msg:
                got.setdefault(_key(msg["id"]), []).append(msg)
        return got

    def stderr_text(self) -> str:
        out = []
        while True:
            try:
                line = self.stderr.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                out.append(line.decode(errors="replace"))
        return "".join(out)[-3000:]

    def close(self) -> None:
        _stop(self.proc)


def _key(mid: Any) -> Any:
    """Ids as dictionary keys that keep 1 and "1" apart."""
    return (type(mid).__name__, mid)


class HttpRouter:
    """A router serving streamable HTTP on a free loopback port."""

    def __init__(self, home: Path) -> None:
        self.proc = _start(
            ["--transport", "streamable-http", "--port", "0", "--max-body-bytes", str(MAX_BODY)],
            home,
        )
        assert self.proc.stderr is not None
        self.stderr: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc.stderr, self.stderr), daemon=True).start()
        deadline = time.monotonic() + 30
        self.url = ""
        while not self.url:
            line = self.stderr.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "the router exited before listening"
            found = re.search(rb"listening on (http://\S+)", line)
            if found:
                self.url = found.group(1).decode()
        self.host, self.port = httpx.URL(self.url).host, httpx.URL(self.url).port or 80
        with httpx.Client(timeout=10) as http:
            sid = self.initialize(http)
            while "echo" not in self.post(http, sid, {"id": 1, "method": "tools/list"}).text:
                assert time.monotonic() < deadline, "the echo backend never attached"
                time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def initialize(self, http: httpx.Client) -> str:
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS}
        answer = http.post(self.url, content=orjson.dumps(init), headers=JSON_HEADERS)
        assert answer.status_code == 200, answer.text
        sid = answer.headers["mcp-session-id"]
        note = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
        assert http.post(self.url, content=note, headers=self.headers(sid)).status_code == 202
        return sid

    @staticmethod
    def headers(sid: str) -> dict[str, str]:
        return {**JSON_HEADERS, "mcp-session-id": sid, "mcp-protocol-version": PROTOCOL}

    def post(self, http: httpx.Client, sid: str, msg: dict[str, Any]) -> httpx.Response:
        return http.post(
            self.url, content=orjson.dumps({"jsonrpc": "2.0", **msg}), headers=self.headers(sid)
        )

    def close(self) -> None:
        _stop(self.proc, terminate=True)


def messages_of(answer: httpx.Response) -> list[Any]:
    """The JSON-RPC messages of one HTTP answer (a JSON body or an SSE stream)."""
    kind = answer.headers.get("content-type", "")
    if kind.startswith("application/json"):
        return [answer.json()]
    assert kind.startswith("text/event-stream"), f"unexpected content type {kind!r}"
    return [orjson.loads(line[5:]) for line in answer.text.splitlines() if line.startswith("data:")]


class Victim:
    """A second HTTP session making ordinary calls the whole time, checking every answer.

    One thread calls ``echo`` (and now and then a short ``sleep``, so calls are
    in flight while the fuzzed session cancels ids) with ids 1, 2, 3...; the
    ids the fuzzer draws overlap them on purpose. Another holds the session's
    standalone SSE stream open: nothing but broadcast notifications may come
    there. ``problems`` collects every mismatch; ``done`` counts good calls.
    """

    def __init__(self, router: HttpRouter) -> None:
        self.router = router
        self.http = httpx.Client(timeout=30)
        self.sid = router.initialize(self.http)
        self.problems: list[str] = []
        self.done = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._calls, daemon=True),
            threading.Thread(target=self._listen, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _calls(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            tool, args, want = (
                ("sleep", {"seconds": 0.05}, "slept 0.05")
                if n % 4 == 0
                else ("echo", {"text": f"victim {n}"}, f"victim {n}")
            )
            try:
                answer = self.router.post(
                    self.http,
                    self.sid,
                    {"id": n, "method": "tools/call", "params": {"name": tool, "arguments": args}},
                )
                replies = [m for m in messages_of(answer) if "method" not in m]
            except (httpx.HTTPError, AssertionError, ValueError) as exc:
                if self._stop.is_set():
                    return
                self.problems.append(f"call {n}: {exc!r}")
                time.sleep(0.2)
                continue
            if answer.status_code != 200 or len(replies) != 1 or replies[0].get("id") != n:
                self.problems.append(f"call {n} answered {answer.status_code}: {answer.text:.300}")
            elif want not in orjson.dumps(replies[0].get("result")).decode():
                self.problems.append(f"call {n} got someone else's answer: {answer.text:.300}")
            else:
                self.done += 1

    def _listen(self) -> None:
        headers = {**self.router.headers(self.sid), "accept": "text/event-stream"}
        try:
            with self.http.stream("GET", self.router.url, headers=headers) as events:
                for line in events.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("data:"):
                        msg = orjson.loads(line[5:])
                        if msg.get("method") not in BROADCASTS:
                            self.problems.append(f"leaked onto the victim's stream: {line:.300}")
        except httpx.HTTPError as exc:
            if not self._stop.is_set():
                self.problems.append(f"victim's stream broke: {exc!r}")

    def progress(self, since: int, *, timeout: float = 10.0) -> None:
        """Wait until the victim has made a good call after ``since``; assert it is unharmed."""
        deadline = time.monotonic() + timeout
        while self.done <= since and not self.problems and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not self.problems, self.problems
        assert self.done > since, "the victim made no call: the router stopped serving"

    def close(self) -> None:
        self._stop.set()
        self._threads[0].join(timeout=5)  # the listener ends with the router or the process
        self.http.close()


# -- raw HTTP -----------------------------------------------------------------------------


class _Messages:
    """Counts HTTP messages as httptools (the router's own parser) reads them."""

    def __init__(self) -> None:
        self.parser: Any = None
        self.statuses: list[int] = []
        self.whole = 0

    def on_headers_complete(self) -> None:
        if isinstance(self.parser, httptools.HttpResponseParser):
            self.statuses.append(self.parser.get_status_code())

    def on_message_complete(self) -> None:
        self.whole += 1


def whole_requests(data: bytes) -> int:
    """How many whole requests the router's parser finds at the start of ``data``."""
    found = _Messages()
    with contextlib.suppress(httptools.HttpParserError):
        httptools.HttpRequestParser(found).feed_data(data)
    return found.whole


def raw_exchange(host: str, port: int, data: bytes) -> bytes:
    """Send ``data``, half-close, read until the router closes (it must, and soon)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the router closed first (an early 400 or 413): fine, read what it said
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def http_answers(answer: bytes) -> list[int]:
    """The statuses of the HTTP responses in ``answer`` (the last may be cut off)."""
    found = _Messages()
    found.parser = httptools.HttpResponseParser(found)
    found.parser.feed_data(answer)  # raises on anything that is not HTTP
    return found.statuses


# -- hostile connections ------------------------------------------------------------------


def rss(pid: int) -> int:
    """Resident bytes of process ``pid`` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def hostile_socket(host: str, port: int, source: str) -> socket.socket:
    """A blocking connection from the loopback address ``source`` (127.0.0.x)."""
    return socket.create_connection((host, port), timeout=10, source_address=(source, 0))


def send_and_read(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` (as much as the router takes), then read until it closes the connection;
    a reset after its answer ends the reading too."""
    with contextlib.suppress(OSError):
        sock.sendall(data)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def healthz_seconds(host: str, port: int) -> float:
    """How long ``GET /healthz`` takes on a new connection (it must answer 200)."""
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=10) as sock:
        head = f"GET /healthz HTTP/1.1\r\nhost: {host}:{port}\r\nconnection: close\r\n\r\n"
        answer = send_and_read(sock, head.encode())
    assert http_answers(answer) == [200], answer[:300]
    return time.monotonic() - started
