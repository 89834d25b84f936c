"""How the router gets an instance of a ``sessions: per-client`` server per client session.

A per-client server (a browser, a shell, a REPL) keeps state that must not
be shared, so every client session gets an instance of its own, started by
the session's first call and stopped when the session ends. The router's
``per_client`` module decides when; a ``SessionLauncher`` starts and stops
them. The launcher ``mcp-fleet up`` gives its router runs them on the
fleet's runtimes (``mcp_fleet.sources.session_runtimes``, where the reasons
why the router and not the controller starts them are written down); the
router core only knows this interface, so it imports no runtime.

Names are ``<server>-s-<8 hex>``, random per instance: a session id (a bearer
secret over HTTP) never appears in a name, a label or a file name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from mcp_fleet.errors import Diagnostic, FleetConfigError, RuntimeFailure
from mcp_fleet.model import ServerSpec
from mcp_fleet.transport import MessageStream

log = logging.getLogger(__name__)

#: Between a server's name and an instance's random part.
INSTANCE_INFIX: Final = "-s-"
#: Per-client instances one router runs at most, all sessions together.
DEFAULT_MAX_INSTANCES: Final = 32
#: Environment variable that changes ``DEFAULT_MAX_INSTANCES`` for ``mcp-fleet up``.
ENV_MAX_INSTANCES: Final = "MCP_FLEET_MAX_SESSION_INSTANCES"


def instance_name(server: str) -> str:
    """A fresh instance name for ``server``: ``<server>-s-<8 random hex>``."""
    return f"{server}{INSTANCE_INFIX}{secrets.token_hex(4)}"


@dataclass(eq=False)
class SessionInstance:
    """One started per-session instance: the stream to it, and how to end it.

    ``halt`` stops what runs behind the stream (a process, a container) and
    ``tail`` reads its last lines of stderr; the launcher that started it
    provides both, so the router never touches a runtime itself.
    """

    name: str
    server: str
    stream: MessageStream
    instance_id: str
    halt: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)
    tail: Callable[[], Awaitable[list[str]]] | None = field(default=None, repr=False)

    async def stop(self) -> None:
        """Close the stream (a stdio server exits on EOF), then stop the instance."""
        with contextlib.suppress(Exception):
            await self.stream.aclose()
        if self.halt is not None:
            await self.halt()

    async def last_words(self) -> str:
        """The last line the instance wrote to stderr ('' when none or unknown)."""
        if self.tail is None:
            return ""
        with contextlib.suppress(Exception):
            lines = await self.tail()
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


async def stop_quietly(instance: SessionInstance) -> None:
    """``instance.stop()``, logging (not raising) a failure: stops run in the background."""
    try:
        await instance.stop()
    except (TimeoutError, RuntimeFailure, OSError) as exc:
        log.warning("cannot stop %s: %s", instance.name, exc)
