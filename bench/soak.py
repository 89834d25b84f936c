"""Load and soak: many client sessions through the router while registry edits replace backends.

Run on demand (not in CI, a short form runs in tests/faults/test_soak_smoke.py):
``python bench/soak.py [--runtime process|docker] [--sessions 100] [--duration 600]``.
The result goes to bench/results/soak-<runtime>.json; the exit status is 1 when
an invariant failed.

What runs, all on loopback: a real ``mcp-fleet up`` (controller and router in
one process, streamable HTTP) on a fleet directory written here, with a few
echo backends and mcp-server-time. Client sessions of the official SDK,
spread over a few worker processes (bench/soak_client.py), are all opened
first and then call tools in a loop for ``--duration`` seconds. Every
``--edit-interval`` seconds registry.yaml is rewritten (atomically, as an
editor saves) with a new inline ``config: {gen: N}`` for every backend; the
catalog puts ``{{<server>.gen}}`` into the server's environment, so its
config hash changes and the controller replaces it.

Every response is matched to its request: an echo call sends a fresh nonce
and its backend answers with the nonce, its own server name and generation;
a time call names a time zone that must come back. A response that does not
match is *misrouted*; a call that gets no response (timeout, broken
transport) is *lost*; an MCP error is a response and is counted apart, by
whether it fell into a replacement window: from the edit until the live
status (``/api/status``) shows every server Ready with its new hash and its
tools back in the router's table, plus 2 s.

Invariants (any failure gives exit status 1): no lost and no misrouted call;
no error outside a replacement window; every edit converged; RSS of the
``up`` process at the end of the load within ``--rss-tolerance`` of the
sample after ``--warmup``; open file descriptors of ``up`` with no client
connected the same before and after the load; exactly one backend per server
at the end (child processes, or containers carrying the fleet's label); and
nothing of the fleet left once it is stopped. ``--strict-replacements`` also
fails on any MCP error inside a replacement window (a replacement that no
call notices).

Figures are the whole machine's: on a shared 2-core host, throughput and
latency say more about the neighbours than about the router (see
bench/router_bench.py for those); what the soak proves is the invariants.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from soak_report import report, summarise  # bench/ is the script's directory

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
CLIENT = Path(__file__).with_name("soak_client.py")
SERVERS_IMAGE = "mcp-fleet-test/servers:latest"
TIME_IMAGE = "mcp-fleet-test/time:latest"

#: The echo backend, the same source as a local file and as ``python3 -c`` in a
#: container. It answers with its server name and generation, so a response
#: from the wrong server, or for another request, is seen. No ``{{`` in here:
#: catalog commands are templates.
BACKEND_SOURCE = """\
import json, os
from mcp.server.mcpserver import MCPServer
NAME = os.environ["SOAK_SERVER"]
GEN = os.environ["SOAK_GEN"]
server = MCPServer(NAME)
@server.tool(name="echo_" + NAME.replace("-", "_"))
def echo(nonce: str) -> str:
    return json.dumps(dict(nonce=nonce, server=NAME, gen=GEN, pid=os.getpid()))
server.run("stdio")
"""


# -- the fleet directory ----------------------------------------------------------------


def catalog_text(runtime: str, servers: list[str], backend_file: Path) -> str:
    lines = ['version: "2"', "registry:"]
    for name in servers:
        lines += [f"  {name}:", f"    description: soak backend {name}"]
        if runtime == "docker":
            if name == "time":
                lines.append(f"    image: {TIME_IMAGE}")
            else:
                lines += [f"    image: {SERVERS_IMAGE}",
                          f"    command: {json.dumps(['-c', BACKEND_SOURCE])}"]  # fmt: skip
        else:
            argv = [PY, "-m", "mcp_server_time"] if name == "time" else [PY, str(backend_file)]
            lines += ["    process:", f"      command: {json.dumps(argv)}"]
        lines += [
            "    env:",
            f"      - {{name: SOAK_SERVER, value: {name}}}",
            f'      - {{name: SOAK_GEN, value: "{{{{{name}.gen}}}}"}}',
        ]
    return "\n".join(lines) + "\n"


def registry_text(gens: dict[str, int]) -> str:
    body = "".join(
        f"  {name}:\n    catalog: soak\n    enabled: true\n    config: {{gen: {gen}}}\n"
        for name, gen in gens.items()
    )
    return "registry:\n" + body


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# -- what runs, seen from outside ---------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def children_of(pid: int) -> list[int]:
    """Live (not zombie) direct children of ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == pid and stat[0] != "Z":
            out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def containers(fleet: str) -> int:
    import docker

    client = docker.from_env()
    try:
        # The low-level list: no inspect per container, which a removal in between would fail.
        found = client.api.containers(all=True, filters={"label": f"mcp-fleet.fleet={fleet}"})
        return len(found)
    finally:
        client.close()


