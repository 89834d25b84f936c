"""A ``MessageStream`` to a server that speaks MCP over HTTP (streamable HTTP or legacy SSE).

Remote servers (catalog ``type: remote``) and containers or pods that serve
HTTP are reached through this, so the router's ``BackendSession`` treats
every backend alike: send a message, receive the next one.

Streamable HTTP: every message is one POST; ``send`` returns at once and the
POST runs as its own task, so calls to one HTTP backend overlap as they do
on stdio. A JSON answer, or each event of an SSE answer, becomes the next
received message; the session id from the ``initialize`` answer goes on
every later request, and once the session is up a GET stream (when the
server offers one) carries what the server sends unprompted. An HTTP error
for a request becomes a JSON-RPC error for that request, so the caller's
call fails with the reason instead of hanging.

Legacy SSE: one GET stream carries everything the server sends; its first
event names the URL to POST messages to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final
from urllib.parse import urljoin

import httpx

from mcp_fleet.router import jsonrpc
from mcp_fleet.transport import StreamClosed

log = logging.getLogger(__name__)

_ACCEPT: Final = "application/json, text/event-stream"
_CLOSED: Final = b""


async def _sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of an SSE response."""
    event, data = "message", list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)


class _HttpBase:
    def __init__(self, url: str, headers: Mapping[str, str], *, timeout: float) -> None:
        self.url = url
        self.headers = dict(headers)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, read=None))
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def receive(self) -> bytes:
        if self._closed and self._inbox.empty():
            raise StreamClosed("connection closed")
        data = await self._inbox.get()
        if data is _CLOSED:
            self._closed = True
            raise StreamClosed(self.close_reason)
        return data

    close_reason = "connection closed"

    def _fail(self, reason: str) -> None:
        if not self._closed:
            self.close_reason = reason
            self._inbox.put_nowait(_CLOSED)

    def _error_for(self, message: bytes, reason: str) -> None:
        """Turn a failed POST of a request into that request's error response."""
        try:
            msg = jsonrpc.parse(message)
        except jsonrpc.InvalidMessage:
            return
        if "method" in msg and jsonrpc.valid_id(msg.get("id")):
            self._inbox.put_nowait(jsonrpc.error(msg["id"], jsonrpc.INTERNAL_ERROR, reason))

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await self._client.aclose()


class StreamableHttpStream(_HttpBase):
    """The streamable HTTP transport, client side."""

    def __init__(self, url: str, headers: Mapping[str, str], *, timeout: float = 30.0) -> None:
        super().__init__(url, headers, timeout=timeout)
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._get_started = False

    async def send(self, message: bytes) -> None:
        if self._closed:
            raise StreamClosed(self.close_reason)
        self._spawn(self._post(message))

    def _request_headers(self) -> dict[str, str]:
        headers = {**self.headers, "accept": _ACCEPT, "content-type": "application/json"}
        if self.session_id:
            headers["mcp-session-id"] = self.session_id
        if self.protocol_version:
            headers["mcp-protocol-version"] = self.protocol_version
        return headers

    async def _post(self, message: bytes) -> None:
        try:
            async with self._client.stream(
                "POST", self.url, content=message, headers=self._request_headers()
            ) as response:
                sid = response.headers.get("mcp-session-id")
                if sid and not self.session_id:
                    self.session_id = sid
                if response.status_code == 202:
                    self._maybe_start_get()
                    return
                if response.status_code == 404 and self.session_id:
                    self._fail("the server ended the session (HTTP 404)")
                    return
                if response.status_code >= 400:
                    body = (await response.aread())[:200].decode("utf-8", "replace")
                    self._error_for(message, f"HTTP {response.status_code}: {body}")
                    return
                ctype = response.headers.get("content-type", "")
                if ctype.startswith("text/event-stream"):
                    async for _, data in _sse_events(response):
                        self._deliver(data.encode())
                else:
                    self._deliver(await response.aread())
        except httpx.HTTPError as exc:
            self._error_for(message, f"{type(exc).__name__}: {exc}")
        except asyncio.CancelledError:
            raise

    def _deliver(self, data: bytes) -> None:
        if not data.strip():
            return
        if self.protocol_version is None and b'"protocolVersion"' in data:
            with contextlib.suppress(jsonrpc.InvalidMessage):
                result = jsonrpc.parse(data, max_depth=None).get("result")
                if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
                    self.protocol_version = result["protocolVersion"]
        self._inbox.put_nowait(data)

    def _maybe_start_get(self) -> None:
        if self.session_id and self.protocol_version and not self._get_started:
            self._get_started = True
            self._spawn(self._get_stream())

    async def _get_stream(self) -> None:
        headers = self._request_headers()
        headers["accept"] = "text/event-stream"
        with contextlib.suppress(httpx.HTTPError):
            async with self._client.stream("GET", self.url, headers=headers) as response:
                if response.status_code != 200:
                    return  # the server offers no standalone stream (405): fine
                async for _, data in _sse_events(response):
                    self._deliver(data.encode())

    async def aclose(self) -> None:
        if self.session_id and not self._closed:
            with contextlib.suppress(httpx.HTTPError):
                await self._client.delete(self.url, headers=self._request_headers(), timeout=2.0)
        await super().aclose()


class SseStream(_HttpBase):
    """The legacy HTTP+SSE transport (2024-11-05), client side."""

    def __init__(self, url: str, headers: Mapping[str, str], *, timeout: float = 30.0) -> None:
        super().__init__(url, headers, timeout=timeout)
        self._endpoint: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def connect(self) -> None:
        self._spawn(self._listen())
        await asyncio.wait_for(asyncio.shield(self._endpoint), timeout=30.0)

    async def _listen(self) -> None:
        reason = "the server closed the event stream"
        try:
            async with self._client.stream(
                "GET", self.url, headers={**self.headers, "accept": "text/event-stream"}
            ) as response:
                if response.status_code != 200:
                    reason = f"HTTP {response.status_code} on the event stream"
                else:
                    async for event, data in _sse_events(response):
                        if event == "endpoint":
                            if not self._endpoint.done():
                                self._endpoint.set_result(urljoin(self.url, data.strip()))
                        elif data.strip():
                            self._inbox.put_nowait(data.encode())
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if not self._endpoint.done():
            self._endpoint.set_exception(StreamClosed(reason))
        self._fail(reason)

    async def send(self, message: bytes) -> None:
        if self._closed:
            raise StreamClosed(self.close_reason)
        self._spawn(self._post(message))

    async def _post(self, message: bytes) -> None:
        try:
            endpoint = await self._endpoint
            response = await self._client.post(
                endpoint,
                content=message,
                headers={**self.headers, "content-type": "application/json"},
            )
            if response.status_code >= 400:
                self._error_for(message, f"HTTP {response.status_code}: {response.text[:200]}")
        except (httpx.HTTPError, StreamClosed) as exc:
            self._error_for(message, f"{type(exc).__name__}: {exc}")


async def open_http_stream(
    url: str, *, transport: str = "streamable-http", headers: Mapping[str, str] | None = None
) -> StreamableHttpStream | SseStream:
    """A message stream to the MCP server at ``url`` over ``transport`` (streamable-http or sse)."""
    if transport == "sse":
        stream = SseStream(url, headers or {})
        try:
            await stream.connect()
        except BaseException:
            await stream.aclose()
            raise
        return stream
    return StreamableHttpStream(url, headers or {})
