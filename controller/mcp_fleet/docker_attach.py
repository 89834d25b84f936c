"""A ``MessageStream`` over an attached container's stdio (Docker's attach API).

A stdio MCP server in a container is reached by attaching to it:
``attach_socket`` with stdin, stdout, stderr and stream upgrades one HTTP
connection to the daemon into a raw duplex byte stream. What we write is the
server's stdin; what we read is multiplexed, because the container has no
TTY: frames of an 8-byte header (stream type: 1 stdout, 2 stderr; three
zero bytes; big-endian payload length) and the payload. stdout carries
newline-delimited JSON-RPC; stderr is the server's diagnostics, kept in a
bounded buffer and handed to an optional callback, never mixed into the
protocol.

Why an asyncio ``Protocol`` on the upgraded socket rather than a reader
thread: this stream sits on the router's hot path. The socket is taken out
of the SDK's response, set non-blocking and handed to the event loop, so a
message costs one ``epoll`` wake-up and a parse inside ``data_received``: no
thread hop (a thread costs a ``call_soon_threadsafe`` wake-up, a lock and a
context switch per read, tens of microseconds on a busy machine), no
coroutine per frame, and back-pressure comes from the transport itself
(reading pauses when unread messages pile up; writers wait for ``drain``).
Only the attach request itself (an HTTP round trip) runs in a thread.

Attaching reads nothing the server wrote before the attach: stdio servers
only write replies, and stderr that came earlier is in the container logs.
Bytes the HTTP client had already buffered behind the ``101`` response are
recovered so no frame is lost. Detaching closes only our connection: the
container is created without ``StdinOnce``, so the server's stdin stays
open and it keeps running for the next holder of the stream.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from typing import Any, Final, cast

from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.transport import MAX_MESSAGE_BYTES, StreamClosed

log = logging.getLogger(__name__)

STREAM_STDIN: Final = 0
STREAM_STDOUT: Final = 1
STREAM_STDERR: Final = 2
HEADER_SIZE: Final = 8
#: stderr lines kept per stream for diagnostics (``stderr_tail``).
DEFAULT_STDERR_LINES: Final = 200
#: Unread messages after which we stop reading from the daemon (back-pressure).
HIGH_WATER_MESSAGES: Final = 1024
LOW_WATER_MESSAGES: Final = 64
_MAX_STDERR_LINE: Final = 16 * 1024

ATTACH_PARAMS: Final = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1, "logs": 0}


class FrameDecoder:
    """Incremental demultiplexer of Docker's attach stream into stdout lines and stderr.

    Pure (no I/O), so framing edge cases are unit-tested byte by byte:
    headers split across reads, several frames in one read, a JSON message
    split across frames, several messages in one frame.
    """

    __slots__ = ("_buf", "_line", "_max", "_stderr", "messages", "stderr_lines")

    def __init__(self, *, max_message: int = MAX_MESSAGE_BYTES, stderr_lines: int) -> None:
        self._buf = bytearray()
        self._line = bytearray()
        self._stderr = bytearray()
        self._max = max_message
        self.messages: collections.deque[bytes] = collections.deque()
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=stderr_lines)

    def feed(self, data: bytes) -> list[str]:
        """Consume bytes; complete stdout messages go to ``messages``.

        Returns the stderr lines completed by this chunk. Raises
        ``StreamClosed`` when one message exceeds the size limit.
        """
        buf = self._buf
        buf += data
        new_stderr: list[str] = []
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_SIZE:
            kind = buf[pos]
            length = int.from_bytes(buf[pos + 4 : pos + 8], "big")
            start = pos + HEADER_SIZE
            if end - start < length:
                break
            payload = bytes(buf[start : start + length])
            pos = start + length
            if kind == STREAM_STDOUT:
                self._stdout(payload)
            elif kind == STREAM_STDERR:
                self._stderr_bytes(payload, new_stderr)
        if pos:
            del buf[:pos]
        return new_stderr

    def _stdout(self, payload: bytes) -> None:
        line = self._line
        if not line and payload.endswith(b"\n") and payload.count(b"\n") == 1:
            msg = payload.strip()  # the common case: one whole message per frame
            if msg:
                self.messages.append(msg)
            return
        line += payload
        while True:
            nl = line.find(b"\n")
            if nl < 0:
                break
            msg = bytes(line[:nl]).strip()
            del line[: nl + 1]
            if msg:
                self.messages.append(msg)
        if len(line) > self._max:
            raise StreamClosed(f"message larger than {self._max} bytes")

    def _stderr_bytes(self, payload: bytes, out: list[str]) -> None:
        err = self._stderr
        err += payload
        while True:
            nl = err.find(b"\n")
            if nl < 0:
                break
            text = err[:nl].decode("utf-8", "replace").rstrip("\r")
            del err[: nl + 1]
            self.stderr_lines.append(text)
            out.append(text)
        if len(err) > _MAX_STDERR_LINE:
            text = err.decode("utf-8", "replace")
            err.clear()
            self.stderr_lines.append(text)
            out.append(text)


class _AttachProtocol(asyncio.Protocol):
    """Feeds the decoder from the event loop and wakes the one waiting receiver."""

    def __init__(self, decoder: FrameDecoder, on_stderr: Callable[[str], None] | None) -> None:
        self.decoder = decoder
        self.on_stderr = on_stderr
        self.transport: asyncio.Transport | None = None
        self.closed_reason: str | None = None
        self.reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A read-write transport, though not an asyncio.Transport subclass on uvloop
        # (which ``mcp-fleet router`` and ``up`` run on): no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            lines = self.decoder.feed(data)
        except StreamClosed as exc:
            self.closed_reason = str(exc)
            if self.transport is not None:
                self.transport.close()
            self._wake()
            return
        if lines and self.on_stderr is not None:
            for line in lines:
                self.on_stderr(line)
        if self.decoder.messages:
            if len(self.decoder.messages) >= HIGH_WATER_MESSAGES and self.transport is not None:
                self.transport.pause_reading()
                self.reading_paused = True
            self._wake()

    def eof_received(self) -> bool | None:
        self.closed_reason = self.closed_reason or "container output ended"
        self._wake()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_reason = self.closed_reason or (str(exc) if exc else "attach closed")
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drained(self) -> None:
        if self._drain is not None and not self._drain.done():
            await self._drain

    async def wait_message(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class DockerAttachStream:
    """One attachment to a container's stdio, as a ``MessageStream``.

    One receiver at a time (the router's reader task, or a probe); sends may
    come from many tasks. ``aclose`` detaches: the server keeps running.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: _AttachProtocol,
        *,
        container_id: str,
        keepalive: object = None,
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._decoder = protocol.decoder
        self.container_id = container_id
        # The SDK's HTTP response owns the socket's file object: keep it alive
        # until we close, so its finaliser cannot close the socket under us.
        self._keepalive = keepalive
        self._closed = False

    async def send(self, message: bytes) -> None:
        if self._closed or self._transport.is_closing():
            raise StreamClosed(self._protocol.closed_reason or "attach closed")
        self._transport.write(message + b"\n")
        await self._protocol.drained()

    async def receive(self) -> bytes:
        messages = self._decoder.messages
        while not messages:
            if self._closed or self._protocol.closed_reason is not None:
                raise StreamClosed(self._protocol.closed_reason or "attach closed")
            await self._protocol.wait_message()
        msg = messages.popleft()
        if self._protocol.reading_paused and len(messages) <= LOW_WATER_MESSAGES:
            self._protocol.reading_paused = False
            self._transport.resume_reading()
        return msg

    def stderr_tail(self, lines: int | None = None) -> list[str]:
        """The last stderr lines seen on this attachment (bounded)."""
        tail = list(self._decoder.stderr_lines)
        return tail if lines is None else tail[-lines:]

    async def aclose(self) -> None:
        """Detach (close our connection only); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._transport.close()
        # The socket's fd is only released once the SDK's file objects over it
        # are closed too (socket.makefile reference counting).
        keep, self._keepalive = self._keepalive, None
        for obj in keep if isinstance(keep, tuple) else (keep,):
            close = getattr(obj, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()
        self._protocol._wake()


def _raw_socket(sock_io: Any) -> tuple[socket.socket, bytes, object]:
    """The real socket behind the SDK's attach object, plus any bytes already buffered.

    The SDK returns the ``SocketIO`` under the HTTP response. The HTTP client
    read the ``101`` headers through a buffered reader that may already hold
    the first frames: they are taken out here so the stream starts exactly
    where the headers ended.
    """
    raw = getattr(sock_io, "_sock", None)
    if not isinstance(raw, socket.socket):
        raise RuntimeFailure(
            "attach needs a unix or plain TCP connection to the Docker daemon"
            f" (got {type(sock_io).__name__}); TLS and ssh connections are not supported"
        )
    raw.setblocking(False)
    leftover = b""
    response = getattr(sock_io, "_response", None)
    with contextlib.suppress(AttributeError):
        buffered = response.raw._fp.fp  # type: ignore[union-attr]
        pending = buffered.peek(1)
        if pending:
            leftover = buffered.read1(len(pending))
    return raw, leftover, response


async def open_attach_stream(
    api: Any,
    container_id: str,
    *,
    executor: Executor | None = None,
    on_stderr: Callable[[str], None] | None = None,
    stderr_lines: int = DEFAULT_STDERR_LINES,
) -> DockerAttachStream:
    """Attach to a running container's stdio through ``api`` (a ``docker.APIClient``).

    What a router in another process calls for a ``DockerAttachEndpoint``.
    Raises ``RuntimeFailure`` when the container is gone or not running: the
    daemon accepts an attach to a stopped container and then sends nothing,
    forever, so the state is checked once the attach is in place (an exit
    after that ends the stream).
    """
    import docker.errors  # the SDK stays an import of the docker runtime only

    loop = asyncio.get_running_loop()
    try:
        sock_io = await loop.run_in_executor(
            executor, partial(api.attach_socket, container_id, params=dict(ATTACH_PARAMS))
        )
    except docker.errors.NotFound as exc:
        raise RuntimeFailure(f"container {container_id[:12]} is gone") from exc
    except docker.errors.APIError as exc:
        raise RuntimeFailure(f"cannot attach to {container_id[:12]}: {exc.explanation}") from exc
    raw, leftover, response = _raw_socket(sock_io)
    protocol = _AttachProtocol(FrameDecoder(stderr_lines=stderr_lines), on_stderr)
    if leftover:
        protocol.data_received(leftover)
    if raw.family == socket.AF_UNIX:
        transport, _ = await loop.create_unix_connection(lambda: protocol, sock=raw)
    else:
        transport, _ = await loop.create_connection(lambda: protocol, sock=raw)
    # Keep both the SocketIO and the response referenced while attached.
    stream = DockerAttachStream(
        transport, protocol, container_id=container_id, keepalive=(sock_io, response)
    )
    try:
        info = await loop.run_in_executor(executor, api.inspect_container, container_id)
    except docker.errors.APIError as exc:
        await stream.aclose()
        raise RuntimeFailure(f"container {container_id[:12]} is gone ({exc})") from None
    except BaseException:
        await stream.aclose()
        raise
    state = info.get("State") or {}
    if not state.get("Running"):
        await stream.aclose()
        name = str(info.get("Name") or "").lstrip("/") or container_id[:12]
        raise RuntimeFailure(f"container {name} is not running (exit code {state.get('ExitCode')})")
    return stream
