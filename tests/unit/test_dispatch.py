"""The worker pool: order, fairness, exclusivity, error isolation, shutdown."""

from __future__ import annotations

import _thread
import gc
import logging
import sys
import threading
import time
import traceback
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tango import EventType

from ska_tango_scheduler import CallbackScheduler, _dispatch
from ska_tango_scheduler._callbacks import CallbackRegistration, RateLimitedLogger
from ska_tango_scheduler._dispatch import Dispatcher
from ska_tango_scheduler._streams import EventStream, StreamKey
from ska_tango_scheduler._trl import DeviceKey


def test_events_of_one_queue_arrive_in_order(make_dispatcher, sink_class, limited, wait) -> None:
    dispatcher = make_dispatcher(4)
    seen: list[int] = []
    sink = sink_class("s", limited, seen.append)
    queue = dispatcher.new_queue(10_000)
    for i in range(5000):
        dispatcher.put(queue, sink, i)
    wait(lambda: len(seen) == 5000, what="all 5000 events of the queue delivered")
    assert seen == list(range(5000))


def test_callbacks_of_a_sink_run_in_registration_order(
    make_dispatcher, sink_class, limited, wait
) -> None:
    dispatcher = make_dispatcher(2)
    calls: list[tuple[str, int]] = []
    sink = sink_class(
        "s", limited, lambda e: calls.append(("a", e)), lambda e: calls.append(("b", e))
    )
    queue = dispatcher.new_queue(10)
    for i in range(3):
        dispatcher.put(queue, sink, i)
    wait(lambda: len(calls) == 6, what="6 callback calls (3 events x 2 callbacks)")
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]


