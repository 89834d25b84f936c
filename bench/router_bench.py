"""Router benchmark: the router beside direct stdio, the FastMCP proxy and mcp-proxy, in one run.

Run on demand (not in CI): ``python bench/router_bench.py [--quick]``.
Results go to bench/results/router.json and bench/results/router.png.

What is measured, all with the same echo server behind every proxy:

- added latency per warm ``tools/call`` (p50, p99): each proxy minus the
  client talking to the server directly over stdio, sequential calls;
- the proxy's own CPU per call: user+system ticks of its process, from
  ``/proc/<pid>/stat``, over the calls it forwarded;
- throughput with 20 and 100 concurrent HTTP sessions (calls/s), against the
  same backend driven directly at the same concurrency;
- in-flight calls held: 1,000 calls to a tool that sleeps, all at once.

Two backends: the SDK echo server (tests/servers/echo_server.py, about a
millisecond of CPU per call, as real servers are) and a light raw one
(bench/raw_echo_server.py, microseconds per call) so the proxy, not the
backend, is the limit in the throughput runs.

The load clients are minimal: newline JSON over pipes, and HTTP/1.1 over one
keep-alive connection per session, written here on asyncio streams. The
SDK's own client costs 0.5-4 ms of CPU per call and would measure itself; it
is run too, for reference, in the latency table.

The peers need mcp 1.x while the fleet runs on mcp 2.x, so they live in
bench/.venv (created on first run with pip) and run as subprocesses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
VENV = BENCH / ".venv"
PY = sys.executable
SDK_ECHO = [PY, str(ROOT / "tests/servers/echo_server.py")]
RAW_ECHO = [PY, str(BENCH / "raw_echo_server.py")]
TICK = os.sysconf("SC_CLK_TCK")
INIT_PARAMS = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "bench", "version": "1"},
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its reaped children are not included: the process only."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- minimal clients ------------------------------------------------------------------


class StdioPeer:
    """Newline-delimited JSON-RPC to a child process, with pipelining."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.next_id = 0
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def spawn(cls, argv: list[str]) -> StdioPeer:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            limit=64 * 1024 * 1024, cwd=ROOT,
        )  # fmt: skip
        peer = cls(proc)
        await peer.request("initialize", INIT_PARAMS)
        peer.notify("notifications/initialized")
        for _ in range(600):  # a router lists the tool once its backend is attached
            tools = (await peer.request("tools/list", {}))["result"]["tools"]
            if any(t["name"] == "echo" for t in tools):
                return peer
            await asyncio.sleep(0.1)
        raise RuntimeError("echo never listed")

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = orjson.loads(line)
            fut = self.waiting.pop(msg.get("id"), None) if "method" not in msg else None
            if fut is not None and not fut.done():
                fut.set_result(msg)

    def notify(self, method: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps({"jsonrpc": "2.0", "method": method}) + b"\n")

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.next_id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = fut
        self.proc.stdin.write(
            orjson.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
            + b"\n"
        )
        msg = await fut
        if "error" in msg:
            raise RuntimeError(msg["error"])
        return msg

    async def call(self, text: str = "hello") -> None:
        await self.request("tools/call", {"name": "echo", "arguments": {"text": text}})

    async def aclose(self) -> None:
        self.reader.cancel()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 5)


