"""Coverage-guided fuzzing of the router's framing and request handling, in-process (atheris).

Run on demand, not in CI (tests/security/test_router_fuzz.py is the bounded
hypothesis suite that CI runs against real router processes)::

    pip install atheris                                    # optional; not a dependency
    python bench/fuzz_router.py -max_total_time=600        # ten minutes, fresh seed corpus
    python bench/fuzz_router.py -runs=100000 CORPUS_DIR    # a count, keeping the corpus
    python bench/fuzz_router.py -print_final_stats=1 -max_total_time=300

Arguments are libFuzzer's (``-help=1`` lists them). Without a corpus
directory a temporary one is seeded with a few well-formed messages. A crash
writes ``crash-<sha>`` (the input) in the current directory and prints the
traceback; replay it with ``python bench/fuzz_router.py crash-<sha>``.

Each input is one client's bytes, its first byte choosing the front end:

- even: stdio framing. The bytes go through a ``NewlineStream`` (a 4 KiB line
  limit, so oversized lines are exercised too) into a fresh ``RouterSession``,
  exactly as ``frontend_stdio.serve_stream`` does;
- odd: HTTP. The bytes, cut into up to three pieces, are fed to the router's
  own ``HttpConnection`` (httptools) in front of ``HttpFrontend``; then, one
  time in two, the client half-closes.

The router behind is real and so is its backend: the echo server
(tests/servers/echo_server.py) as a child process, so calls are forwarded,
answered, cancelled and their ids rewritten for real. Only the client side
is in-process, which keeps an execution near a millisecond.

A finding is any of: an exception out of the framing, the session or the
HTTP connection; anything logged at ERROR (a handler that raised, caught by
a guard); an answer that is not well-formed JSON-RPC (or HTTP); an answer
carrying an id the client never sent as a request id, or more answers to an
id than requests with it; a parse error count that differs from the invalid
lines sent; state left behind once the client is gone (a session still
registered, a call still pending at the backend, an HTTP exchange still
open).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

try:
    import atheris
except ImportError:
    atheris = None

ROOT = Path(__file__).resolve().parents[1]
ECHO = [sys.executable, str(ROOT / "tests" / "servers" / "echo_server.py")]
LINE_LIMIT = 4096
SEEDS = [
    b'\x00{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}\n'
    b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n',
    b'\x00{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo",'
    b'"arguments":{"text":"x"},"_meta":{"progressToken":7}}}\n'
    b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}\n',
    b'\x00{"jsonrpc":"2.0","id":"a","method":"tools/list","params":{"cursor":"mcp-fleet:1"}}\n'
    b'{"jsonrpc":"2.0","id":3,"result":{}}\n[1,2]\n{\n',
    b"\x01POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    b"content-length: 87\r\n\r\n"
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}',
    b"\x01POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\n"
    b'4\r\n{"js\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\n\r\nDELETE /mcp HTTP/1.1\r\n\r\n',
]


class Finding(AssertionError):
    """An invariant the router broke (atheris reports it as a crash)."""


class ErrorLog(logging.Handler):
    """Collects ERROR records: a guard that caught an exception is a finding too."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


def valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def key(mid: Any) -> tuple[str, Any]:
    return (type(mid).__name__, mid)


def promised(line: bytes) -> tuple[str, Any]:
    """JSON-RPC's rule for one line: ("none"|"null"|"id", id)."""
    try:
        msg = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "null", None
    if not isinstance(msg, dict):
        return "null", None
    method, mid = msg.get("method"), msg.get("id")
    if method is None or (isinstance(method, str) and mid is None):
        return "none", None
    return ("id", mid) if valid_id(mid) else ("null", None)


def check_message(data: bytes) -> dict[str, Any]:
    msg = orjson.loads(data)
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
        raise Finding(f"not JSON-RPC 2.0: {data[:200]!r}")
    if "method" not in msg and ("result" in msg) == ("error" in msg):
        raise Finding(f"a response needs exactly one of result and error: {data[:200]!r}")
    return msg


class Channel:
    """What the session sends its client, parsed and checked as it comes."""

    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []

    def send(self, data: bytes, *, related: Any = None, final: bool = False) -> None:
        msg = check_message(data)
        if "method" not in msg:
            self.answers.append(msg)