@pytest.mark.parametrize("thread_count", [1, 2, 3])
def test_backlog_does_not_hold_up_a_quiet_queue(
    make_dispatcher, sink_class, gate_class, limited, wait, thread_count
) -> None:
    """A queue with 10 000 events delays a newly busy queue by <= 1 callback per worker."""
    dispatcher = make_dispatcher(thread_count)
    order: list[str] = []
    lock = threading.Lock()
    gates = [gate_class() for _ in range(thread_count)]
    first = iter(gates)

    def flood(event: Any) -> None:
        gate = next(first, None)
        if gate is not None:
            gate(event)
        with lock:
            order.append("flood")

    def quiet(event: Any) -> None:
        with lock:
            order.append("quiet")

    flood_queues = [dispatcher.new_queue(10_000) for _ in range(thread_count)]
    flood_sinks = [sink_class(f"f{i}", limited, flood) for i in range(thread_count)]
    for queue, sink in zip(flood_queues, flood_sinks, strict=True):
        for i in range(10_000 // thread_count):
            dispatcher.put(queue, sink, i)
    for gate in gates:  # every worker is now busy with a flood callback
        assert gate.entered.wait(30)
    quiet_queue = dispatcher.new_queue(10)
    dispatcher.put(quiet_queue, sink_class("q", limited, quiet), 0)
    with lock:
        before = len(order)
    for gate in gates:
        gate.release.set()
    wait(lambda: "quiet" in order, what="the quiet queue's event delivered")
    with lock:
        floods_in_between = order.index("quiet") - before
    # The callbacks already running when the quiet event came are allowed, one per worker.
    assert floods_in_between <= thread_count, order[: before + thread_count + 2]


def test_never_two_workers_on_one_queue(make_dispatcher, sink_class, limited, wait) -> None:
    dispatcher = make_dispatcher(4)
    active: dict[str, int] = {}
    worst: dict[str, int] = {}
    lock = threading.Lock()
    done = [0]

    def make(name: str):
        def callback(event: Any) -> None:
            with lock:
                active[name] = active.get(name, 0) + 1
                worst[name] = max(worst.get(name, 0), active[name])
            time.sleep(0.0005)
            with lock:
                active[name] -= 1
                done[0] += 1

        return callback

    shared = dispatcher.new_queue(1000)
    queues = [shared, shared] + [dispatcher.new_queue(1000) for _ in range(4)]
    # Sinks 0 and 1 share a queue: their callbacks count under one name.
    sinks = [sink_class(f"s{i}", limited, make(q.name)) for i, q in enumerate(queues)]
    for i in range(200):
        for sink, queue in zip(sinks, queues, strict=True):
            dispatcher.put(queue, sink, i)
    wait(lambda: done[0] == 1200, what="all 1200 events delivered")
    assert worst == {q.name: 1 for q in queues}


def test_callback_errors_are_counted_and_survived(
    make_dispatcher, sink_class, limited, wait, caplog
) -> None:
    dispatcher = make_dispatcher(1)
    good: list[int] = []

    def bad(event: Any) -> None:
        raise RuntimeError(f"boom {event}")

    sink = sink_class("s", limited, bad, good.append)
    queue = dispatcher.new_queue(1000)
    with caplog.at_level(logging.ERROR, logger="test.core"):
        for i in range(100):
            dispatcher.put(queue, sink, i)
        wait(lambda: len(good) == 100, what="the good callback called for 100 events")
    assert good == list(range(100))
    assert sink.counters.callback_errors == 100
    # Logged, but not 100 times.
    assert 1 <= len([r for r in caplog.records if "raised" in r.getMessage()]) <= 2
    # the worker is still alive and serving
    dispatcher.put(queue, sink, 100)
    wait(lambda: len(good) == 101, what="event 100 delivered after the errors")


def test_totals_count_callback_errors(make_dispatcher, sink_class, limited, wait) -> None:
    dispatcher = make_dispatcher(1)
    # Sinks that report their failures like the real streams do.

    class Counting(sink_class):  # type: ignore[misc, valid-type]
        def deliver(self, payload: Any) -> None:
            before = self.counters.callback_errors
            super().deliver(payload)
            dispatcher.count_callback_errors(self.counters.callback_errors - before)

    def bad(event: Any) -> None:
        raise ValueError

    sink = Counting("s", limited, bad)
    queue = dispatcher.new_queue(10)
    for i in range(7):
        dispatcher.put(queue, sink, i)
    wait(lambda: dispatcher.totals.callback_errors == 7, what="7 callback errors counted")


def test_stop_lets_the_running_callback_finish(make_dispatcher, sink_class, limited) -> None:
    dispatcher = make_dispatcher(1)
    finished = threading.Event()
    started = threading.Event()

    def slow(event: Any) -> None:
        started.set()
        time.sleep(0.3)
        finished.set()

    queue = dispatcher.new_queue(10)
    sink = sink_class("s", limited, slow)
    for i in range(5):
        dispatcher.put(queue, sink, i)
    assert started.wait(30)
    assert dispatcher.stop(timeout=30)
    assert finished.is_set()
    # Events not yet delivered stay counted as queued.
    assert queue.received == 5 == queue.counters.delivered + len(queue)
    assert dispatcher.stop(timeout=1)  # idempotent
    assert not any(t.is_alive() for t in dispatcher.threads)


def test_stop_from_a_callback_does_not_deadlock(make_dispatcher, sink_class, limited, wait) -> None:
    dispatcher = make_dispatcher(2)
    result: list[bool] = []
    sink = sink_class("s", limited, lambda e: result.append(dispatcher.stop(timeout=30)))
    dispatcher.put(dispatcher.new_queue(1), sink, 0)
    wait(lambda: bool(result), what="stop() called from a callback to return")
    assert result == [True]


def test_drops_are_logged_without_flooding(
    make_dispatcher, sink_class, gate_class, limited, wait, caplog
) -> None:
    dispatcher = make_dispatcher(1)
    gate = gate_class()
    seen: list[int] = []

    def callback(event: int) -> None:
        if event == 0:
            gate(event)
        seen.append(event)

    queue = dispatcher.new_queue(2)
    sink = sink_class("s", limited, callback)
    with caplog.at_level(logging.WARNING, logger="test.core"):
        dispatcher.put(queue, sink, 0)
        assert gate.entered.wait(30)
        for i in range(1, 50):
            dispatcher.put(queue, sink, i)
        gate.release.set()
        wait(lambda: len(seen) == 3, what="3 events delivered (the first and the 2 newest)")
    assert seen == [0, 48, 49]
    assert queue.counters.dropped == 47 == sink.counters.dropped
    drops = [r for r in caplog.records if "discarded" in r.getMessage()]
    assert len(drops) == 1 and "47" in drops[0].getMessage()


def test_worker_threads_are_named_and_wrapped(wait) -> None:
    entered: list[str] = []

    class Context:
        def __enter__(self) -> None:
            entered.append(threading.current_thread().name)

        def __exit__(self, *exc: object) -> None:
            pass

    dispatcher = Dispatcher(2, "named", logging.getLogger("x"), thread_context=Context)
    dispatcher.start()
    try:
        wait(lambda: len(entered) >= 2, what="both workers entered their thread context")
        assert sorted(entered) == ["named.worker-0", "named.worker-1"]
    finally:
        assert dispatcher.stop(timeout=30)


def test_a_worker_lingers_longer_while_work_keeps_coming(
    monkeypatch, sink_class, limited, wait
) -> None:
    """Each linger that ends with work waiting doubles the next, up to LINGER_MAX.

    A linger that ends with nothing parks the worker, and the first linger
    after a park is LINGER again. The worker's sleeps are recorded; each of
    the first eight lingers puts an event, as a flood would.
    """
    lingers: list[float] = []
    fed = [0]
    real_sleep = time.sleep

    class _Time:
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(seconds: float) -> None:
            if seconds > 0:  # not the GIL hand-over's sleep(0)
                lingers.append(seconds)
                if fed[0] < 8:
                    fed[0] += 1
                    dispatcher.put(queue, sink, fed[0])
            real_sleep(seconds)

    monkeypatch.setattr(_dispatch, "time", _Time)
    seen: list[Any] = []
    dispatcher = Dispatcher(1, "linger", logging.getLogger("test"))
    queue = dispatcher.new_queue(10)
    sink = sink_class("s", limited, seen.append)
    dispatcher.start()
    try:
        wait(
            lambda: dispatcher.parked == 1 and len(lingers) == 9,
            what="the worker parked after nine lingers (eight ending with an event)",
        )
        dispatcher.put(queue, sink, "after the park")
        wait(
            lambda: dispatcher.parked == 1 and len(lingers) == 10,
            what="the worker parked again after one more linger",
        )
    finally:
        assert dispatcher.stop(timeout=30), "the worker did not stop"
    short, longest = _dispatch.LINGER, _dispatch.LINGER_MAX
    expected = [short, 2 * short, 4 * short] + [longest] * 6 + [short]
    assert longest == pytest.approx(8 * short), "the test assumes LINGER_MAX = 8 x LINGER"
    assert lingers == pytest.approx(expected), lingers
    assert seen == [*range(1, 9), "after the park"]


def test_owns_only_its_queues(make_dispatcher) -> None:
    a, b = make_dispatcher(1), make_dispatcher(1)
    queue = a.new_queue(1)
    assert a.owns(queue) and not b.owns(queue) and not a.owns(object())


def test_rate_limited_logger_reports_suppressed(caplog) -> None:
    limited = RateLimitedLogger(logging.getLogger("test.rl"), interval=0.2)
    with caplog.at_level(logging.INFO, logger="test.rl"):
        for _ in range(5):
            limited.log(logging.INFO, "k", "msg %s", "x")
        time.sleep(0.25)
        limited.log(logging.INFO, "k", "msg %s", "y")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["msg x", "msg y (4 similar message(s) suppressed)"]


ops = st.lists(
    st.tuples(st.integers(0, 3), st.integers(1, 40), st.booleans()), min_size=1, max_size=25
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=ops, sizes=st.lists(st.integers(1, 16), min_size=4, max_size=4), threads=st.integers(1, 3)
)
def test_accounting_holds_at_every_snapshot(ops, sizes, threads, sink_class, limited, wait) -> None:
    """Every event put is delivered, dropped or queued, for random interleavings.

    The test counts what it puts itself; the dispatcher's counts must agree
    at every snapshot, per sink, per queue and in total.
    """
    dispatcher = Dispatcher(threads, "prop", logging.getLogger("test.prop"))
    dispatcher.start()
    try:
        queues = [dispatcher.new_queue(size) for size in sizes]
        queues[3] = queues[0]  # one queue shared by two sinks
        slow = lambda e: time.sleep(0.0002)  # noqa: E731
        sinks = [sink_class(f"s{i}", limited, slow) for i in range(4)]
        put_per_sink = [0, 0, 0, 0]

        def check() -> None:
            with dispatcher.locked():
                qs = set(queues)
                for q in qs:
                    c = q.counters
                    put = sum(n for i, n in enumerate(put_per_sink) if queues[i] is q)
                    assert put == q.received == c.delivered + c.dropped + len(q)
                for i, s in enumerate(sinks):
                    waiting = sum(1 for entry in queues[i]._items if entry[0] is s)
                    c = s.counters
                    assert put_per_sink[i] == c.delivered + c.dropped + waiting
                t = dispatcher.totals
                assert dispatcher.received == sum(put_per_sink)
                assert dispatcher.received == t.delivered + t.dropped + sum(len(q) for q in qs)

        for target, count, pause in ops:
            for i in range(count):
                dispatcher.put(queues[target], sinks[target], i)
                put_per_sink[target] += 1
            if pause:
                time.sleep(0.001)
            check()
        wait(lambda: not any(len(q) for q in queues), what="every queue drained")
        check()
        assert all(len(q) == 0 for q in queues)
    finally:
        assert dispatcher.stop(timeout=30)


@pytest.mark.parametrize("thread_count", [2, 3])
def test_no_second_worker_enters_a_queue_whose_callback_blocks(
    make_dispatcher, sink_class, gate_class, limited, wait, thread_count
) -> None:
    """Events put while a worker is blocked in a queue's callback wait for that worker."""
    dispatcher = make_dispatcher(thread_count)
    gate = gate_class()
    inside: list[str] = []
    lock = threading.Lock()
    concurrent: list[int] = []
    delivered: list[int] = []

    def callback(event: int) -> None:
        with lock:
            inside.append(threading.current_thread().name)
            concurrent.append(len(inside))
        if event == 0:
            gate(event)
        with lock:
            inside.remove(threading.current_thread().name)
            delivered.append(event)

    others: list[int] = []
    queue = dispatcher.new_queue(100)
    sink = sink_class("blocked", limited, callback)
    other_queue = dispatcher.new_queue(100)
    other = sink_class("other", limited, others.append)
    dispatcher.put(queue, sink, 0)
    try:
        assert gate.entered.wait(30)
        for i in range(1, 21):
            dispatcher.put(queue, sink, i)
            dispatcher.put(other_queue, other, i)  # keeps the other workers awake
            time.sleep(0.001)
        # The idle workers had every chance to enter.
        wait(lambda: len(others) == 20, what="the 20 events of the other queue")
        time.sleep(0.05)
        with lock:
            assert delivered == [] and concurrent == [1], (delivered, concurrent)
    finally:
        gate.release.set()
    wait(lambda: len(delivered) == 21, what="all 21 events of the blocked queue")
    assert delivered == list(range(21))
    assert max(concurrent) == 1


class _ReleaseNeedsPut:
    """An event whose release waits for another thread's ``put`` to get through.

    It stands for a Tango event holding the last reference to a ``DeviceProxy``:
    cppTango's proxy destructor waits for Tango's event thread, which may itself be
    waiting in ``put`` for the dispatcher lock.
    """

    def __init__(self, dispatcher: Dispatcher, queue: Any, sink: Any, done: list[bool]) -> None:
        self.dispatcher, self.queue, self.sink, self.done = dispatcher, queue, sink, done

    def __del__(self) -> None:
        other = threading.Thread(
            target=self.dispatcher.put, args=(self.queue, self.sink, "from-del"), daemon=True
        )
        other.start()
        other.join(5)
        self.done.append(not other.is_alive())


@pytest.mark.parametrize("dropped", [False, True], ids=["delivered", "dropped"])
def test_an_event_is_never_released_under_the_dispatcher_lock(
    make_dispatcher, sink_class, limited, wait, dropped
) -> None:
    """Releasing an event may call into Tango, which may need ``put``: never under the lock."""
    dispatcher = make_dispatcher(1)
    seen: list[Any] = []
    sink = sink_class("s", limited, lambda e: seen.append(e) if isinstance(e, str) else None)
    other_queue = dispatcher.new_queue(10)
    queue = dispatcher.new_queue(1 if dropped else 10)
    done: list[bool] = []
    dispatcher.put(queue, sink, _ReleaseNeedsPut(dispatcher, other_queue, sink, done))
    dispatcher.put(queue, sink, "next")  # pushes the first out (dropped) or follows it
    wait(lambda: len(done) == 1, what="the first event released")
    assert done == [True], "the put inside the release waited for the dispatcher lock"
    wait(lambda: "from-del" in seen, what="the event put during the release delivered")


class _TrackingLock:
    """A raw lock that records which thread holds it (for the collector hook)."""

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self.holder = 0
        self.acquired = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got:
            self.holder = threading.get_ident()
            self.acquired += 1
        return got

    def release(self) -> None:
        self.holder = 0
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, kind: object, value: object, trace: object) -> None:
        self.release()


