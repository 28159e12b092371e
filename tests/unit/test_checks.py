"""Upper and lower bounds of everything a caller can set, at and just past each limit.

The API (``CallbackScheduler``) and the device mixin check with the same
validators (``ska_tango_scheduler._checks``); the mixin's side against a real
device server is in ``tests/integration/test_mixin_config.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ska_tango_scheduler import (
    MAX_ATTEMPT_TIMEOUT,
    MAX_QUEUE_SIZE,
    MAX_SLOW_CALLBACK_DURATION,
    MAX_THREAD_COUNT,
    CallbackScheduler,
)
from ska_tango_scheduler._checks import (
    MAX_DIAGNOSTICS_PERIOD,
    MAX_SHUTDOWN_TIMEOUT,
    MIN_DIAGNOSTICS_PERIOD,
    check_seconds,
    check_whole_number,
)
from ska_tango_scheduler.mixin import (
    SchedulerConfigurationError,
    check_diagnostics_period,
    check_property_texts,
    check_shutdown_timeout,
    check_slow_callback_duration,
    check_thread_count,
)


def test_the_documented_bounds() -> None:
    # docs/reference/limits.rst states these figures.
    assert MAX_THREAD_COUNT == 128
    assert MAX_QUEUE_SIZE == 1_000_000
    assert MAX_SLOW_CALLBACK_DURATION == 3600.0
    assert MAX_ATTEMPT_TIMEOUT == 300.0
    assert (MIN_DIAGNOSTICS_PERIOD, MAX_DIAGNOSTICS_PERIOD) == (0.05, 3600.0)
    assert MAX_SHUTDOWN_TIMEOUT == 3600.0


@pytest.fixture
def made() -> Iterator[list[CallbackScheduler]]:
    schedulers: list[CallbackScheduler] = []
    yield schedulers
    for scheduler in schedulers:
        scheduler.shutdown(timeout=30)


# keyword -> (largest valid value, smallest invalid value above it)
API_LIMITS: dict[str, tuple[Any, Any]] = {
    "thread_count": (MAX_THREAD_COUNT, MAX_THREAD_COUNT + 1),
    "default_queue_size": (MAX_QUEUE_SIZE, MAX_QUEUE_SIZE + 1),
    "slow_callback_duration": (MAX_SLOW_CALLBACK_DURATION, MAX_SLOW_CALLBACK_DURATION + 0.001),
    "attempt_timeout": (MAX_ATTEMPT_TIMEOUT, MAX_ATTEMPT_TIMEOUT + 0.001),
}


@pytest.mark.parametrize("keyword", sorted(API_LIMITS))
def test_scheduler_accepts_each_limit(keyword: str, made: list[CallbackScheduler]) -> None:
    limit, _ = API_LIMITS[keyword]
    scheduler = CallbackScheduler(name=f"limit-{keyword}", **{keyword: limit})
    made.append(scheduler)
    if keyword == "thread_count":
        assert scheduler.thread_count == MAX_THREAD_COUNT


@pytest.mark.parametrize("keyword", sorted(API_LIMITS))
def test_scheduler_refuses_just_past_each_limit(keyword: str) -> None:
    before = threading.active_count()
    _, past = API_LIMITS[keyword]
    with pytest.raises(ValueError, match=f"{keyword} must be .* got {past!r}"):
        CallbackScheduler(**{keyword: past})
    assert threading.active_count() == before, "a refused scheduler started threads"


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("thread_count", 20_000),
        ("default_queue_size", 10**12),
        ("slow_callback_duration", float("inf")),
        ("slow_callback_duration", float("nan")),
        ("attempt_timeout", float("inf")),
        ("attempt_timeout", 1e300),
    ],
)
def test_scheduler_refuses_hostile_values(keyword: str, value: object) -> None:
    with pytest.raises(ValueError, match=keyword):
        CallbackScheduler(**{keyword: value})


def test_allocate_queue_bounds(made: list[CallbackScheduler]) -> None:
    scheduler = CallbackScheduler(name="limit-queue")
    made.append(scheduler)
    assert scheduler.allocate_queue(MAX_QUEUE_SIZE).maxsize == MAX_QUEUE_SIZE
    with pytest.raises(ValueError, match=f"queue_size must be .* got {MAX_QUEUE_SIZE + 1}"):
        scheduler.allocate_queue(MAX_QUEUE_SIZE + 1)


def test_shutdown_timeout_is_bounded_by_what_python_can_wait() -> None:
    scheduler = CallbackScheduler(name="limit-shutdown")
    try:
        with pytest.raises(ValueError, match="timeout must be"):
            scheduler.shutdown(timeout=threading.TIMEOUT_MAX * 2)
        assert not scheduler.is_shutdown
    finally:
        scheduler.shutdown(timeout=threading.TIMEOUT_MAX)
    assert scheduler.is_shutdown


# -- the same validators behind the mixin's settings -------------------------------------

MixinCheck = Callable[..., object]

# check -> (largest valid value, smallest invalid value above it), as property texts
MIXIN_LIMITS: dict[str, tuple[MixinCheck, str, str]] = {
    "SchedulerThreadCount": (check_thread_count, "128", "129"),
    "SchedulerSlowCallbackDuration": (check_slow_callback_duration, "3600", "3600.001"),
}


@pytest.mark.parametrize("name", sorted(MIXIN_LIMITS))
def test_mixin_property_limits(name: str) -> None:
    check, limit, past = MIXIN_LIMITS[name]
    check(limit, name)
    check_property_texts({name: [limit]})
    with pytest.raises(SchedulerConfigurationError) as info:
        check_property_texts({name: [past]})
    assert str(info.value).startswith(f"{name} = {past!r} is not valid")


def test_mixin_class_attribute_limits() -> None:
    assert check_diagnostics_period(MIN_DIAGNOSTICS_PERIOD) == MIN_DIAGNOSTICS_PERIOD
    assert check_diagnostics_period(MAX_DIAGNOSTICS_PERIOD) == MAX_DIAGNOSTICS_PERIOD
    for bad in (0.049, 3600.001, 0, -1, float("nan"), "1", None):
        with pytest.raises(SchedulerConfigurationError, match="scheduler_diagnostics_period = "):
            check_diagnostics_period(bad)
    assert check_shutdown_timeout(None) is None
    assert check_shutdown_timeout(0) == 0.0
    assert check_shutdown_timeout(MAX_SHUTDOWN_TIMEOUT) == MAX_SHUTDOWN_TIMEOUT
    for bad in (3600.001, -0.1, float("inf"), "30"):
        with pytest.raises(SchedulerConfigurationError, match="scheduler_shutdown_timeout = "):
            check_shutdown_timeout(bad)


def test_validators_tell_type_from_range() -> None:
    assert check_whole_number("n", " 7 ", 1, 9, from_text=True) == 7
    with pytest.raises(TypeError):
        check_whole_number("n", "7", 1, 9)
    with pytest.raises(TypeError):
        check_whole_number("n", True, 1, 9)
    with pytest.raises(ValueError, match="n must be a whole number from 1 to 9, got 10"):
        check_whole_number("n", 10, 1, 9)
    assert check_seconds("s", "0", 5, allow_zero=True, from_text=True) == 0.0
    with pytest.raises(ValueError, match="s must be seconds above 0 and at most 5, got 0"):
        check_seconds("s", 0, 5, allow_zero=False)
    with pytest.raises(TypeError):
        check_seconds("s", "1", 5, allow_zero=True)
