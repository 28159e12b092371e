"""The demo's two runs: plain PyTango subscriptions, then the same through a scheduler.

Both runs subscribe to the change events of two counters of one
``EventSource`` device: a *flooding* one whose callback is slow, and a *quiet*
one whose callback is quick. The device is told to push both at fixed rates
for a while, then to stop. Each counter's n-th event carries the value n and
the server's clock, so the callbacks can tell which events are new and how
long each took to reach them.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import tango

from .. import CallbackScheduler, SchedulerDiagnostics, StreamDiagnostics
from ..testing import EVENT_SOURCE_ATTRIBUTES

__all__ = [
    "LateDeviceResult",
    "Recorder",
    "RunResult",
    "RunSettings",
    "StreamResult",
    "percentile",
    "run_plain",
    "run_scheduled",
]

CHANGE = tango.EventType.CHANGE_EVENT
# How long to wait for subscriptions and commands before giving up.
_CONNECT_TIMEOUT = 30.0
# How long to wait after the run for the late device's first value.
_LATE_WAIT = 30.0


@dataclass(frozen=True)
class RunSettings:
    """What both runs do.

    Attributes:
        seconds: How long the device pushes events in each run.
        drain: Seconds to let callbacks catch up after pushing stops.
        flood_attribute: Counter pushed fast, with the slow callback.
        flood_rate: Its events per second.
        quiet_attribute: Counter pushed slowly, with the quick callback.
        quiet_rate: Its events per second.
        callback_delay: Seconds the slow callback takes per event.
        threads: Worker threads of the scheduler.
        queue_size: Capacity of each stream's queue in the scheduler.
        late_after: Seconds into the scheduler run at which the late device
            is defined and its server started.
        refresh: Seconds between two updates of the live view.
    """

    seconds: float = 6.0
    drain: float = 1.0
    flood_attribute: str = EVENT_SOURCE_ATTRIBUTES[0]
    flood_rate: float = 200.0
    quiet_attribute: str = EVENT_SOURCE_ATTRIBUTES[1]
    quiet_rate: float = 10.0
    callback_delay: float = 0.05
    threads: int = 2
    queue_size: int = 32
    late_after: float = 1.0
    refresh: float = 0.5


class Recorder:
    """A callback that counts a stream's new events and measures their latency.

    Latency is the time from the server's timestamp of the value
    (``attr_value.time``) to the start of the callback. Events that carry a
    value no newer than ``baseline`` (such as the current value sent when
    subscribing) are not counted.

    Args:
        baseline: The counter's value before the run; only later values count.
        delay: Seconds the callback sleeps per counted event, to be slow.
    """

    def __init__(self, baseline: int, delay: float = 0.0) -> None:
        self.baseline = baseline
        self.delay = delay
        self._lock = threading.Lock()
        self.delivered = 0
        self.errors = 0
        self.latencies: list[float] = []
        self.first_value_at: float | None = None
        self.closed = False

    def __call__(self, event: Any) -> None:
        """Record one event (and sleep ``delay`` seconds if it counts).

        Args:
            event: A Tango event.
        """
        now = time.time()
        if event.err:
            with self._lock:
                self.errors += 1
            return
        value = event.attr_value
        if value is None:
            return
        with self._lock:
            if self.first_value_at is None:
                self.first_value_at = now
            if self.closed or int(value.value) <= self.baseline:
                return
            self.delivered += 1
            self.latencies.append(now - value.time.totime())
        if self.delay > 0:
            time.sleep(self.delay)

    def close(self) -> None:
        """Stop counting: later events are ignored at once, without sleeping."""
        with self._lock:
            self.closed = True

    def snapshot(self) -> tuple[int, list[float]]:
        """Return the delivered count and the latencies so far."""
        with self._lock:
            return self.delivered, list(self.latencies)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile of ``values``.

    Args:
        values: The samples.
        fraction: 0.5 for the median, 0.99 for the 99th percentile, 1 for the maximum.

    Returns:
        The sample at that rank, or None when there are none.
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class StreamResult:
    """What happened to one stream in one run.

    Attributes:
        attribute: The counter attribute.
        rate: Events per second asked of the server.
        pushed: Events the server pushed.
        delivered: New events the callback got before the run ended.
        received: Events the scheduler took from Tango (None for plain PyTango,
            which does not tell).
        dropped: Events the scheduler's full queue discarded (None for plain
            PyTango, which drops without telling).
        queued: Events still waiting in the scheduler's queue at the end.
        latencies: Seconds from the server's timestamp to the callback, per
            delivered event.
    """

    attribute: str
    rate: float
    pushed: int
    delivered: int
    received: int | None = None
    dropped: int | None = None
    queued: int | None = None
    latencies: tuple[float, ...] = ()

    @property
    def undelivered(self) -> int:
        """Pushed events that did not reach the callback."""
        return max(0, self.pushed - self.delivered)


@dataclass(frozen=True)
class LateDeviceResult:
    """How the stream on the late device fared.

    Attributes:
        trl: The device.
        started_at: Seconds into the run at which its server was started.
        first_value_at: Seconds into the run at which its first value arrived,
            or None if none did.
        error_events: Error events the callback received before that.
    """

    trl: str
    started_at: float | None
    first_value_at: float | None
    error_events: int


@dataclass
class RunResult:
    """The outcome of one run.

    Attributes:
        title: Name of the run.
        flood: The flooding stream.
        quiet: The quiet stream.
        late: The stream on the late device, when there was one.
        diagnostics: The scheduler's last snapshot, when a scheduler ran.
    """

    title: str
    flood: StreamResult
    quiet: StreamResult
    late: LateDeviceResult | None = None
    diagnostics: SchedulerDiagnostics | None = field(default=None, repr=False)


def _counts(proxy: tango.DeviceProxy) -> dict[str, int]:
    return dict(zip(EVENT_SOURCE_ATTRIBUTES, (int(v) for v in proxy.pushedCounts), strict=True))


def _start_pushing(proxy: tango.DeviceProxy, settings: RunSettings) -> None:
    proxy.command_inout(
        "StartPushing",
        [
            [settings.flood_rate, settings.quiet_rate],
            [settings.flood_attribute, settings.quiet_attribute],
        ],
    )


def _stop_pushing(proxy: tango.DeviceProxy) -> None:
    proxy.command_inout("StopPushing", [])


#: Shows the progress of a run: called with the seconds elapsed, repeatedly.
ProgressCallback = Callable[[float], None]


def _push_for(
    proxy: tango.DeviceProxy,
    settings: RunSettings,
    progress: ProgressCallback,
    tick: Callable[[float], None] | None = None,
) -> None:
    """Push both streams for ``settings.seconds``, updating the view meanwhile."""
    start = time.monotonic()
    _start_pushing(proxy, settings)
    try:
        while (elapsed := time.monotonic() - start) < settings.seconds:
            if tick is not None:
                tick(elapsed)
            progress(elapsed)
            time.sleep(min(settings.refresh, max(0.0, settings.seconds - elapsed)))
    finally:
        _stop_pushing(proxy)
    progress(settings.seconds)


def run_plain(
    trl: str, settings: RunSettings, progress: Callable[[float, Recorder, Recorder], None]
) -> RunResult:
    """Subscribe with plain ``DeviceProxy.subscribe_event`` and push.

    Every callback runs on Tango's one event thread, so the slow callback of
    the flooding stream holds up the quiet stream too.

    Args:
        trl: The ``EventSource`` device.
        settings: What to do.
        progress: Called with the seconds elapsed and both recorders, now and then.

    Returns:
        The counts and latencies.
    """
    proxy = tango.DeviceProxy(trl)
    _stop_pushing(proxy)
    before = _counts(proxy)
    flood = Recorder(before[settings.flood_attribute], settings.callback_delay)
    quiet = Recorder(before[settings.quiet_attribute])
    ids: list[int] = []
    try:
        ids.append(proxy.subscribe_event(settings.flood_attribute, CHANGE, flood))
        ids.append(proxy.subscribe_event(settings.quiet_attribute, CHANGE, quiet))
        _push_for(proxy, settings, lambda t: progress(t, flood, quiet))
        after = _counts(proxy)
        time.sleep(settings.drain)
        flood.close()
        quiet.close()
    finally:
        flood.close()
        quiet.close()
        for event_id in ids:
            proxy.unsubscribe_event(event_id)
    return RunResult(
        "plain PyTango",
        _plain_stream(settings.flood_attribute, settings.flood_rate, before, after, flood),
        _plain_stream(settings.quiet_attribute, settings.quiet_rate, before, after, quiet),
    )


def _plain_stream(
    attribute: str, rate: float, before: dict[str, int], after: dict[str, int], recorder: Recorder
) -> StreamResult:
    delivered, latencies = recorder.snapshot()
    return StreamResult(
        attribute, rate, after[attribute] - before[attribute], delivered, latencies=tuple(latencies)
    )


def _wait_all(futures: Sequence[Future[Any]]) -> None:
    deadline = time.monotonic() + _CONNECT_TIMEOUT
    for future in futures:
        future.result(timeout=max(0.1, deadline - time.monotonic()))


def run_scheduled(
    trl: str,
    settings: RunSettings,
    progress: Callable[[float, CallbackScheduler], None],
    late_trl: str | None = None,
    start_late: Callable[[], None] | None = None,
) -> RunResult:
    """Register the same callbacks with a :class:`CallbackScheduler` and push.

    Args:
        trl: The ``EventSource`` device.
        settings: What to do.
        progress: Called with the seconds elapsed and the scheduler, now and then.
        late_trl: A device that is not defined yet; a callback is registered
            on it at the start, and ``start_late`` brings it up
            ``settings.late_after`` seconds into the run.
        start_late: Defines and starts the late device.

    Returns:
        The counts, latencies and the scheduler's last snapshot.
    """
    proxy = tango.DeviceProxy(trl)
    _stop_pushing(proxy)
    before = _counts(proxy)
    flood = Recorder(before[settings.flood_attribute], settings.callback_delay)
    quiet = Recorder(before[settings.quiet_attribute])
    late = Recorder(0)
    late_started: list[float] = []
    scheduler = CallbackScheduler(
        thread_count=settings.threads, name="demo", default_queue_size=settings.queue_size
    )
    try:
        futures = [
            scheduler.register_event_callback(trl, settings.flood_attribute, CHANGE, flood),
            scheduler.register_event_callback(trl, settings.quiet_attribute, CHANGE, quiet),
        ]
        if late_trl is not None:
            scheduler.register_event_callback(late_trl, settings.flood_attribute, CHANGE, late)
        _wait_all(futures)
        run_start = time.monotonic()
        run_start_wall = time.time()

        def tick(elapsed: float) -> None:
            if start_late is not None and not late_started and elapsed >= settings.late_after:
                late_started.append(time.monotonic() - run_start)
                start_late()

        _push_for(proxy, settings, lambda t: progress(t, scheduler), tick)
        after = _counts(proxy)
        time.sleep(settings.drain)
        if late_started:
            # A server starting on a busy machine may need longer than the run.
            deadline = time.monotonic() + _LATE_WAIT
            while late.first_value_at is None and time.monotonic() < deadline:
                progress(settings.seconds, scheduler)
                time.sleep(settings.refresh)
        flood.close()
        quiet.close()
        snapshot = scheduler.diagnostics()
    finally:
        flood.close()
        quiet.close()
        scheduler.shutdown(timeout=5.0)
    device_name = trl.lower().rsplit("/", 3)[-3:]
    rows = {
        row.attribute.lower(): row
        for row in snapshot.streams
        if row.device.lower().rsplit("/", 3)[-3:] == device_name
    }
    late_result = None
    if late_trl is not None:
        first = late.first_value_at
        late_result = LateDeviceResult(
            late_trl,
            late_started[0] if late_started else None,
            None if first is None else first - run_start_wall,
            late.errors,
        )
    return RunResult(
        "CallbackScheduler",
        _scheduled_stream(
            settings.flood_attribute, settings.flood_rate, before, after, flood, rows
        ),
        _scheduled_stream(
            settings.quiet_attribute, settings.quiet_rate, before, after, quiet, rows
        ),
        late_result,
        snapshot,
    )


def _scheduled_stream(
    attribute: str,
    rate: float,
    before: dict[str, int],
    after: dict[str, int],
    recorder: Recorder,
    rows: dict[str, StreamDiagnostics],
) -> StreamResult:
    delivered, latencies = recorder.snapshot()
    row = rows.get(attribute.lower())
    return StreamResult(
        attribute,
        rate,
        after[attribute] - before[attribute],
        delivered,
        received=None if row is None else row.received,
        dropped=None if row is None else row.dropped,
        queued=None if row is None else row.queued,
        latencies=tuple(latencies),
    )
