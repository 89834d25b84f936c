"""``mcp-fleet controller``, ``status``, ``down`` and ``logs``: running and watching a fleet.

- ``controller`` runs the reconcile loop in the foreground (``--once``:
  converge, print, exit 0 when every enabled server is Ready, else 1;
  ``--dry-run``: print the plan and exit). Running, it listens on the
  fleet's demand socket (``reconcile.demand_server``), through which
  ``mcp-fleet router --dir`` asks for on-demand servers and says which are
  in use.
- ``status`` reads the status file the controller writes after every pass
  (``<fleet>/.state/status.json``), so it works from any other process; a
  table for people, ``--json`` for scripts, ``--watch`` to follow.
- ``down`` stops the fleet's controller, then stops and removes every
  instance the fleet owns (process leftovers, containers).
- ``logs`` prints a server's stderr (the process runtime's log file, or the
  container's log), ``--follow`` to keep printing.

Exit codes: 0 ok, 1 runtime failure, 2 bad input.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer

from mcp_fleet import conventions
from mcp_fleet.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    CatalogOpt,
    ConfigOpt,
    DirOpt,
    JsonOpt,
    RegistryOpt,
    SecretsOpt,
    ToolsOpt,
    console,
    err_console,
    exit_on_error,
    fail,
    fleet_files_from_options,
    print_diagnostics,
    print_json,
)
from mcp_fleet.status import REASON_PER_CLIENT, ServerState

if TYPE_CHECKING:
    from rich.console import Group

    from mcp_fleet.endpoints import Demand
    from mcp_fleet.model import FleetFiles, RuntimeKind
    from mcp_fleet.reconcile.demand_server import DemandServer
    from mcp_fleet.reconcile.loop import Controller
    from mcp_fleet.reconcile.snapshot import ServerStatus, StatusSnapshot


class RuntimeChoice(StrEnum):
    PROCESS = "process"
    DOCKER = "docker"


RuntimeOpt = Annotated[
    RuntimeChoice,
    typer.Option(
        "--runtime",
        help="Where servers with an image run: process (the default; image-only servers are "
        "then Failed with RuntimeUnsupported) or docker. Servers with only `process:` always "
        "run as local processes.",
        case_sensitive=False,
    ),
]

_STATE_STYLE = {
    ServerState.READY: "green",
    ServerState.STARTING: "cyan",
    ServerState.PENDING: "yellow",
    ServerState.FAILED: "red",
    ServerState.CRASHLOOP: "red",
    ServerState.STOPPED: "dim",
    ServerState.UNKNOWN: "magenta",
}
#: How a server's message reads: an error only where the state is one.
_MESSAGE_STYLE = {
    ServerState.FAILED: "red",
    ServerState.CRASHLOOP: "red",
    ServerState.UNKNOWN: "red",
    ServerState.PENDING: "yellow",  # waiting out a backoff, or for a start slot
    ServerState.READY: "yellow",  # the last good configuration runs: the new one is broken
    ServerState.STARTING: "",
    ServerState.STOPPING: "dim",
    ServerState.STOPPED: "dim",  # disabled, scaled to zero, per-client
}


def register(app: typer.Typer) -> None:
    app.command("controller")(controller_command)
    app.command("status")(status_command)
    app.command("down")(down_command)
    app.command("logs")(logs_command)


# controller


def controller_command(
    runtime: RuntimeOpt = RuntimeChoice.PROCESS,
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="Converge once, print the status, exit 0 when every enabled server is Ready, "
            "else 1. Process servers are children of the controller and stop when it exits, so "
            "with the process runtime --once is a smoke test (does every server start and "
            "answer MCP initialize?); with --runtime docker the containers keep running.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan a pass would apply, and exit.")
    ] = False,
    json_out: JsonOpt = False,
    resync: Annotated[
        float, typer.Option("--resync", help="Seconds between full resyncs.", min=0.1)
    ] = conventions.DEFAULT_RESYNC_SECONDS,
    probe_timeout: Annotated[
        float,
        typer.Option("--probe-timeout", help="Seconds a server has to answer initialize.", min=0.1),
    ] = conventions.DEFAULT_PROBE_TIMEOUT_SECONDS,
    dir: DirOpt = None,
    catalog: CatalogOpt = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    tools_config: ToolsOpt = None,
    secrets: SecretsOpt = None,
) -> None:
    """Run the reconcile loop: keep the fleet's servers matching its files.

    Wakes on file changes, server exits and every --resync seconds. A broken
    file is reported and the last good state is kept. Status: mcp-fleet status.
    """
    import asyncio

    from mcp_fleet.endpoints import EndpointTable
    from mcp_fleet.model import RuntimeKind
    from mcp_fleet.reconcile.loop import Controller
    from mcp_fleet.runtimes.select import build_runtimes

    with exit_on_error():
        files = fleet_files_from_options(dir, catalog, registry, config, tools_config, secrets)
        kind = RuntimeKind(runtime.value)
        runtimes = build_runtimes(
            kind, fleet=conventions.fleet_name(files.home), state_dir=files.state_dir
        )
    ctl = Controller(
        files, runtimes, EndpointTable(), preferred_runtime=kind, resync_seconds=resync,
        probe_timeout=probe_timeout, watch=not (once or dry_run),
    )  # fmt: skip
    mcp_log = logging.getLogger("mcp_fleet")
    if mcp_log.getEffectiveLevel() > logging.INFO and not (dry_run or json_out):
        mcp_log.setLevel(logging.INFO)  # a controller reports every state change
    with exit_on_error():
        code = asyncio.run(_controller_main(ctl, once=once, dry_run=dry_run, json_out=json_out))
    raise typer.Exit(code)


async def _controller_main(ctl: Controller, *, once: bool, dry_run: bool, json_out: bool) -> int:
    import asyncio

    if dry_run:
        try:
            plan = await ctl.preview()
        finally:
            await ctl.aclose(stop_processes=False)
        print_diagnostics(ctl.file_errors)
        if ctl.desired is None:
            return EXIT_BAD_INPUT
        sys.stdout.write(str(plan) + "\n")
        return 0
    if once:
        try:
            snapshot = await ctl.reconcile_once()
        finally:
            await ctl.aclose()
        _print_snapshot(snapshot, json_out=json_out, alive=True)
        if snapshot.file_errors and ctl.desired is None:
            return EXIT_BAD_INPUT
        return 0 if snapshot.all_ready and not snapshot.file_errors else EXIT_FAILURE
    err_console.print(
        f"mcp-fleet controller for {ctl.files.home} (runtime {ctl.preferred_runtime.value}); "
        f"status: mcp-fleet status --dir {ctl.files.home}",
        markup=False,
    )
    demand: DemandServer | None = None
    try:
        ctl.claim()  # the lock first: the demand socket is this controller's to replace
        demand = await serve_demand(ctl.files.state_dir, ctl.endpoints.demand)
        task = asyncio.create_task(ctl.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        await task
    except asyncio.CancelledError:
        pass
    finally:
        if demand is not None:
            await demand.aclose()
        await ctl.aclose()
    return 0


async def serve_demand(state_dir: Path, demand_channel: Demand) -> DemandServer | None:
    """Listen for routers in other processes (``controller`` and ``up``, holding the fleet's
    lock); without the socket only on-demand servers behind ``router --dir`` suffer, so
    the controller runs on and says why."""
    from mcp_fleet.errors import RuntimeFailure
    from mcp_fleet.reconcile.demand_server import DemandServer

    demand = DemandServer(state_dir, demand_channel)
    try:
        await demand.start()
    except (OSError, RuntimeFailure) as exc:
        err_console.print(
            f"warning: no demand socket ({exc}): on-demand servers will not start for "
            "`mcp-fleet router --dir`",
            markup=False,
        )
        return None
    return demand


# status


def status_command(
    json_out: JsonOpt = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between refreshes with --watch.", min=0.1)
    ] = 1.0,
    dir: DirOpt = None,
) -> None:
    """Show every server: desired, state, reason, runtime, instance, restarts, age, message.

    Reads <fleet>/.state/status.json, written by the controller after every pass.
    """
    from rich.live import Live

    from mcp_fleet.reconcile.statusfile import controller_alive, status_path

    with exit_on_error():
        files = fleet_files_from_options(dir)
    path = status_path(files.state_dir)
    if not watch:
        snapshot = _read(path)
        _print_snapshot(snapshot, json_out=json_out, alive=controller_alive(snapshot))
        raise typer.Exit(0)
    try:
        if json_out:
            while True:
                snapshot = _read(path)
                print_json({**snapshot.to_json(), "controller_running": controller_alive(snapshot)})
                time.sleep(interval)
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while True:
                snapshot = _read(path)
                live.update(
                    render_status(snapshot, alive=controller_alive(snapshot), width=console.width)
                )
                live.refresh()
                time.sleep(interval)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _read(path: Path) -> StatusSnapshot:
    from mcp_fleet.reconcile.statusfile import read_status

    try:
        snapshot = read_status(path)
    except (OSError, ValueError) as exc:
        raise fail(f"{path}: cannot read the status ({exc})", code=EXIT_FAILURE) from None
    if snapshot is None:
        raise fail(
            f"no status in {path.parent.parent}: no controller has run for this fleet "
            "(start one with `mcp-fleet controller` or `mcp-fleet up`)",
            code=EXIT_FAILURE,
        )
    return snapshot


def _print_snapshot(snapshot: StatusSnapshot, *, json_out: bool, alive: bool) -> None:
    if json_out:
        print_json({**snapshot.to_json(), "controller_running": alive})
    else:
        console.print(render_status(snapshot, alive=alive, width=console.width))


#: Below this terminal width the messages go under the table, one line per server,
#: instead of a column squeezed to a few characters.
_WIDE_ENOUGH: Final = 110


def render_status(
    snapshot: StatusSnapshot, *, alive: bool, now: float | None = None, width: int | None = None
) -> Group:
    """The status as people read it: a header, file errors, then one row per server."""
    from rich.console import Group, RenderableType
    from rich.table import Table
    from rich.text import Text

    now = time.time() if now is None else now
    parts: list[RenderableType] = []
    who = (
        f"controller pid {snapshot.controller_pid}"
        if alive
        else "[yellow]controller not running[/yellow] (last status shown)"
    )
    parts.append(
        Text.from_markup(
            f"fleet [bold]{snapshot.fleet or '?'}[/bold] in {snapshot.home} · runtime "
            f"{snapshot.runtime} · {who} · updated {_age(now - snapshot.updated_at)} ago"
        )
    )
    for diag in snapshot.file_errors:
        parts.append(Text(f"file error: {diag} (the last good state is in use)", style="red"))
    for kind, error in snapshot.runtime_errors.items():
        parts.append(Text(f"runtime {kind} unavailable: {error}", style="red"))
    table = Table(box=None, pad_edge=False, header_style="bold")
    # Short columns never wrap (a folded "Initializ/ed" reads badly); the message takes
    # what is left of a wide terminal, or goes under the table on a narrow one.
    beside = width is None or width >= _WIDE_ENOUGH
    for col in ("NAME", "DESIRED", "STATE", "REASON", "RUNTIME", "INSTANCE", "RESTARTS", "AGE"):
        table.add_column(col, no_wrap=True, overflow="ellipsis" if col == "NAME" else "fold")
    if beside:
        table.add_column("MESSAGE", overflow="fold", ratio=1, min_width=16)
    below: list[RenderableType] = []
    for st in snapshot.servers:
        age = _age(now - st.started_at) if st.started_at else "-"
        message = st.message
        if st.stderr_tail and st.state in (ServerState.CRASHLOOP, ServerState.PENDING):
            message = f"{message} | stderr: {st.stderr_tail[-1]}"
        cells: list[RenderableType] = [
            st.name, st.desired, Text(st.state.value, style=_STATE_STYLE.get(st.state, "")),
            st.reason, st.runtime or "-", _instance_cell(st), str(st.restarts), age,
        ]  # fmt: skip
        styled = Text(message or "", style=_MESSAGE_STYLE.get(st.state, ""))
        if beside:
            table.add_row(*cells, styled)
        else:
            table.add_row(*cells)
            if message:
                below.append(Text.assemble(f"{st.name}: ", styled))
    parts.append(table if snapshot.servers else Text("no servers in the registry", style="dim"))
    parts.extend(below)
    return Group(*parts)


def _instance_cell(st: ServerStatus) -> str:
    """The instance id, or for a per-client server how many session instances run."""
    if st.session_instances is not None and st.reason == REASON_PER_CLIENT:
        n = st.session_instances
        return f"{n} session{'s' if n != 1 else ''}"
    return _short_id(st.instance)


def _short_id(instance: str | None) -> str:
    """Container ids as ``docker ps`` shows them (12 hex); processes as ``pid N`` (the start
    time that makes the instance id unique is for the controller, not for reading)."""
    if not instance:
        return "-"
    if instance.startswith("pid:"):
        return "pid " + instance.split(":")[1]
    return instance[:12]


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# down


def down_command(
    runtime: RuntimeOpt = RuntimeChoice.PROCESS,
    dir: DirOpt = None,
) -> None:
    """Stop the fleet's controller, then stop and remove every server instance the fleet owns."""
    import asyncio

    from mcp_fleet.model import RuntimeKind
    from mcp_fleet.reconcile.statusfile import status_path

    with exit_on_error():
        files = fleet_files_from_options(dir)
        stopped = _stop_controller(files)
        if stopped:
            err_console.print(f"stopped controller pid {stopped}", markup=False)
        removed = asyncio.run(_down(files, RuntimeKind(runtime.value)))
    for line in removed:
        console.print(line, markup=False)
    if not removed:
        console.print("nothing was running", markup=False)
    status_path(files.state_dir).unlink(missing_ok=True)