class HttpSession:
    """One streamable-HTTP MCP session over one keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port, self.path = host, port, path
        self.session_id: str | None = None
        self.next_id = 0
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, limit=64 * 1024 * 1024
        )
        result = await self.request("initialize", INIT_PARAMS)
        assert "result" in result, result
        await self.post(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')

    async def post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            return await self._post(body)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            # Servers close idle keep-alive connections (uvicorn after 5 s): a
            # request that found its connection closed is sent again on a new one.
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise
            self.writer.close()
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, limit=64 * 1024 * 1024
            )
            return await self._post(body)

    async def _post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        head = [
            f"POST {self.path} HTTP/1.1",
            f"host: {self.host}:{self.port}",
            "content-type: application/json",
            "accept: application/json, text/event-stream",
            f"content-length: {len(body)}",
        ]
        if self.session_id:
            head += [f"mcp-session-id: {self.session_id}", "mcp-protocol-version: 2025-06-18"]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
                if (
                    headers.get("content-type", "").startswith("text/event-stream")
                    and b'"id"' in chunk
                ):
                    # SSE answer: the response event ends the request for our purposes;
                    # keep reading to the terminating chunk so the connection stays usable.
                    pass
            data = b"".join(parts)
        else:
            data = b""
        sid = headers.get("mcp-session-id")
        if sid:
            self.session_id = sid
        return status, headers, data

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        body = orjson.dumps(
            {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        )
        status, headers, data = await self.post(body)
        if headers.get("content-type", "").startswith("text/event-stream"):
            for line in data.split(b"\n"):
                if line.startswith(b"data:"):
                    msg = orjson.loads(line[5:])
                    if msg.get("id") == self.next_id:
                        return msg
            raise RuntimeError(f"no response in SSE body: {data[:200]!r}")
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:200]!r}")
        return orjson.loads(data)

    async def call(
        self, text: str = "hello", *, tool: str = "echo", args: dict[str, Any] | None = None
    ) -> None:
        msg = await self.request("tools/call", {"name": tool, "arguments": args or {"text": text}})
        if "error" in msg:
            raise RuntimeError(msg["error"])

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


# -- targets -------------------------------------------------------------------------------


@dataclass
class Target:
    """One way of reaching the echo server: directly or through a proxy."""

    name: str
    kind: str  # "stdio" or "http"
    argv: list[str]
    url_path: str = "/mcp"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the proxy process (Popen: its pid is what the CPU figures read)."""
        return subprocess.Popen(
            self.argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env={**os.environ, **self.env},
        )  # fmt: skip

    async def start(self) -> None:
        if self.kind == "http":
            self.proc = self.launch()
            deadline = time.monotonic() + 60
            while True:
                try:
                    session = await self.session()
                    await session.call()
                    await session.aclose()
                    return
                except (OSError, RuntimeError, asyncio.IncompleteReadError, ValueError):
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise RuntimeError(f"{self.name} did not come up") from None
                    await asyncio.sleep(0.3)

    async def session(self) -> HttpSession:
        s = HttpSession("127.0.0.1", self.port, self.url_path)
        await s.connect()
        return s

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def router_target(backend: list[str], transport: str) -> Target:
    args = [PY, "-m", "mcp_fleet.router", "--server", "echo=" + " ".join(backend)]
    if transport == "stdio":
        return Target("router (stdio)", "stdio", args)
    port = free_port()
    return Target(
        "router (http)",
        "http",
        [*args, "--transport", "streamable-http", "--port", str(port)],
        port=port,
        # The bench is one client address holding 1,000 calls on 1,000 connections, past
        # the per-address cap a shared gateway keeps by default (512).
        env={"MCP_FLEET_MAX_CONNECTIONS_PER_CLIENT": "4096"},
    )


def peer_targets(backend: list[str]) -> list[Target]:
    out = []
    vpy = VENV / "fastmcp" / "bin" / "python"
    if vpy.exists():
        port = free_port()
        out.append(
            Target(
                "FastMCP proxy",
                "http",
                [str(vpy), str(BENCH / "fastmcp_proxy.py"), str(port), *backend],
                port=port,
            )
        )
    port = free_port()
    mcp_proxy = VENV / "mcp-proxy" / "bin" / "mcp-proxy"
    if mcp_proxy.exists():
        out.append(
            Target(
                "mcp-proxy",
                "http",
                [str(mcp_proxy), "--host", "127.0.0.1", "--port", str(port), "--", *backend],
                port=port,
            )
        )
    return out


# -- measurements ----------------------------------------------------------------------------


async def timed_calls(call: Callable[[], Awaitable[None]], n: int, warm: int) -> list[float]:
    for _ in range(warm):
        await call()
    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        await call()
        out.append((time.perf_counter_ns() - t) / 1e6)
    return out


@dataclass
class _Lane:
    """One way of calling the echo server, measured in turns with the others."""

    call: Callable[[], Awaitable[None]]
    close: Callable[[], Awaitable[None]]
    cpu_pid: int | None
    samples: list[float] = field(default_factory=list)
    cpu: float = 0.0


async def _lane(target: Target) -> _Lane:
    if target.kind == "stdio":
        peer = await StdioPeer.spawn(target.argv)
        pid = peer.proc.pid if target.name != "direct" else None
        return _Lane(peer.call, peer.aclose, pid)
    session = await target.session()
    return _Lane(session.call, session.aclose, target.pid)


