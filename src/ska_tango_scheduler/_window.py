"""Statistics over a sliding time window: queue waits, callback durations, busy time.

Part of the pure core: no :mod:`tango` import.

A window of ``length`` seconds is kept as :data:`BUCKETS` buckets of
``length / BUCKETS`` seconds each, numbered by ``floor(time / width)``. A
snapshot taken at time ``now`` covers the bucket of ``now`` and the
``BUCKETS - 1`` before it: every sample of the last ``length - width``
seconds and none older than ``length`` seconds. With the default 10 s window
that is "the current second and the nine before it".

Recording is the hot path (a worker thread, once per delivered event): a
comparison and two appends to ``array('d')`` buffers. Everything else
(expiry, maximum, percentile, mean) is computed when a snapshot is taken.
Each recorder has a single writer (the worker delivering its events); a
snapshot from another thread copies each buffer in one step, which the GIL
makes atomic, so it never sees a half-written sample.

Memory: 16 bytes per event delivered in the window (e.g. 160 kB for a stream
delivering 1,000 events a second).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["BUCKETS", "LENGTH", "BusyWindow", "SampleWindow", "WindowStats", "merge", "percentile"]

#: Buckets per window.
BUCKETS = 10

#: Length of the window in seconds (``diagnostics.LATENCY_WINDOW``).
LENGTH = 10.0


def percentile(values: Iterable[float], fraction: float) -> float:
    """Return the nearest-rank percentile: the smallest value >= ``fraction`` of them.

    Args:
        values: The samples.
        fraction: From 0 (exclusive) to 1 (inclusive), e.g. 0.99.

    Returns:
        The value of rank ``ceil(fraction * n)`` in ascending order, or 0.0
        when there are no values.
    """
    data = np.fromiter(values, dtype=float)
    if not data.size:
        return 0.0
    rank = max(1, math.ceil(fraction * data.size))
    return float(np.partition(data, rank - 1)[rank - 1])


@dataclass(frozen=True)
class WindowStats:
    """What a :class:`SampleWindow` (or several merged) held at a snapshot.

    Times are seconds.

    Attributes:
        samples: Events delivered in the window.
        last_wait: Queue wait of the most recently delivered one.
        max_wait: Largest queue wait.
        p99_wait: 99th percentile (nearest rank) of the queue waits.
        mean_duration: Mean delivery duration.
        max_duration: Longest delivery duration.
    """

    samples: int = 0
    last_wait: float = 0.0
    max_wait: float = 0.0
    p99_wait: float = 0.0
    mean_duration: float = 0.0
    max_duration: float = 0.0


class _Bucket:
    __slots__ = ("durations", "index", "waits")

    def __init__(self, index: int) -> None:
        self.index = index
        self.waits = array("d")
        self.durations = array("d")


class SampleWindow:
    """Queue waits and delivery durations of one stream over a sliding window.

    Args:
        length: Window length in seconds.
    """

    __slots__ = ("_buckets", "_cache", "_current", "_end", "_width", "last_at")

    def __init__(self, length: float = LENGTH) -> None:
        """Create an empty window."""
        self._width = length / BUCKETS
        self._buckets: list[_Bucket] = [_Bucket(-BUCKETS - 1) for _ in range(BUCKETS)]
        self._current = self._buckets[0]
        # Time at which the current bucket ends (-inf: rotate on the first sample).
        self._end = -math.inf
        #: Time of the most recent sample (-inf before the first).
        self.last_at = -math.inf
        # (first bucket index, sample count) -> the stats computed for them.
        self._cache: tuple[int, int, WindowStats] | None = None

    def add(self, now: float, wait: float, duration: float) -> None:
        """Record one delivered event (the single writer's thread only).

        Args:
            now: Monotonic time of the recording, not earlier than the last.
            wait: Its queue wait, seconds.
            duration: How long its delivery took, seconds.
        """
        if now >= self._end:
            self._rotate(now)
        bucket = self._current
        bucket.waits.append(wait)
        bucket.durations.append(duration)
        self.last_at = now

    def _rotate(self, now: float) -> None:
        index = math.floor(now / self._width)
        bucket = self._buckets[index % BUCKETS]
        if bucket.index != index:
            fresh = _Bucket(index)
            self._buckets[index % BUCKETS] = fresh
            bucket = fresh
        self._current = bucket
        self._end = (index + 1) * self._width

    def _copies(self, now: float) -> list[tuple[array[float], array[float]]]:
        """Copies of the buffers of the buckets inside the window at ``now``."""
        first = math.floor(now / self._width) - BUCKETS + 1
        out = []
        for bucket in list(self._buckets):
            if bucket.index >= first:
                # Lengths can differ by one while the writer is between its two
                # appends; keep the pairs that are complete.
                waits, durations = bucket.waits[:], bucket.durations[:]
                count = min(len(waits), len(durations))
                out.append((waits[:count], durations[:count]))
        return out

    def stats(self, now: float) -> WindowStats:
        """Summarise the window at ``now``.

        The summary (percentile included) is computed again only when the
        window holds other samples than at the last call: a new sample
        arrived, or a bucket left the window. A snapshot of many quiet
        streams therefore costs a few length reads per stream.

        Args:
            now: Monotonic time of the snapshot.

        Returns:
            The statistics (zeros when nothing was delivered in the window).
        """
        first = math.floor(now / self._width) - BUCKETS + 1
        count = 0
        for bucket in list(self._buckets):
            if bucket.index >= first:
                count += len(bucket.durations)  # appended second: complete samples
        cache = self._cache
        if cache is not None and cache[0] == first and cache[1] == count:
            return cache[2]
        stats = merge([self], now) if count else WindowStats()
        self._cache = (first, count, stats)
        return stats


def merge(windows: Iterable[SampleWindow], now: float) -> WindowStats:
    """Summarise several windows as one (e.g. the streams of one queue).

    Args:
        windows: The windows.
        now: Monotonic time of the snapshot.

    Returns:
        The statistics of all their samples together.
    """
    waits: list[array[float]] = []
    durations: list[array[float]] = []
    last_at, last_wait = -math.inf, 0.0
    for window in windows:
        for w, d in window._copies(now):  # noqa: SLF001 - same module
            if len(w):
                waits.append(w)
                durations.append(d)
        # The current bucket holds the newest sample (buckets turn only on a sample).
        current = window._current  # noqa: SLF001
        if (
            window.last_at > last_at
            and len(current.waits)
            and current.index
            >= math.floor(
                now / window._width  # noqa: SLF001
            )
            - BUCKETS
            + 1
        ):
            last_at, last_wait = window.last_at, current.waits[-1]
    if not waits:
        return WindowStats()
    all_waits = np.concatenate([np.frombuffer(w, dtype=float) for w in waits])
    all_durations = np.concatenate([np.frombuffer(d, dtype=float) for d in durations])
    return WindowStats(
        samples=int(all_waits.size),
        last_wait=float(last_wait),
        max_wait=float(all_waits.max()),
        p99_wait=percentile(all_waits, 0.99),
        mean_duration=float(all_durations.mean()),
        max_duration=float(all_durations.max()),
    )


class BusyWindow:
    """Time a worker spent in callbacks over a sliding window.

    Args:
        length: Window length in seconds.
        started: Monotonic time the worker started.
    """

    __slots__ = ("_end", "_index", "_slot", "_sums", "_width", "since", "started")

    def __init__(self, length: float = LENGTH, started: float = 0.0) -> None:
        """Create an empty window."""
        self._width = length / BUCKETS
        self._sums = [0.0] * BUCKETS
        self._index = [-BUCKETS - 1] * BUCKETS
        self._end = -math.inf
        self._slot = 0
        #: When the worker started; the fraction is over its life if shorter.
        self.started = started
        #: When the delivery in progress began, 0.0 when none: a callback that
        #: is still running counts as busy time too.
        self.since = 0.0

    def add(self, now: float, busy: float) -> None:
        """Add busy time that ended at ``now`` (the worker's thread only).

        Busy time is booked to the bucket in which it ended.

        Args:
            now: Monotonic time, not earlier than the last.
            busy: Seconds spent in callbacks.
        """
        if now >= self._end:
            index = math.floor(now / self._width)
            slot = index % BUCKETS
            if self._index[slot] != index:
                self._index[slot] = index
                self._sums[slot] = 0.0
            self._end = (index + 1) * self._width
            self._slot = slot
        self._sums[self._slot] += busy

    def fraction(self, now: float) -> float:
        """Return the share of the window (or of the worker's life) spent busy.

        Args:
            now: Monotonic time of the snapshot.

        Returns:
            From 0.0 to 1.0.
        """
        current = math.floor(now / self._width)
        first = current - BUCKETS + 1
        total = sum(
            s for s, i in zip(list(self._sums), list(self._index), strict=True) if i >= first
        )
        since = self.since
        if since:
            total += now - max(since, first * self._width)
        span = now - max(first * self._width, self.started)
        if span <= 0:
            return 0.0
        return min(1.0, max(0.0, total / span))
