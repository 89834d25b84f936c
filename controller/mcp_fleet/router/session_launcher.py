"""Starting and stopping the instances of ``sessions: per-client`` servers.

A per-client server (a browser, a shell, a REPL) keeps state that must not
be shared, so every client session gets an instance of its own, started by
the session's first call and stopped when the session ends. This module
starts and stops those instances through the fleet's runtimes; the router's
``per_client`` module decides when.

Who starts them: the router, through this launcher, and not the
controller. The reasons:

- **The lifetime is a client session's**, which only the router sees (an
  HTTP DELETE, an expiry, a stdio EOF). Going through the controller would
  put a reconcile pass, a probe and a second ``initialize`` on every
  session's first call, and teach the level-triggered planner about
  sessions that exist only in the router's memory.
- **A stdio instance's pipes live in one process** anyway: the router must
  hold them, so it may as well spawn them (``mcp-fleet up`` runs both in one
  process; ``mcp-fleet router --dir`` has no launcher, and its per-client
  servers answer calls with the MCP error "per-client sessions need
  mcp-fleet up").
- **Ownership stays separate.** The launcher's runtimes are runtime objects
  of their own: the process runtime keeps its pid files and logs under
  ``<fleet>/.state/sessions/``, containers carry the fleet label
  ``<fleet>.sessions``. The controller's runtimes never observe them, so
  its planner neither adopts one as a server's main instance nor removes it
  as an orphan; the controller only ever sees the per-client server itself,
  which it never runs (``reconcile.demand``).

No leaks, also after ``kill -9``: process instances get the process
runtime's parent-death signal (they die with ``mcp-fleet up``), and
``sweep`` stops every instance of the launcher's runtimes that no live
session holds, at the router's start and periodically, which removes the
containers (and ``sh -c`` grandchildren) a killed ``up`` left behind.

Names are ``<server>-s-<8 hex>``, random per instance: a session id (a bearer
secret over HTTP) never appears in a name, a label or a file name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Protocol

from mcp_fleet import conventions
from mcp_fleet.errors import Diagnostic, FleetConfigError, RuntimeFailure
from mcp_fleet.model import RuntimeKind, ServerSpec
from mcp_fleet.router.attach import connect_endpoint
from mcp_fleet.runtimes.base import Instance, Runtime
from mcp_fleet.runtimes.select import place
from mcp_fleet.transport import MessageStream

log = logging.getLogger(__name__)

#: Under the fleet's state directory: pid files and logs of per-session processes.
SESSIONS_STATE_DIR: Final = "sessions"
#: Appended to the fleet's name in the ownership label of per-session containers.
SESSIONS_FLEET_SUFFIX: Final = ".sessions"
#: Between a server's name and an instance's random part.
INSTANCE_INFIX: Final = "-s-"
#: Per-client instances one router runs at most, all sessions together.
DEFAULT_MAX_INSTANCES: Final = 32
#: Environment variable that changes ``DEFAULT_MAX_INSTANCES`` for ``mcp-fleet up``.
ENV_MAX_INSTANCES: Final = "MCP_FLEET_MAX_SESSION_INSTANCES"


def instance_name(server: str) -> str:
    """A fresh instance name for ``server``: ``<server>-s-<8 random hex>``."""
    return f"{server}{INSTANCE_INFIX}{secrets.token_hex(4)}"


def sessions_fleet(fleet: str) -> str:
    """The ownership label value of per-session containers of ``fleet``."""
    return f"{fleet}{SESSIONS_FLEET_SUFFIX}"


@dataclass(eq=False)
class SessionInstance:
    """One started per-session instance: the stream to it, and how to end it."""

    name: str
    server: str
    stream: MessageStream
    instance_id: str
    instance: Instance | None = None
    runtime: Runtime | None = field(default=None, repr=False)

    async def stop(self) -> None:
        """Close the stream (a stdio server exits on EOF), then stop the instance."""
        with contextlib.suppress(Exception):
            await self.stream.aclose()
        if self.runtime is not None and self.instance is not None:
            await self.runtime.stop(self.instance)
            _forget_logs(self.runtime, self.name)

    async def last_words(self) -> str:
        """The last line the instance wrote to stderr ('' when none or unknown)."""
        if self.runtime is None or self.instance is None:
            return ""
        with contextlib.suppress(Exception):
            lines = await self.runtime.logs(self.instance, tail=5)
            return next((line for line in reversed(lines) if line.strip()), "")
        return ""


class SessionLauncher(Protocol):
    """What the router's per-client sessions need to start and stop instances."""

    async def launch(self, spec: ServerSpec, name: str) -> SessionInstance:
        """Start ``spec`` as the instance ``name`` and open its stream; raises on failure."""

    async def sweep(self, held: Callable[[str], bool]) -> int:
        """Stop every instance whose name ``held`` denies; returns how many were stopped.

        ``held`` is asked after observing, so an instance whose start began
        meanwhile (its name is held before it starts) is never taken for stale.
        """

    async def aclose(self) -> None:
        """Release the runtimes (instances are stopped by their sessions first)."""