def _stop_controller(files: FleetFiles, *, grace: float = 15.0) -> int | None:
    """SIGTERM the controller holding the fleet's lock (SIGKILL after ``grace``)."""
    from mcp_fleet.errors import RuntimeFailure
    from mcp_fleet.reconcile.lock import holder_pid, is_free, lock_path

    text = holder_pid(files.state_dir)
    if text is None:
        return None  # no controller runs
    if not text.isdigit():
        raise RuntimeFailure(
            f"a controller holds {lock_path(files.state_dir)} but its pid is unknown"
        )
    pid = int(text)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if is_free(files.state_dir):
            return pid
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return pid


async def _down(files: FleetFiles, kind: RuntimeKind) -> list[str]:
    from mcp_fleet.errors import RuntimeFailure
    from mcp_fleet.model import RuntimeKind
    from mcp_fleet.runtimes.base import Runtime
    from mcp_fleet.runtimes.process import ProcessRuntime
    from mcp_fleet.runtimes.select import build_runtimes

    fleet = conventions.fleet_name(files.home)
    runtimes: dict[RuntimeKind, Runtime] = {
        RuntimeKind.PROCESS: ProcessRuntime(fleet=fleet, state_dir=files.state_dir)
    }
    if kind is RuntimeKind.DOCKER or _docker_answers():
        with contextlib.suppress(RuntimeFailure, ImportError):
            runtimes.update(build_runtimes(RuntimeKind.DOCKER, fleet=fleet,
                                           state_dir=files.state_dir))  # fmt: skip
    removed = []
    try:
        for rkind, rt in runtimes.items():
            try:
                observed = await rt.observe()
            except (RuntimeFailure, OSError) as exc:
                if rkind is kind:
                    raise RuntimeFailure(f"{rkind.value}: {exc}") from exc
                continue
            for inst in observed.instances:
                if inst.fleet != fleet:
                    continue
                await rt.stop(inst)
                removed.append(f"removed {inst.server} ({rkind.value} {inst.instance_id})")
    finally:
        for rt in runtimes.values():
            await rt.aclose()
    return removed


