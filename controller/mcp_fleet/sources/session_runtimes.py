"""Per-client instances on the fleet's runtimes: the launcher ``mcp-fleet up`` gives its router.

A per-client server (a browser, a shell, a REPL) keeps state that must not
be shared, so every client session gets an instance of its own, started by
the session's first call and stopped when the session ends. This module
starts and stops those instances through the fleet's runtimes (it implements
the router's ``SessionLauncher``); the router's ``per_client`` module decides
when.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Final

from mcp_fleet import conventions
from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.model import RuntimeKind, ServerSpec
from mcp_fleet.router.attach import connect_endpoint
from mcp_fleet.router.session_launcher import SessionInstance
from mcp_fleet.runtimes.base import Instance, Runtime
from mcp_fleet.runtimes.select import place

log = logging.getLogger(__name__)

#: Under the fleet's state directory: pid files and logs of per-session processes.
SESSIONS_STATE_DIR: Final = "sessions"
#: Appended to the fleet's name in the ownership label of per-session containers.
SESSIONS_FLEET_SUFFIX: Final = ".sessions"


def sessions_fleet(fleet: str) -> str:
    """The ownership label value of per-session containers of ``fleet``."""
    return f"{fleet}{SESSIONS_FLEET_SUFFIX}"


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
            halt=lambda: _stop(runtime, instance, name),
            tail=lambda: runtime.logs(instance, tail=5),
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


async def _stop(runtime: Runtime, instance: Instance, name: str) -> None:
    await runtime.stop(instance)
    _forget_logs(runtime, name)


def _forget_logs(runtime: Runtime, name: str) -> None:
    """Delete a stopped per-session process's log files: one per session would pile up."""
    state_dir = getattr(runtime, "state_dir", None)
    if runtime.kind is not RuntimeKind.PROCESS or not isinstance(state_dir, Path):
        return
    from mcp_fleet.runtimes.process import LOGS_DIR

    for suffix in (".log", ".log.1"):
        with contextlib.suppress(OSError):
            (state_dir / LOGS_DIR / f"{name}{suffix}").unlink(missing_ok=True)
