"""The process runtime: each server a child process of the controller, speaking stdio.

The embedded default: it needs nothing but Python. A catalog entry's
``process: {command, env, cwd}`` says what to run.

Why it is built this way:

- **Children end with the controller.** A stdio server's pipes cannot be
  handed to another process, so a server must not outlive the controller
  that holds them. Each child gets its own session and process group
  (``start_new_session``; stopping kills the whole group, grandchildren
  included) and, on Linux, a parent-death signal (``prctl(PR_SET_PDEATHSIG,
  SIGKILL)`` in the child before exec) so even a SIGKILLed controller takes
  its children with it.
- **Never two copies.** What a parent-death signal misses (a server started
  through ``sh -c`` whose grandchild lives on) is found through pid files:
  ``<fleet>/.state/processes/<server>.<pid>.json`` holds the pid, the
  process start time (``/proc/<pid>/stat`` field 22, so a pid the kernel
  reused is never taken for ours) and the config hash. ``observe()`` reports
  such leftovers as running instances the controller does not own; the
  planner removes them (their stdio is gone) before starting fresh ones.
- **Secrets through the environment only.** The child's environment is a
  minimal inherited one (PATH, HOME, LANG...) plus the server's secrets, its
  templated ``env`` and ``process.env``; never argv, which ``ps`` shows.
- **Logs bounded.** stderr goes to a ring buffer (status shows its tail)
  and to ``<fleet>/.state/logs/<server>.log`` (``mcp-fleet logs``), rotated
  at a size limit, with the server's secret values masked.
- **Big messages fit.** stdout is read with a 64 MiB line limit; the
  endpoint of an instance is a ``NewlineStream`` over its stdin/stdout that
  the probe uses first and the router takes over afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mcp_fleet.endpoints import Endpoint, StreamEndpoint
from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.logsetup import log_event, redactor
from mcp_fleet.model import RuntimeKind, ServerSpec
from mcp_fleet.private_files import open_private, private_dir, write_private
from mcp_fleet.probe import initialize
from mcp_fleet.runtimes.base import Instance, ObservedState, RuntimeEvent
from mcp_fleet.transport import MAX_MESSAGE_BYTES, MessageStream, NewlineStream

log = logging.getLogger("mcp_fleet.runtimes.process")

#: Variables a server inherits from the controller's environment (nothing else).
INHERITED_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE",
    "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "VIRTUAL_ENV",
)  # fmt: skip
PROCESSES_DIR = "processes"
LOGS_DIR = "logs"
LOG_MAX_BYTES = 5 * 1024 * 1024
STDERR_RING_LINES = 500
_STDERR_LINE_MAX = 16 * 1024
_CUT_MARK = " [line cut: longer than 16 KiB]"
_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel SIGKILL the child when we die (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` we need."""

    pid: int
    state: str
    session: int
    start_time: int  # clock ticks since boot (field 22)

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def read_stat(pid: int) -> ProcStat | None:
    """Parse ``/proc/<pid>/stat`` (None when there is no such process)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(b")") + 2 :].split()
    return ProcStat(pid, rest[0].decode(), int(rest[3]), int(rest[19]))


def session_members(leader: int, start_time: int) -> list[int]:
    """Live processes of the session ``leader`` started (at ``start_time``), leader included."""
    head = read_stat(leader)
    if head is not None and head.start_time != start_time:
        return []  # the pid was reused: that session is not ours
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        st = read_stat(int(entry.name))
        if st and st.alive and st.session == leader and st.start_time >= start_time:
            members.append(st.pid)
    return sorted(members)


def read_log_tail(state_dir: Path, server: str, *, tail: int = 100) -> list[str]:
    """The last ``tail`` lines of a server's log file (for ``mcp-fleet logs``)."""
    path = state_dir / LOGS_DIR / f"{server}.log"
    if not path.exists():
        return []
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 256 * max(tail, 1) - 4096))
        lines = f.read().decode("utf-8", errors="replace").splitlines()
    return lines[-tail:] if tail > 0 else []