async def latency(targets: list[Target], n: int, warm: int, rounds: int = 10) -> dict[str, Any]:
    """Sequential warm calls through every target, in turns.

    Each target gets ``n`` calls in ``rounds`` batches, the targets taking
    turns batch by batch, so a change of load on the machine (other
    processes) falls on all of them alike instead of on whichever ran then.
    The proxy's CPU is read from /proc around its own batches only.
    """
    lanes: dict[str, _Lane] = {}
    out: dict[str, Any] = {}
    try:
        for target in targets:
            try:
                lanes[target.name] = await _lane(target)
            except Exception as exc:
                out[target.name] = {"error": repr(exc)}
        for lane in lanes.values():
            for _ in range(warm):
                await lane.call()
        for _ in range(rounds):
            for lane in lanes.values():
                cpu0 = cpu_seconds(lane.cpu_pid) if lane.cpu_pid else 0.0
                lane.samples += await timed_calls(lane.call, n // rounds, 0)
                if lane.cpu_pid:
                    lane.cpu += cpu_seconds(lane.cpu_pid) - cpu0
    finally:
        for lane in lanes.values():
            with contextlib.suppress(Exception):
                await lane.close()
    for name, lane in lanes.items():
        calls = len(lane.samples)
        out[name] = {
            "calls": calls,
            "p50_ms": statistics.median(lane.samples),
            "p99_ms": pct(lane.samples, 0.99),
            "mean_ms": statistics.fmean(lane.samples),
            "proxy_cpu_ms_per_call": (lane.cpu * 1000 / calls) if lane.cpu_pid else None,
        }
    return out


async def sdk_latency(argv: list[str], n: int) -> dict[str, Any]:
    """The official SDK client over stdio (for reference: it costs more than what it measures)."""
    from mcp import ClientSession, StdioServerParameters, stdio_client

    params = StdioServerParameters(command=argv[0], args=argv[1:], cwd=str(ROOT))
    async with stdio_client(params) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        while not any(t.name == "echo" for t in (await s.list_tools()).tools):  # noqa: ASYNC110
            await asyncio.sleep(0.1)

        async def call() -> None:
            await s.call_tool("echo", {"text": "hello"})

        samples = await timed_calls(call, n, 50)
    return {"calls": n, "p50_ms": statistics.median(samples), "p99_ms": pct(samples, 0.99)}


async def sdk_http_latency(url: str, n: int) -> dict[str, Any]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as streams, ClientSession(streams[0], streams[1]) as s:
        await s.initialize()

        async def call() -> None:
            await s.call_tool("echo", {"text": "hello"})

        samples = await timed_calls(call, n, 50)
    return {"calls": n, "p50_ms": statistics.median(samples), "p99_ms": pct(samples, 0.99)}


async def throughput_http(target: Target, sessions: int, seconds: float) -> dict[str, Any]:
    clients = [await target.session() for _ in range(sessions)]
    done = 0
    errors = 0
    stop = time.monotonic() + seconds

    async def loop(s: HttpSession) -> None:
        nonlocal done, errors
        while time.monotonic() < stop:
            try:
                await s.call()
                done += 1
            except (RuntimeError, OSError, asyncio.IncompleteReadError):
                errors += 1
                return

    cpu0 = cpu_seconds(target.pid) if target.pid else 0.0
    t0 = time.monotonic()
    await asyncio.gather(*(loop(s) for s in clients))
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(target.pid) - cpu0 if target.pid else 0.0
    for s in clients:
        await s.aclose()
    return {
        "sessions": sessions,
        "calls_per_s": done / elapsed,
        "errors": errors,
        "proxy_cpu_ms_per_call": cpu * 1000 / done if done else None,
    }


async def throughput_direct(backend: list[str], concurrency: int, seconds: float) -> dict[str, Any]:
    """The same backend driven directly over stdio with ``concurrency`` calls in flight."""
    peer = await StdioPeer.spawn(backend)
    done = 0
    stop = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await peer.call()
            done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.monotonic() - t0
    await peer.aclose()
    return {"sessions": concurrency, "calls_per_s": done / elapsed, "errors": 0}


async def in_flight(target: Target, calls: int, sleep: float) -> dict[str, Any]:
    """``calls`` sleeping calls at once: 100 sessions, each call on a connection of its own."""
    per = calls // 100
    sessions: list[HttpSession] = []
    for _ in range(100):
        first = await target.session()
        sessions.append(first)
        for _ in range(per - 1):
            extra = HttpSession("127.0.0.1", target.port, target.url_path)
            extra.reader, extra.writer = await asyncio.open_connection("127.0.0.1", target.port)
            extra.session_id = first.session_id
            extra.next_id = 1000 * len(sessions)
            sessions.append(extra)
    t0 = time.monotonic()
    outcomes = await asyncio.gather(
        *(s.call(tool="sleep", args={"seconds": sleep}) for s in sessions), return_exceptions=True
    )
    elapsed = time.monotonic() - t0
    for s in sessions:
        await s.aclose()
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    return {"calls": len(sessions), "completed": len(sessions) - len(failed), "seconds": elapsed,
            "first_error": repr(failed[0]) if failed else None}  # fmt: skip


# -- the run ------------------------------------------------------------------------------------


#: Each peer in a virtualenv of its own: mcp-proxy needs mcp 1.x, FastMCP follows mcp 2.x.
PEER_PACKAGES = {"fastmcp": ["fastmcp"], "mcp-proxy": ["mcp-proxy", "mcp>=1.17,<2"]}


def ensure_peers() -> None:
    for name, packages in PEER_PACKAGES.items():
        env = VENV / name
        if (env / "bin" / "python").exists():
            continue
        print(f"creating bench/.venv/{name} ...", flush=True)
        subprocess.run([PY, "-m", "venv", str(env)], check=True)
        subprocess.run([str(env / "bin" / "pip"), "install", "-q", *packages], check=False)


@contextlib.asynccontextmanager
async def running(target: Target) -> AsyncIterator[Target]:
    try:
        await target.start()
        yield target
    finally:
        target.stop()


async def bench(quick: bool) -> dict[str, Any]:
    n, warm = (500, 100) if quick else (3000, 300)
    seconds = 3.0 if quick else 6.0
    out: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "latency": {},
        "throughput": {},
    }
    for label, backend in (("sdk-echo", SDK_ECHO), ("raw-echo", RAW_ECHO)):
        print(f"== backend {label}", flush=True)
        http_targets = [router_target(backend, "http"), *peer_targets(backend)]
        async with contextlib.AsyncExitStack() as stack:
            started = []
            for target in http_targets:
                try:
                    await stack.enter_async_context(running(target))
                    started.append(target)
                except Exception as exc:
                    print(f"   {target.name} did not start: {exc!r}", flush=True)
            lanes = [Target("direct", "stdio", backend), router_target(backend, "stdio"), *started]
            lat = await latency(lanes, n, warm)
        lat["direct (stdio)"] = lat.pop("direct")
        for name, entry in lat.items():
            print(f"   {name}: {entry}", flush=True)
        base = lat["direct (stdio)"]["p50_ms"]
        base99 = lat["direct (stdio)"]["p99_ms"]
        for entry in lat.values():
            if "p50_ms" in entry:
                entry["added_p50_ms"] = entry["p50_ms"] - base
                entry["added_p99_ms"] = entry["p99_ms"] - base99
        out["latency"][label] = lat

        thr: dict[str, Any] = {}
        for sessions in (20, 100):
            thr[f"direct (stdio) x{sessions}"] = await throughput_direct(backend, sessions, seconds)
        for target in [router_target(backend, "http"), *peer_targets(backend)]:
            try:
                async with running(target):
                    for sessions in (20, 100):
                        thr[f"{target.name} x{sessions}"] = await throughput_http(
                            target, sessions, seconds
                        )
                        print(
                            f"   {target.name} x{sessions}: {thr[f'{target.name} x{sessions}']}",
                            flush=True,
                        )
            except Exception as exc:
                thr[target.name] = {"error": repr(exc)}
        out["throughput"][label] = thr

    print("== SDK client, for reference", flush=True)
    sdk: dict[str, Any] = {
        "direct (stdio)": await sdk_latency(SDK_ECHO, n // 5),
        "router (stdio)": await sdk_latency(router_target(SDK_ECHO, "stdio").argv, n // 5),
    }
    target = router_target(SDK_ECHO, "http")
    async with running(target):
        sdk["router (http)"] = await sdk_http_latency(f"http://127.0.0.1:{target.port}/mcp", n // 5)
    out["sdk_client"] = sdk

    print("== in-flight calls", flush=True)
    target = router_target(RAW_ECHO, "http")
    async with running(target):
        out["in_flight"] = await in_flight(target, 1000, 2.0)
    print(f"   {out['in_flight']}", flush=True)
    return out


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    lat = results["latency"]["sdk-echo"]
    router_http = lat.get("router (http)", {})
    router_stdio = lat.get("router (stdio)", {})
    peers = {
        k: v
        for k, v in lat.items()
        if k not in ("direct (stdio)", "router (stdio)", "router (http)")
    }
    summary: dict[str, Any] = {
        "added_p50_ms_stdio": router_stdio.get("added_p50_ms"),
        "added_p99_ms_stdio": router_stdio.get("added_p99_ms"),
        "added_p50_ms_http": router_http.get("added_p50_ms"),
        "router_cpu_ms_per_call_stdio": router_stdio.get("proxy_cpu_ms_per_call"),
        "router_cpu_ms_per_call_http": router_http.get("proxy_cpu_ms_per_call"),
        "peer_added_p50_ms": {k: v.get("added_p50_ms") for k, v in peers.items()},
    }
    for label, thr in results["throughput"].items():
        for sessions in (20, 100):
            ours = thr.get(f"router (http) x{sessions}", {}).get("calls_per_s")
            direct = thr.get(f"direct (stdio) x{sessions}", {}).get("calls_per_s")
            best_peer = max(
                (
                    v.get("calls_per_s", 0)
                    for k, v in thr.items()
                    if k.endswith(f"x{sessions}") and "router" not in k and "direct" not in k
                ),
                default=0,
            )  # fmt: skip
            summary[f"{label} x{sessions}"] = {
                "router_calls_per_s": ours,
                "vs_best_peer": (ours / best_peer) if ours and best_peer else None,
                "vs_direct": (ours / direct) if ours and direct else None,
            }
    summary["in_flight_completed"] = results.get("in_flight", {}).get("completed")
    return summary


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    lat = results["latency"]["sdk-echo"]
    names = [k for k in lat if k != "direct (stdio)" and "p50_ms" in lat[k]]
    p50 = [lat[k]["added_p50_ms"] for k in names]
    p99 = [lat[k]["added_p99_ms"] for k in names]
    xs = range(len(names))
    ax1.bar([x - 0.2 for x in xs], p50, width=0.4, label="p50")
    ax1.bar([x + 0.2 for x in xs], p99, width=0.4, label="p99")
    ax1.set_xticks(list(xs), names, rotation=15)
    ax1.set_ylabel("added latency per call (ms)")
    ax1.set_title("Latency added over direct stdio (SDK echo server)")
    ax1.legend()
    # Throughput over HTTP at 20 and 100 sessions: proxies in front of the light
    # backend (the proxy is the limit) and in front of the SDK echo server.
    bars: list[tuple[str, float]] = []
    for label, short in (("raw-echo", "light"), ("sdk-echo", "SDK")):
        thr = results["throughput"][label]
        for name in ("router (http)", "mcp-proxy", "FastMCP proxy"):
            for sessions in (20, 100):
                value = thr.get(f"{name} x{sessions}", {}).get("calls_per_s")
                if value:
                    bars.append((f"{name}\n{short} x{sessions}", value))
    colors = ["tab:green" if "router" in n else "tab:gray" for n, _ in bars]
    ax2.bar(range(len(bars)), [v for _, v in bars], color=colors)
    for x, (_, v) in enumerate(bars):
        ax2.text(x, v, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    ax2.set_xticks(range(len(bars)), [n for n, _ in bars], rotation=60, fontsize=7)
    ax2.set_yscale("log")
    ax2.set_ylabel("calls/s (log scale)")
    ax2.set_title("Throughput over HTTP, 20 and 100 sessions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, shorter runs")
    parser.add_argument(
        "--no-peers", action="store_true", help="skip the FastMCP proxy and mcp-proxy"
    )
    args = parser.parse_args()
    if not args.no_peers:
        ensure_peers()
    else:
        global VENV
        VENV = BENCH / ".no-venv"
    results = asyncio.run(bench(args.quick))
    results["summary"] = summarize(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "router.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    plot(results, RESULTS / "router.png")
    print(json.dumps(results["summary"], indent=2))


if __name__ == "__main__":
    main()