def api_status(port: int) -> dict[str, Any] | None:
    """``/api/status``: the controller's live status, with the tools the router routes."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    return data


def converged(status: dict[str, Any] | None, servers: list[str], old: dict[str, str]) -> bool:
    """Every server Ready with a config hash other than ``old``'s and routed again (its
    tools are in the router's table), nothing pending."""
    if status is None or status.get("pending"):
        return False
    seen = {s["name"]: s for s in status.get("servers", [])}
    return all(
        name in seen
        and seen[name]["state"] == "Ready"
        and seen[name].get("config_hash") != old.get(name)
        and seen[name].get("tools")
        for name in servers
    )


def hashes(status: dict[str, Any] | None) -> dict[str, str]:
    return {s["name"]: s.get("config_hash") or "" for s in (status or {}).get("servers", [])}


def metrics(port: int) -> dict[str, float]:
    """The router's call counters and in-flight gauge from /metrics, summed over labels."""
    out: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(("mcp_fleet_calls_total", "mcp_fleet_calls_in_flight")):
                name = line.split("{")[0].split()[0]
                outcome = line.split('outcome="')[1].split('"')[0] if "outcome=" in line else ""
                key = f"{name}.{outcome}" if outcome else name
                out[key] = out.get(key, 0.0) + float(line.split()[-1])
    return out


# -- the orchestrator -------------------------------------------------------------------


