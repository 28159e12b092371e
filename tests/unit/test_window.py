"""Sliding-window statistics against a brute-force reference."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ska_tango_scheduler import diagnostics
from ska_tango_scheduler._window import (
    BUCKETS,
    LENGTH,
    BusyWindow,
    SampleWindow,
    WindowStats,
    merge,
    percentile,
)

WIDTH = LENGTH / BUCKETS


def _in_window(t: float, now: float) -> bool:
    """The reference definition: the bucket of ``now`` and the nine before it."""
    return math.floor(t / WIDTH) > math.floor(now / WIDTH) - BUCKETS


def _reference_p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(0.99 * len(ordered))) - 1]


# Samples: (time step, wait, duration); times increase, sometimes across many buckets.
samples_strategy = st.lists(
    st.tuples(
        st.one_of(st.floats(0.0, 0.3), st.floats(0.0, 25.0)),
        st.floats(0.0, 5.0),
        st.floats(0.0, 2.0),
    ),
    min_size=0,
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(samples=samples_strategy, start=st.floats(0.0, 1e5), gap=st.floats(0.0, 15.0))
def test_window_matches_brute_force(
    samples: list[tuple[float, float, float]], start: float, gap: float
) -> None:
    window = SampleWindow()
    t = start
    recorded: list[tuple[float, float, float]] = []
    for step, wait, duration in samples:
        t += step
        window.add(t, wait, duration)
        recorded.append((t, wait, duration))
    now = t + gap
    inside = [(w, d, at) for at, w, d in recorded if _in_window(at, now)]
    stats = window.stats(now)
    if not inside:
        assert stats == WindowStats()
        return
    waits = [w for w, _, _ in inside]
    durations = [d for _, d, _ in inside]
    assert stats.samples == len(inside)
    assert stats.max_wait == max(waits)
    assert stats.p99_wait == _reference_p99(waits)
    assert stats.max_duration == max(durations)
    assert stats.mean_duration == pytest.approx(sum(durations) / len(durations))
    assert stats.last_wait == recorded[-1][1]


@settings(max_examples=100, deadline=None)
@given(
    streams=st.lists(
        st.lists(st.tuples(st.floats(0.0, 3.0), st.floats(0.0, 5.0)), max_size=60),
        min_size=1,
        max_size=4,
    ),
    gap=st.floats(0.0, 12.0),
)
def test_merged_windows_match_brute_force(
    streams: list[list[tuple[float, float]]], gap: float
) -> None:
    """A queue's figures: the samples of its streams together."""
    windows = [SampleWindow() for _ in streams]
    events: list[tuple[float, int, float]] = []  # time, stream, wait
    t = 1000.0
    # Interleave the streams in time, one event at a time, round robin.
    pending = [list(s) for s in streams]
    while any(pending):
        for i, queue in enumerate(pending):
            if queue:
                step, wait = queue.pop(0)
                t += step
                windows[i].add(t, wait, 0.001)
                events.append((t, i, wait))
    now = t + gap
    stats = merge(windows, now)
    inside = [w for at, _, w in events if _in_window(at, now)]
    if not inside:
        assert stats.samples == 0 and stats.max_wait == 0.0
        return
    assert stats.samples == len(inside)
    assert stats.max_wait == max(inside)
    assert stats.p99_wait == _reference_p99(inside)
    last_at = events[-1][0]
    if _in_window(last_at, now):  # (equal times: any of the newest)
        assert stats.last_wait in [w for at, i, w in events if at == last_at]


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=500), st.floats(0.01, 1.0))
def test_percentile_is_the_nearest_rank(values: list[float], fraction: float) -> None:
    ordered = sorted(values)
    assert percentile(values, fraction) == ordered[max(1, math.ceil(fraction * len(values))) - 1]


def test_percentile_of_nothing_is_zero() -> None:
    assert percentile([], 0.99) == 0.0


def test_old_samples_leave_the_window() -> None:
    window = SampleWindow()
    window.add(100.0, 5.0, 1.0)
    assert window.stats(100.5).max_wait == 5.0
    assert window.stats(100.0 + LENGTH - WIDTH + 0.01).samples == 1
    assert window.stats(100.0 + LENGTH).samples == 0
    window.add(100.0 + LENGTH + 3, 1.0, 0.5)
    assert window.stats(100.0 + LENGTH + 3).max_wait == 1.0


@settings(max_examples=100, deadline=None)
@given(
    spans=st.lists(st.tuples(st.floats(0.0, 2.0), st.floats(0.0, 1.0)), max_size=80),
    gap=st.floats(0.0, 12.0),
)
def test_busy_fraction_matches_brute_force(spans: list[tuple[float, float]], gap: float) -> None:
    started = 500.0
    busy = BusyWindow(started=started)
    t = started
    booked: list[tuple[float, float]] = []
    for idle, work in spans:
        t += idle + work
        busy.add(t, work)
        booked.append((t, work))
    now = t + gap
    first = math.floor(now / WIDTH) - BUCKETS + 1
    expected_busy = sum(w for at, w in booked if math.floor(at / WIDTH) >= first)
    span = now - max(first * WIDTH, started)
    expected = 0.0 if span <= 0 else min(1.0, max(0.0, expected_busy / span))
    assert busy.fraction(now) == pytest.approx(expected)


def test_busy_fraction_of_a_worker_that_always_works() -> None:
    busy = BusyWindow(started=0.0)
    for i in range(1, 301):
        busy.add(i * 0.1, 0.1)
    assert busy.fraction(30.0) == pytest.approx(1.0)
    assert busy.fraction(45.0) == 0.0


def test_a_running_delivery_counts_as_busy() -> None:
    busy = BusyWindow(started=0.0)
    busy.since = 25.0  # a callback running since 25 s
    assert busy.fraction(30.0) == pytest.approx(5 / 9)  # the window: 21 s to 30 s
    assert busy.fraction(60.0) == pytest.approx(1.0)
    busy.since = 0.0
    assert busy.fraction(60.0) == 0.0


def test_window_length_is_the_documented_one() -> None:
    assert diagnostics.LATENCY_WINDOW == LENGTH


def test_stats_are_computed_again_only_when_the_samples_change() -> None:
    """A window hands out the same statistics until a sample arrives or a bucket expires."""
    window = SampleWindow(LENGTH)
    empty = window.stats(100.0)
    assert empty == WindowStats() and window.stats(100.5) is empty
    window.add(100.0, 0.002, 0.001)
    first = window.stats(100.0)
    assert first.samples == 1 and first.max_wait == 0.002
    assert window.stats(100.05) is first  # same bucket range, same samples
    window.add(100.1, 0.004, 0.001)
    second = window.stats(100.1)
    assert second is not first and second.samples == 2 and second.max_wait == 0.004
    # Both samples leave the window once their bucket is more than LENGTH old.
    later = window.stats(100.0 + LENGTH + WIDTH)
    assert later.samples == 0
