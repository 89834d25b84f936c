"""Cold start of a container server: the Docker runtime vs ``docker run -i --rm``.

Measures, side by side and interleaved (so drift hits both alike):

- runtime: ``DockerRuntime.start`` (create + start through the API, image
  present) then ``probe`` (attach, MCP ``initialize``, detach);
- cli: ``docker run -i --rm`` with the same hardening flags, then MCP
  ``initialize`` over the CLI's stdio: what a client configured with a
  plain ``docker run`` command pays.

Then warm ``tools/call`` round trips over each path: through our attach
stream, and through the CLI's stdio pipe.

    python bench/docker_start_bench.py [--image IMAGE] [--rounds N] [--calls N]

Needs a Docker daemon and the image (tests/testbed.sh builds the default).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from pathlib import Path

import orjson
from mcp_fleet import conventions
from mcp_fleet.model import CatalogEntry, ServerSpec
from mcp_fleet.probe import initialize
from mcp_fleet.runtimes.docker import DockerRuntime
from mcp_fleet.transport import MessageStream, NewlineStream

DEFAULT_IMAGE = "mcp-fleet-test/time:latest"
CALL = orjson.dumps(
    {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "get_current_time", "arguments": {"timezone": "UTC"}},
    }
)
CLI_FLAGS = (
    "--init",
    "--network",
    "none",
    "--read-only",
    "--tmpfs",
    "/tmp",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--memory",
    conventions.DEFAULT_MEMORY,
    "--cpus",
    str(conventions.DEFAULT_CPUS),
)


async def warm_calls(stream: MessageStream, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        await stream.send(CALL)
        while orjson.loads(await stream.receive()).get("id") != 7:
            pass
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def runtime_round(
    rt: DockerRuntime, spec: ServerSpec, calls: int
) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    inst = await rt.start(spec)
    await rt.probe(inst, timeout=30)
    cold = time.perf_counter() - t0
    stream = await rt.attach(inst.instance_id)
    try:
        await initialize(stream, timeout=30)
        warm = await warm_calls(stream, calls)
    finally:
        await stream.aclose()
        await rt.stop(inst)
    return cold, warm


async def cli_round(image: str, calls: int) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "docker",
        "run",
        "-i",
        "--rm",
        *CLI_FLAGS,
        image,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None and proc.stdin is not None
    stream = NewlineStream(proc.stdout, proc.stdin)
    try:
        await initialize(stream, timeout=30)
        cold = time.perf_counter() - t0
        warm = await warm_calls(stream, calls)
    finally:
        await stream.aclose()  # EOF on stdin: the server exits and --rm removes it
        await proc.wait()
    return cold, warm


def summary(label: str, values: list[float], unit: str) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return (
        f"{label:<34} median {statistics.median(values):8.3f} {unit}"
        f"  min {values[0]:8.3f}  p99 {p99:8.3f}  (n={len(values)})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    fleet = f"bench-{uuid.uuid4().hex[:8]}"
    rt = DockerRuntime(fleet=fleet)
    spec = ServerSpec(
        name="time",
        enabled=True,
        entry=CatalogEntry(name="time", source=Path("bench"), image=args.image),
    )
    await rt.ensure_image(args.image)
    ours: list[float] = []
    theirs: list[float] = []
    ours_warm: list[float] = []
    theirs_warm: list[float] = []
    try:
        for _ in range(args.rounds):
            cold, warm = await runtime_round(rt, spec, args.calls)
            ours.append(cold)
            ours_warm += warm
            cold, warm = await cli_round(args.image, args.calls)
            theirs.append(cold)
            theirs_warm += warm
    finally:
        await rt.aclose()
    print(f"image {args.image}, {args.rounds} rounds interleaved, {args.calls} warm calls each")
    print(summary("runtime create+start+probe", ours, "s"))
    print(summary("docker run -i --rm + initialize", theirs, "s"))
    delta = statistics.median(ours) - statistics.median(theirs)
    print(f"{'difference (medians)':<34} {delta:+8.3f} s")
    print(summary("warm tools/call, attach stream", ours_warm, "ms"))
    print(summary("warm tools/call, docker run stdio", theirs_warm, "ms"))


if __name__ == "__main__":
    asyncio.run(main())