class RuntimeLauncher:
    """Per-session instances on runtimes of their own (see the module docstring)."""

    def __init__(self, runtimes: Mapping[RuntimeKind, Runtime], *, preferred: RuntimeKind) -> None:
        self.runtimes = dict(runtimes)
        self.preferred = preferred

    async def launch(self, spec: ServerSpec, name: str) -> SessionInstance:
        own = replace(spec, name=name)
        placement = place(own, preferred=self.preferred, available=frozenset(self.runtimes))
        runtime = self.runtimes.get(placement.kind) if placement.kind is not None else None
        if runtime is None:
            raise RuntimeFailure(placement.message or f"{spec.name}: no runtime can run it here")
        why = runtime.unsupported_reason(own)
        if why:
            raise RuntimeFailure(why.replace(name, spec.name))
        instance = await runtime.start(own)
        try:
            endpoint = await runtime.endpoint(instance)
            stream = await connect_endpoint(endpoint)
        except BaseException:
            with contextlib.suppress(Exception):
                await runtime.stop(instance)
            raise
        return SessionInstance(
            name=name,
            server=spec.name,
            stream=stream,
            instance_id=instance.instance_id,
            instance=instance,
            runtime=runtime,
        )

    async def sweep(self, held: Callable[[str], bool]) -> int:
        stopped = 0
        for kind, runtime in sorted(self.runtimes.items(), key=lambda kv: kv[0].value):
            try:
                observed = await runtime.observe()
            except (RuntimeFailure, OSError) as exc:
                log.debug("per-session %s instances not observed: %s", kind.value, exc)
                continue
            for instance in observed.instances:
                if held(instance.server):
                    continue
                try:
                    await runtime.stop(instance)
                except (RuntimeFailure, OSError) as exc:
                    log.warning("cannot stop the stale instance %s: %s", instance.server, exc)
                    continue
                _forget_logs(runtime, instance.server)
                stopped += 1
                log.info(
                    "stopped %s: its client session is gone", instance.display or instance.server
                )
        return stopped

    async def aclose(self) -> None:
        for runtime in self.runtimes.values():
            with contextlib.suppress(Exception):
                await runtime.aclose()


def build_session_launcher(
    kinds: Iterable[RuntimeKind], *, preferred: RuntimeKind, fleet: str, home: Path
) -> RuntimeLauncher:
    """Runtimes of their own for per-session instances, one per kind the controller runs.

    The process runtime keeps its state under ``<home>/.state/sessions`` but
    resolves a relative ``process.cwd`` against the fleet directory, as the
    controller's does. The Docker SDK is imported only for the docker kind.
    """
    from mcp_fleet.runtimes.process import ProcessRuntime

    runtimes: dict[RuntimeKind, Runtime] = {}
    for kind in set(kinds):
        if kind is RuntimeKind.PROCESS:
            state_dir = home / conventions.STATE_DIR / SESSIONS_STATE_DIR
            process = ProcessRuntime(fleet=sessions_fleet(fleet), state_dir=state_dir)
            process.home = home
            runtimes[kind] = process
        elif kind is RuntimeKind.DOCKER:
            from mcp_fleet.runtimes.docker import DockerRuntime

            runtimes[kind] = DockerRuntime(fleet=sessions_fleet(fleet))
    return RuntimeLauncher(runtimes, preferred=preferred)


def session_launcher(home: Path, preferred: RuntimeKind) -> RuntimeLauncher:
    """The launcher ``mcp-fleet up`` gives its router: the kinds its controller runs
    (always ``process``, plus ``preferred``), for the fleet directory ``home``."""
    return build_session_launcher(
        {RuntimeKind.PROCESS, preferred},
        preferred=preferred,
        fleet=conventions.fleet_name(home),
        home=home,
    )


def max_session_instances(environ: Mapping[str, str] | None = None) -> int:
    """The cap on per-client instances: ``MCP_FLEET_MAX_SESSION_INSTANCES``, else 32.

    Raises ``FleetConfigError`` naming the variable when it is not a positive integer.
    """
    raw = (os.environ if environ is None else environ).get(ENV_MAX_INSTANCES, "").strip()
    if not raw:
        return DEFAULT_MAX_INSTANCES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise FleetConfigError(
            Diagnostic(f"expected a positive integer, got {raw!r}", field=ENV_MAX_INSTANCES)
        )
    return value


def _forget_logs(runtime: Runtime, name: str) -> None:
    """Delete a stopped per-session process's log files: one per session would pile up."""
    state_dir = getattr(runtime, "state_dir", None)
    if runtime.kind is not RuntimeKind.PROCESS or not isinstance(state_dir, Path):
        return
    from mcp_fleet.runtimes.process import LOGS_DIR

    for suffix in (".log", ".log.1"):
        with contextlib.suppress(OSError):
            (state_dir / LOGS_DIR / f"{name}{suffix}").unlink(missing_ok=True)


async def stop_quietly(instance: SessionInstance) -> None:
    """``instance.stop()``, logging (not raising) a failure: stops run in the background."""
    try:
        await instance.stop()
    except (TimeoutError, RuntimeFailure, OSError) as exc:
        log.warning("cannot stop %s: %s", instance.name, exc)
