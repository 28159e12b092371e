"""Exponential back-off policy and retry state."""

from __future__ import annotations

import pytest

from ska_tango_scheduler import BackoffPolicy
from ska_tango_scheduler._backoff import BackoffState


def test_delays_grow_exponentially_to_the_cap() -> None:
    policy = BackoffPolicy(initial_delay=0.1, factor=2, max_delay=1.0, jitter=0)
    assert [policy.delay(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert policy.delay(10_000) == 1.0


def test_jitter_spreads_within_bounds() -> None:
    policy = BackoffPolicy(initial_delay=1, factor=1, max_delay=1, jitter=0.25)
    assert policy.delay(1, rand=0.0) == pytest.approx(0.75)
    assert policy.delay(1, rand=0.999999) == pytest.approx(1.25, abs=1e-5)
    assert all(0.75 <= policy.delay(1) <= 1.25 for _ in range(100))


def test_defaults_reach_one_second_quickly() -> None:
    policy = BackoffPolicy()
    assert policy.delay(1) < 0.1
    assert max(policy.delay(n) for n in range(1, 50)) <= 1.0 * (1 + policy.jitter)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_delay": 0},
        {"factor": 0.5},
        {"initial_delay": 2, "max_delay": 1},
        {"jitter": -0.1},
        {"jitter": 1.5},
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)


def test_state_counts_failures_and_resets() -> None:
    policy = BackoffPolicy(initial_delay=0.1, jitter=0)
    state = BackoffState()
    assert not state.active
    assert state.failed(policy, "E1") == pytest.approx(0.1)
    assert state.failed(policy, "E2") == pytest.approx(0.2)
    assert state.failed(policy, "E3", floor=10) == 10
    assert (state.attempts, state.last_error, state.active) == (3, "E3", True)
    assert state.failing_since is not None and state.next_attempt_at is not None
    state.reset()
    assert (state.attempts, state.last_error, state.active, state.next_attempt_at) == (
        0,
        "",
        False,
        None,
    )
