"""Restart backoff (tenacity's exponential schedule) and the crash-loop rule."""

from __future__ import annotations

from mcp_fleet.reconcile.backoff import BackoffPolicy, Health

POLICY = BackoffPolicy(initial=1.0, maximum=8.0, threshold=3, window=60.0)


def fail(h: Health, iid: str, *, at: float, started_at: float | None = None) -> bool:
    return h.record_failure(
        POLICY, instance_id=iid, at=at, started_at=started_at, reason="Exited", message="m"
    )


def test_delay_doubles_from_initial_and_is_capped() -> None:
    assert [POLICY.delay(n) for n in range(0, 7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_next_start_follows_the_streak() -> None:
    h = Health()
    assert h.next_start_at(POLICY) is None
    fail(h, "a", at=100.0, started_at=99.0)
    assert h.next_start_at(POLICY) == 101.0
    fail(h, "b", at=110.0, started_at=109.0)
    assert h.next_start_at(POLICY) == 112.0


def test_crashloop_after_threshold_failures_in_a_row() -> None:
    h = Health()
    for n, at in enumerate([1.0, 3.0, 7.0]):
        assert not h.crashlooping(POLICY)
        fail(h, f"i{n}", at=at, started_at=at - 0.1)
    assert h.crashlooping(POLICY)
    assert h.streak == 3


def test_an_instance_is_counted_once_and_its_exit_code_filled_in_later() -> None:
    h = Health()
    assert fail(h, "a", at=1.0)
    assert not h.record_failure(
        POLICY, instance_id="a", at=2.0, started_at=None, reason="Exited", message="x",
        exit_code=3, stderr_tail=("boom",),
    )  # fmt: skip
    assert (h.streak, h.last_exit_code, h.stderr_tail, h.last_reason) == (
        1, 3, ("boom",), "Exited",
    )  # fmt: skip


def test_a_long_healthy_run_starts_a_fresh_row() -> None:
    h = Health()
    for n in range(4):
        fail(h, f"i{n}", at=float(n), started_at=float(n))
    assert h.crashlooping(POLICY)
    fail(h, "long", at=1000.0, started_at=100.0)  # ran 900 s > window
    assert h.streak == 1 and not h.crashlooping(POLICY)
    h.record_healthy(at=2000.0, started_at=1000.0, policy=POLICY)
    assert h.streak == 0


def test_restarts_count_only_starts_after_a_failure() -> None:
    h = Health()
    h.record_start()
    assert h.restarts == 0
    fail(h, "a", at=1.0)
    h.record_start()
    assert h.restarts == 1


def test_a_failure_without_a_code_keeps_the_rows_last_exit_code() -> None:
    """A probe that lost its instance (removed before its exit was seen) reports no code:
    a crash loop still shows the last code it knows, and a fresh row starts clean."""
    policy = BackoffPolicy(initial=0.2, maximum=1.0, threshold=3, window=30.0)
    health = Health()
    health.record_failure(policy, instance_id="a", at=1.0, started_at=0.9, reason="Exited",
                          message="exit code 3", exit_code=3)  # fmt: skip
    health.record_failure(policy, instance_id="b", at=2.0, started_at=1.9, reason="ProbeFailed",
                          message="stream closed")  # fmt: skip
    assert health.streak == 2 and health.last_exit_code == 3
    health.record_failure(policy, instance_id="c", at=100.0, started_at=50.0,
                          reason="ProbeFailed", message="stream closed")  # fmt: skip
    assert health.streak == 1 and health.last_exit_code is None  # ran a while: a new row
