"""Replacing a server under load, and calling one that is still attaching, over HTTP.

Real controller (process runtime), real router, real server processes and
the official MCP client over streamable HTTP, in the test's loop as
``mcp-fleet up`` runs them. A server is replaced three times by registry
edits while five client loops call it without pause and a sixth keeps a
slow call in flight: every call succeeds (no "Unknown tool", no "stream
closed", no "replaced"), each is answered by the instance that was current
or the one replacing it, every old instance is stopped once let go, and
the client hears ``list_changed`` exactly once: for the one edit that
really changes the tool list.

Then, over HTTP (the stdio front end also holds ``initialize``): a call
sent right after ``initialize`` for a server published but not attached yet
waits for it instead of failing with "Unknown tool", at start-up and for a
server added later; a name nobody offers still fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp import MCPError
from mcp_fleet.config import resolve_files
from mcp_fleet.conventions import fleet_name
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.model import RuntimeKind
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.router.http_service import serve_http
from mcp_fleet.router.router import Router
from mcp_fleet.runtimes.select import build_runtimes
from mcp_fleet.sources.adhoc import AdhocFleet
from router_support import ECHO, PY, TIME, Recorder, http_client, text_of, wait_for
from support import until

pytestmark = [pytest.mark.timeout(150), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

#: Answers with its generation and pid; from generation 3 on it has one more tool.
#: ``mark`` logs its text: the router sends it to the client after whatever it sent before.
BACKEND = """\
import json, os, time
from mcp.server.mcpserver import Context, MCPServer
GEN = int(os.environ["REP_GEN"])
server = MCPServer("rep")
def me(**extra):
    return json.dumps(dict(gen=GEN, pid=os.getpid(), **extra))
@server.tool()
def echo(text: str) -> str:
    return me(text=text)
@server.tool()
def nap(seconds: float) -> str:
    time.sleep(seconds)
    return me(slept=seconds)
@server.tool()
async def mark(text: str, ctx: Context) -> str:
    await ctx.info(text)
    return text
if GEN >= 3:
    @server.tool()
    def extra() -> str:
        return me()
