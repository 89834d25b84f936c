"""Servers given on the command line: child processes published straight to an endpoint table.

``mcp-fleet router --server time='python -m mcp_server_time'`` fronts servers
without a fleet directory or a controller, like a plain MCP proxy; the
benchmark and the router's tests use the same path. Each server is started as
a child process with its stdio wrapped in a ``NewlineStream``, published as a
``StreamEndpoint``, and the router's own ``initialize`` is its readiness
check. Children are not restarted: that is the controller's job, and a fleet
directory is the way to get it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mcp_fleet.endpoints import EndpointEntry, EndpointTable, StreamEndpoint
from mcp_fleet.errors import Diagnostic, FleetConfigError
from mcp_fleet.model import CatalogEntry, ProcessSpec, ServerSpec
from mcp_fleet.transport import MAX_MESSAGE_BYTES, MessageStream, NewlineStream

_SOURCE = Path("<command line>")


@dataclass
class AdhocServer:
    """A running child and how the router reaches it."""

    spec: ServerSpec
    process: asyncio.subprocess.Process
    stream: NewlineStream

    @property
    def entry(self) -> EndpointEntry:
        async def open_stream() -> MessageStream:
            return self.stream

        endpoint = StreamEndpoint(self.spec.name, f"pid:{self.process.pid}", open_stream)
        return EndpointEntry(self.spec, endpoint)


def parse_server_option(text: str) -> tuple[str, list[str]]:
    """``NAME=COMMAND ARGS...`` (shell-quoted) into a name and an argv."""
    name, sep, command = text.partition("=")
    name = name.strip()
    if not sep or not name or not command.strip():
        raise FleetConfigError(Diagnostic(f"expected NAME=COMMAND, got {text!r}", field="--server"))
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise FleetConfigError(Diagnostic(f"{exc} in {text!r}", field="--server")) from None
    return name, argv


def adhoc_spec(
    name: str,
    argv: Sequence[str],
    *,
    call_timeout: float | None = None,
    prefix: str | None = None,
    tools_allow: tuple[str, ...] | None = None,
) -> ServerSpec:
    entry = CatalogEntry(
        name=name,
        source=_SOURCE,
        process=ProcessSpec(command=tuple(argv)),
        call_timeout_seconds=call_timeout,
        prefix=prefix,
    )
    return ServerSpec(name=name, enabled=True, entry=entry, tools_allow=tools_allow)


class AdhocFleet:
    """Child-process servers published to an ``EndpointTable`` as they start and stop."""

    def __init__(
        self, *, stderr: int | IO[Any] | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.table = EndpointTable()
        self.servers: dict[str, AdhocServer] = {}
        self._stderr = stderr
        self._env = dict(env) if env is not None else None

    async def start(self, spec: ServerSpec, *, publish: bool = True) -> AdhocServer:
        assert spec.entry is not None and spec.entry.process is not None
        argv = spec.entry.process.command
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr,
            env=self._env,
            limit=MAX_MESSAGE_BYTES,
            start_new_session=True,  # a group of its own: its stop takes a wrapper's children
        )
        assert proc.stdin is not None and proc.stdout is not None
        server = AdhocServer(spec, proc, NewlineStream(proc.stdout, proc.stdin))
        self.servers[spec.name] = server
        if publish:
            await self.publish()
        return server

    async def add(self, name: str, argv: Sequence[str], **spec_options: Any) -> AdhocServer:
        return await self.start(adhoc_spec(name, argv, **spec_options))

    async def remove(self, name: str) -> None:
        server = self.servers.pop(name, None)
        await self.publish()
        if server is not None:
            await _stop(server.process)

    async def publish(self) -> None:
        await self.table.publish({name: s.entry for name, s in self.servers.items()})

    async def aclose(self) -> None:
        servers, self.servers = list(self.servers.values()), {}
        await self.table.publish({})
        await asyncio.gather(*(_stop(s.process) for s in servers))

    async def __aenter__(self) -> AdhocFleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _stop(proc: asyncio.subprocess.Process, *, grace: float = 0.5) -> None:
    """End a server: EOF first (a stdio server exits on it), then SIGTERM, then SIGKILL to
    its whole process group, so what a wrapper (``sh -c ...``) started goes with it."""
    if proc.returncode is None:
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=grace)
    if proc.returncode is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=grace)
        except TimeoutError:
            _signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
    _signal_group(proc.pid, signal.SIGTERM)  # whatever the server left behind in its group


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