class _Child:
    """One process we started: its pipes, its stderr ring, its pid file."""

    def __init__(
        self, instance: Instance, proc: asyncio.subprocess.Process, pidfile: Path,
        logfile: Path, secrets: tuple[str, ...],
    ) -> None:  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        self.instance = instance
        self.proc = proc
        self.pidfile = pidfile
        self.logfile = logfile
        self.secrets = secrets
        self.stream = NewlineStream(proc.stdout, proc.stdin)
        self.ring: collections.deque[str] = collections.deque(maxlen=STDERR_RING_LINES)
        self.endpoint = StreamEndpoint(instance.server, instance.instance_id, self.open)
        self.stderr_task: asyncio.Task[None] | None = None
        self.wait_task: asyncio.Task[None] | None = None

    async def open(self) -> MessageStream:
        return self.stream

    def observed(self) -> Instance:
        code = self.proc.returncode
        if code is None:
            return self.instance
        return replace(self.instance, running=False, exit_code=code)

    def redact(self, line: str) -> str:
        for secret in self.secrets:
            line = line.replace(secret, "***")
        return redactor().redact(line)

    async def pump_stderr(self) -> None:
        """Copy stderr to the ring and the log file, line by line, bounded.

        A line longer than ``_STDERR_LINE_MAX`` keeps its head (marked as cut)
        and the rest of it is dropped up to its newline, so a server writing
        megabytes without a newline costs one bounded line, not thousands.
        The log file is rotated whenever it passes ``LOG_MAX_BYTES``, not only
        when the server starts: a chatty long-lived server cannot fill the disk.
        """
        assert self.proc.stderr is not None
        private_dir(self.logfile.parent)
        out = self._open_log()
        pending = b""
        skipping = False  # inside an over-long line whose head was already kept
        try:
            while chunk := await self.proc.stderr.read(65536):
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                if skipping:
                    if not lines:
                        pending = b""
                        continue
                    lines.pop(0)  # the end of the line that was cut
                    skipping = False
                if len(pending) > _STDERR_LINE_MAX:
                    lines.append(pending)
                    pending, skipping = b"", True
                out = self._emit(lines, out)
            if pending and not skipping:
                out = self._emit([pending], out)
        finally:
            out.close()

    def _open_log(self) -> Any:
        if self.logfile.exists() and self.logfile.stat().st_size > LOG_MAX_BYTES:
            self.logfile.replace(self.logfile.with_suffix(".log.1"))
        return open_private(self.logfile)

    def _emit(self, lines: list[bytes], out: Any) -> Any:
        for raw in lines:
            # Redacted before it is cut, so a secret on the cut is never half shown.
            text = self.redact(raw.decode("utf-8", errors="replace").rstrip())
            if len(text) > _STDERR_LINE_MAX:
                text = text[:_STDERR_LINE_MAX] + _CUT_MARK
            self.ring.append(text)
            out.write(text.encode() + b"\n")
        out.flush()
        if out.tell() > LOG_MAX_BYTES:
            out.close()
            out = self._open_log()
        return out


