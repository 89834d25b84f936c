"""The stdio frontend: one client on our stdin/stdout (what a client's config launches).

MCP's stdio framing is one JSON message per line. Both pipes are wrapped in a
``NewlineStream`` so oversized lines are skipped with bounded memory, just as
on the backend side. Writes go straight into the stdout transport without
awaiting; reading pauses while more than ``MAX_BACKLOG_BYTES`` wait to be
read by a client that stopped reading, so a stalled client cannot make the
router buffer without bound.

The client's first message (``initialize``) is answered once the fleet
started with the router is there, and a call for a server still starting
waits for it (``startup_gate``, bounded), so a client that calls a tool
right after ``initialize`` does not get "Unknown tool".

When stdin ends the client is gone: its session closes, which cancels every
call it still has in flight at the backend (``notifications/cancelled``),
before the router itself shuts down and stops the servers.

Nothing but protocol is written to stdout: logs go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import sys
import threading
from typing import IO, TYPE_CHECKING, Final

from mcp_fleet.router import jsonrpc
from mcp_fleet.router.callpolicy import CallPolicy, GuardedChannel
from mcp_fleet.router.jsonrpc import RequestId
from mcp_fleet.router.router import Router
from mcp_fleet.router.session import RouterSession
from mcp_fleet.router.startup_gate import INITIALIZE_HOLD_SECONDS, StartupGate
from mcp_fleet.transport import MAX_MESSAGE_BYTES, MessageTooLarge, NewlineStream, StreamClosed

if TYPE_CHECKING:
    from mcp_fleet.gateway.guard import CallGuard

log = logging.getLogger(__name__)

MAX_BACKLOG_BYTES: Final = 64 * 1024 * 1024


class _StdioChannel:
    def __init__(self, stream: NewlineStream) -> None:
        self.stream = stream
        self.buffered = 0
        self.broken = False

    def send(self, data: bytes, *, related: RequestId | None = None, final: bool = False) -> None:
        if self.broken:
            return
        try:
            self.buffered = self.stream.send_nowait(data)
        except StreamClosed:
            self.broken = True


async def open_stdio(
    stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None
) -> tuple[NewlineStream, asyncio.StreamWriter]:
    """A ``NewlineStream`` over this process's stdin and stdout (or the given pipes)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_MESSAGE_BYTES, loop=loop)
    in_fd = _pipe_like((stdin or sys.stdin.buffer).fileno(), reading=True)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(in_fd, "rb", 0)
    )
    out = stdout or sys.stdout.buffer
    # A duplicate so closing our transport never closes the interpreter's own stdout.
    out_file = os.fdopen(_pipe_like(out.fileno(), reading=False), "wb", buffering=0)
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.streams.FlowControlMixin(loop=loop), out_file
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    return NewlineStream(reader, writer), writer


def _pipe_like(fd: int, *, reading: bool) -> int:
    """A duplicate of ``fd`` that event loops accept as a pipe.

    Pipe transports take pipes, sockets and terminals; stdin or stdout
    redirected to a regular file or ``/dev/null`` (``up --transport stdio >
    log``) is none of these, and uvloop aborts the process on it. Anything
    else is bridged through a real pipe by a daemon thread that copies bytes
    between the two.
    """
    mode = os.fstat(fd).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd):
        return os.dup(fd)
    pipe_read, pipe_write = os.pipe()
    source, target = (os.dup(fd), pipe_write) if reading else (pipe_read, os.dup(fd))

    def copy() -> None:
        with contextlib.suppress(OSError):
            while chunk := os.read(source, 65536):
                os.write(target, chunk)
        os.close(source)
        os.close(target)

    threading.Thread(target=copy, name="stdio-file-bridge", daemon=True).start()
    return pipe_read if reading else pipe_write


async def serve_stream(
    router: Router,
    stream: NewlineStream,
    *,
    writer: asyncio.StreamWriter | None = None,
    guard: CallGuard | None = None,
    startup_hold: float = INITIALIZE_HOLD_SECONDS,
) -> None:
    """Serve one client over ``stream`` until it closes.

    ``writer`` is the stream's output side, for back-pressure; ``guard`` the
    gateway's per-call guard (audit, limits, metrics), if any;
    ``startup_hold`` bounds how long ``initialize`` waits for the fleet.
    """
    channel = _StdioChannel(stream)
    policy = CallPolicy(guard, router, session_id="stdio") if guard is not None else None
    session = router.open_session(
        GuardedChannel(channel, policy) if policy is not None else channel, session_id="stdio"
    )
    session.admission = policy

    def dispatch(raw: bytes) -> None:
        if policy is None:
            session.handle(raw)
        elif not session.closed:
            _admit(policy, session, channel, raw)

    gate = StartupGate(router, dispatch, hold=startup_hold)
    try:
        while True:
            try:
                raw = await stream.receive()
            except MessageTooLarge as exc:
                channel.send(jsonrpc.error(None, jsonrpc.INVALID_REQUEST, str(exc)))
                continue
            if gate.active:
                await gate.admit(raw)
            elif policy is None:
                session.handle(raw)
            else:
                _admit(policy, session, channel, raw)
            if channel.buffered > MAX_BACKLOG_BYTES and writer is not None:
                await writer.drain()  # a client that stopped reading: wait for it
                channel.buffered = writer.transport.get_write_buffer_size()
    except StreamClosed:
        pass
    finally:
        gate.close()
        session.close()
        if policy is not None:
            policy.close()


def _admit(policy: CallPolicy, session: RouterSession, channel: _StdioChannel, raw: bytes) -> None:
    try:
        msg = jsonrpc.parse(raw)
    except jsonrpc.InvalidMessage:
        session.handle(raw)  # answers the parse error
        return
    if policy.admit(msg, len(raw), channel):
        session.handle_message(msg)


async def serve_stdio(router: Router, *, guard: CallGuard | None = None) -> None:
    """Serve the client on this process's stdin/stdout until it closes stdin."""
    stream, writer = await open_stdio()
    try:
        await serve_stream(router, stream, writer=writer, guard=guard)
    finally:
        await stream.aclose()
