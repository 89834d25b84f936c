"""The controller on the process runtime, with real servers, real files and real signals.

Each scenario edits a real fleet directory (catalog, registry.yaml,
secrets.env) and watches a real controller converge: servers become Ready
only after an MCP initialize, a changed config replaces the process, a
disabled server stops, a killed server comes back with backoff, a crashing
one ends in CrashLoop with its exit code and last words, a broken registry
stops nothing, a missing secret fails only its server and no secret value
leaks. A SIGKILLed controller (a real subprocess) leaves nothing behind that
its successor does not end: never two copies.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from controller_support import Recorder, call_echo, passes, state, until
from mcp_fleet.config import resolve_files
from mcp_fleet.endpoints import EndpointTable, StreamEndpoint
from mcp_fleet.logsetup import setup_logging
from mcp_fleet.model import RuntimeKind
from mcp_fleet.reconcile.backoff import BackoffPolicy
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.reconcile.snapshot import StatusSnapshot
from mcp_fleet.runtimes.process import read_stat
from mcp_fleet.runtimes.select import build_runtimes
from mcp_fleet.status import ServerState
from support import until_sync

REPO = Path(__file__).resolve().parents[2]
ECHO = REPO / "tests" / "servers" / "echo_server.py"
CRASH = REPO / "tests" / "servers" / "crash_server.py"
PY = sys.executable
SECRET_VALUE = "s3cr3t-VALUE-" + uuid.uuid4().hex[:8]

pytestmark = pytest.mark.timeout(120)
BACKOFF = BackoffPolicy(initial=0.2, maximum=1.0, threshold=3, window=30.0)


def catalog(marker: str, *, echo_version: str = "1") -> str:
    straggler = f"{PY} -c 'import time; time.sleep(600)' {marker}-straggler"
    return f"""version: "2"
registry:
  echo:
    title: Echo
    env:
      - name: ECHO_VERSION
        value: "{echo_version}"
    process:
      command: [{PY}, {ECHO}, {marker}]
  time:
    process:
      command: [{PY}, -m, mcp_server_time, --local-timezone=UTC]
  crash:
    process:
      command: [{PY}, {CRASH}]
  needy:
    secrets:
      - name: needy.token
        env: NEEDY_TOKEN
    process:
      command: [{PY}, {ECHO}]
  holder:
    secrets:
      - name: holder.token
        env: HOLDER_TOKEN
    process:
      command: [sh, -c, 'echo "token is $HOLDER_TOKEN" >&2; exec {PY} {ECHO}']
  grandparent:
    process:
      command: [sh, -c, "{straggler} & exec {PY} {ECHO} {marker}-gp"]
"""


def registry(**enabled: bool) -> str:
    lines = ["registry:"]
    for name, on in enabled.items():
        lines += [f"  {name}:", f"    enabled: {'true' if on else 'false'}"]
    return "\n".join(lines) + "\n"


class Fleet:
    """A fleet directory on disk that tests edit like a user would."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.marker = f"fleet-test-{uuid.uuid4().hex[:10]}"
        (home / "catalogs").mkdir(parents=True)
        self.write_catalog()
        secrets = home / "secrets.env"
        secrets.write_text(f"holder.token={SECRET_VALUE}\n")
        secrets.chmod(0o600)
        self.set_registry()

    def write_catalog(self, **kw: str) -> None:
        (self.home / "catalogs" / "test.yaml").write_text(catalog(self.marker, **kw))

    def set_registry(self, **enabled: bool) -> None:
        (self.home / "registry.yaml").write_text(registry(**enabled))

    @property
    def files(self):  # type: ignore[no-untyped-def]
        return resolve_files(self.home)


def controller(fleet: Fleet, **kw: object) -> Controller:
    files = fleet.files
    from mcp_fleet.conventions import fleet_name

    runtimes = build_runtimes(
        RuntimeKind.PROCESS, fleet=fleet_name(files.home), state_dir=files.state_dir
    )
    runtimes[RuntimeKind.PROCESS] = Recorder(runtimes[RuntimeKind.PROCESS])  # type: ignore[assignment]
    options: dict[str, object] = {
        "resync_seconds": 2.0,
        "debounce_ms": 50,
        "probe_timeout": 20.0,
        "backoff": BACKOFF,
    }
    options.update(kw)
    return Controller(files, runtimes, EndpointTable(), **options)  # type: ignore[arg-type]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Fleet, Controller]]:
    fleet = Fleet(tmp_path / "fleet")
    ctl = controller(fleet)
    task = asyncio.create_task(ctl.run())
    try:
        yield fleet, ctl
    finally:
        task.cancel()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 15)
        await asyncio.wait_for(ctl.aclose(), 15)