server.run("stdio")
"""


def write_fleet(home: Path, backend: Path) -> None:
    (home / "catalogs").mkdir(parents=True)
    (home / "catalogs" / "rep.yaml").write_text(
        'version: "2"\nregistry:\n  rep:\n    description: replaced under load\n'
        f"    process:\n      command: {json.dumps([PY, str(backend)])}\n"
        '    env:\n      - {name: REP_GEN, value: "{{rep.gen}}"}\n'
    )
    set_gen(home, 1)


def set_gen(home: Path, gen: int) -> None:
    tmp = home / ".registry.yaml.tmp"
    tmp.write_text(f"registry:\n  rep:\n    enabled: true\n    config: {{gen: {gen}}}\n")
    tmp.replace(home / "registry.yaml")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Load:
    """What the client loops saw: answers as (gen written at the call, gen that answered)."""

    gen: int = 1
    answers: list[tuple[int, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pids: dict[int, set[int]] = field(default_factory=dict)
    naps: int = 0

    def take(self, asked_at: int, text: str) -> None:
        doc = json.loads(text)
        self.answers.append((asked_at, doc["gen"]))
        self.pids.setdefault(doc["gen"], set()).add(doc["pid"])


async def caller(session: Any, load: Load, stop: asyncio.Event, *, slow: bool = False) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        asked_at = load.gen
        try:
            if slow:
                result = await session.call_tool("nap", {"seconds": 0.6})
            else:
                result = await session.call_tool("echo", {"text": f"c{n}"})
        except Exception as exc:  # an MCP error or a broken transport: both count
            load.errors.append(f"{type(exc).__name__}: {exc}")
            continue
        if result.is_error:
            load.errors.append(text_of(result))
            continue
        load.take(asked_at, text_of(result))
        load.naps += slow


def list_changes(recorder: Recorder) -> int:
    return sum(1 for m in recorder.messages if "tools/list_changed" in repr(m))


async def notified_so_far(session: Any, recorder: Recorder, text: str) -> int:
    """The ``list_changed`` count once every notification sent before now has arrived.

    ``mark`` makes the server log ``text``; the router sends that log on the same
    stream, after anything it sent this client earlier.
    """
    assert text_of(await session.call_tool("mark", {"text": text})) == text
    await until(lambda: any(text in str(m.data) for m in recorder.logs), what=f"log {text!r}")
    return list_changes(recorder)


def busy(router: Router, load: Load, answers: int, naps: int) -> bool:
    """Calls answered since ``answers`` and ``naps`` were counted, and calls in flight now."""
    backend = router.backend("rep")
    in_flight = backend.pending_count if backend is not None else 0
    return len(load.answers) >= answers + 20 and load.naps > naps and in_flight >= 2


@contextlib.asynccontextmanager
async def fleet_up(home: Path) -> AsyncIterator[tuple[Controller, Router, str]]:
    files = resolve_files(home)
    kind = RuntimeKind.PROCESS
    runtimes = build_runtimes(kind, fleet=fleet_name(home), state_dir=files.state_dir)
    table = EndpointTable()
    ctl = Controller(files, runtimes, table, preferred_runtime=kind, watch=False)
    router = Router(table)
    urls: asyncio.Queue[str] = asyncio.Queue()
    tasks = [
        asyncio.create_task(ctl.run()),
        asyncio.create_task(router.run()),
        asyncio.create_task(serve_http(router, port=0, ready=urls.put_nowait)),
    ]
    try:
        yield ctl, router, await asyncio.wait_for(urls.get(), 15)
    finally:
        for task in reversed(tasks):
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
        await asyncio.wait_for(ctl.aclose(stop_processes=True), 20)


async def test_three_replacements_under_load_lose_no_call(tmp_path: Path) -> None:
    home = tmp_path / "fleet"
    backend = tmp_path / "rep_backend.py"
    backend.write_text(BACKEND)
    write_fleet(home, backend)
    async with fleet_up(home) as (ctl, router, url), http_client(url) as (session, recorder):

        def serving() -> str | None:
            entry = ctl.endpoints.snapshot().get("rep")
            return entry.endpoint.instance_id if entry is not None else None

        await wait_for(lambda: router.backend("rep") is not None, 30)
        at_start = await notified_so_far(session, recorder, "start")  # the first attach's, if any
        load, stop = Load(), asyncio.Event()
        loops = [asyncio.create_task(caller(session, load, stop)) for _ in range(5)]
        loops.append(asyncio.create_task(caller(session, load, stop, slow=True)))
        try:
            for gen in (2, 3, 4):
                # Calls (and a nap) answered by this generation, and in flight when the edit lands.
                since = len(load.answers), load.naps
                await until(lambda s=since: busy(router, load, *s), what=f"load before gen {gen}")  # type: ignore[misc]
                before = serving()
                old_pids = set().union(*load.pids.values())
                load.gen = gen
                set_gen(home, gen)
                ctl.wake()
                await wait_for(lambda b=before: serving() not in (None, b), 30)  # type: ignore[misc]
                new = router.backend("rep")
                await wait_for(lambda: (b := router.backend("rep")) is not None
                               and b.instance_id == serving(), 30)  # fmt: skip
                await wait_for(lambda: not ctl.executor.in_flight, 30)
                # The old instance is stopped once let go, and only the new one runs.
                assert not any(alive(pid) for pid in old_pids), old_pids
                assert not ctl.endpoints.held("rep", str(before))
                assert new is not None
            since = len(load.answers), load.naps
            await until(lambda: busy(router, load, *since), what="load on the last generation")
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*loops), 30)
        assert load.errors == [], load.errors[:5]
        assert len(load.answers) > 100 and load.naps >= 3
        # Each call was answered by the instance current when it was sent, or its successor.
        assert all(got in (asked - 1, asked) for asked, got in load.answers), [
            a for a in load.answers if a[1] not in (a[0] - 1, a[0])
        ][:5]
        assert {got for _, got in load.answers} == {1, 2, 3, 4}
        assert all(len(pids) == 1 for pids in load.pids.values()), load.pids
        # One list_changed: generation 3 added a tool; the other switches changed nothing.
        at_end = await notified_so_far(session, recorder, "end")
        assert at_end - at_start == 1, recorder.messages
        assert "extra" in router.table.tool_routes


# -- a call for a server still attaching, over HTTP -----------------------------------


@contextlib.asynccontextmanager
async def http_router(fleet: AdhocFleet) -> AsyncIterator[tuple[Router, str]]:
    router = Router(fleet.table)
    urls: asyncio.Queue[str] = asyncio.Queue()
    tasks = [
        asyncio.create_task(router.run()),
        asyncio.create_task(serve_http(router, port=0, ready=urls.put_nowait)),
    ]
    try:
        yield router, await asyncio.wait_for(urls.get(), 15)
    finally:
        for task in reversed(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def slow_start(seconds: float, argv: list[str]) -> list[str]:
    return ["sh", "-c", f"sleep {seconds}; exec {' '.join(argv)}"]


async def test_a_call_right_after_initialize_waits_for_its_server_over_http() -> None:
    async with AdhocFleet(env=dict(os.environ)) as fleet:
        await fleet.add("echo", slow_start(1.5, ECHO))
        async with http_router(fleet) as (router, url), http_client(url) as (session, _):
            started = time.monotonic()
            assert not router.settled.is_set()  # initialize was answered before the fleet
            result = await session.call_tool("echo", {"text": "right away"})
            assert not result.is_error and text_of(result) == "right away"
            assert time.monotonic() - started > 0.3  # it did wait for the start
            # A server published later: its tool is called before its first attach ends.
            await fleet.add("time", slow_start(1.5, TIME))
            await wait_for(lambda: bool(router.first_attaches()), 10)
            timed = await session.call_tool("get_current_time", {"timezone": "UTC"})
            assert not timed.is_error and "UTC" in text_of(timed)
            # A name nobody offers fails at once once nothing is attaching.
            with pytest.raises(MCPError, match="Unknown tool: no_such_tool"):
                await asyncio.wait_for(session.call_tool("no_such_tool", {}), 5)
