"""The client side of bench/soak.py: one worker process holding a share of the sessions.

Started by the orchestrator (``python bench/soak_client.py --port P --sessions N
...``), never by hand. Each session is the official SDK client
(``streamable_http_client`` + ``ClientSession``) calling tools in a loop. The
worker opens all its sessions first and says so (``ready`` on stdout); the
load starts when the orchestrator writes the Unix time to stop at on its
stdin, so every worker starts and stops together, whatever its start-up took.

Each response is checked against its request: an echo call sends a fresh
nonce that must come back with the server's own name; a time call names a
time zone that must come back. The sessions are split over a few processes
because the SDK client costs about a millisecond of CPU per call: one event
loop for all of them would measure itself, not the router.

Counted apart: a response that matches (``ok``, with its latency), an MCP
error (a response, with the server's message), a *lost* call (no response
within ``--call-timeout``, or the transport broke under it) and a
*misrouted* one (a response that is not the answer to this request from
this server). A session that lost a call is closed and opened again.
The tally goes to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

TIME_ZONES = ("Europe/Paris", "Asia/Tokyo", "America/New_York", "UTC", "Australia/Sydney")


def tool_of(server: str) -> str:
    return "get_current_time" if server == "time" else "echo_" + server.replace("-", "_")


class Tally:
    def __init__(self) -> None:
        self.ok = 0
        self.latencies: list[float] = []
        self.per_second: Counter[int] = Counter()
        self.errors: list[tuple[float, str, str]] = []  # (time, server, message)
        self.lost: list[tuple[float, str, str]] = []
        self.misrouted: list[tuple[float, str, str]] = []
        self.reconnects: list[tuple[float, str]] = []
        self.replies: Counter[str] = Counter()  # "server gen": responses seen from it


async def one_call(
    session: Any, server: str, rng: random.Random, tally: Tally, timeout: float
) -> bool:
    """One call, checked and counted; False when the session must be given up (no response)."""
    from mcp import MCPError

    zone = rng.choice(TIME_ZONES)
    nonce = uuid.UUID(int=rng.getrandbits(128)).hex
    args = {"timezone": zone} if server == "time" else {"nonce": nonce}
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(session.call_tool(tool_of(server), args), timeout)
    except TimeoutError:
        tally.lost.append((time.time(), server, f"no response in {timeout} s"))
        return False
    except MCPError as exc:
        tally.errors.append((time.time(), server, exc.message[:300]))
        return True
    except Exception as exc:
        tally.lost.append((time.time(), server, f"{type(exc).__name__}: {exc}"[:300]))
        return False
    now = time.time()
    text = "".join(getattr(c, "text", "") for c in result.content)
    if result.is_error:
        tally.errors.append((now, server, text[:300]))
        return True
    try:
        reply = json.loads(text)
    except ValueError:
        reply = {}
    if server == "time":
        good = reply.get("timezone") == zone
    else:
        good = reply.get("nonce") == nonce and reply.get("server") == server
        tally.replies[f"{server} {reply.get('gen')} {reply.get('pid')}"] += 1
    if not good:
        tally.misrouted.append(
            (now, server, f"sent {zone if server == 'time' else nonce}, got {text[:200]}")
        )
        return True
    tally.ok += 1
    tally.latencies.append(round((time.perf_counter() - started) * 1000, 3))
    tally.per_second[int(now)] += 1
    return True


class Clock:
    """When the load runs: unknown until the orchestrator says go on our stdin."""

    def __init__(self, sessions: int) -> None:
        self.until = float("inf")
        self.go = asyncio.Event()
        self._waiting = sessions

    def session_ready(self) -> None:
        """One more session is open; the last one tells the orchestrator (on stdout)."""
        self._waiting -= 1
        if self._waiting == 0:
            print("ready", flush=True)

    async def wait_for_go(self) -> None:
        line = await asyncio.to_thread(sys.stdin.readline)
        self.until = float(line)
        self.go.set()


async def client_session(
    url: str, index: int, servers: list[str], tally: Tally, clock: Clock, args: argparse.Namespace
) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    rng = random.Random(f"{args.seed}-{index}")
    first = True
    while time.time() < clock.until:
        why = "a call got no response"
        try:
            async with (
                streamable_http_client(url) as streams,
                ClientSession(streams[0], streams[1]) as session,
            ):
                await asyncio.wait_for(session.initialize(), args.call_timeout)
                await asyncio.wait_for(session.list_tools(), args.call_timeout)
                if first:
                    first = False
                    clock.session_ready()
                await clock.go.wait()
                while time.time() < clock.until:
                    server = rng.choice(servers)
                    if not await one_call(session, server, rng, tally, args.call_timeout):
                        break  # a session that lost a call is not trusted: open a new one
                    if args.think:
                        await asyncio.sleep(args.think * rng.uniform(0.5, 1.5))
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"[:300]
        if time.time() < clock.until:
            tally.reconnects.append((time.time(), why))
            await asyncio.sleep(0.5)


async def worker(args: argparse.Namespace) -> None:
    """Open every session, say so, wait for the go, run, write ``--out``."""
    tally = Tally()
    servers = args.servers.split(",")
    url = f"http://127.0.0.1:{args.port}/mcp"
    clock = Clock(args.sessions)
    go = asyncio.create_task(clock.wait_for_go())
    await asyncio.gather(
        *(
            client_session(url, args.first + i, servers, tally, clock, args)
            for i in range(args.sessions)
        )
    )
    await go
    data = json.dumps(vars(tally) | {"per_second": dict(tally.per_second)})
    await asyncio.to_thread(Path(args.out).write_text, data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sessions", type=int, required=True)
    p.add_argument("--first", type=int, default=0, help="index of the first session")
    p.add_argument("--servers", required=True, help="comma-separated server names")
    p.add_argument("--out", required=True)
    p.add_argument("--think", type=float, default=0.0)
    p.add_argument("--call-timeout", type=float, default=30.0)
    p.add_argument("--seed", default="soak")
    asyncio.run(worker(p.parse_args()))


if __name__ == "__main__":
    main()
