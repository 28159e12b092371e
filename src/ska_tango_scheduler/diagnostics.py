"""A snapshot of a scheduler's state: streams, queues, retries and totals.

Everything here is plain data. The counts of each row are read at one
instant, so that they agree with each other: for every stream, every queue
and the totals, ``received == delivered + dropped + queued``. :meth:`SchedulerDiagnostics.to_dict`
gives a structure that :func:`json.dumps` accepts as it is, and
:func:`snapshot_from_dict` rebuilds the snapshot from it.

The package root exports the snapshot classes and :data:`LATENCY_WINDOW`;
:func:`snapshot_from_dict`, for tools that read a device's
``schedulerDiagnostics`` attribute (such as ``ska-tango-scheduler-top``), is
importable from this module only (a second-tier name).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

__all__ = [
    "LATENCY_WINDOW",
    "BackoffDiagnostics",
    "LatencyStats",
    "QueueDiagnostics",
    "SchedulerDiagnostics",
    "StreamDiagnostics",
    "StreamStatus",
    "Totals",
    "WorkerDiagnostics",
    "snapshot_from_dict",
]

#: Length in seconds of the sliding window over which latencies, callback
#: durations and worker busy fractions are kept. The window moves in steps of
#: a tenth of it: a snapshot covers the current second and the nine before it.
LATENCY_WINDOW = 10.0

_T = TypeVar("_T")


@dataclass(frozen=True)
class LatencyStats:
    """Queue wait of events over the last :data:`LATENCY_WINDOW` seconds.

    The queue wait of an event is the time from its arrival on Tango's event
    thread to the start of its first callback. All values are milliseconds;
    they are 0.0 when no event was delivered in the window.

    Attributes:
        last_ms: Queue wait of the most recently delivered event.
        max_ms: Largest queue wait in the window.
        p99_ms: 99th percentile of the queue waits in the window.
        samples: Number of delivered events in the window.
    """

    last_ms: float = 0.0
    max_ms: float = 0.0
    p99_ms: float = 0.0
    samples: int = 0


@dataclass(frozen=True)
class StreamStatus:
    """Where one stream's subscription stands (see ``CallbackScheduler.stream_status``).

    Attributes:
        name: The stream's name, ``<attribute TRL>#<event type>``.
        state: ``"connecting"`` (no outcome yet), ``"connected"``,
            ``"failing"`` (the subscription failed or the device stopped
            answering; retried) or ``"closed"``.
        last_error: Text of the most recent error reported for the stream,
            empty once it has connected again.
    """

    name: str
    state: str
    last_error: str = ""

    @property
    def failing(self) -> bool:
        """True when the stream is failing."""
        return self.state == "failing"


@dataclass(frozen=True)
class WorkerDiagnostics:
    """One worker thread.

    Attributes:
        name: The thread's name.
        busy_fraction: Share of the last :data:`LATENCY_WINDOW` seconds (or
            of the worker's life, if shorter) spent inside callbacks, from
            0.0 to 1.0.
    """

    name: str
    busy_fraction: float = 0.0


@dataclass(frozen=True)
class Totals:
    """Counts over the scheduler's whole life, plus Tango call counts.

    Unlike the per-stream and per-queue rows, these keep counting what
    streams that are gone received.

    Attributes:
        received: Events put on queues.
        delivered: Events taken off queues for delivery.
        dropped: Events discarded by full queues.
        queued: Events waiting in queues.
        callback_errors: Exceptions raised by callbacks.
        subscribe_calls: Calls made to ``DeviceProxy.subscribe_event``.
        unsubscribe_calls: Calls made to ``DeviceProxy.unsubscribe_event``.
        slow_callbacks: Callbacks that ran longer than the scheduler's
            ``slow_callback_duration``.
        max_latency_ms: The worst queue wait over the window, across all
            queues, in milliseconds.
    """

    received: int = 0
    delivered: int = 0
    dropped: int = 0
    queued: int = 0
    callback_errors: int = 0
    subscribe_calls: int = 0
    unsubscribe_calls: int = 0
    slow_callbacks: int = 0
    max_latency_ms: float = 0.0


@dataclass(frozen=True)
class QueueDiagnostics:
    """State of one event queue.

    Attributes:
        name: The queue's label.
        size: Its capacity.
        depth: Events waiting in it.
        received: Events put on it.
        delivered: Events taken off it for delivery.
        dropped: Events it discarded because it was full.
        streams: Names of the streams it serves.
        latency: Queue wait of its events over the window.
        slow_callbacks: Slow callbacks of its streams so far.
    """

    name: str
    size: int
    depth: int
    received: int
    delivered: int
    dropped: int
    streams: tuple[str, ...] = ()
    latency: LatencyStats = field(default_factory=LatencyStats)
    slow_callbacks: int = 0


@dataclass(frozen=True)
class StreamDiagnostics:
    """State of one event stream (device, attribute, event type).

    Attributes:
        name: ``<attribute TRL>#<event type name>``.
        device: Canonical TRL of the device.
        attribute: Attribute name as first given.
        event_type: Event type name, e.g. ``"CHANGE_EVENT"``.
        state: ``"connecting"``, ``"connected"``, ``"failing"`` or ``"closed"``.
        pinned: Kept connected by ``connect_event_stream``.
        callbacks: Number of registered callbacks.
        queue: Name of the queue that feeds it.
        queued: Events of this stream waiting in the queue.
        received: Events received from Tango (and synthetic error events).
        delivered: Events taken off the queue for delivery.
        dropped: Events of this stream discarded by a full queue.
        callback_errors: Exceptions raised by its callbacks.
        last_error: Text of the last error event, empty if none.
        latency: Queue wait of its events over the window.
        callback_mean_ms: Mean time, in milliseconds, that delivering one
            event to all its callbacks took over the window.
        callback_max_ms: Longest such delivery over the window.
        slow_callbacks: Its callbacks that ran longer than the scheduler's
            ``slow_callback_duration``, so far.
    """

    name: str
    device: str
    attribute: str
    event_type: str
    state: str
    pinned: bool
    callbacks: int
    queue: str
    queued: int
    received: int
    delivered: int
    dropped: int
    callback_errors: int
    last_error: str = ""
    latency: LatencyStats = field(default_factory=LatencyStats)
    callback_mean_ms: float = 0.0
    callback_max_ms: float = 0.0
    slow_callbacks: int = 0


@dataclass(frozen=True)
class BackoffDiagnostics:
    """Retry state of one stream that is failing to connect.

    Attributes:
        stream: Name of the stream.
        attempts: Failed attempts since the last success.
        delay: Seconds chosen before the next attempt.
        next_attempt_in: Seconds from the snapshot to the next attempt, or
            None when the next retry is left to Tango's own 10 s cycle.
        last_error: Text of the last failure.
        failing_since: Unix time of the first failure of this series.
    """

    stream: str
    attempts: int
    delay: float
    next_attempt_in: float | None
    last_error: str
    failing_since: float | None


@dataclass(frozen=True)
class SchedulerDiagnostics:
    """Everything a scheduler can tell about itself at one instant.

    Attributes:
        name: Scheduler name.
        thread_count: Number of worker threads.
        running: False once the scheduler is shut down.
        timestamp: Unix time of the snapshot.
        totals: Counts over the scheduler's life.
        queues: Every queue in use.
        streams: Every stream.
        backoff: Every stream currently retrying.
        workers: Every worker thread.
        window: Length in seconds of the window of the latency figures.
    """

    name: str
    thread_count: int
    running: bool
    timestamp: float
    totals: Totals = field(default_factory=Totals)
    queues: tuple[QueueDiagnostics, ...] = ()
    streams: tuple[StreamDiagnostics, ...] = ()
    backoff: tuple[BackoffDiagnostics, ...] = ()
    workers: tuple[WorkerDiagnostics, ...] = ()
    window: float = LATENCY_WINDOW

    def to_dict(self) -> dict[str, Any]:
        """Return the snapshot as JSON-ready nested dicts and lists."""
        data = asdict(self)
        for item in data["queues"]:
            item["streams"] = list(item["streams"])
        data["queues"] = list(data["queues"])
        data["streams"] = list(data["streams"])
        data["backoff"] = list(data["backoff"])
        data["workers"] = list(data["workers"])
        return data

    def backoff_dict(self) -> dict[str, Any]:
        """Return the retry state keyed by stream name, JSON-ready."""
        return {
            b.stream: {
                "attempts": b.attempts,
                "delay": b.delay,
                "next_attempt_in": b.next_attempt_in,
                "last_error": b.last_error,
                "failing_since": b.failing_since,
            }
            for b in self.backoff
        }


def snapshot_from_dict(data: Mapping[str, Any]) -> SchedulerDiagnostics:
    """Rebuild a diagnostics snapshot from its ``to_dict()`` form (the attribute's JSON).

    Keys this version does not know are ignored, and keys an older device
    does not send keep their defaults, so devices running another version of
    the package can be shown.

    Args:
        data: The decoded JSON.

    Returns:
        The snapshot.
    """
    return _build(
        SchedulerDiagnostics,
        data,
        {
            "totals": lambda d: _build(Totals, d, {}),
            "queues": lambda items: tuple(
                _build(
                    QueueDiagnostics,
                    d,
                    {"latency": _latency, "streams": tuple},
                )
                for d in items
            ),
            "streams": lambda items: tuple(
                _build(StreamDiagnostics, d, {"latency": _latency}) for d in items
            ),
            "backoff": lambda items: tuple(_build(BackoffDiagnostics, d, {}) for d in items),
            "workers": lambda items: tuple(_build(WorkerDiagnostics, d, {}) for d in items),
        },
    )


def _build(
    cls: type[_T], data: Mapping[str, Any], nested: Mapping[str, Callable[[Any], Any]]
) -> _T:
    """Make a dataclass from a dict, ignoring unknown keys; missing keys keep defaults."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {k: v for k, v in data.items() if k in names}
    for key, convert in nested.items():
        if key in kwargs:
            kwargs[key] = convert(kwargs[key])
    return cls(**kwargs)


def _latency(data: Mapping[str, Any]) -> LatencyStats:
    return _build(LatencyStats, data, {})