class Fleet:
    """A fleet directory, its ``mcp-fleet up`` process, and what is observed of them."""

    def __init__(self, tmp: Path, opts: argparse.Namespace) -> None:
        self.home = tmp / "fleet"
        self.opts = opts
        self.name = f"soak-{uuid.uuid4().hex[:8]}"
        self.servers = [f"soak-{i}" for i in range(opts.echo_servers)] + ["time"]
        self.gens = dict.fromkeys(self.servers, 1)
        self.env = {**os.environ, "MCP_FLEET_NAME": self.name}
        self.log = tmp / "up.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        (self.home / "catalogs").mkdir(parents=True)
        backend = tmp / "soak_backend.py"
        backend.write_text(BACKEND_SOURCE)
        write_atomic(
            self.home / "catalogs" / "soak.yaml", catalog_text(opts.runtime, self.servers, backend)
        )
        write_atomic(self.home / "registry.yaml", registry_text(self.gens))
        (self.home / "secrets.env").write_text("")
        (self.home / "secrets.env").chmod(0o600)
        self.proc: subprocess.Popen[bytes] | None = None
        self.left: dict[str, Any] | None = None
        self.workers: list[subprocess.Popen[str]] = []

    def start(self) -> None:
        argv = [PY, "-m", "mcp_fleet.cli.main", "up", "--dir", str(self.home), "--host",
                "127.0.0.1", "--port", str(self.port), "--runtime", self.opts.runtime]  # fmt: skip
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log, cwd=ROOT)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def status(self) -> dict[str, Any] | None:
        return api_status(self.port)

    def backends(self) -> int:
        if self.opts.runtime == "docker":
            return containers(self.name)
        return len(children_of(self.pid))

    def sample(self, start: float) -> dict[str, float]:
        return {"t": round(time.time() - start, 1), "rss_kib": rss_kib(self.pid),
                "fds": fd_count(self.pid), "backends": self.backends()}  # fmt: skip

    def edit(self) -> None:
        for name in self.servers:
            self.gens[name] += 1
        write_atomic(self.home / "registry.yaml", registry_text(self.gens))

    async def wait_converged(self, old: dict[str, str], timeout: float) -> float | None:
        """Seconds until every server is Ready with a new hash (None: not within ``timeout``)."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            if converged(await asyncio.to_thread(self.status), self.servers, old):
                return time.time() - t0
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"mcp-fleet up exited ({self.proc.returncode}); see {self.log}")
            await asyncio.sleep(0.1)
        return None

    async def stop(self) -> dict[str, Any]:
        """Stop ``up`` and report what of the fleet is left behind (nothing, hopefully)."""
        if self.left is not None:
            return self.left
        kids = children_of(self.pid) if self.proc else []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        left: dict[str, Any] = {"up_exit": self.proc.returncode if self.proc else None}
        if self.opts.runtime == "docker":
            down = await asyncio.to_thread(
                subprocess.run,
                [PY, "-m", "mcp_fleet.cli.main", "down", "--dir", str(self.home)],
                env=self.env, capture_output=True, timeout=120, cwd=ROOT, check=False,
            )  # fmt: skip
            left["down_exit"] = down.returncode
            left["containers_after_down"] = containers(self.name)
        else:
            await asyncio.sleep(0.5)
            left["processes_after_stop"] = sum(1 for pid in kids if alive(pid))
        self.left = left
        return left


async def open_workers(
    fleet: Fleet, opts: argparse.Namespace, tmp: Path
) -> list[subprocess.Popen[str]]:
    """Start the client processes and wait until every session of theirs is open."""
    procs = fleet.workers
    first = 0
    for i in range(opts.workers):
        count = opts.sessions // opts.workers + (i < opts.sessions % opts.workers)
        argv = [PY, str(CLIENT), "--port", str(fleet.port), "--sessions", str(count),
                "--first", str(first), "--servers", ",".join(fleet.servers),
                "--out", str(tmp / f"w{i}.json"), "--think", str(opts.think),
                "--call-timeout", str(opts.call_timeout), "--seed", str(opts.seed)]  # fmt: skip
        with (tmp / f"w{i}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(  # noqa: ASYNC220
                    argv,
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                )
            )
        first += count
    for i, proc in enumerate(procs):
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 180)
        if line.strip() != "ready":
            log_text = (tmp / f"w{i}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"client worker {i} did not open its sessions:\n{log_text}")
    return procs


def go(workers: list[subprocess.Popen[str]], until: float) -> None:
    for proc in workers:
        assert proc.stdin is not None
        proc.stdin.write(f"{until!r}\n")
        proc.stdin.close()


async def soak(opts: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp_name:
        tmp = Path(tmp_name)
        fleet = Fleet(tmp, opts)
        fleet.start()
        try:
            return await drive(fleet, opts, tmp)
        except BaseException:
            print(f"--- tail of {fleet.log} ---", file=sys.stderr)
            print(fleet.log.read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            for proc in fleet.workers:  # interrupted: no client outlives the soak
                if proc.poll() is None:
                    proc.kill()
            await fleet.stop()


async def drive(fleet: Fleet, opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    t_boot = time.time()
    if await fleet.wait_converged({}, 120) is None:
        raise RuntimeError(f"the fleet did not become Ready in 120 s: {fleet.status()}")
    boot = time.time() - t_boot
    await asyncio.sleep(1.0)
    before = fleet.sample(t_boot)
    workers = await open_workers(fleet, opts, tmp)
    opened = fleet.sample(t_boot)
    start_at = time.time()
    until = start_at + opts.duration
    go(workers, until)
    samples: list[dict[str, float]] = []
    edits: list[dict[str, Any]] = []
    instances: dict[str, set[str]] = {}  # server -> every instance id the status named
    next_edit, next_sample = start_at + opts.edit_interval, start_at
    warm: dict[str, float] | None = None
    old: dict[str, str] | None = None  # hashes before the edit under way
    while time.time() < until or old is not None:
        now = time.time()
        status = await asyncio.to_thread(fleet.status)
        for st in (status or {}).get("servers", []):
            if st.get("instance") and st["state"] == "Ready":
                instances.setdefault(st["name"], set()).add(st["instance"])
        if now < until and now >= next_sample:
            samples.append(fleet.sample(start_at))
            if warm is None and now >= start_at + opts.warmup:
                warm = samples[-1]
            next_sample += opts.sample_interval
        if old is not None and converged(status, fleet.servers, old):
            edits[-1]["converged_s"] = round(now - edits[-1]["at"], 2)
            old = None
        elif old is not None and now - edits[-1]["at"] > opts.edit_interval + 60:
            old = None  # counted as not converged
        if old is None and next_edit <= now < until - 3:
            old = hashes(status)
            fleet.edit()
            edits.append({"t": round(time.time() - start_at, 1), "at": time.time(),
                          "converged_s": None})  # fmt: skip
            next_edit += opts.edit_interval
        if fleet.proc is not None and fleet.proc.poll() is not None:
            raise RuntimeError(f"mcp-fleet up exited during the soak; see {fleet.log}")
        await asyncio.sleep(0.1)
    end = samples[-1] if samples else fleet.sample(start_at)
    for w in workers:
        await asyncio.to_thread(w.wait, 120)
    await asyncio.sleep(2.0)  # closed sessions and retired backends settle
    after = fleet.sample(start_at)
    router_metrics = await asyncio.to_thread(metrics, fleet.port)
    left = await fleet.stop()
    replaced = sum(len(ids) - 1 for ids in instances.values())
    return summarise(opts, fleet.servers, tmp, boot=boot, before=before, opened=opened,
                     warm=warm or end, end=end, after=after, samples=samples, edits=edits,
                     start_at=start_at, until=until, router_metrics=router_metrics,
                     replaced=replaced, left=left)  # fmt: skip


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtime", choices=("process", "docker"), default="process")
    p.add_argument("--sessions", type=int, default=100)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    p.add_argument("--edit-interval", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS baseline")
    p.add_argument("--echo-servers", type=int, default=4, help="echo backends (plus time)")
    p.add_argument("--workers", type=int, default=2, help="client processes")
    p.add_argument("--think", type=float, default=0.05, help="mean pause between calls, s")
    p.add_argument("--call-timeout", type=float, default=30.0)
    p.add_argument("--sample-interval", type=float, default=5.0)
    p.add_argument("--rss-tolerance", type=float, default=0.10)
    p.add_argument("--no-rss-check", action="store_true", help="for runs too short for it")
    p.add_argument("--fd-slack", type=int, default=0)
    p.add_argument(
        "--strict-replacements",
        action="store_true",
        help="fail on any MCP error, also inside a replacement window",
    )
    p.add_argument("--seed", default="soak")
    p.add_argument("--out", help="result file (default bench/results/soak-<runtime>.json)")
    return p.parse_args(argv)


def main() -> None:
    opts = parse()
    result = asyncio.run(soak(opts))
    out = Path(opts.out) if opts.out else RESULTS / f"soak-{opts.runtime}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(report(result))
    print(f"result: {out}")
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
