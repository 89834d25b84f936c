"""What the router's HTTP server lets its clients hold, and the accounting of its connections.

The limits (``Limits`` and their defaults), the descriptor arithmetic that
caps the connections (``connection_cap``, ``accept_backlog``,
``raise_fd_limit``), the address connections are counted by
(``peer_key``), the live connections of one server with the body bytes
they hold (``ConnectionTable``), which of them to close to make room at a
cap (``quiet_since``), and the watchdog that enforces the deadlines
(``start_watchdog``, ``check_deadlines``). ``http_server``'s module
docstring says what each limit guards against.

Little of this is on the hot path: a connection registers with its table
when it opens and leaves it when it closes, and a request's body bytes are
added to and taken from one counter; the watchdog looks at every connection
once a second. It is kept apart from the connection (``http_server``), whose
parsing is the hot path, so that each reads as one job; it knows a
connection only by the ``Tracked`` protocol, so it imports nothing of the
server.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import logging
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 64 * 1024 * 1024
#: Seconds a request may take to arrive whole, from its first byte (slow-client guard).
REQUEST_TIMEOUT_SECONDS: Final = 30.0
#: Seconds a request's head (request line and headers) may take, from its first byte; for
#: a new connection, from when it opened (a silent connection is closed this soon).
HEAD_TIMEOUT_SECONDS: Final = 10.0
#: Seconds a keep-alive connection may wait with nothing in flight before it is closed.
IDLE_TIMEOUT_SECONDS: Final = 60.0
#: Header lines in one request, at most.
MAX_HEADER_COUNT: Final = 100
#: Bytes of one request's head (request line and headers), at most.
MAX_HEADER_BYTES: Final = 64 * 1024
#: Request bodies held at once across all connections (at least twice ``max_body_bytes``).
MAX_BUFFERED_BYTES: Final = 256 * 1024 * 1024
#: Connections at once, at most (lower when the descriptor limit says so).
MAX_CONNECTIONS: Final = 4096
#: Connections at once from one address (IPv6: one /64).
MAX_CONNECTIONS_PER_PEER: Final = 512
#: Descriptors left to the rest of the process (at least; a quarter of the limit when more).
FD_RESERVE: Final = 256
#: What ``raise_fd_limit`` raises the soft descriptor limit to (at most the hard limit).
FD_LIMIT_TARGET: Final = 65536
#: Seconds a refused client is still read from (and its bytes dropped) after the refusal,
#: so that the refusal reaches it rather than a reset (a "lingering close", as nginx does).
LINGER_SECONDS: Final = 2.0


@dataclass(frozen=True, slots=True)
class Limits:
    """What one server lets its clients hold (see ``http_server``'s module docstring)."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_header_count: int = MAX_HEADER_COUNT
    max_header_bytes: int = MAX_HEADER_BYTES
    #: None: ``MAX_BUFFERED_BYTES``, or twice ``max_body_bytes`` when that is more.
    max_buffered_bytes: int | None = None
    max_connections: int = MAX_CONNECTIONS
    max_connections_per_peer: int = MAX_CONNECTIONS_PER_PEER
    fd_reserve: int = FD_RESERVE


def _reserve(soft: int, reserve: int) -> int:
    return max(reserve, soft // 4)


def connection_cap(maximum: int, reserve: int = FD_RESERVE) -> int:
    """``maximum``, lowered so that the open connections leave ``reserve`` descriptors (or a
    quarter of the soft limit, when that is more) to the rest of the process."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return maximum
    return max(1, min(maximum, soft - _reserve(soft, reserve)))


def accept_backlog(reserve: int = FD_RESERVE) -> int:
    """The listen backlog: half the descriptors in reserve, at most 2048.

    The event loop accepts every pending connection in one go, and the ones then closed
    at a cap (or made room for) give their descriptors back only on the next turn: a
    burst of at most a backlog takes from the reserve, and leaves half of it.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 2048
    return max(16, min(2048, _reserve(soft, reserve) // 2))


def raise_fd_limit(target: int = FD_LIMIT_TARGET) -> int:
    """Raise the soft descriptor limit to ``target`` (at most the hard limit), as servers
    commonly do at start; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(hard, target)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (OSError, ValueError):
            return int(soft)
        return int(want)
    return int(soft)


def peer_key(peername: object) -> str:
    """The address connections are counted by: the IP (an IPv6 address's /64)."""
    if not isinstance(peername, tuple) or not peername:
        return ""
    host = str(peername[0])
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class Tracked(Protocol):
    """A connection as its table and the watchdog see it (``http_server.HttpConnection``)."""

    @property
    def lost(self) -> bool:
        """The client's connection is gone."""

    @property
    def closing(self) -> bool:
        """The server closed it (after a ``connection: close`` answer or a refusal)."""

    @property
    def reading_since(self) -> float | None:
        """When the request being read began (monotonic); None between requests."""

    #: When the watchdog first saw it with nothing in flight (or closing); the watchdog's.
    idle_since: float | None

    @property
    def head_read(self) -> bool:
        """The head of the request being read is whole: its body is being read."""

    @property
    def answering(self) -> bool:
        """An answer is being written, or requests wait for theirs."""

    @property
    def holding(self) -> bool:
        """It holds more than a request's head: a body, answers, a refusal."""

    def expire(self) -> None:
        """The request being read took too long: answer 408 and close."""

    def close(self) -> None:
        """Close after what is written so far."""

    def abort(self) -> None:
        """Close at once."""

    def evict(self) -> None:
        """Close to make room for others (a 503 first if a request has begun)."""


def quiet_since(conn: Tracked, now: float) -> float | None:
    """Since when ``conn`` holds nothing (None: it does), for eviction at a cap: between
    requests with every answer out, or still sending a request's head."""
    if conn.closing or conn.lost or conn.holding:
        return None
    since = conn.reading_since if conn.reading_since is not None else conn.idle_since
    return now if since is None else since


def check_deadlines(
    conn: Tracked,
    now: float,
    request_timeout: float | None,
    head_timeout: float | None,
    idle_timeout: float | None,
) -> None:
    """The watchdog's look at one connection (see ``http_server``'s module docstring)."""
    since = conn.reading_since
    if since is not None:
        age = now - since
        if (request_timeout is not None and age > request_timeout) or (
            head_timeout is not None and not conn.head_read and age > head_timeout
        ):
            conn.expire()
        return
    if conn.lost:
        return
    if not conn.closing and conn.answering:
        conn.idle_since = None  # an answer is on its way
    elif conn.idle_since is None:
        conn.idle_since = now
    elif idle_timeout is not None and now - conn.idle_since > idle_timeout:
        if conn.closing:
            conn.abort()  # a client that does not read what we still have to write
        else:
            conn.close()


C = TypeVar("C", bound=Tracked)


class ConnectionTable(Generic[C]):
    """The live connections of one server, by peer, and the body bytes they hold."""

    def __init__(self, connections: set[C], limits: Limits) -> None:
        self.connections = connections
        self.limits = limits
        self.peers: dict[str, set[C]] = {}
        #: Body bytes being read or waiting in pipelines, across all connections.
        self.buffered = 0
        self.max_buffered = limits.max_buffered_bytes or max(
            MAX_BUFFERED_BYTES, 2 * limits.max_body_bytes
        )
        self.cap = limits.max_connections
        self.refresh()
        self._warned = 0.0

    def refresh(self) -> None:
        """Follow the descriptor limit (another part of the process may change it)."""
        self.cap = connection_cap(self.limits.max_connections, self.limits.fd_reserve)

    def admit(self, conn: C, peer: str) -> bool:
        """Register ``conn`` from ``peer``, making room at a cap; False: no room."""
        group = self.peers.get(peer)
        per_peer = self.limits.max_connections_per_peer
        if group is not None and len(group) >= per_peer:
            self._evict(group, per_peer)
            if len(group) >= per_peer:
                self._warn(f"{peer or 'a client'} holds {len(group)} connections (the cap)")
                return False
        if len(self.connections) >= self.cap:
            self._evict(self.connections, self.cap)
            if len(self.connections) >= self.cap:
                self._warn(f"{len(self.connections)} connections open (the cap)")
                return False
        self.connections.add(conn)
        if group is None:
            group = self.peers[peer] = set()
        group.add(conn)
        return True

    def remove(self, conn: C, peer: str) -> None:
        self.connections.discard(conn)
        group = self.peers.get(peer)
        if group is not None:
            group.discard(conn)
            if not group:
                del self.peers[peer]

    def _evict(self, group: Iterable[C], cap: int) -> None:
        """Close the connections of ``group`` that hold nothing, longest quiet first: enough
        for a sixteenth of ``cap`` to arrive before the next search."""
        now = time.monotonic()
        quiet: list[tuple[float, int, C]] = []
        for i, conn in enumerate(group):
            since = quiet_since(conn, now)
            if since is not None:
                quiet.append((since, i, conn))
        for _, _, conn in heapq.nsmallest(max(1, cap // 16), quiet):
            conn.evict()

    def _warn(self, what: str) -> None:
        now = time.monotonic()
        if now - self._warned > 60:
            self._warned = now
            log.warning("refusing new connections: %s", what)


async def _watch(
    server: asyncio.Server,
    table: ConnectionTable[C],
    request_timeout: float | None,
    head_timeout: float | None,
    idle_timeout: float | None,
) -> None:
    """Enforce the connections' deadlines; follow the descriptor limit."""
    interval = min([1.0, *(t / 2 for t in (request_timeout, head_timeout, idle_timeout) if t)])
    while server.is_serving():
        await asyncio.sleep(interval)
        now = time.monotonic()
        table.refresh()
        for conn in list(table.connections):
            check_deadlines(conn, now, request_timeout, head_timeout, idle_timeout)


#: Watchdog tasks of live servers (kept referenced until they end).
_WATCHDOGS: set[asyncio.Task[None]] = set()


def _positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None


def start_watchdog(
    server: asyncio.Server,
    table: ConnectionTable[C],
    request_timeout: float | None,
    head_timeout: float | None,
    idle_timeout: float | None,
) -> None:
    """Check ``table``'s deadlines while ``server`` serves: one task per server, so that a
    request costs a clock read rather than a timer. A timeout of None (or not positive) is
    off; the head's is never later than the whole request's; with all off, no task."""
    request_timeout = _positive(request_timeout)
    head_timeout = _positive(head_timeout)
    if head_timeout is not None and request_timeout is not None:
        head_timeout = min(head_timeout, request_timeout)
    idle_timeout = _positive(idle_timeout)
    if request_timeout is None and head_timeout is None and idle_timeout is None:
        return
    watch = _watch(server, table, request_timeout, head_timeout, idle_timeout)
    task = asyncio.get_running_loop().create_task(watch)
    _WATCHDOGS.add(task)
    task.add_done_callback(_WATCHDOGS.discard)
