"""The stdio frontend: one client on our stdin/stdout (what a client's config launches).

MCP's stdio framing is one JSON message per line. Both pipes are wrapped in a
``NewlineStream`` so oversized lines are skipped with bounded memory, just as
on the backend side. Writes go straight into the stdout transport without
awaiting; reading pauses while more than ``MAX_BACKLOG_BYTES`` wait to be
read by a client that stopped reading, so a stalled client cannot make the
router buffer without bound.

Nothing but protocol is written to stdout: logs go to stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import IO, Final

from mcp_fleet.router import jsonrpc
from mcp_fleet.router.jsonrpc import RequestId
from mcp_fleet.router.router import Router
from mcp_fleet.transport import MAX_MESSAGE_BYTES, MessageTooLarge, NewlineStream, StreamClosed

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
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), stdin or sys.stdin.buffer
    )
    out = stdout or sys.stdout.buffer
    # A duplicate so closing our transport never closes the interpreter's own stdout.
    out_file = os.fdopen(os.dup(out.fileno()), "wb", buffering=0)
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.streams.FlowControlMixin(loop=loop), out_file
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    return NewlineStream(reader, writer), writer


async def serve_stream(
    router: Router, stream: NewlineStream, *, writer: asyncio.StreamWriter | None = None
) -> None:
    """Serve one client over ``stream`` until it closes.

    ``writer`` is the stream's output side, for back-pressure.
    """
    channel = _StdioChannel(stream)
    session = router.open_session(channel, session_id="stdio")
    try:
        while True:
            try:
                raw = await stream.receive()
            except MessageTooLarge as exc:
                channel.send(jsonrpc.error(None, jsonrpc.INVALID_REQUEST, str(exc)))
                continue
            session.handle(raw)
            if channel.buffered > MAX_BACKLOG_BYTES and writer is not None:
                await writer.drain()  # a client that stopped reading: wait for it
                channel.buffered = writer.transport.get_write_buffer_size()
    except StreamClosed:
        pass
    finally:
        session.close()


async def serve_stdio(router: Router) -> None:
    """Serve the client on this process's stdin/stdout until it closes stdin."""
    stream, writer = await open_stdio()
    try:
        await serve_stream(router, stream, writer=writer)
    finally:
        await stream.aclose()
