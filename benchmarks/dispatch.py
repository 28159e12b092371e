"""Benchmark 7, the pure dispatch path: no Tango.

Measures what the scheduler adds per event on its own, without Tango:

* ``Dispatcher.put``: what Tango's event thread pays per event (plus the
  stream's own check of the event, not measured here), with no worker
  running, so nothing competes for the GIL;
* a worker's cost per delivered event: the queue is filled first, then one
  worker drains it through a stream-like sink (``run_callbacks`` with one
  no-op callback); with the latency tracking and the slow-callback check,
  and with both stubbed out, so that the difference is the tracking's cost;
* a concurrent burst (``put`` while the worker delivers), and the hand-off
  latency of a lone event to an idle worker.

``python -m benchmarks.dispatch CONFIG_JSON`` prints the figures as JSON:
the orchestrator runs it in a subprocess with another revision first on
``PYTHONPATH`` for the baseline.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import logging
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import package_origin

from ._common import BenchResult, Row, percentiles

__all__ = ["measure", "run"]

_LOGGER = logging.getLogger("benchmarks.dispatch")
_REPO_ROOT = Path(__file__).resolve().parent.parent


def _noop(event: Any) -> None:
    """The callback."""


def _callbacks_module() -> Any:
    """The module that runs callbacks (``_dispatch`` in revisions before ``_callbacks``)."""
    try:
        return importlib.import_module("ska_tango_scheduler._callbacks")
    except ImportError:  # a baseline revision
        return importlib.import_module("ska_tango_scheduler._dispatch")


class _StreamSink:
    """A sink that runs one no-op callback the way a stream does."""

    def __init__(self, expected: int, slow_after: float | None) -> None:
        from ska_tango_scheduler._queues import Counters

        callbacks = _callbacks_module()
        self.counters = Counters()
        self.registrations = (callbacks.CallbackRegistration(1, _noop),)
        self.limited = callbacks.RateLimitedLogger(_LOGGER)
        self.expected = expected
        self.seen = 0
        self.done = threading.Event()
        run_callbacks = callbacks.run_callbacks
        self._run = run_callbacks
        takes_slow = "slow_after" in inspect.signature(run_callbacks).parameters
        self._extra: tuple[Any, ...] = (slow_after,) if takes_slow else ()

    def deliver(self, payload: Any) -> None:
        self._run(self.registrations, payload, self.counters, self.limited, "s", *self._extra)
        self.seen += 1
        if self.seen >= self.expected:
            self.done.set()


class _StampSink:
    """A sink that records the delivery time of each event."""

    def __init__(self) -> None:
        from ska_tango_scheduler._queues import Counters

        self.counters = Counters()
        self.stamps: list[float] = []
        self.done = threading.Event()

    def deliver(self, payload: Any) -> None:
        self.stamps.append(time.perf_counter() - payload)
        self.done.set()


def _dispatcher() -> Any:
    from ska_tango_scheduler._dispatch import Dispatcher

    return Dispatcher(1, "bench-dispatch", _LOGGER, contextlib.nullcontext)


@contextlib.contextmanager
def _untracked() -> Any:
    """Turn the workers' tracking off (current revision only)."""
    from ska_tango_scheduler import _dispatch

    if not hasattr(_dispatch, "_TRACK"):
        yield False
        return
    _dispatch._TRACK = False  # noqa: SLF001
    try:
        yield True
    finally:
        _dispatch._TRACK = True  # noqa: SLF001


def _fill_then_drain(events: int, slow_after: float | None) -> tuple[float, float]:
    """Put ``events`` with no worker running, then drain with one; µs per event each."""
    dispatcher = _dispatcher()
    try:
        event_queue = dispatcher.new_queue(events)
        sink = _StreamSink(events, slow_after)
        put = dispatcher.put
        started = time.perf_counter()
        for i in range(events):
            put(event_queue, sink, i)
        filled = time.perf_counter()
        dispatcher.start()
        if not sink.done.wait(120):
            raise RuntimeError("the dispatcher did not deliver the burst")
        drained = time.perf_counter()
    finally:
        dispatcher.stop(5)
    return (filled - started) / events * 1e6, (drained - filled) / events * 1e6


def _burst(events: int) -> tuple[float, float]:
    """Put while the worker delivers; µs per event of the puts, and until all are delivered."""
    dispatcher = _dispatcher()
    dispatcher.start()
    try:
        event_queue = dispatcher.new_queue(events)
        sink = _StreamSink(events, 0.1)
        put = dispatcher.put
        started = time.perf_counter()
        for i in range(events):
            put(event_queue, sink, i)
        put_done = time.perf_counter()
        if not sink.done.wait(120):
            raise RuntimeError("the dispatcher did not deliver the burst")
        finished = time.perf_counter()
    finally:
        dispatcher.stop(5)
    return (put_done - started) / events * 1e6, (finished - started) / events * 1e6


def _isolated(events: int) -> list[float]:
    """Put lone events to an idle worker; return each hand-off latency in µs."""
    dispatcher = _dispatcher()
    dispatcher.start()
    try:
        event_queue = dispatcher.new_queue(4)
        sink = _StampSink()
        for _ in range(events):
            sink.done.clear()
            dispatcher.put(event_queue, sink, time.perf_counter())
            if not sink.done.wait(5):
                raise RuntimeError("the dispatcher did not deliver an event")
            time.sleep(0.002)  # let the worker go idle
    finally:
        dispatcher.stop(5)
    return [x * 1e6 for x in sink.stamps]


def _direct(events: int) -> float:
    """Call the callback ``events`` times; µs per call (plain PyTango's equivalent)."""
    callback = _noop
    started = time.perf_counter()
    for i in range(events):
        callback(i)
    return (time.perf_counter() - started) / events * 1e6


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


