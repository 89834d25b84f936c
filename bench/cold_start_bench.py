"""Cold start of an on-demand server through the router vs a bare ``docker run``.

The target (DESIGN.md): the first call to a cold on-demand server costs at
most a bare ``docker run -i --rm`` + MCP ``initialize`` of the same image,
plus 100 ms. Measured side by side, interleaved round by round so drift
hits both alike:

- router: the controller and the router in one process, as ``mcp-fleet up
  --runtime docker`` runs them, with an on-demand server scaled to zero; a
  client session sends ``tools/call`` and the clock stops at the answer. On
  that path: the demand wakes the controller, which creates and starts the
  container, probes it (attach, ``initialize``, detach) and publishes it;
  the router attaches, initializes and forwards the call. The client is an
  in-memory session (no HTTP: the HTTP front end adds well under 1 ms,
  see router_bench.py).
- bare: ``docker run -i --rm`` with the same hardening as our containers,
  then ``initialize`` over its stdio (what Docker's gateway pays per call),
  and the same plus the ``tools/call`` (the like-for-like figure).

Both depend on the server's own start (an interpreter importing its SDK)
and on how busy the machine is, which varies from run to run far more than
the difference we look for; so the bench also reports the median of the
per-round differences, and splits the router's time into Docker's create
and start, the probe (which waits for the server's first ``initialize``
answer: the server starting) and the rest, which is what the fleet adds.

    python bench/cold_start_bench.py [--image IMAGE] [--rounds N]

Needs a Docker daemon and the image (tests/testbed.sh builds the default).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from mcp_fleet import conventions
from mcp_fleet.config import resolve_files
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.model import RuntimeKind
from mcp_fleet.probe import initialize
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.router.router import Router
from mcp_fleet.runtimes.base import Instance, Runtime
from mcp_fleet.runtimes.docker_spec import DEFAULT_PIDS_LIMIT, DEFAULT_TMPFS_SIZE
from mcp_fleet.runtimes.select import build_runtimes
from mcp_fleet.status import REASON_IDLE, ServerState
from mcp_fleet.transport import NewlineStream

DEFAULT_IMAGE = "mcp-fleet-test/servers:latest"
IDLE_SECONDS = 0.5
#: What our Docker runtime gives every container (docker_spec), as CLI flags.
HARDENED = (
    "--init", "--network", "none", "--read-only",
    "--tmpfs", f"/tmp:rw,nosuid,nodev,size={DEFAULT_TMPFS_SIZE}",
    "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
    "--pids-limit", str(DEFAULT_PIDS_LIMIT),
    "--memory", conventions.DEFAULT_MEMORY, "--cpus", str(conventions.DEFAULT_CPUS),
)  # fmt: skip


def call(mid: int) -> bytes:
    params = {"name": "echo", "arguments": {"text": f"cold-{mid}"}}
    return orjson.dumps({"jsonrpc": "2.0", "id": mid, "method": "tools/call", "params": params})


async def bare_round(image: str, mid: int) -> tuple[float, float]:
    """``docker run -i --rm`` + initialize, and + one tools/call: seconds of each."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "docker", "run", "-i", "--rm", *HARDENED, image,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    stream = NewlineStream(proc.stdout, proc.stdin)
    try:
        await initialize(stream, timeout=60)
        initialized = time.perf_counter() - t0
        await stream.send(call(mid))
        while orjson.loads(await stream.receive()).get("id") != mid:
            pass
        called = time.perf_counter() - t0
    finally:
        await stream.aclose()
        await proc.wait()
    return initialized, called


class Channel:
    """An in-memory client of the router."""

    def __init__(self) -> None:
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def send(self, data: bytes, *, related: Any = None, final: bool = False) -> None:
        msg = orjson.loads(data)
        if "id" in msg:
            self.replies.put_nowait(msg)


def catalog(image: str) -> str:
    return (
        'version: "2"\nregistry:\n  od:\n'
        f"    image: {image}\n    lifecycle: on-demand\n    idleTimeout: {IDLE_SECONDS}s\n"
        "    tools: [echo]\n"
    )


async def wait_cold(ctl: Controller, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        st = ctl.status().server("od")
        if st is not None and (st.state, st.reason) == (ServerState.STOPPED, REASON_IDLE):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"od never went cold: {st}")
        await asyncio.sleep(0.05)


class Timed:
    """Seconds spent in the runtime's ``start`` and ``probe`` since the last ``take``."""

    def __init__(self, runtime: Runtime) -> None:
        self.start = self.probe = 0.0
        start, probe = runtime.start, runtime.probe

        async def timed_start(spec: Any) -> Instance:
            t0 = time.perf_counter()
            try:
                return await start(spec)
            finally:
                self.start += time.perf_counter() - t0

        async def timed_probe(instance: Instance, *, timeout: float) -> None:
            t0 = time.perf_counter()
            try:
                await probe(instance, timeout=timeout)
            finally:
                self.probe += time.perf_counter() - t0

        runtime.start = timed_start  # type: ignore[method-assign]
        runtime.probe = timed_probe  # type: ignore[method-assign]

    def take(self) -> tuple[float, float]:
        out = (self.start, self.probe)
        self.start = self.probe = 0.0
        return out


