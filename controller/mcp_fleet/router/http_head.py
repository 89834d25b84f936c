"""The head of the request a connection is reading: its URL and headers, within limits.

httptools hands a request's head over in pieces (the URL, then one call per
header line); ``HeadReader`` collects them and says when they go over the
limits: 414 for a URL over ``max_bytes``, 431 for over ``max_count`` header
lines or ``max_bytes`` of URL and headers. Repeated headers are kept in
lists and joined once, when the head is whole, so a flood of one header
costs linear time.

It is its own class so that the connection (``http_server.HttpConnection``)
keeps to its job, requests and answers in order; it costs the hot path
nothing: the parser calls ``on_url`` and ``on_header`` here directly (the
connection hands them over as its own callbacks), and the connection reads
the fields itself to decide, in one test, that a head which arrived whole in
one small read needs no counting.
"""

from __future__ import annotations

from typing import Final

#: The status and text of a refusal.
Refused = tuple[int, bytes]

_URI_TOO_LONG: Final = b"URI Too Long: the limit is %d bytes"
_TOO_LARGE: Final = b"Request Header Fields Too Large: the limits are %d header lines and %d bytes"


class HeadReader:
    """The URL and headers of the request being read (header names lower-case)."""

    __slots__ = (
        "began",
        "chunk_size",
        "chunks",
        "headers",
        "in_head",
        "max_bytes",
        "max_count",
        "repeated",
        "url",
    )

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.url = b""
        self.headers: dict[str, str] = {}
        #: Headers sent more than once: every value, joined when the head is whole.
        self.repeated: dict[str, list[str]] | None = None
        #: The head being read is unfinished; it began in the chunk being parsed; the bytes
        #: of the chunks wholly inside it (a header value httptools is still building); the
        #: size of the chunk being parsed. The connection sets them as it reads.
        self.in_head = False
        self.began = False
        self.chunks = 0
        self.chunk_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        headers = self.headers
        if key in headers:
            self._repeat(key, value.decode("latin-1"))
        else:
            headers[key] = value.decode("latin-1")

    def _repeat(self, key: str, text: str) -> None:
        """A header sent again: its values are kept in a list (joined once, linear time)."""
        repeated = self.repeated
        if repeated is None:
            repeated = self.repeated = {}
        values = repeated.get(key)
        if values is None:
            repeated[key] = [self.headers[key], text]
        else:
            values.append(text)

    def unfinished(self) -> Refused | None:
        """A chunk ended inside the head: is it already over the limits?"""
        if not self.began:  # the whole chunk is head (a header value is being built)
            self.chunks += self.chunk_size
        return self.over_limits(whole=False)

    def over_limits(self, *, whole: bool) -> Refused | None:
        """The refusal (414, 431) of a head over the limits, as far as it is read; ``whole``:
        it is complete, and repeated headers are joined now."""
        headers = self.headers
        repeated = self.repeated
        count = len(headers)
        if repeated is not None:
            count += sum(len(values) - 1 for values in repeated.values())
        refused: Refused | None = None
        if len(self.url) > self.max_bytes:
            refused = (414, _URI_TOO_LONG % self.max_bytes)
        elif count > self.max_count or self.chunks > self.max_bytes:
            refused = (431, _TOO_LARGE % (self.max_count, self.max_bytes))
        else:
            size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in headers.items())
            if repeated is not None:
                size += sum(len(v) + len(k) + 4 for k, vs in repeated.items() for v in vs[1:])
            if size > self.max_bytes:
                refused = (431, _TOO_LARGE % (self.max_count, self.max_bytes))
        if whole:
            if refused is None and repeated is not None:
                for key, values in repeated.items():
                    headers[key] = ", ".join(values)
            self.repeated = None
        return refused

    def clear(self) -> None:
        """Let go of what was read (the connection is closed)."""
        self.url = b""
        self.headers = {}
        self.repeated = None