def _clock_read() -> float:
    """µs per ``time.monotonic()`` call (the event thread's share of the tracking)."""
    clock = time.monotonic
    n = 200_000
    started = time.perf_counter()
    for _ in range(n):
        clock()
    return (time.perf_counter() - started) / n * 1e6


def measure(config: dict[str, Any]) -> dict[str, Any]:
    """Take every figure, ``repeats`` times each, interleaved; keep medians.

    Args:
        config: ``events``, ``isolated``, ``repeats``.

    Returns:
        The figures (µs).
    """
    import ska_tango_scheduler

    events, repeats = int(config["events"]), int(config["repeats"])
    tracked, untracked, bursts = [], [], []
    stubbed = [False]
    for _ in range(repeats):
        tracked.append(_fill_then_drain(events, 0.1))
        with _untracked() as stubbed[0]:
            untracked.append(_fill_then_drain(events, None))
        bursts.append(_burst(events))
    lone = percentiles(_isolated(int(config["isolated"])))
    return {
        "package": package_origin(Path(ska_tango_scheduler.__file__).parent),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "put_us": statistics.median(t[0] for t in tracked),
        "worker_us": statistics.median(t[1] for t in tracked),
        "worker_untracked_us": statistics.median(t[1] for t in untracked) if stubbed[0] else None,
        "burst_us": statistics.median(b[1] for b in bursts),
        "burst_put_us": statistics.median(b[0] for b in bursts),
        "clock_us": _clock_read(),
        "direct_us": statistics.median(_direct(events) for _ in range(repeats)),
        "simple_queue_us": statistics.median(_simple_queue(events) for _ in range(repeats)),
        "lone_latency_us": lone,
        "runs": {"tracked": tracked, "untracked": untracked, "bursts": bursts},
    }


def _measure_baseline(config: dict[str, Any], baseline: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(baseline), str(_REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.dispatch", json.dumps(config)],
        env=env,
        cwd=_REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(config: dict[str, Any], baseline: Path | None = None) -> BenchResult:
    """Measure this revision (and the baseline's in a subprocess, if given).

    Args:
        config: ``events`` (burst size), ``isolated`` (lone events), ``repeats``.
        baseline: A ``src`` directory of another revision, or None.

    Returns:
        The result.
    """
    figures = {"current": measure(config)}
    if baseline is not None:
        figures["baseline"] = _measure_baseline(config, baseline)
    rows: list[Row] = []
    events = int(config["events"])
    for name, f in figures.items():
        label = " [baseline]" if name == "baseline" else ""
        rows.append(
            Row(
                "dispatch",
                f"cost on the receiving thread: Dispatcher.put{label}",
                "µs",
                f["direct_us"],
                f["put_us"],
                target="<= 1.5 µs",
                met=f["put_us"] <= 1.5,
                why=f"{f['put_us']:.2f} µs" if f["put_us"] > 1.5 else "",
                note="what Tango's event thread pays per event instead of running the "
                "callback (plain = calling a no-op callback), no worker competing; "
                f"load {f['load_average']}",
                digits=2,
            )
        )
        rows.append(
            Row(
                "dispatch",
                f"worker cost per delivered event (one no-op callback){label}",
                "µs",
                f["direct_us"],
                f["worker_us"],
                note="queue filled first, then drained by one worker",
                digits=2,
            )
        )
        if f.get("worker_untracked_us") is not None:
            cost = f["worker_us"] - f["worker_untracked_us"] + f["clock_us"]
            rows.append(
                Row(
                    "dispatch",
                    f"latency tracking and slow-callback check, added cost per delivered "
                    f"event{label}",
                    "µs",
                    None,
                    cost,
                    target="<= 0.5 µs",
                    met=cost <= 0.5,
                    why=f"{cost:.2f} µs" if cost > 0.5 else "",
                    note=f"worker with tracking {f['worker_us']:.2f} µs, with the windows "
                    f"stubbed and no slow-callback check {f['worker_untracked_us']:.2f} µs, "
                    f"plus the clock read on the receiving thread {f['clock_us']:.3f} µs",
                    digits=2,
                )
            )
        rows.append(
            Row(
                "dispatch",
                f"Dispatcher.put while a worker delivers (the GIL shared){label}",
                "µs",
                f["direct_us"],
                f["burst_put_us"],
                note="the put loop of the burst below: how the earlier report measured put",
                digits=2,
            )
        )
        rows.append(
            Row(
                "dispatch",
                f"cost per event of a burst of {events}: put + delivery, concurrently{label}",
                "µs",
                f["direct_us"],
                f["burst_us"],
                note=f"queue.SimpleQueue hand-off to a thread: {f['simple_queue_us']:.2f} µs",
                digits=2,
            )
        )
        lone = f["lone_latency_us"]
        rows.append(
            Row(
                "dispatch",
                f"hand-off latency of a lone event to an idle worker, p50{label}",
                "µs",
                None,
                lone["p50"],
                note=f"p99 {lone['p99']:.0f} µs, max {lone['max']:.0f} µs over "
                f"{lone['count']} events, 2 ms apart",
                digits=1,
            )
        )
    setup = (
        "No Tango, one worker thread, one queue big enough for the burst, a sink that runs "
        "one no-op callback as a stream does. Medians of "
        f"{config['repeats']} runs, interleaved. The lone-event latency is from `put` to "
        "the sink's call, with the worker idle before each event."
    )
    return BenchResult(
        "dispatch",
        "7. Pure dispatch path (no Tango)",
        setup,
        rows,
        details={"config": config, "figures": figures},
    )


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
