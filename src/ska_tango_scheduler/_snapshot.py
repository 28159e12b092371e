"""Builds a scheduler's diagnostics snapshot (:class:`~ska_tango_scheduler.SchedulerDiagnostics`).

Only public reads: the registry's :meth:`~._registry.Registry.table` copies
the streams and queue users under the registry lock (which Tango's event
thread never takes), then the counts are read row by row, each row at one
instant, with the dispatcher's lock-free readers (``sink_counts``,
``queue_counts``, ``total_counts``): building the rows never holds a lock
(see ``docs/explanation/design.rst``, "Snapshots never hold a lock while they
build").
"""

from __future__ import annotations

import time
from typing import Any

from ._dispatch import YIELD_INTERVAL
from ._registry import Registry
from ._streams import EventStream, StreamState
from ._window import WindowStats, merge
from .diagnostics import (
    LATENCY_WINDOW,
    BackoffDiagnostics,
    LatencyStats,
    QueueDiagnostics,
    SchedulerDiagnostics,
    StreamDiagnostics,
    Totals,
    WorkerDiagnostics,
)

__all__ = ["Snapshots"]


class Snapshots:
    """Takes the diagnostics snapshots of one scheduler."""

    def __init__(self, registry: Registry) -> None:
        """Take snapshots of the streams of ``registry``.

        Args:
            registry: The scheduler's registry (its ``ctx`` gives the dispatcher).
        """
        self._registry = registry
        # Diagnostics fields of window statistics (see _fields).
        self._fields_cache: dict[int, tuple[WindowStats, dict[str, Any]]] = {}

    def take(self) -> SchedulerDiagnostics:
        """Take a consistent snapshot of streams, queues, retries and totals.

        Returns:
            The snapshot.
        """
        now_mono = time.monotonic()
        registry = self._registry
        ctx = registry.ctx
        dispatcher = ctx.dispatcher
        streams, queue_users = registry.table()
        stream_rows: list[StreamDiagnostics] = []
        fields_of: dict[EventStream, dict[str, Any]] = {}
        last_yield = now_mono
        for s in streams:
            if len(stream_rows) % 16 == 15:
                now = time.monotonic()
                if now - last_yield > YIELD_INTERVAL:
                    # Let Tango's event thread have the GIL, as the workers do.
                    time.sleep(0)
                    last_yield = now
            queued, delivered, dropped = dispatcher.sink_counts(s)
            fields = self._fields(s.counters.window.stats(now_mono), len(streams))
            fields_of[s] = fields
            stream_rows.append(
                StreamDiagnostics(
                    name=s.name,
                    device=s.key.device.trl,
                    attribute=s.attribute,
                    event_type=s.key.event_type.name,
                    state=s.state.value,
                    pinned=s.pinned,
                    callbacks=len(s.registrations),
                    queue=s.queue.name,
                    queued=queued,
                    received=delivered + dropped + queued,
                    delivered=delivered,
                    dropped=dropped,
                    callback_errors=s.counters.callback_errors,
                    last_error=s.last_error,
                    slow_callbacks=s.counters.slow_callbacks,
                    **fields,
                )
            )
        queue_rows: list[QueueDiagnostics] = []
        for q, users in queue_users:
            depth, delivered, dropped = dispatcher.queue_counts(q)
            if len(users) == 1 and users[0] in fields_of:
                fields = fields_of[users[0]]
            else:
                fields = window_fields(merge([u.counters.window for u in users], now_mono))
            queue_rows.append(
                QueueDiagnostics(
                    name=q.name,
                    size=q.maxsize,
                    depth=depth,
                    received=delivered + dropped + depth,
                    delivered=delivered,
                    dropped=dropped,
                    streams=tuple(sorted(u.name for u in users)),
                    latency=fields["latency"],
                    slow_callbacks=q.counters.slow_callbacks,
                )
            )
        backoff_rows = tuple(
            BackoffDiagnostics(
                stream=s.name,
                attempts=s.backoff.attempts,
                delay=round(s.backoff.delay, 6),
                next_attempt_in=(
                    None
                    if s.backoff.next_attempt_at is None
                    else round(max(0.0, s.backoff.next_attempt_at - now_mono), 6)
                ),
                last_error=s.backoff.last_error or s.last_error,
                failing_since=s.backoff.failing_since,
            )
            for s in streams
            if s.backoff.active or s.state is StreamState.FAILING
        )
        received, delivered, dropped, errors, slow = dispatcher.total_counts()
        totals = Totals(
            received=received,
            delivered=delivered,
            dropped=dropped,
            queued=received - delivered - dropped,
            callback_errors=errors,
            subscribe_calls=ctx.subscribe_calls,
            unsubscribe_calls=ctx.unsubscribe_calls,
            slow_callbacks=slow,
            max_latency_ms=max((q.latency.max_ms for q in queue_rows), default=0.0),
        )
        workers = tuple(
            WorkerDiagnostics(name=name, busy_fraction=round(fraction, 4))
            for name, fraction in dispatcher.busy_fractions(now_mono)
        )
        return SchedulerDiagnostics(
            name=registry.name,
            thread_count=dispatcher.thread_count,
            running=not registry.shut_down,
            timestamp=time.time(),
            totals=totals,
            queues=tuple(queue_rows),
            streams=tuple(stream_rows),
            backoff=backoff_rows,
            workers=workers,
            window=LATENCY_WINDOW,
        )

    def _fields(self, stats: WindowStats, stream_count: int) -> dict[str, Any]:
        """Return the diagnostics fields of window statistics, remembered per object.

        A window hands out the same statistics object until its samples change
        (see ``SampleWindow.stats``), so quiet streams cost a lookup here.
        """
        cache = self._fields_cache
        fields = cache.get(id(stats))
        if fields is None or fields[0] is not stats:
            if len(cache) > 4 * stream_count + 64:
                cache.clear()
            fields = cache[id(stats)] = (stats, window_fields(stats))
        return fields[1]


def window_fields(stats: WindowStats) -> dict[str, Any]:
    """Turn window statistics (seconds) into the diagnostics fields (milliseconds).

    Args:
        stats: Statistics of a window.

    Returns:
        ``latency``, ``callback_mean_ms`` and ``callback_max_ms``.
    """
    return {
        "latency": LatencyStats(
            last_ms=round(stats.last_wait * 1e3, 4),
            max_ms=round(stats.max_wait * 1e3, 4),
            p99_ms=round(stats.p99_wait * 1e3, 4),
            samples=stats.samples,
        ),
        "callback_mean_ms": round(stats.mean_duration * 1e3, 4),
        "callback_max_ms": round(stats.max_duration * 1e3, 4),
    }