def ms(values: list[float]) -> float:
    """The median of ``values`` (seconds) in milliseconds, rounded for the record."""
    return round(statistics.median(values) * 1000, 1)


def summary(label: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return (
        f"{label:<40} median {statistics.median(ms):7.0f} ms  mean {statistics.mean(ms):7.0f}"
        f"  min {ms[0]:7.0f}  max {ms[-1]:7.0f}  (n={len(ms)})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results" / "cold_start.json",
        help="where to write the figures as JSON (default: %(default)s)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    home = Path(tempfile.mkdtemp(prefix="cold-start-")) / "fleet"
    (home / "catalogs").mkdir(parents=True)
    (home / "catalogs" / "bench.yaml").write_text(catalog(args.image))
    (home / "registry.yaml").write_text("registry:\n  od: {}\n")
    files = resolve_files(home)
    runtimes = build_runtimes(
        RuntimeKind.DOCKER, fleet=conventions.fleet_name(home), state_dir=files.state_dir
    )
    timed = Timed(runtimes[RuntimeKind.DOCKER])
    table = EndpointTable()
    ctl = Controller(files, runtimes, table, preferred_runtime=RuntimeKind.DOCKER, watch=False)
    router = Router(table)
    tasks = [asyncio.create_task(ctl.run()), asyncio.create_task(router.run())]
    channel = Channel()
    session = router.open_session(channel)
    bare_init: list[float] = []
    bare_call: list[float] = []
    routed: list[float] = []
    docker_start: list[float] = []
    server_start: list[float] = []
    fleet_own: list[float] = []
    try:
        await bare_round(args.image, 0)  # warm the image cache and the daemon once
        await wait_cold(ctl)
        for i in range(1, args.rounds + 1):
            initialized, called = await bare_round(args.image, i)
            bare_init.append(initialized)
            bare_call.append(called)
            await wait_cold(ctl)
            await asyncio.sleep(0.5)  # let the stopped container's removal settle
            timed.take()
            t0 = time.perf_counter()
            session.handle(call(i))
            reply = await asyncio.wait_for(channel.replies.get(), 60)
            routed.append(time.perf_counter() - t0)
            if "result" not in reply:
                raise RuntimeError(f"call failed: {reply}")
            started, probed = timed.take()
            docker_start.append(started)
            server_start.append(probed)
            fleet_own.append(routed[-1] - started - probed)
            print(
                f"round {i}: bare run+init {initialized * 1000:6.0f} ms, +call"
                f" {called * 1000:6.0f} ms; router first call {routed[-1] * 1000:6.0f} ms",
                flush=True,
            )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        docker_runtime = runtimes[RuntimeKind.DOCKER]
        for instance in (await docker_runtime.observe()).instances:
            await docker_runtime.stop(instance)  # the last round left it warm
        await ctl.aclose()

    print()
    print(f"image {args.image}, {args.rounds} interleaved rounds")
    print(summary("bare docker run -i --rm + initialize", bare_init))
    print(summary("bare docker run -i --rm + init + call", bare_call))
    print(summary("router: first call to a cold server", routed))
    print(summary("  of which Docker create + start", docker_start))
    print(summary("  of which probe (server's own start)", server_start))
    print(summary("  of which the fleet's own work", fleet_own))
    paired = [r - b for r, b in zip(routed, bare_init, strict=True)]
    over_init = statistics.median(routed) - statistics.median(bare_init)
    over_call = statistics.median(routed) - statistics.median(bare_call)
    print(
        f"overhead vs bare run+init: {over_init * 1000:+.0f} ms (difference of medians),"
        f" {statistics.median(paired) * 1000:+.0f} ms (median of per-round differences);"
        f" vs bare run+init+call: {over_call * 1000:+.0f} ms"
    )
    result = {
        "image": args.image,
        "rounds": args.rounds,
        "median_ms": {
            "bare_run_initialize": ms(bare_init),
            "bare_run_initialize_call": ms(bare_call),
            "router_first_call": ms(routed),
            "docker_create_start": ms(docker_start),
            "server_own_start": ms(server_start),
            "fleet_own_work": ms(fleet_own),
        },
        "overhead_ms": {
            "difference_of_medians": round(over_init * 1000, 1),
            "median_of_round_differences": round(statistics.median(paired) * 1000, 1),
        },
        "target_ms": 100,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"written to {args.out}")
    print(
        f"the fleet's own work (median {statistics.median(fleet_own) * 1000:.0f} ms) against"
        f" the target of <= +100 ms: {'met' if statistics.median(fleet_own) <= 0.1 else 'NOT met'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
