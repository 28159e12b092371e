"""Promises about callbacks, checked against a real device server.

* Once ``unregister_callback`` returns, the callback is not called again,
  not even for the event being delivered at that moment: whether the
  unregistering is done by another callback of the same event or by another
  thread, and however the threads interleave.
* A callback raising any exception, ``SystemExit`` included, is counted and
  does not keep the event from the stream's later callbacks.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import tango

from ska_tango_scheduler import CallbackScheduler
from ska_tango_scheduler.testing import wait_for

pytestmark = pytest.mark.integration

CHANGE = tango.EventType.CHANGE_EVENT


def _value(event: Any) -> int | None:
    if event.err or event.attr_value is None:
        return None
    return int(event.attr_value.value)


@pytest.fixture
def source(event_source: Any) -> Iterator[tango.DeviceProxy]:
    """A proxy to the first EventSource device, its counters reset."""
    proxy = tango.DeviceProxy(event_source.devices[0])
    proxy.ResetCounts()
    yield proxy
    proxy.command_inout("StopPushing", [])


@pytest.fixture
def sched() -> Iterator[CallbackScheduler]:
    scheduler = CallbackScheduler(thread_count=2, name="promises")
    yield scheduler
    scheduler.shutdown(timeout=30)


def test_callback_unregistering_a_later_callback_of_the_same_event(
    sched: CallbackScheduler, source: tango.DeviceProxy
) -> None:
    """A calls unregister_callback(B) while handling an event: B never sees that event."""
    calls_b: list[int | None] = []
    done: list[int] = []
    ids: dict[str, int] = {}
    returned = threading.Event()

    def a(event: Any) -> None:
        value = _value(event)
        if value == 2 and "b" in ids:
            sched.unregister_callback(ids.pop("b"))  # type: ignore[arg-type]
            returned.set()
        if value is not None:
            done.append(value)

    def b(event: Any) -> None:
        calls_b.append(_value(event))

    sched.register_event_callback(source, "myAttr1", CHANGE, a).result(timeout=30)
    ids["b"] = sched.register_event_callback(source, "myAttr1", CHANGE, b).result(timeout=30)
    source.command_inout("Push", "myAttr1")
    wait_for(lambda: 1 in calls_b, timeout=30)
    for _ in range(2):
        source.command_inout("Push", "myAttr1")
    wait_for(lambda: 3 in done, timeout=30)
    assert returned.is_set()
    assert 2 not in calls_b and 3 not in calls_b, calls_b
    assert sched.diagnostics().streams[0].callbacks == 1


def test_other_thread_unregistering_during_a_delivery(
    sched: CallbackScheduler, source: tango.DeviceProxy
) -> None:
    """While A blocks on an event, the test thread unregisters B: B never sees it."""
    calls_b: list[tuple[float, int | None]] = []
    entered = threading.Event()
    release = threading.Event()

    def a(event: Any) -> None:
        if _value(event) == 1:
            entered.set()
            assert release.wait(60)

    def b(event: Any) -> None:
        calls_b.append((time.monotonic(), _value(event)))

    sched.register_event_callback(source, "myAttr2", CHANGE, a).result(timeout=30)
    cid = sched.register_event_callback(source, "myAttr2", CHANGE, b).result(timeout=30)
    source.command_inout("Push", "myAttr2")
    assert entered.wait(30)
    sched.unregister_callback(cid)
    returned = time.monotonic()
    release.set()
    source.command_inout("Push", "myAttr2")
    wait_for(lambda: sched.diagnostics().streams[0].queued == 0, timeout=30)
    time.sleep(0.2)
    assert [v for t, v in calls_b if t >= returned] == []
    assert 1 not in [v for _, v in calls_b]


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
    source.command_inout("Push", "myAttr4")
    source.command_inout("Push", "myAttr4")
    wait_for(lambda: after[-2:] == [1, 2], timeout=30)

    def counted() -> bool:
        snap = sched.diagnostics()
        stream = snap.streams[0]
        return stream.callback_errors == stream.delivered == snap.totals.callback_errors >= 3

    wait_for(counted, timeout=30)
    assert all(t.is_alive() for t in sched.threads)