def recorder(ctl: Controller) -> Recorder:
    """The ``Recorder`` around the process runtime of a controller made by ``controller``."""
    found = ctl.runtimes[RuntimeKind.PROCESS]
    assert isinstance(found, Recorder)
    return found


def pid_of(instance_id: str | None) -> int:
    assert instance_id and instance_id.startswith("pid:")
    return int(instance_id.split(":")[1])


def alive(pid: int) -> bool:
    st = read_stat(pid)
    return st is not None and st.alive


def processes_with(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


async def test_enable_change_disable(running: tuple[Fleet, Controller]) -> None:
    fleet, ctl = running
    await until(ctl, lambda s: s.fleet is not None and not s.servers)
    fleet.set_registry(echo=True)
    snap = await until(ctl, state("echo", ServerState.READY))
    first = snap.server("echo")
    assert first is not None and first.reason == "Initialized"
    endpoint = ctl.endpoints.snapshot()["echo"].endpoint
    assert isinstance(endpoint, StreamEndpoint) and endpoint.instance_id == first.instance
    assert await call_echo(endpoint, "hello") == "hello"

    fleet.write_catalog(echo_version="2")
    snap = await until(
        ctl,
        lambda s: (
            s.server("echo") is not None
            and s.server("echo").state is ServerState.READY  # type: ignore[union-attr]
            and s.server("echo").instance != first.instance
        ),  # type: ignore[union-attr]
    )
    await until(ctl, lambda s: not alive(pid_of(first.instance)), within=10)
    assert len(processes_with(f"{ECHO} {fleet.marker}")) == 1

    fleet.set_registry(echo=False)
    snap = await until(ctl, state("echo", ServerState.STOPPED))
    assert processes_with(f"{ECHO} {fleet.marker}") == []
    assert "echo" not in ctl.endpoints.snapshot()


async def test_killed_server_is_restarted_with_backoff(running: tuple[Fleet, Controller]) -> None:
    fleet, ctl = running
    fleet.set_registry(echo=True)
    first = (await until(ctl, state("echo", ServerState.READY))).server("echo")
    assert first is not None
    os.kill(pid_of(first.instance), signal.SIGKILL)
    killed_at = time.monotonic()
    snap = await until(
        ctl,
        lambda s: (
            s.server("echo").state is ServerState.READY  # type: ignore[union-attr]
            and s.server("echo").instance != first.instance
        ),  # type: ignore[union-attr]
    )
    st = snap.server("echo")
    assert st is not None and st.restarts == 1
    assert time.monotonic() - killed_at >= 0.2  # the first backoff step
    assert len(processes_with(f"{ECHO} {fleet.marker}")) == 1


async def test_crashing_server_ends_in_crashloop_with_its_reason(
    running: tuple[Fleet, Controller],
) -> None:
    fleet, ctl = running
    fleet.set_registry(crash=True)
    snap = await until(ctl, state("crash", ServerState.CRASHLOOP))
    st = snap.server("crash")
    assert st is not None and st.exit_code == 3 and st.reason == "CrashLoopBackOff"
    assert any("refusing to start" in line for line in st.stderr_tail)
    assert "exit code 3" in st.message
    # Restarts go on, at the backed-off pace: after n failures in a row the next start
    # waits BACKOFF.delay(n) (0.2, 0.4, 0.8, then 1 s here), measured between the starts.
    restarts = st.restarts

    def restarted_twice_more(snap: StatusSnapshot) -> bool:
        later = snap.server("crash")
        return (
            later is not None
            and later.state is ServerState.CRASHLOOP
            and later.restarts >= restarts + 2
        )

    await until(ctl, restarted_twice_more)
    starts = recorder(ctl).start_times["crash"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert len(gaps) >= restarts + 2, gaps
    for failures, gap in enumerate(gaps, start=1):
        assert gap >= BACKOFF.delay(failures) - 0.05, f"restarted too soon: {gaps}"
    log = (fleet.home / ".state" / "logs" / "crash.log").read_text()
    assert "refusing to start" in log


async def test_broken_registry_stops_nothing_and_a_fix_resumes(
    running: tuple[Fleet, Controller],
) -> None:
    fleet, ctl = running
    fleet.set_registry(echo=True)
    ready = (await until(ctl, state("echo", ServerState.READY))).server("echo")
    assert ready is not None
    mark = len(recorder(ctl).calls)
    (fleet.home / "registry.yaml").write_text("registry:\n  echo:\n    enabled: [oops\n")
    snap = await until(ctl, lambda s: bool(s.file_errors))
    assert "registry.yaml" in str(snap.file_errors[0])
    # Passes with the broken file: none starts or stops anything; echo runs on.
    snap = await passes(ctl, 2)
    assert snap.file_errors
    assert recorder(ctl).actions_since(mark) == [], recorder(ctl).calls[mark:]
    st = snap.server("echo")
    assert st is not None and st.state is ServerState.READY and st.instance == ready.instance
    assert alive(pid_of(ready.instance))
    fleet.set_registry(echo=True, time=True)
    snap = await until(ctl, state("time", ServerState.READY))
    assert not snap.file_errors
    assert snap.server("echo").instance == ready.instance  # type: ignore[union-attr]


async def test_missing_secret_fails_only_its_server_and_no_value_leaks(
    running: tuple[Fleet, Controller],
) -> None:
    fleet, ctl = running
    out = io.StringIO()
    handler = setup_logging(fmt="json", stream=out)
    try:
        fleet.set_registry(needy=True, holder=True)
        snap = await until(
            ctl,
            lambda s: (
                state("holder", ServerState.READY)(s) and state("needy", ServerState.FAILED)(s)
            ),
        )
    finally:
        import logging

        logging.getLogger().removeHandler(handler)
    needy = snap.server("needy")
    assert needy is not None and needy.reason == "MissingSecret"
    assert "needy.token" in needy.message
    holder_log = (fleet.home / ".state" / "logs" / "holder.log").read_text()
    assert "token is ***" in holder_log
    places = {
        "status": (fleet.home / ".state" / "status.json").read_text(),
        "controller log": out.getvalue(),
        "server logs": "".join(
            p.read_text() for p in (fleet.home / ".state" / "logs").glob("*.log")
        ),
        "pid files": "".join(
            p.read_text() for p in (fleet.home / ".state" / "processes").glob("*.json")
        ),
        "process list": await _ps(),
    }
    assert "holder" in places["status"] and "state" in places["controller log"]
    for where, text in places.items():
        assert SECRET_VALUE not in text, f"secret value found in {where}"


async def _ps() -> str:
    proc = await asyncio.create_subprocess_exec("ps", "-eo", "args", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return out.decode()


RUNNER = """
import sys, typer
from mcp_fleet.cli import controller_cmds
from mcp_fleet.logsetup import setup_logging
app = typer.Typer()
controller_cmds.register(app)
@app.callback()
def main() -> None:
    setup_logging(fmt="json")
app(sys.argv[1:])
"""


def start_controller(home: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PY, "-c", RUNNER, "controller", "--dir", str(home), "--resync", "1"],
        stdout=subprocess.DEVNULL,
        stderr=(home.parent / "controller.log").open("ab"),
    )


def wait_status(home: Path, check: Callable[[dict], bool], timeout: float = 30.0) -> dict:  # type: ignore[type-arg]
    path = home / ".state" / "status.json"
    doc: dict = {}  # type: ignore[type-arg]

    def reached() -> dict | None:  # type: ignore[type-arg]
        nonlocal doc
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            doc = {}
        return doc if doc and check(doc) else None

    log = home.parent / "controller.log"
    return until_sync(  # type: ignore[no-any-return]
        reached, within=timeout, what="status",
        context=lambda: f"{doc}\ncontroller log:\n{log.read_text()[-3000:]}",
    )  # fmt: skip


def ready_instance(doc: dict, name: str) -> str | None:  # type: ignore[type-arg]
    for st in doc.get("servers", []):
        if st["name"] == name and st["state"] == "Ready":
            return str(st["instance"])
    return None


def test_sigkilled_controller_leaves_no_second_copy(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path / "fleet")
    fleet.set_registry(grandparent=True)
    gp = f"{ECHO} {fleet.marker}-gp"
    straggler = f"{fleet.marker}-straggler"
    first = start_controller(fleet.home)
    try:
        doc = wait_status(fleet.home, lambda d: ready_instance(d, "grandparent") is not None)
        old = ready_instance(doc, "grandparent")
        assert len(processes_with(straggler)) == 1 and len(processes_with(gp)) == 1
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        until_sync(
            lambda: not processes_with(gp), within=10,
            what="the server died with its controller",
        )  # fmt: skip
        (old_straggler,) = processes_with(straggler)  # what the parent-death signal misses

        second = start_controller(fleet.home)
        try:
            doc = wait_status(
                fleet.home,
                lambda d: (
                    ready_instance(d, "grandparent") not in (None, old)
                    and d["controller_pid"] == second.pid
                ),
            )
            assert not alive(old_straggler), "the leftover of the killed controller lives on"
            assert len(processes_with(gp)) == 1, "never two copies"
            assert len(processes_with(straggler)) == 1  # the new instance's own
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(20)
        until_sync(
            lambda: not processes_with(gp) and not processes_with(straggler), within=5,
            what="the servers ended with the controller",
        )  # fmt: skip
    finally:
        if first.poll() is None:
            first.kill()
        for pid in processes_with(fleet.marker):
            os.kill(pid, signal.SIGKILL)


def cli():  # type: ignore[no-untyped-def]
    import typer
    from mcp_fleet.cli import controller_cmds

    app = typer.Typer()
    controller_cmds.register(app)

    @app.callback()
    def main() -> None:
        """Test entry point."""

    return app


def test_cli_dry_run_once_status_logs_and_down(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    fleet = Fleet(tmp_path / "fleet")
    fleet.set_registry(time=True, holder=True)
    home = str(fleet.home)
    runner = CliRunner()

    dry = runner.invoke(cli(), ["controller", "--dir", home, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert [line.split()[:2] for line in dry.stdout.splitlines()] == [
        ["create", "server:holder"],
        ["create", "server:time"],
    ]
    assert not (fleet.home / ".state" / "status.json").exists()

    once = runner.invoke(cli(), ["controller", "--dir", home, "--once", "--json"])
    assert once.exit_code == 0, once.output
    doc = json.loads(once.stdout)
    assert doc["all_ready"] is True
    assert {s["name"]: s["state"] for s in doc["servers"]} == {"holder": "Ready", "time": "Ready"}
    pids = [pid_of(s["instance"]) for s in doc["servers"]]
    until_sync(
        lambda: not any(alive(p) for p in pids), within=5, what="--once stops process servers"
    )

    status = runner.invoke(cli(), ["status", "--dir", home, "--json"])
    assert status.exit_code == 0
    assert json.loads(status.stdout)["controller_running"] is False
    table = runner.invoke(cli(), ["status", "--dir", home])
    assert "controller not running" in table.stdout and "holder" in table.stdout

    logs = runner.invoke(cli(), ["logs", "holder", "--dir", home, "--tail", "5"])
    assert logs.exit_code == 0 and "token is ***" in logs.stdout
    assert SECRET_VALUE not in logs.stdout
    missing = runner.invoke(cli(), ["logs", "nobody", "--dir", home])
    assert missing.exit_code == 1

    fleet.set_registry(time=True, crash=True)
    failing = runner.invoke(cli(), ["controller", "--dir", home, "--once"])
    assert failing.exit_code == 1
    assert "crash" in failing.stdout

    fleet.set_registry(time=True)
    (fleet.home / "registry.yaml").write_text("registry: [\n")
    bad = runner.invoke(cli(), ["controller", "--dir", home, "--once"])
    assert bad.exit_code == 2

    down = runner.invoke(cli(), ["down", "--dir", home])
    assert down.exit_code == 0, down.output
    assert "nothing was running" in down.stdout
    assert not (fleet.home / ".state" / "status.json").exists()
