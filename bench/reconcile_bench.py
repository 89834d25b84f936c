"""How fast the controller converges on the process runtime.

Two figures (targets from the design):

- **empty -> N servers Ready** (default 100; target <= 30 s on 2 cores):
  registry.yaml goes from nothing enabled to N enabled servers in one save;
  the clock stops when the endpoint table lists all N (each one answered an
  MCP initialize).
- **registry.yaml save -> Ready for one new server** (target <= 1.5 s):
  one more server enabled in a running fleet, repeated ``--repeat`` times;
  includes the file watcher's 200 ms debounce.

The servers are ``mcp_fleet.examples.servers.calc`` (standard library only,
so the figure measures the controller and process start-up, not the import
time of an SDK). Also printed: the controller's own CPU time.

Run: ``python bench/reconcile_bench.py [--servers 100] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mcp_fleet.config import resolve_files
from mcp_fleet.conventions import fleet_name
from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.model import RuntimeKind
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.runtimes.select import build_runtimes


def write_fleet(home: Path, total: int) -> None:
    (home / "catalogs").mkdir(parents=True)
    lines = ['version: "2"', "registry:"]
    for i in range(total):
        lines += [
            f"  calc-{i:03d}:",
            "    process:",
            f"      command: [{sys.executable}, -m, mcp_fleet.examples.servers.calc]",
        ]
    (home / "catalogs" / "bench.yaml").write_text("\n".join(lines) + "\n")
    (home / "secrets.env").write_text("")
    (home / "secrets.env").chmod(0o600)
    enable(home, 0)


def enable(home: Path, count: int) -> None:
    body = "".join(f"  calc-{i:03d}:\n    enabled: true\n" for i in range(count))
    (home / "registry.yaml").write_text("registry:\n" + (body or "  {}\n"))


async def wait_for(table: EndpointTable, count: int) -> None:
    version = table.version
    while len(table.snapshot()) != count:
        version = await table.wait_changed(version)


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(servers: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="reconcile-bench-") as tmp:
        home = Path(tmp) / "fleet"
        write_fleet(home, servers + repeat)
        files = resolve_files(home)
        runtimes = build_runtimes(
            RuntimeKind.PROCESS, fleet=fleet_name(home), state_dir=files.state_dir
        )
        table = EndpointTable()
        ctl = Controller(files, runtimes, table, resync_seconds=30.0)
        task = asyncio.create_task(ctl.run())
        try:
            await ctl.reconcile_once()  # the first pass (nothing enabled yet)
            await asyncio.sleep(0.5)  # let the file watcher settle
            cpu0, t0 = cpu(), time.perf_counter()
            enable(home, servers)
            async with asyncio.timeout(300):
                await wait_for(table, servers)
            bulk, bulk_cpu = time.perf_counter() - t0, cpu() - cpu0
            one: list[float] = []
            for k in range(1, repeat + 1):
                t0 = time.perf_counter()
                enable(home, servers + k)
                async with asyncio.timeout(60):
                    await wait_for(table, servers + k)
                one.append(time.perf_counter() - t0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await ctl.aclose()
    print(f"process runtime, calc servers, {servers} servers:")
    print(f"  empty -> {servers} Ready: {bulk:6.2f} s (controller CPU {bulk_cpu:.2f} s)")
    print(
        f"  registry.yaml save -> 1 new server Ready: median {statistics.median(one):.3f} s, "
        f"max {max(one):.3f} s over {repeat} (includes the 200 ms watch debounce)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.servers, args.repeat))


if __name__ == "__main__":
    main()
