"""Benchmark 6, the pure dispatch path: no Tango, a no-op sink.

Measures what the scheduler adds per event on its own: ``Dispatcher.put``
(what Tango's event thread pays) and the worker's delivery, against the
plain-PyTango equivalent, a direct call of the callback on the receiving
thread. Also the hand-off latency of a lone event to an idle worker, and a
``queue.SimpleQueue`` hand-off to a thread as the floor of any hand-off in
Python.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import statistics
import threading
import time
from typing import Any

from ska_tango_scheduler._dispatch import Dispatcher
from ska_tango_scheduler._queues import Counters

from ._common import BenchResult, Row, percentiles

__all__ = ["run"]


class _Sink:
    """A no-op sink that notes when it has seen ``expected`` events."""

    def __init__(self, expected: int) -> None:
        self.counters = Counters()
        self.expected = expected
        self.seen = 0
        self.done = threading.Event()
        self.stamps: list[float] = []

    def deliver(self, payload: Any) -> None:
        self.seen += 1
        if self.seen >= self.expected:
            self.done.set()


class _StampSink(_Sink):
    """A sink that records the delivery time of each event."""

    def deliver(self, payload: Any) -> None:
        self.stamps.append(time.perf_counter() - payload)
        self.done.set()


def _noop(event: Any) -> None:
    """The callback."""


def _dispatcher() -> Dispatcher:
    dispatcher = Dispatcher(
        1, "bench-dispatch", logging.getLogger("benchmarks.dispatch"), contextlib.nullcontext
    )
    dispatcher.start()
    return dispatcher


def _burst(events: int) -> tuple[float, float]:
    """Put ``events`` events into one big queue; return (put µs, total µs) per event."""
    dispatcher = _dispatcher()
    try:
        event_queue = dispatcher.new_queue(events)
        sink = _Sink(events)
        put = dispatcher.put
        started = time.perf_counter()
        for i in range(events):
            put(event_queue, sink, i)
        put_done = time.perf_counter()
        if not sink.done.wait(60):
            raise RuntimeError("the dispatcher did not deliver the burst")
        finished = time.perf_counter()
    finally:
        dispatcher.stop(5)
    return (put_done - started) / events * 1e6, (finished - started) / events * 1e6


def _direct(events: int) -> float:
    """Call the callback ``events`` times; return µs per call."""
    callback = _noop
    started = time.perf_counter()
    for i in range(events):
        callback(i)
    return (time.perf_counter() - started) / events * 1e6


def _isolated(events: int) -> list[float]:
    """Put lone events to an idle worker; return each hand-off latency in µs."""
    dispatcher = _dispatcher()
    try:
        event_queue = dispatcher.new_queue(4)
        sink = _StampSink(1)
        for _ in range(events):
            sink.done.clear()
            dispatcher.put(event_queue, sink, time.perf_counter())
            if not sink.done.wait(5):
                raise RuntimeError("the dispatcher did not deliver an event")
            time.sleep(0.002)  # let the worker go idle
    finally:
        dispatcher.stop(5)
    return [x * 1e6 for x in sink.stamps]


def _direct_latency(events: int) -> list[float]:
    """Call the sink directly, as plain PyTango does; return each latency in µs."""
    sink = _StampSink(1)
    for _ in range(events):
        sink.deliver(time.perf_counter())
    return [x * 1e6 for x in sink.stamps]


def _simple_queue(events: int) -> float:
    """Hand ``events`` events to a thread through ``queue.SimpleQueue``; µs per event."""
    handoff: queue.SimpleQueue[Any] = queue.SimpleQueue()
    done = threading.Event()

    def consume() -> None:
        for _ in range(events):
            _noop(handoff.get())
        done.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    started = time.perf_counter()
    for i in range(events):
        handoff.put(i)
    done.wait(60)
    elapsed = time.perf_counter() - started
    thread.join(5)
    return elapsed / events * 1e6


def run(config: dict[str, Any]) -> BenchResult:
    """Measure, ``repeats`` times each, and keep the medians.

    Args:
        config: ``events`` (burst size), ``isolated`` (lone events), ``repeats``.

    Returns:
        The result.
    """
    events, repeats = int(config["events"]), int(config["repeats"])
    bursts = [_burst(events) for _ in range(repeats)]
    direct = statistics.median(_direct(events) for _ in range(repeats))
    simple = statistics.median(_simple_queue(events) for _ in range(repeats))
    put = statistics.median(b[0] for b in bursts)
    total = statistics.median(b[1] for b in bursts)
    lone = percentiles(_isolated(int(config["isolated"])))
    called = percentiles(_direct_latency(int(config["isolated"])))
    rows = [
        Row(
            "dispatch",
            f"cost per event in a burst of {events}: put + delivery",
            "µs",
            direct,
            total,
            note=f"plain = a direct call of the callback; queue.SimpleQueue hand-off to a "
            f"thread: {simple:.2f} µs",
            digits=2,
        ),
        Row(
            "dispatch",
            "cost on the receiving thread: Dispatcher.put",
            "µs",
            direct,
            put,
            note="what Tango's event thread pays per event instead of running the callback",
            digits=2,
        ),
        Row(
            "dispatch",
            "hand-off latency of a lone event to an idle worker, p50",
            "µs",
            called["p50"],
            lone["p50"],
            note=f"p99 {lone['p99']:.0f} µs, max {lone['max']:.0f} µs over "
            f"{lone['count']} events, 2 ms apart; plain = the callback called directly on "
            "the receiving thread (no hand-off)",
            digits=1,
        ),
    ]
    setup = (
        "No Tango: `Dispatcher.put` into one queue big enough for the burst, one worker "
        "thread, a sink that does nothing. Medians of "
        f"{repeats} runs. The lone-event latency is from `put` to the sink's call, "
        "with the worker idle before each event."
    )
    return BenchResult(
        "dispatch",
        "6. Pure dispatch path (no Tango)",
        setup,
        rows,
        details={
            "config": config,
            "direct_us": direct,
            "simple_queue_us": simple,
            "bursts_us": bursts,
            "lone_latency_us": lone,
            "direct_latency_us": called,
        },
    )
