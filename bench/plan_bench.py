"""How long ``plan()`` takes for a large fleet (target: < 10 ms for 1,000 servers).

Measures, for N servers (default 1,000):

- ``converged``: every server running with its config hash and ready; the
  plan is empty (the steady state the loop re-plans at every resync);
- ``from empty``: nothing runs; the plan creates N servers;
- ``cold``: the first plan of a new DesiredState object, config hashes
  included (they are cached per DesiredState afterwards).

Run: ``python bench/plan_bench.py [--servers 1000] [--repeat 50]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from mcp_fleet.model import (
    CatalogEntry,
    DesiredState,
    FleetFiles,
    ProcessSpec,
    RuntimeKind,
    ServerSpec,
    frozen_map,
)
from mcp_fleet.reconcile.memory import Memory
from mcp_fleet.reconcile.plan import plan
from mcp_fleet.runtimes.base import Instance, ObservedState

HOME = Path("/tmp/plan-bench")
FILES = FleetFiles(HOME, (), HOME / "registry.yaml", HOME / "config.yaml", HOME / "tools.yaml",
                   HOME / "secrets.env")  # fmt: skip


def fleet(n: int) -> DesiredState:
    servers = {}
    for i in range(n):
        name = f"server-{i:04d}"
        entry = CatalogEntry(
            name=name,
            source=HOME / "catalogs" / "bench.yaml",
            process=ProcessSpec(command=("python", "-m", "calc", f"--id={i}")),
        )
        servers[name] = ServerSpec(name=name, enabled=True, entry=entry,
                                   env=frozen_map({"INDEX": str(i)}),
                                   secret_env=frozen_map({"TOKEN": f"t{i}"}))  # fmt: skip
    return DesiredState("bench", FILES, frozen_map({}), frozen_map(servers))


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    desired = fleet(args.servers)
    t0 = time.perf_counter()
    empty_plan = plan(desired, ObservedState(), Memory())
    cold = (time.perf_counter() - t0) * 1000
    assert len(empty_plan) == args.servers
    instances = tuple(
        Instance(server=name, instance_id=f"pid:{i}:{i}", runtime=RuntimeKind.PROCESS,
                 fleet="bench", config_hash=spec.config_hash(), running=True, started_at=1.0)
        for i, (name, spec) in enumerate(sorted(desired.servers.items()))
    )  # fmt: skip
    ids = frozenset(i.instance_id for i in instances)
    memory = Memory(now=10.0, owned=ids, ready=ids)
    observed = ObservedState(instances)
    assert not plan(desired, observed, memory)
    converged = timed(lambda: plan(desired, observed, memory), args.repeat)
    from_empty = timed(lambda: plan(desired, ObservedState(), Memory()), args.repeat)
    print(f"plan() for {args.servers} servers ({args.repeat} runs each, milliseconds):")
    for label, values in (("converged", converged), ("from empty", from_empty)):
        print(f"  {label:<11} median {statistics.median(values):6.2f}  max {max(values):6.2f}")
    print(f"  {'cold':<11} {cold:6.2f} (first plan of a new DesiredState, hashing included)")


if __name__ == "__main__":
    main()