def _docker_answers() -> bool:
    """Whether a Docker daemon is configured and reachable (quietly; for ``down``)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return not host.startswith("unix://") or Path(host.removeprefix("unix://")).exists()


# logs


def logs_command(
    server: Annotated[str, typer.Argument(help="The server whose stderr to print.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
    tail: Annotated[int, typer.Option("--tail", "-n", help="Lines to print first.", min=0)] = 100,
    dir: DirOpt = None,
) -> None:
    """Print what a server wrote to stderr (secret values masked)."""
    from mcp_fleet.model import RuntimeKind
    from mcp_fleet.reconcile.statusfile import read_status, status_path
    from mcp_fleet.runtimes.process import LOGS_DIR, read_log_tail

    if not conventions.SERVER_NAME_RE.match(server):
        raise fail(f"invalid server name {server!r}")  # never a path outside .state/logs
    with exit_on_error():
        files = fleet_files_from_options(dir)
    snapshot = None
    with contextlib.suppress(OSError, ValueError):
        snapshot = read_status(status_path(files.state_dir))
    st = snapshot.server(server) if snapshot else None
    if st is not None and st.runtime == RuntimeKind.DOCKER.value and st.instance:
        with exit_on_error():
            _docker_logs(st.instance, follow=follow, tail=tail, secrets=_secret_values(files))
        return
    log_file = files.state_dir / LOGS_DIR / f"{server}.log"
    if not log_file.exists():
        known = f" ({server} is {st.state.value})" if st else ""
        raise fail(f"no logs for {server!r} in {log_file.parent}{known}", code=EXIT_FAILURE)
    for line in read_log_tail(files.state_dir, server, tail=tail):
        sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if follow:
        with contextlib.suppress(KeyboardInterrupt):
            _follow_file(log_file)


def _secret_values(files: FleetFiles) -> tuple[str, ...]:
    """The values of secrets.env, to mask them in a container's output (never printed).

    Read whatever the file's mode: a file refused for being readable by others
    may still have reached a container before, and masking is all they are for.
    """
    from mcp_fleet.config.secrets import parse_secrets
    from mcp_fleet.errors import FleetConfigError
    from mcp_fleet.logsetup import MIN_SECRET_LENGTH

    try:
        text = files.secrets.read_text(encoding="utf-8-sig")
        values = parse_secrets(text, files.secrets).values()
    except (OSError, UnicodeDecodeError, FleetConfigError):
        return ()
    return tuple(sorted({v for v in values if len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True))


def _follow_file(path: Path, *, poll: float = 0.25) -> None:
    """Print lines appended to ``path``, reopening it when it is rotated."""
    handle = path.open("rb")
    handle.seek(0, os.SEEK_END)
    inode = path.stat().st_ino
    while True:
        chunk = handle.read()
        if chunk:
            sys.stdout.write(chunk.decode("utf-8", errors="replace"))
            sys.stdout.flush()
            continue
        time.sleep(poll)
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_ino != inode:
                handle.close()
                handle = path.open("rb")
                inode = path.stat().st_ino


def _docker_logs(container_id: str, *, follow: bool, tail: int, secrets: tuple[str, ...]) -> None:
    import docker
    from docker.errors import DockerException

    from mcp_fleet.errors import RuntimeFailure
    from mcp_fleet.logsetup import SecretRedactor

    redactor = SecretRedactor()
    redactor.set_secrets(secrets)  # escaped forms too (JSON, repr, URL, base64)
    masked = redactor.redact

    pending = ""  # masked a line at a time: a value split across two chunks is still found
    try:
        client = docker.from_env()
        container = client.containers.get(container_id)
        stream = container.logs(stdout=False, stderr=True, stream=True, follow=follow, tail=tail)
        for chunk in stream:
            *lines, pending = (pending + chunk.decode("utf-8", errors="replace")).split("\n")
            for line in lines:
                sys.stdout.write(masked(line) + "\n")
            sys.stdout.flush()
    except DockerException as exc:
        raise RuntimeFailure(f"docker: {exc}") from exc
    except KeyboardInterrupt:
        pass
    if pending:
        sys.stdout.write(masked(pending) + "\n")
        sys.stdout.flush()