class ProcessRuntime:
    """Servers as local child processes (the Runtime protocol)."""

    kind = RuntimeKind.PROCESS

    def __init__(
        self,
        *,
        fleet: str,
        state_dir: Path,
        stop_grace: float = 3.0,
        inherited_env: tuple[str, ...] = INHERITED_ENV,
    ) -> None:
        self.fleet = fleet
        self.state_dir = state_dir
        self.home = state_dir.parent
        self.stop_grace = stop_grace
        self.inherited_env = inherited_env
        self._children: dict[str, _Child] = {}
        self._events: asyncio.Queue[RuntimeEvent] = asyncio.Queue()

    @property
    def pid_dir(self) -> Path:
        return self.state_dir / PROCESSES_DIR

    def unsupported_reason(self, spec: ServerSpec) -> str | None:
        if spec.entry is None or spec.entry.process is None or not spec.entry.process.command:
            return "the catalog entry has no `process.command`"
        return _volume_problem(spec)

    def environment(self, spec: ServerSpec) -> dict[str, str]:
        """Minimal inherited env, then secrets, templated env and ``process.env`` on top."""
        env = {k: os.environ[k] for k in self.inherited_env if k in os.environ}
        env.update(spec.secret_env)
        env.update(spec.env)
        if spec.entry is not None and spec.entry.process is not None:
            env.update(spec.entry.process.env)
        return env

    async def start(self, spec: ServerSpec) -> Instance:
        reason = self.unsupported_reason(spec)
        if reason is not None:
            raise RuntimeFailure(f"{spec.name}: {reason}")
        assert spec.entry is not None and spec.entry.process is not None
        pspec = spec.entry.process
        cwd = None if pspec.cwd is None else _resolve_cwd(self.home, pspec.cwd)
        argv = list(pspec.command)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.environment(spec),
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_parent_death_signal(),
                limit=MAX_MESSAGE_BYTES,
            )
        except FileNotFoundError as exc:
            missing = exc.filename or argv[0]
            raise RuntimeFailure(
                f"{spec.name}: cannot run {argv[0]!r}: {missing} not found"
            ) from None
        except OSError as exc:
            raise RuntimeFailure(f"{spec.name}: cannot run {argv[0]!r}: {exc.strerror}") from None
        except ValueError as exc:  # a NUL in argv or env: refused before any fork
            raise RuntimeFailure(f"{spec.name}: cannot run {argv[0]!r}: {exc}") from None
        stat = read_stat(proc.pid)
        start_ticks = stat.start_time if stat else 0
        instance = Instance(
            server=spec.name,
            instance_id=f"pid:{proc.pid}:{start_ticks}",
            runtime=RuntimeKind.PROCESS,
            fleet=self.fleet,
            config_hash=spec.config_hash(),
            running=True,
            started_at=time.time(),
            display=f"pid {proc.pid}",
        )
        pidfile = self.pid_dir / f"{spec.name}.{proc.pid}.json"
        self._write_pidfile(pidfile, instance, proc.pid, start_ticks)
        secrets = tuple(v for v in spec.secret_env.values() if len(v) >= 4)
        child = _Child(
            instance, proc, pidfile, self.state_dir / LOGS_DIR / f"{spec.name}.log", secrets
        )
        child.stderr_task = asyncio.create_task(child.pump_stderr(), name=f"stderr:{spec.name}")
        child.wait_task = asyncio.create_task(self._wait(child), name=f"wait:{spec.name}")
        self._children[instance.instance_id] = child
        return instance

    def _write_pidfile(self, path: Path, instance: Instance, pid: int, ticks: int) -> None:
        private_dir(path.parent)
        record = {
            "pid": pid,
            "start_time": ticks,
            "server": instance.server,
            "fleet": instance.fleet,
            "config_hash": instance.config_hash,
            "started_at": instance.started_at,
        }
        tmp = path.with_suffix(".tmp")
        write_private(tmp, json.dumps(record))
        tmp.replace(path)

    async def _wait(self, child: _Child) -> None:
        code = await child.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, signal.SIGKILL)  # stragglers of its group
        child.pidfile.unlink(missing_ok=True)
        log_event(
            log,
            logging.INFO,
            "process exited",
            server=child.instance.server,
            instance=child.instance.instance_id,
            exit_code=code,
        )
        await self._events.put(RuntimeEvent(child.instance.server, "exit", f"exit code {code}"))

    async def observe(self) -> ObservedState:
        instances = [c.observed() for c in self._children.values()]
        own_pids = {c.proc.pid for c in self._children.values()}
        for path in sorted(self.pid_dir.glob("*.json")) if self.pid_dir.is_dir() else []:
            leftover = self._leftover(path, own_pids)
            if leftover is not None:
                instances.append(leftover)
        return ObservedState(tuple(sorted(instances, key=lambda i: i.instance_id)))

    def _leftover(self, path: Path, own_pids: set[int]) -> Instance | None:
        try:
            record = json.loads(path.read_text())
            pid, ticks = int(record["pid"]), int(record["start_time"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            return None
        if pid in own_pids:
            return None
        if not session_members(pid, ticks):
            path.unlink(missing_ok=True)  # gone (or the pid was reused): nothing to end
            return None
        return Instance(
            server=str(record.get("server", "")),
            instance_id=f"pid:{pid}:{ticks}",
            runtime=RuntimeKind.PROCESS,
            fleet=str(record.get("fleet", self.fleet)),
            config_hash=str(record.get("config_hash", "")),
            running=True,
            started_at=float(record.get("started_at", 0.0)),
            display=f"pid {pid} (left over)",
        )

    async def stop(self, instance: Instance) -> None:
        child = self._children.pop(instance.instance_id, None)
        if child is not None:
            await self._stop_child(child)
            return
        pid, ticks = _parse_id(instance.instance_id)
        await self._end_session(pid, ticks)
        (self.pid_dir / f"{instance.server}.{pid}.json").unlink(missing_ok=True)

    async def _stop_child(self, child: _Child) -> None:
        proc = child.proc
        drain = asyncio.create_task(_drain(proc.stdout), name=f"drain:{child.instance.server}")
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                await child.stream.aclose()  # stdio servers exit on EOF
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.stop_grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        for task in (drain, child.wait_task, child.stderr_task):
            if task is None:
                continue
            try:
                await asyncio.wait_for(asyncio.shield(task), 1.0)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        child.pidfile.unlink(missing_ok=True)

    async def _end_session(self, pid: int, ticks: int) -> None:
        """End a session left over by a previous controller: TERM, then KILL."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            members = session_members(pid, ticks)
            if not members:
                return
            for member in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(member, sig)
            # Not our child: there is no exit to await, so poll /proc until it is gone.
            deadline = time.monotonic() + self.stop_grace
            while time.monotonic() < deadline and session_members(pid, ticks):  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    async def endpoint(self, instance: Instance) -> Endpoint:
        child = self._children.get(instance.instance_id)
        if child is None:
            raise RuntimeFailure(f"{instance.server}: {instance.instance_id} is not ours to reach")
        return child.endpoint

    async def probe(self, instance: Instance, *, timeout: float) -> None:
        child = self._children.get(instance.instance_id)
        if child is None:
            raise RuntimeFailure(f"{instance.server}: {instance.instance_id} is not ours to probe")
        try:
            await initialize(child.stream, timeout=timeout)
        except asyncio.CancelledError:
            # Cut short (the server was disabled or changed mid-probe): the caller
            # stops the process next, so waiting here for its exit only delays that.
            raise
        except BaseException:
            # Let a dying server finish, so the exit code and last words are known.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.proc.wait()), 0.5)
            if child.stderr_task is not None:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(child.stderr_task), 0.2)
            raise

    async def logs(self, instance: Instance, *, tail: int = 100) -> list[str]:
        child = self._children.get(instance.instance_id)
        if child is not None:
            return list(child.ring)[-tail:] if tail > 0 else []
        return read_log_tail(self.state_dir, instance.server, tail=tail)

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        while True:
            yield await self._events.get()

    async def stop_all(self) -> None:
        """Stop every child (the controller is shutting down)."""
        children = list(self._children.values())
        self._children.clear()
        await asyncio.gather(*(self._stop_child(c) for c in children))

    async def aclose(self) -> None:
        return None


async def _drain(reader: asyncio.StreamReader | None) -> None:
    """Read a stopped child's stdout to its end, throwing it away.

    Until its stdout reaches EOF, asyncio neither closes the pipe nor reports
    the exit to ``wait()``; and a pipe whose reader was paused (a server that
    flooded a probe with a line longer than the limit leaves up to twice the
    limit buffered) would never reach EOF, keeping that buffer, the process
    object and its waiters alive forever. Reading stops at EOF, or at once
    when another coroutine (a router) is still reading: then it drains it.
    """
    if reader is None:
        return
    with contextlib.suppress(Exception):
        while await reader.read(1 << 20):
            pass


def _volume_problem(spec: ServerSpec) -> str | None:
    """A volume of the entry that would reach outside its place (``../../etc:/x``...).

    A local process mounts nothing, but an entry whose volumes the docker
    runtime refuses is refused here too, with the same reason: the same
    catalog entry never runs on one runtime and fails on the other.
    """
    from mcp_fleet.runtimes.docker_spec import InvalidContainerSpec, parse_volume

    assert spec.entry is not None
    for volume in spec.entry.volumes:
        try:
            parse_volume(volume, server=spec.name)
        except InvalidContainerSpec as exc:
            return str(exc)
    return None


def _resolve_cwd(home: Path, cwd: str) -> Path:
    """``process.cwd``: ``~`` expanded; relative paths are relative to the fleet directory."""
    return home / Path(cwd).expanduser()


def _parse_id(instance_id: str) -> tuple[int, int]:
    try:
        _, pid, ticks = instance_id.split(":")
        return int(pid), int(ticks)
    except ValueError:
        raise RuntimeFailure(f"not a process instance id: {instance_id}") from None
