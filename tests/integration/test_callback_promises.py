"""Promises about callbacks, checked against a real device server.

* Once ``unregister_callback`` returns, the callback is not called again,
  not even for the event being delivered at that moment: whether the
  unregistering is done by another callback of the same event or by another
  thread, and however the threads interleave.
* A callback raising any exception, ``SystemExit`` included, is counted and
  does not keep the event from the stream's later callbacks.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import tango

from ska_tango_scheduler import CallbackScheduler
from ska_tango_scheduler.testing import WaitTimeoutError, wait_for

pytestmark = pytest.mark.integration

CHANGE = tango.EventType.CHANGE_EVENT


def _value(event: Any) -> int | None:
    if event.err or event.attr_value is None:
        return None
    return int(event.attr_value.value)


@pytest.fixture
def sched(make_scheduler: Callable[..., CallbackScheduler]) -> CallbackScheduler:
    """Two workers, so that the promises hold across them."""
    return make_scheduler(thread_count=2, name="promises")


def _prime(source: tango.DeviceProxy, attr: str, seen: Callable[[int], bool]) -> int:
    """Push until a pushed event arrives; return the value pushed last.

    ZeroMQ may lose events pushed right after a subscription (before the
    server's publisher knows of it): a test must not rely on the first push.
    """
    pushed: list[int] = []

    def push_and_see() -> bool:
        pushed.append(int(source.command_inout("Push", attr)))
        try:
            return bool(
                wait_for(lambda: seen(pushed[-1]), timeout=1.0, interval=0.01, message="the push")
            )
        except WaitTimeoutError:
            return False

    wait_for(
        push_and_see,
        timeout=30,
        interval=0.01,
        message=lambda: f"a pushed event of {attr} at the callback (pushed {pushed[-5:]})",
    )
    return pushed[-1]


def test_callback_unregistering_a_later_callback_of_the_same_event(
    sched: CallbackScheduler, source: tango.DeviceProxy
) -> None:
    """A calls unregister_callback(B) while handling an event: B never sees that event."""
    calls_b: list[int | None] = []
    done: list[int] = []
    ids: dict[str, int] = {}
    threshold = [1 << 62]

    def a(event: Any) -> None:
        value = _value(event)
        if value is not None and value >= threshold[0] and "b" in ids:
            sched.unregister_callback(ids.pop("b"))  # type: ignore[arg-type]
        if value is not None:
            done.append(value)

    def b(event: Any) -> None:
        calls_b.append(_value(event))

    sched.register_event_callback(source, "myAttr1", CHANGE, a).result(timeout=30)
    ids["b"] = sched.register_event_callback(source, "myAttr1", CHANGE, b).result(timeout=30)
    last = _prime(source, "myAttr1", lambda v: v in calls_b)
    threshold[0] = last + 1
    for _ in range(2):
        source.command_inout("Push", "myAttr1")
    wait_for(
        lambda: last + 2 in done,
        timeout=30,
        message=f"the second push after B's unregistering ({last + 2}) handled by A",
    )
    assert "b" not in ids
    assert max(v for v in calls_b if v is not None) == last, calls_b
    assert sched.diagnostics().streams[0].callbacks == 1


def test_other_thread_unregistering_during_a_delivery(
    sched: CallbackScheduler, source: tango.DeviceProxy
) -> None:
    """While A blocks on an event, the test thread unregisters B: B never sees it."""
    calls_b: list[tuple[float, int | None]] = []
    seen_a: list[int] = []
    entered = threading.Event()
    release = threading.Event()
    threshold = [1 << 62]

    def a(event: Any) -> None:
        value = _value(event)
        if value is not None and value >= threshold[0] and not entered.is_set():
            entered.set()
            assert release.wait(60)
        if value is not None:
            seen_a.append(value)

    def b(event: Any) -> None:
        calls_b.append((time.monotonic(), _value(event)))

    sched.register_event_callback(source, "myAttr2", CHANGE, a).result(timeout=30)
    cid = sched.register_event_callback(source, "myAttr2", CHANGE, b).result(timeout=30)
    last = _prime(source, "myAttr2", lambda v: any(x == v for _, x in calls_b))
    threshold[0] = last + 1
    source.command_inout("Push", "myAttr2")
    try:
        assert entered.wait(30), sched.diagnostics().to_dict()
        sched.unregister_callback(cid)
        returned = time.monotonic()
    finally:
        release.set()
    source.command_inout("Push", "myAttr2")
    # Both pushes made after the prime (the blocked one and the next) reach A:
    # wait for the second, not for a count that the prime's events may fill.
    wait_for(
        lambda: last + 2 in seen_a,
        timeout=30,
        message=lambda: (
            f"A handling the push after the unregistering ({last + 2}); A saw {seen_a[-5:]}"
        ),
    )
    wait_for(
        lambda: sched.diagnostics().streams[0].queued == 0,
        timeout=30,
        message="an empty queue after the last push",
    )
    time.sleep(0.2)
    assert [v for t, v in calls_b if t >= returned] == []
    assert max(v for _, v in calls_b if v is not None) == last


def test_no_call_starts_after_unregister_returns_under_a_flood(
    source: tango.DeviceProxy,
) -> None:
    """Unregister at random moments of a flood; no call of the callback starts later.

    A first callback keeps the worker busy so that the unregistering often
    falls in the middle of a delivery, and the switch interval is made tiny
    so that the threads interleave at many more points than they normally
    would.
    """
    late: list[tuple[int, float]] = []
    interval = sys.getswitchinterval()

    def busy(event: Any) -> None:
        until = time.perf_counter() + 50e-6
        while time.perf_counter() < until:
            pass

    with CallbackScheduler(thread_count=2, name="flood-unregister") as sched:
        sched.register_event_callback(
            source,
            "myAttr3",
            CHANGE,
            busy,
            queue_factory=lambda: sched.allocate_queue(200_000),
        ).result(timeout=30)
        source.command_inout("PushBurst", ([200_000], ["myAttr3"]))
        trials: list[tuple[list[float], float]] = []
        sys.setswitchinterval(1e-6)
        try:
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                starts: list[float] = []
                cid = sched.register_event_callback(
                    source, "myAttr3", CHANGE, lambda e, s=starts: s.append(time.monotonic())
                ).result(timeout=30)
                time.sleep(len(trials) % 3 * 1e-4)
                sched.unregister_callback(cid)
                trials.append((starts, time.monotonic()))
        finally:
            sys.setswitchinterval(interval)
            source.command_inout("StopPushing", [])
        time.sleep(0.1)
    for i, (starts, returned) in enumerate(trials):
        late.extend((i, s - returned) for s in list(starts) if s > returned)
    assert len(trials) > 100
    assert sum(1 for s, _ in trials if s) > 10  # the callbacks did run
    assert late == [], f"{len(late)} call(s) started after unregister returned ({len(trials)})"


@pytest.mark.parametrize("exception", [SystemExit(3), KeyboardInterrupt(), ValueError("x")])
def test_any_exception_is_counted_and_the_next_callback_still_runs(
    sched: CallbackScheduler, source: tango.DeviceProxy, exception: BaseException
) -> None:
    after: list[int | None] = []

    def raises(event: Any) -> None:
        raise exception

    sched.register_event_callback(source, "myAttr4", CHANGE, raises).result(timeout=30)
    sched.register_event_callback(
        source, "myAttr4", CHANGE, lambda e: after.append(_value(e))
    ).result(timeout=30)
    last = _prime(source, "myAttr4", lambda v: v in after)
    source.command_inout("Push", "myAttr4")
    source.command_inout("Push", "myAttr4")
    wait_for(
        lambda: after[-2:] == [last + 1, last + 2],
        timeout=30,
        message=lambda: f"{after}, {sched.diagnostics().to_dict()}",
    )

    def counted() -> bool:
        snap = sched.diagnostics()
        stream = snap.streams[0]
        return stream.callback_errors == stream.delivered == snap.totals.callback_errors >= 3

    wait_for(
        counted,
        timeout=30,
        message=lambda: (
            "every delivery counted as a callback error (stream and totals): "
            f"{sched.diagnostics().to_dict()}"
        ),
    )
    assert all(t.is_alive() for t in sched.threads)


def test_latency_durations_and_slow_callbacks_are_reported(
    source: tango.DeviceProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """A sleeping callback beside a quick stream, as diagnostics() shows them."""

    def slow_callback(event: Any) -> None:
        time.sleep(0.15)

    quick_values: list[int | None] = []
    with (
        caplog.at_level(logging.WARNING, logger="ska_tango_scheduler"),
        CallbackScheduler(thread_count=2, name="latency", slow_callback_duration=0.1) as sched,
    ):
        assert sched.slow_callback_duration == 0.1
        sched.register_event_callback(source, "myAttr1", CHANGE, slow_callback).result(30)
        sched.register_event_callback(
            source, "myAttr2", CHANGE, lambda e: quick_values.append(_value(e))
        ).result(30)
        last = _prime(source, "myAttr2", lambda v: v in quick_values)
        for _ in range(3):
            source.command_inout("Push", "myAttr1")
            source.command_inout("Push", "myAttr2")
        wait_for(
            lambda: last + 3 in quick_values,
            timeout=30,
            message=f"the third push of the quick stream ({last + 3})",
        )

        def settled() -> bool:
            snap = sched.diagnostics()
            done = all(s.latency.samples == s.delivered for s in snap.streams)
            return done and snap.totals.queued == 0 and snap.totals.slow_callbacks >= 3

        wait_for(
            settled,
            timeout=30,
            message=lambda: (
                "every delivery sampled, queues empty, 3 slow callbacks: "
                f"{sched.diagnostics().to_dict()}"
            ),
        )
        snap = sched.diagnostics()
    streams = {s.attribute: s for s in snap.streams}
    slow, quick = streams["myAttr1"], streams["myAttr2"]
    assert slow.slow_callbacks == slow.delivered >= 3
    assert quick.slow_callbacks == 0
    assert snap.totals.slow_callbacks == slow.slow_callbacks
    queues = {q.name: q for q in snap.queues}
    assert queues[slow.queue].slow_callbacks == slow.slow_callbacks
    assert queues[quick.queue].slow_callbacks == 0
    # Durations: each slow delivery took the 0.15 s sleep at least.
    assert slow.callback_max_ms >= 150.0 and slow.callback_mean_ms >= 150.0
    assert quick.callback_max_ms < 150.0
    # Queue waits: the slow stream's pushes queue up behind each other.
    assert slow.latency.samples == slow.delivered
    assert slow.latency.max_ms >= 100.0 and slow.latency.p99_ms <= slow.latency.max_ms
    assert quick.latency.samples == quick.delivered
    assert quick.latency.max_ms < slow.latency.max_ms
    assert queues[slow.queue].latency == slow.latency
    assert snap.totals.max_latency_ms == slow.latency.max_ms
    assert snap.window == 10.0
    assert len(snap.workers) == 2 and any(w.busy_fraction > 0.0 for w in snap.workers)
    data = snap.to_dict()
    assert data["streams"][0]["latency"]["samples"] >= 1
    assert [w["name"] for w in data["workers"]] == ["latency.worker-0", "latency.worker-1"]
    warnings = [r.getMessage() for r in caplog.records if "Slow callback" in r.getMessage()]
    assert len(warnings) == 1, warnings  # rate-limited per callback
    assert (
        "slow_callback" in warnings[0] and slow.name in warnings[0] and " took 0.1" in warnings[0]
    )


def test_slow_callbacks_not_checked_when_turned_off(source: tango.DeviceProxy) -> None:
    values: list[int | None] = []

    def slow_callback(event: Any) -> None:
        time.sleep(0.02)
        values.append(_value(event))

    with CallbackScheduler(name="unchecked", slow_callback_duration=None) as sched:
        assert sched.slow_callback_duration is None
        sched.register_event_callback(source, "myAttr3", CHANGE, slow_callback).result(30)
        _prime(source, "myAttr3", lambda v: v in values)
        snap = sched.diagnostics()
    assert snap.totals.slow_callbacks == 0 and snap.streams[0].callback_max_ms >= 20.0
