"""Concurrency and rate limits per identity and per server, answered with clear MCP errors.

A shared gateway must not let one client (a runaway agent loop) starve the
others, nor let a burst of calls drown one backend. Four independent limits,
each off unless set:

- ``identity_concurrency``: calls one identity may have in flight;
- ``server_concurrency``: calls in flight to one server, from everyone;
- ``identity_rate`` / ``identity_burst``: a token bucket per identity
  (calls per second, bucket size);
- ``server_rate`` / ``server_burst``: a token bucket per server.

A call over a limit is refused at once, not queued: the caller gets a
JSON-RPC error (code ``identity.LIMITED``) whose message names the limit,
its value and, for rates, when to retry, and whose ``data`` holds
``status: 429``, ``limit``, ``retryAfter``. Queueing would hide overload
behind latency and hold memory for callers that may have given up.

``Limiter.acquire`` is synchronous and cheap (dict lookups, arithmetic on
``time.monotonic``) because the router calls it on its hot path, inside a
function that never awaits. Rate tokens are only taken when every check
passes, so a refused call does not use up a later call's budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from mcp_fleet.gateway.identity import LIMITED


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Limits of the gateway (None: no limit). Bursts default to ``ceil(rate)``, at least 1."""

    identity_concurrency: int | None = None
    server_concurrency: int | None = None
    identity_rate: float | None = None
    identity_burst: int | None = None
    server_rate: float | None = None
    server_burst: int | None = None

    @property
    def active(self) -> bool:
        return any(
            v is not None
            for v in (
                self.identity_concurrency,
                self.server_concurrency,
                self.identity_rate,
                self.server_rate,
            )
        )


class LimitExceededError(Exception):
    """A call refused by a limit; ``error()`` is the JSON-RPC error object to answer with."""

    def __init__(
        self,
        limit: str,
        message: str,
        *,
        identity: str,
        server: str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message
        self.identity = identity
        self.server = server
        self.retry_after = retry_after

    def error(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": 429,
            "limit": self.limit,
            "identity": self.identity,
            "server": self.server,
        }
        if self.retry_after is not None:
            data["retryAfter"] = round(self.retry_after, 3)
        return {"code": LIMITED, "message": self.message, "data": data}


class _Bucket:
    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: int, now: float) -> None:
        self.rate = rate
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self.stamp = now

    def refill(self, now: float) -> float:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens

    def wait(self) -> float:
        return (1.0 - self.tokens) / self.rate


class Permit:
    """A granted call; ``release()`` when it ends (idempotent)."""

    __slots__ = ("_limiter", "identity", "server")

    def __init__(self, limiter: Limiter | None, identity: str, server: str) -> None:
        self._limiter = limiter
        self.identity = identity
        self.server = server

    def release(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter._release(self.identity, self.server)


#: The permit of every call while no limit is set (releasing it does nothing).
_UNLIMITED: Final = Permit(None, "", "")


def _burst(rate: float, burst: int | None) -> int:
    return burst if burst is not None else max(1, math.ceil(rate))


class Limiter:
    """Applies ``LimitSettings``; one per gateway process."""

    def __init__(
        self, settings: LimitSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._active = settings.active
        self.identity_inflight: dict[str, int] = {}
        self.server_inflight: dict[str, int] = {}
        self._identity_buckets: dict[str, _Bucket] = {}
        self._server_buckets: dict[str, _Bucket] = {}

    def acquire(self, identity: str, server: str) -> Permit:
        """A permit for one call of ``identity`` to ``server``; raises ``LimitExceededError``."""
        if not self._active:
            return _UNLIMITED
        s = self.settings
        if s.identity_concurrency is not None:
            running = self.identity_inflight.get(identity, 0)
            if running >= s.identity_concurrency:
                raise LimitExceededError(
                    "identity-concurrency",
                    f"Too many calls: {identity} already has {running} calls in flight "
                    f"(limit {s.identity_concurrency} per identity)",
                    identity=identity,
                    server=server,
                )
        if s.server_concurrency is not None:
            running = self.server_inflight.get(server, 0)
            if running >= s.server_concurrency:
                raise LimitExceededError(
                    "server-concurrency",
                    f"Too many calls: server {server!r} already has {running} calls in flight "
                    f"(limit {s.server_concurrency} per server)",
                    identity=identity,
                    server=server,
                )
        now = self._clock()
        buckets: list[_Bucket] = []
        if s.identity_rate is not None:
            bucket = self._bucket(
                self._identity_buckets, identity, s.identity_rate, s.identity_burst, now
            )
            if bucket.refill(now) < 1.0:
                raise LimitExceededError(
                    "identity-rate",
                    f"Rate limit: {identity} may make {s.identity_rate:g} calls/s "
                    f"(burst {int(bucket.capacity)}); retry in {bucket.wait():.2f} s",
                    identity=identity,
                    server=server,
                    retry_after=bucket.wait(),
                )
            buckets.append(bucket)
        if s.server_rate is not None:
            bucket = self._bucket(self._server_buckets, server, s.server_rate, s.server_burst, now)
            if bucket.refill(now) < 1.0:
                raise LimitExceededError(
                    "server-rate",
                    f"Rate limit: server {server!r} takes {s.server_rate:g} calls/s "
                    f"(burst {int(bucket.capacity)}); retry in {bucket.wait():.2f} s",
                    identity=identity,
                    server=server,
                    retry_after=bucket.wait(),
                )
            buckets.append(bucket)
        for bucket in buckets:
            bucket.tokens -= 1.0
        self.identity_inflight[identity] = self.identity_inflight.get(identity, 0) + 1
        self.server_inflight[server] = self.server_inflight.get(server, 0) + 1
        return Permit(self, identity, server)

    @staticmethod
    def _bucket(
        table: dict[str, _Bucket], key: str, rate: float, burst: int | None, now: float
    ) -> _Bucket:
        bucket = table.get(key)
        if bucket is None:
            bucket = table[key] = _Bucket(rate, _burst(rate, burst), now)
        return bucket

    def _release(self, identity: str, server: str) -> None:
        for table, key in ((self.identity_inflight, identity), (self.server_inflight, server)):
            left = table.get(key, 0) - 1
            if left > 0:
                table[key] = left
            else:
                table.pop(key, None)
