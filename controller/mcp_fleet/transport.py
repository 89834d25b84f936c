"""The message-stream abstraction between MCP peers, and its stdio implementation.

Everything that carries MCP messages (a child's stdin/stdout, an attached
container's stdio, an HTTP session) is reduced to one small protocol: send one
JSON-RPC message as bytes, receive the next one as bytes. The controller's
readiness probe and the router's backend sessions both speak through it, so a
server probed by the controller can be taken over by the router unchanged
(servers answer a second ``initialize`` on the same stdio normally).

Messages are kept as bytes (one JSON document, no trailing newline): the
router's hot path parses each message once and forwards bytes where it can.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

#: Upper bound of one stdio message; a backend writing more is cut off.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class StreamClosed(Exception):
    """The peer went away (EOF, process exit, container gone)."""


@runtime_checkable
class MessageStream(Protocol):
    """A bidirectional stream of JSON-RPC messages (one JSON document each)."""

    async def send(self, message: bytes) -> None:
        """Send one message; raises ``StreamClosed`` when the peer is gone."""

    async def receive(self) -> bytes:
        """Wait for the next message; raises ``StreamClosed`` at EOF."""

    async def aclose(self) -> None:
        """Close our side; idempotent."""


class NewlineStream:
    """MCP's stdio framing over asyncio streams: one JSON message per line.

    Used for child processes (their pipes) and anywhere else bytes arrive as
    newline-delimited JSON. Blank lines are skipped; a line longer than
    ``MAX_MESSAGE_BYTES`` closes the stream rather than exhausting memory.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._write_lock = asyncio.Lock()
        self._closed = False

    async def send(self, message: bytes) -> None:
        if self._closed:
            raise StreamClosed("stream closed")
        async with self._write_lock:
            try:
                self._writer.write(message + b"\n")
                await self._writer.drain()
            except (ConnectionError, RuntimeError) as exc:
                self._closed = True
                raise StreamClosed(str(exc) or "peer closed its input") from exc

    async def receive(self) -> bytes:
        while True:
            try:
                line = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    return exc.partial.strip()
                raise StreamClosed("end of stream") from exc
            except asyncio.LimitOverrunError as exc:
                self._closed = True
                raise StreamClosed(f"message larger than the stream limit ({exc})") from exc
            except ConnectionError as exc:
                raise StreamClosed(str(exc)) from exc
            line = line.strip()
            if line:
                return line

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.close()
        except (ConnectionError, RuntimeError):
            pass
