"""Docker attach framing: the multiplexed stream split into JSON-RPC messages and stderr.

The decoder is fed the bytes a daemon sends, cut at every possible place;
the stream is exercised over a socket pair standing in for the daemon's
upgraded connection (real sockets, real event loop).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp_fleet.docker_attach import (
    DockerAttachStream,
    FrameDecoder,
    _AttachProtocol,
    open_attach_stream,
)
from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.transport import StreamClosed


def frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", kind, len(payload)) + payload


def test_one_message_per_frame() -> None:
    d = FrameDecoder(stderr_lines=10)
    d.feed(frame(1, b'{"id":1}\n') + frame(1, b'{"id":2}\n'))
    assert list(d.messages) == [b'{"id":1}', b'{"id":2}']


def test_message_split_across_frames_and_frames_split_across_reads() -> None:
    d = FrameDecoder(stderr_lines=10)
    data = frame(1, b'{"id":') + frame(2, b"warming up\n") + frame(1, b'1}\n{"id":2}\n\n')
    for i in range(len(data)):
        d.feed(data[i : i + 1])
    assert list(d.messages) == [b'{"id":1}', b'{"id":2}']
    assert list(d.stderr_lines) == ["warming up"]


def test_stderr_never_reaches_the_protocol_and_is_bounded() -> None:
    d = FrameDecoder(stderr_lines=3)
    new = d.feed(b"".join(frame(2, f"line {i}\n".encode()) for i in range(10)))
    assert not d.messages
    assert new == [f"line {i}" for i in range(10)]
    assert list(d.stderr_lines) == ["line 7", "line 8", "line 9"]


def test_oversized_message_closes_the_stream() -> None:
    d = FrameDecoder(stderr_lines=3, max_message=100)
    with pytest.raises(StreamClosed, match="larger than"):
        d.feed(frame(1, b"x" * 200))


@settings(max_examples=60, deadline=None)
@given(
    messages=st.lists(
        st.binary(min_size=1, max_size=50).map(lambda b: b.replace(b"\n", b"a").strip() or b"z"),
        max_size=8,
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=20),
    frame_size=st.integers(min_value=1, max_value=30),
)
def test_any_framing_and_any_read_sizes_give_the_same_messages(
    messages: list[bytes], cuts: list[int], frame_size: int
) -> None:
    stdout = b"".join(m + b"\n" for m in messages)
    data = b"".join(frame(1, stdout[i : i + frame_size]) for i in range(0, len(stdout), frame_size))
    d = FrameDecoder(stderr_lines=5)
    pos = 0
    for cut in cuts:
        d.feed(data[pos : pos + cut])
        pos += cut
    d.feed(data[pos:])
    assert list(d.messages) == messages


async def _pair() -> tuple[DockerAttachStream, socket.socket, list[str]]:
    ours, daemon = socket.socketpair()
    ours.setblocking(False)
    seen: list[str] = []
    protocol = _AttachProtocol(FrameDecoder(stderr_lines=10), seen.append)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_unix_connection(lambda: protocol, sock=ours)
    return DockerAttachStream(transport, protocol, container_id="c" * 64), daemon, seen


async def test_stream_sends_lines_and_receives_demultiplexed_messages() -> None:
    stream, daemon, seen = await _pair()
    daemon.setblocking(False)
    loop = asyncio.get_running_loop()
    await stream.send(b'{"id":1,"method":"ping"}')
    assert await loop.sock_recv(daemon, 100) == b'{"id":1,"method":"ping"}\n'
    await loop.sock_sendall(daemon, frame(2, b"log line\n") + frame(1, b'{"id":1,"result":{}}\n'))
    assert await asyncio.wait_for(stream.receive(), 5) == b'{"id":1,"result":{}}'
    assert seen == ["log line"]
    assert stream.stderr_tail() == ["log line"]
    daemon.close()
    with pytest.raises(StreamClosed):
        await asyncio.wait_for(stream.receive(), 5)
    await stream.aclose()
    await stream.aclose()  # idempotent


async def test_detach_closes_only_our_connection() -> None:
    stream, daemon, _ = await _pair()
    await stream.aclose()
    daemon.setblocking(False)
    loop = asyncio.get_running_loop()
    assert await asyncio.wait_for(loop.sock_recv(daemon, 10), 5) == b""  # peer sees EOF
    with pytest.raises(StreamClosed):
        await stream.send(b"{}")
    daemon.close()


async def test_many_unread_messages_pause_reading_until_consumed() -> None:
    stream, daemon, _ = await _pair()
    loop = asyncio.get_running_loop()
    daemon.setblocking(False)
    count = 3000
    payload = b"".join(frame(1, b'{"n":%d}\n' % i) for i in range(count))
    await loop.sock_sendall(daemon, payload)
    for _ in range(100):
        if stream._protocol.reading_paused:
            break
        await asyncio.sleep(0.01)
    assert stream._protocol.reading_paused  # stopped reading at the high-water mark
    got = [await asyncio.wait_for(stream.receive(), 5) for _ in range(count)]
    assert not stream._protocol.reading_paused
    assert got == [b'{"n":%d}' % i for i in range(count)]
    await stream.aclose()
    daemon.close()


class _FakeApi:
    """Stands in for ``docker.APIClient``: hands out the upgraded socket as the SDK does."""

    def __init__(self, running: bool, head: bytes) -> None:
        self.ours, self.daemon = socket.socketpair()
        self.running = running
        self.head = head

    def attach_socket(self, container: str, params: dict[str, int]) -> object:
        assert params["stdin"] and params["stdout"] and params["stderr"] and params["stream"]
        assert not params["logs"]
        # What the daemon sends: the 101 headers and, in the same read, first frames.
        self.daemon.sendall(b"HTTP/1.1 101 UPGRADED\r\nContent-Type: x\r\n\r\n" + self.head)
        fp = self.ours.makefile("rb")
        while fp.readline() not in (b"\r\n", b""):
            pass  # the HTTP client read the headers through a buffer holding the frames
        response = SimpleNamespace(raw=SimpleNamespace(_fp=SimpleNamespace(fp=fp)), close=fp.close)
        sock_io = fp.raw
        sock_io._response = response  # type: ignore[attr-defined]
        return sock_io

    def inspect_container(self, container: str) -> dict[str, object]:
        return {
            "Name": "/srv",
            "State": {"Running": self.running, "ExitCode": 0 if self.running else 3},
        }


async def test_frames_buffered_behind_the_101_headers_are_not_lost() -> None:
    api = _FakeApi(True, frame(2, b"booting\n") + frame(1, b'{"early":1}\n'))
    stream = await open_attach_stream(api, "c" * 64)
    assert await asyncio.wait_for(stream.receive(), 5) == b'{"early":1}'
    assert stream.stderr_tail() == ["booting"]
    api.daemon.sendall(frame(1, b'{"late":2}\n'))
    assert await asyncio.wait_for(stream.receive(), 5) == b'{"late":2}'
    await stream.aclose()
    api.daemon.setblocking(False)
    loop = asyncio.get_running_loop()
    assert await asyncio.wait_for(loop.sock_recv(api.daemon, 10), 5) == b""  # detached
    api.daemon.close()


async def test_attaching_to_a_stopped_container_fails_instead_of_hanging() -> None:
    api = _FakeApi(False, b"")
    with pytest.raises(RuntimeFailure, match="srv is not running"):
        await open_attach_stream(api, "c" * 64)
    api.daemon.close()
