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
import contextlib
from typing import Protocol, runtime_checkable

#: Upper bound of one stdio message; a backend writing more is cut off.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class StreamClosed(Exception):
    """The peer went away (EOF, process exit, container gone)."""


class MessageTooLarge(StreamClosed):
    """One message exceeded the stream's limit and was discarded.

    A subclass of ``StreamClosed`` so callers that only know that one treat it
    as fatal; a caller that catches it first may go on receiving: the
    oversized line has been skipped, the stream is still usable.
    """


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
    newline-delimited JSON. Blank lines are skipped; a line longer than the
    reader's limit (set where the reader is made, up to ``MAX_MESSAGE_BYTES``)
    is read and thrown away piece by piece, so memory stays bounded, and
    ``MessageTooLarge`` is raised; the stream stays usable after it.
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
                dropped = await self._discard_line(exc.consumed)
                raise MessageTooLarge(
                    f"message of more than {dropped} bytes exceeds the stream limit; skipped"
                ) from exc
            except ConnectionError as exc:
                raise StreamClosed(str(exc)) from exc
            line = line.strip()
            if line:
                return line

    def send_nowait(self, message: bytes) -> int:
        """Queue one message without waiting for the peer to read it.

        Returns how many bytes are still buffered towards the peer, so a
        caller can refuse more work for a peer that stopped reading instead
        of blocking on it. Raises ``StreamClosed`` when the peer is gone.
        """
        if self._closed or self._writer.is_closing():
            self._closed = True
            raise StreamClosed("stream closed")
        self._writer.write(message + b"\n")
        return self._writer.transport.get_write_buffer_size()

    async def _discard_line(self, consumed: int) -> int:
        """Drop the rest of an oversized line; returns how many bytes were dropped."""
        dropped = 0
        while True:
            try:
                dropped += len(await self._reader.readexactly(max(consumed, 1)))
                dropped += len(await self._reader.readuntil(b"\n"))
                return dropped
            except asyncio.LimitOverrunError as more:
                consumed = more.consumed
            except asyncio.IncompleteReadError as exc:
                raise StreamClosed("end of stream inside an oversized message") from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ConnectionError, RuntimeError):
            self._writer.close()