class Harness:
    """A router with the echo server behind it, and the two client-side entry points."""

    def __init__(self) -> None:
        from mcp_fleet.router.frontend_http import HttpFrontend
        from mcp_fleet.router.router import Router
        from mcp_fleet.sources.adhoc import AdhocFleet

        self.loop = asyncio.new_event_loop()
        self.fleet = AdhocFleet(stderr=asyncio.subprocess.DEVNULL)
        self.loop.run_until_complete(self.fleet.add("echo", ECHO))
        self.router = Router(self.fleet.table)
        self.follower = self.loop.create_task(self.router.run())
        self.loop.run_until_complete(self._attached())
        self.frontend = HttpFrontend(self.router)
        self.errors = ErrorLog()
        logging.getLogger().addHandler(self.errors)
        logging.getLogger().setLevel(logging.WARNING)

    async def _attached(self) -> None:
        for _ in range(600):
            if "echo" in self.router.table.tool_routes:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("the echo backend never attached")

    def run(self, data: bytes) -> None:
        if not data:
            return
        self.errors.records.clear()
        if data[0] % 2 == 0:
            self.loop.run_until_complete(self.stdio(data[1:]))
        else:
            self.loop.run_until_complete(self.http(data[1:]))
        if self.errors.records:
            raise Finding("logged an error:\n" + "\n".join(self.errors.records))

    async def stdio(self, data: bytes) -> None:
        from mcp_fleet.router import jsonrpc
        from mcp_fleet.transport import MessageTooLarge, NewlineStream, StreamClosed

        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        reader.feed_data(data)
        reader.feed_eof()
        stream = NewlineStream(reader, None)  # type: ignore[arg-type]  # never written to
        channel = Channel()
        session = self.router.open_session(channel, session_id="fuzz")
        asked: Counter[tuple[str, Any]] = Counter()
        nulls = 0
        try:
            while True:
                try:
                    line = await stream.receive()
                except MessageTooLarge as exc:
                    channel.send(jsonrpc.error(None, jsonrpc.INVALID_REQUEST, str(exc)))
                    nulls += 1
                    continue
                if not line or line != line.strip():
                    raise Finding(f"framing returned an unstripped or empty line: {line[:80]!r}")
                kind, mid = promised(line)
                nulls += kind == "null"
                if kind == "id":
                    asked[key(mid)] += 1
                session.handle(line)
        except StreamClosed:
            pass
        for _ in range(200):  # let forwarded calls come back (an echo takes about 1 ms)
            if not session.inflight and not session.waiting:
                break
            await asyncio.sleep(0.002)
        session.close()
        await asyncio.sleep(0)
        got = Counter(key(a.get("id")) for a in channel.answers)
        if got[key(None)] != nulls:
            raise Finding(f"{got[key(None)]} errors with a null id for {nulls} invalid lines")
        del got[key(None)]
        for k, n in got.items():
            if n > asked[k]:
                raise Finding(f"{n} answers with id {k[1]!r}, {asked[k]} requests with it")
        self.check_clean()

    async def http(self, data: bytes) -> None:
        from mcp_fleet.router.http_server import HttpConnection

        transport = Transport()
        conn = HttpConnection(self.frontend.handle, set(), max_body_bytes=LINE_LIMIT)
        conn.connection_made(transport)  # type: ignore[arg-type]
        cuts = sorted({data[0] % (len(data) + 1), data[-1] % (len(data) + 1)}) if data else []
        start = 0
        for cut in [*cuts, len(data)]:
            if transport.closed:
                break
            conn.data_received(data[start:cut])
            start = cut
            await asyncio.sleep(0)
        half_closes = len(data) > 1 and data[1] & 1 and not transport.closed
        if half_closes and not conn.eof_received():
            transport.close()  # what asyncio does when eof_received says so
        for _ in range(100):
            if all(not hs.exchanges for hs in self.frontend.sessions.values()):
                break
            await asyncio.sleep(0.002)
        conn.connection_lost(None)
        for hs in self.frontend.sessions.values():
            for exchange in hs.exchanges.values():
                if exchange.responder._conn is conn:
                    raise Finding("an HTTP exchange outlived its connection")
        transport.check()
        self.frontend.aclose()
        await asyncio.sleep(0)
        self.check_clean()

    def check_clean(self) -> None:
        if self.router.sessions:
            raise Finding(f"{len(self.router.sessions)} sessions left after their clients left")
        pending = sum(b.pending_count for b in self.router.backends())
        if pending:
            raise Finding(f"{pending} calls still pending at the backend after the client left")


class Transport:
    """The socket side of an ``HttpConnection``: collects what it writes."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            raise Finding("wrote to a closed connection")
        self.out.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_write_buffer_size(self) -> int:
        return 0

    def check(self) -> None:
        """What was written must be HTTP/1.1 responses, complete or cut off by the close."""
        import httptools

        written = b"".join(self.out)
        if not written:
            return

        class Responses:
            def __init__(self) -> None:
                self.statuses: list[int] = []

            def on_message_complete(self) -> None:
                self.statuses.append(parser.get_status_code())

        responses = Responses()
        parser = httptools.HttpResponseParser(responses)
        try:
            parser.feed_data(written)
        except httptools.HttpParserError as exc:
            raise Finding(f"not HTTP: {exc}: {written[:300]!r}") from None
        if 500 in responses.statuses:
            raise Finding(f"answered 500: {written[:300]!r}")


def seed_corpus() -> str:
    folder = tempfile.mkdtemp(prefix="fuzz-router-")
    for i, seed in enumerate(SEEDS):
        Path(folder, f"seed-{i}").write_bytes(seed)
    return folder


def main() -> None:
    if atheris is None:
        print(
            "bench/fuzz_router.py needs atheris, which is optional: pip install atheris\n"
            "(CI fuzzes the router with hypothesis instead: tests/security/test_router_fuzz.py)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    with atheris.instrument_imports(include=["mcp_fleet"]):
        import mcp_fleet.router.frontend_http
        import mcp_fleet.router.http_server
        import mcp_fleet.router.jsonrpc
        import mcp_fleet.router.session
        import mcp_fleet.transport  # noqa: F401
    harness = Harness()
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        argv.append(seed_corpus())

    def one_input(data: bytes) -> None:
        harness.run(data)

    atheris.Setup(argv, one_input)
    with contextlib.suppress(SystemExit):
        atheris.Fuzz()


if __name__ == "__main__":
    main()