def test_no_garbage_collection_starts_under_the_intake_lock(monkeypatch, limited) -> None:
    """The intake lock is held only across plain field updates (see Dispatcher).

    With a collection at every allocation of a garbage-collected object, a
    hook records every collection that starts on a thread holding the intake
    lock, while real threads put (with drops), deliver, linger, park, wake,
    take ``diagnostics()`` snapshots and stop. A collection there could run
    a DeviceProxy destructor that waits for Tango's event thread while that
    thread waits for the lock in put().
    """
    tracking = _TrackingLock()
    monkeypatch.setattr(_dispatch, "_new_lock", lambda: tracking)
    violations: list[str] = []
    collections = [0]

    def hook(phase: str, info: dict[str, int]) -> None:
        if phase != "start":
            return
        collections[0] += 1
        if tracking.holder == threading.get_ident() and len(violations) < 10:
            frame = sys._getframe(1)  # noqa: SLF001 - where the collection started
            violations.append(f"offset {frame.f_lasti} of {frame.f_code.co_name}:\n")
            violations.append("".join(traceback.format_stack(frame, limit=4)))

    scheduler = CallbackScheduler(2, name="gc")
    dispatcher = scheduler._dispatcher  # noqa: SLF001
    delivered = [0]

    def callback(event: Any) -> None:
        delivered[0] += 1
        _ = [event, {"garbage": event}]  # allocates on a worker, outside the lock
        if event % 97 == 0:
            time.sleep(0.001)

    streams = []
    for i, size in enumerate((4, 4, 64)):
        key = StreamKey(DeviceKey("localhost", 10000, f"test/gc/{i}"), "a", EventType.CHANGE_EVENT)
        stream = EventStream(scheduler._ctx, key, "a", dispatcher.new_queue(size), None)  # noqa: SLF001
        stream.registrations = (CallbackRegistration(i, callback),)
        registry = scheduler._registry  # noqa: SLF001 - a stream without Tango, for diagnostics()
        with registry.lock:
            registry.streams[key] = stream
            registry.queue_users[stream.queue] = {stream}
        streams.append(stream)
    stop = threading.Event()
    parked_seen = [0]
    snapshots = [0]

    def produce(first: int) -> None:
        n = 0
        while not stop.is_set():
            for _ in range(50):  # a burst (drops on the small queues)
                stream = streams[(first + n) % 3]
                dispatcher.put(stream.queue, stream, n)
                n += 1
            # Longer than the longest linger, so that workers park between bursts.
            time.sleep(2 * _dispatch.LINGER_MAX)
            parked_seen[0] = max(parked_seen[0], dispatcher.parked)

    def snapshot() -> None:
        while not stop.is_set():
            scheduler.diagnostics()
            snapshots[0] += 1

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(2)]
    threads.append(threading.Thread(target=snapshot))
    thresholds = gc.get_threshold()
    gc.callbacks.append(hook)
    gc.set_threshold(1, 1000, 1000)  # gen 0 at every allocation; rare full ones
    try:
        for thread in threads:
            thread.start()
        # Run the scene until it has reached every path (checked below, with
        # what it reached, after the threads are stopped).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            collections[0] > 2000
            and tracking.acquired > 1000
            and snapshots[0] > 20
            and parked_seen[0]
            and dispatcher.totals.dropped
            and delivered[0] > 100
        ):
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(30)
        # Let the workers park, then stop them (which wakes parked workers).
        while dispatcher.parked < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        scheduler.shutdown(timeout=30)
    finally:
        gc.set_threshold(*thresholds)
        gc.callbacks.remove(hook)
    assert not violations, "a collection started under the intake lock:\n" + "".join(violations)
    # The scene did reach every path it claims to check.
    reached = (
        f"{collections[0]} collections (> 2000), {tracking.acquired} lock acquisitions (> 1000), "
        f"{snapshots[0]} snapshots (> 20), {dispatcher.totals.dropped} dropped (> 0), "
        f"{delivered[0]} delivered (> 100), parked seen {parked_seen[0]} (> 0)"
    )
    assert collections[0] > 2000 and tracking.acquired > 1000 and snapshots[0] > 20, reached
    assert dispatcher.totals.dropped > 0 and delivered[0] > 100 and parked_seen[0] > 0, reached
