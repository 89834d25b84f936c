"""Concurrency and rate limits: refused at once with an MCP error that names the limit."""

from __future__ import annotations

import pytest
from mcp_fleet.gateway.identity import LIMITED
from mcp_fleet.gateway.limits import Limiter, LimitExceededError, LimitSettings


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_no_limits_admit_everything() -> None:
    limiter = Limiter(LimitSettings())
    permits = [limiter.acquire("token:a", "time") for _ in range(1000)]
    assert len(permits) == 1000


def test_identity_concurrency_limit_frees_on_release() -> None:
    limiter = Limiter(LimitSettings(identity_concurrency=2))
    first = limiter.acquire("token:alice", "time")
    limiter.acquire("token:alice", "github")
    with pytest.raises(LimitExceededError) as err:
        limiter.acquire("token:alice", "time")
    error = err.value.error()
    assert error["code"] == LIMITED
    assert error["message"] == (
        "Too many calls: token:alice already has 2 calls in flight (limit 2 per identity)"
    )
    assert error["data"] == {
        "status": 429,
        "limit": "identity-concurrency",
        "identity": "token:alice",
        "server": "time",
    }
    limiter.acquire("token:bob", "time")  # others are not affected
    first.release()
    first.release()  # idempotent
    limiter.acquire("token:alice", "time")
    with pytest.raises(LimitExceededError):
        limiter.acquire("token:alice", "time")


def test_server_concurrency_limit_applies_across_identities() -> None:
    limiter = Limiter(LimitSettings(server_concurrency=1))
    permit = limiter.acquire("token:a", "slow")
    with pytest.raises(LimitExceededError, match="server 'slow' already has 1 calls"):
        limiter.acquire("token:b", "slow")
    limiter.acquire("token:b", "fast")
    permit.release()
    limiter.acquire("token:b", "slow")


def test_rate_limit_is_a_token_bucket_with_retry_after() -> None:
    clock = Clock()
    limiter = Limiter(LimitSettings(identity_rate=2.0, identity_burst=3), clock=clock)
    for _ in range(3):
        limiter.acquire("token:a", "time").release()
    with pytest.raises(LimitExceededError) as err:
        limiter.acquire("token:a", "time")
    assert err.value.limit == "identity-rate"
    assert err.value.retry_after == pytest.approx(0.5)
    assert "2 calls/s (burst 3); retry in 0.50 s" in err.value.message
    assert err.value.error()["data"]["retryAfter"] == 0.5
    clock.now += 0.5
    limiter.acquire("token:a", "time")
    with pytest.raises(LimitExceededError):
        limiter.acquire("token:a", "time")
    clock.now += 10
    for _ in range(3):
        limiter.acquire("token:a", "time")


def test_a_refused_call_does_not_use_up_rate_budget() -> None:
    clock = Clock()
    limiter = Limiter(
        LimitSettings(identity_rate=1.0, server_rate=1.0, server_burst=1), clock=clock
    )
    limiter.acquire("token:a", "time")
    with pytest.raises(LimitExceededError, match="server 'time' takes 1 calls/s"):
        limiter.acquire("token:b", "time")
    permit = limiter.acquire("token:b", "other")  # token:b's bucket was not charged
    assert limiter.identity_inflight == {"token:a": 1, "token:b": 1}
    permit.release()
    assert limiter.identity_inflight == {"token:a": 1}
