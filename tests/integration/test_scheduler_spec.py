"""The spec's examples, run against a real database and real device servers.

Sections covered: "Registering a callback", "Controlling the event queues",
"Connecting an event stream" and "Slow callbacks".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import tango

from ska_tango_scheduler import CallbackScheduler, StreamNotFoundError
from ska_tango_scheduler.testing import SubscriptionCallCounter, wait_for

pytestmark = pytest.mark.integration

CHANGE = tango.EventType.CHANGE_EVENT
ARCHIVE = tango.EventType.ARCHIVE_EVENT
MakeRecorder = Callable[..., Any]


def _has_value(event: Any) -> bool:
    return not event.err and event.attr_value is not None


def push(proxy: tango.DeviceProxy, attr: str, times: int = 1) -> int:
    value = 0
    for _ in range(times):
        value = proxy.command_inout("Push", attr)
    return int(value)


def test_register_and_unregister(sched: CallbackScheduler, source: tango.DeviceProxy) -> None:
    """Spec: "Registering a callback"."""
    cb1, cb2 = tango.utils.EventCallback(), tango.utils.EventCallback()
    futures = [
        sched.register_event_callback(source, "myAttr1", CHANGE, cb1),
        sched.register_event_callback(source, "myAttr2", ARCHIVE, cb2),
    ]
    callback_ids = [f.result(timeout=30) for f in futures]
    assert len(set(callback_ids)) == 2
    push(source, "myAttr1", 3)
    push(source, "myAttr2", 2)

    def values(cb: Any) -> list[int]:
        return [int(e.attr_value.value) for e in cb.get_events() if _has_value(e)]

    wait_for(
        lambda: values(cb1)[-1:] == [3] and values(cb2)[-1:] == [2],
        timeout=30,
        message="the last pushed values: 3 on myAttr1 (change), 2 on myAttr2 (archive)",
    )
    assert values(cb1) == [0, 1, 2, 3]  # the value at subscription, then each push
    assert values(cb2) == [0, 1, 2]
    assert all(e.event == "change" for e in cb1.get_events())
    assert all(e.event == "archive" for e in cb2.get_events())
    snap = sched.diagnostics()
    assert {s.state for s in snap.streams} == {"connected"}
    assert snap.totals.subscribe_calls == 2

    for cid in callback_ids:
        sched.unregister_callback(cid)
    wait_for(
        lambda: sched.diagnostics().totals.unsubscribe_calls == 2,
        timeout=30,
        message="both streams unsubscribed after their callbacks were unregistered",
    )
    assert sched.diagnostics().streams == ()
    before = len(cb1.get_events())
    push(source, "myAttr1")
    time.sleep(0.5)
    assert len(cb1.get_events()) == before


def test_proxy_and_trl_share_one_stream(
    sched: CallbackScheduler, source: tango.DeviceProxy, event_source: Any, recorder: MakeRecorder
) -> None:
    by_proxy, by_name, by_trl = recorder(), recorder(), recorder()
    ids = [
        sched.register_event_callback(source, "myAttr1", CHANGE, by_proxy).result(timeout=30),
        sched.register_event_callback(
            event_source.devices[0].upper(), "MYATTR1", CHANGE, by_name
        ).result(timeout=30),
        sched.register_event_callback(event_source.trls[0], "myattr1", CHANGE, by_trl).result(
            timeout=30
        ),
    ]
    snap = sched.diagnostics()
    assert len(snap.streams) == 1 and snap.streams[0].callbacks == 3
    assert snap.totals.subscribe_calls == 1
    # A fresh subscription may miss the events pushed right after it (see
    # tools/fresh_subscription_misses.py): push until a pushed value reaches all three.
    recorders = (by_proxy, by_name, by_trl)
    pushed: list[int] = []

    def pushed_value_at_all_three() -> bool:
        if pushed and all(r.values()[-1:] == [pushed[-1]] for r in recorders):
            return True
        pushed.append(push(source, "myAttr1"))
        return False

    wait_for(
        pushed_value_at_all_three,
        timeout=30,
        interval=0.5,
        message=lambda: (
            f"a pushed value (last {pushed[-1:]}) at the callbacks registered by "
            f"proxy, by name and by TRL; they have {[r.values()[-3:] for r in recorders]}"
        ),
    )
    for cid in ids:
        sched.unregister_callback(cid)


def test_shared_queue_keeps_order_between_streams(
    sched: CallbackScheduler, source: tango.DeviceProxy
) -> None:
    """Spec: "Controlling the event queues" (shared and bigger queues)."""
    seen: list[tuple[str, int, float]] = []
    lock = threading.Lock()

    def record(event: Any) -> None:
        if _has_value(event):
            with lock:
                name = event.attr_name.rsplit("/", 1)[-1].lower()
                seen.append((name, int(event.attr_value.value), event.attr_value.time.totime()))

    big = sched.register_event_callback(
        source,
        "myAttr1",
        CHANGE,
        record,
        queue_factory=lambda: sched.allocate_queue(queue_size=8192),
    ).result(timeout=30)
    shared = sched.register_event_callback(
        source,
        "myAttr2",
        ARCHIVE,
        record,
        queue_factory=lambda: sched.get_queue(source, "myAttr1", CHANGE),
    ).result(timeout=30)
    q1 = sched.get_queue(source, "myAttr1", CHANGE)
    assert sched.get_queue(source, "myAttr2", ARCHIVE) is q1
    assert q1.maxsize == 8192

    # The factory of an existing stream is not called.
    def refuse() -> Any:
        raise AssertionError("queue_factory of an existing stream was called")

    extra = sched.register_event_callback(source, "myAttr1", CHANGE, record, queue_factory=refuse)
    sched.unregister_callback(extra.result(timeout=30))

    with lock:
        seen.clear()
    for _ in range(50):
        push(source, "myAttr1")
        push(source, "myAttr2")

    def pushed_seen() -> int:
        with lock:
            return sum(1 for _, v, _ in seen if v > 0)

    wait_for(
        lambda: pushed_seen() >= 100,
        timeout=30,
        message=lambda: f"the 100 pushed events (50 per attribute); seen {pushed_seen()}",
    )
    with lock:
        stamps = [t for _, _, t in seen]
        pushed = [(n, v) for n, v, _ in seen if v > 0]
    # One queue, one worker at a time: delivered in the order the server pushed.
    assert stamps == sorted(stamps)
    assert pushed == [(name, i) for i in range(1, 51) for name in ("myattr1", "myattr2")]
    snap = sched.diagnostics()
    assert len(snap.queues) == 1 and snap.queues[0].dropped == 0
    assert len(snap.queues[0].streams) == 2
    for cid in (big, shared):
        sched.unregister_callback(cid)


def test_small_queue_drops_oldest_and_counts(
    sched: CallbackScheduler, source: tango.DeviceProxy, recorder: MakeRecorder
) -> None:
    slow = recorder(delay=0.05)
    cid = sched.register_event_callback(
        source, "myAttr3", CHANGE, slow, queue_factory=lambda: sched.allocate_queue(queue_size=4)
    ).result(timeout=30)
    source.command_inout("PushBurst", ([300], ["myAttr3"]))
    wait_for(
        lambda: int(source.read_attribute("pushedCounts").value[2]) == 300,
        timeout=60,
        message="the server to have pushed the burst of 300 events",
    )
    # The newest event is never dropped: wait for it (not for a first empty
    # queue, which a loaded machine shows before the burst has all arrived),
    # then for its callback to be counted as delivered.
    wait_for(
        lambda: 300 in slow.values(),
        timeout=60,
        message=lambda: f"the newest event (300) delivered; last values {slow.values()[-5:]}",
    )

    def settled() -> bool:
        stream = sched.diagnostics().streams[0]
        return stream.queued == 0 and stream.delivered == slow.count()

    wait_for(
        settled,
        timeout=60,
        message=lambda: f"an empty queue, every callback counted: {sched.diagnostics().streams[0]}",
    )
    stream = sched.diagnostics().streams[0]
    assert stream.dropped > 0
    assert stream.received == stream.delivered + stream.dropped + stream.queued
    assert slow.count() == stream.delivered
    values = slow.values()
    assert values == sorted(values) and values[-1] == 300  # the newest event is never dropped
    sched.unregister_callback(cid)


def test_pinned_stream_makes_no_tango_calls(
    source: tango.DeviceProxy, recorder: MakeRecorder
) -> None:
    """Spec: "Connecting an event stream"; registering on a pinned stream is client-side."""
    proxy = tango.DeviceProxy(source.dev_name())
    calls = SubscriptionCallCounter(proxy)
    with CallbackScheduler(name="pinned") as sched:
        fut = sched.connect_event_stream(proxy, "myAttr1", CHANGE)
        assert fut.result(timeout=30) is None
        assert (calls.subscribe, calls.unsubscribe) == (1, 0)

        for _ in range(5):
            cb = recorder()
            future = sched.register_event_callback(proxy, "myAttr1", CHANGE, cb)
            assert future.done()  # connected already: nothing to wait for
            value = push(source, "myAttr1")
            wait_for(
                lambda cb=cb, value=value: value in cb.values(),
                timeout=30,
                message=f"the pushed value {value} at a callback on the pinned stream",
            )
            sched.unregister_callback(future.result())
        assert (calls.subscribe, calls.unsubscribe) == (1, 0)
        snap = sched.diagnostics()
        assert snap.totals.subscribe_calls == 1 and snap.totals.unsubscribe_calls == 0
        assert snap.streams[0].pinned and snap.streams[0].callbacks == 0

        sched.disconnect_event_stream(proxy, "myAttr1", CHANGE)
        wait_for(
            lambda: calls.unsubscribe == 1,
            timeout=30,
            message="one Tango unsubscribe after disconnect_event_stream",
        )
        assert sched.diagnostics().streams == ()
        with pytest.raises(StreamNotFoundError):
            sched.get_queue(proxy, "myAttr1", CHANGE)


def test_unpinned_stream_thrashes(source: tango.DeviceProxy, recorder: MakeRecorder) -> None:
    """The counterpart: without a pin every register/unregister pair is a Tango call."""
    proxy = tango.DeviceProxy(source.dev_name())
    calls = SubscriptionCallCounter(proxy)
    with CallbackScheduler(name="unpinned") as sched:
        for i in range(3):
            cid = sched.register_event_callback(proxy, "myAttr1", CHANGE, recorder())
            sched.unregister_callback(cid.result(timeout=30))
            wait_for(
                lambda i=i: calls.unsubscribe == i + 1,
                timeout=30,
                message=f"Tango unsubscribe number {i + 1}, after unregistering callback {i + 1}",
            )
        assert calls.subscribe == 3


def test_pinned_stream_with_callback_disconnects_when_callback_leaves(
    sched: CallbackScheduler, source: tango.DeviceProxy, recorder: MakeRecorder
) -> None:
    sched.connect_event_stream(source, "myAttr2", CHANGE).result(timeout=30)
    cid = sched.register_event_callback(source, "myAttr2", CHANGE, recorder()).result(timeout=30)
    sched.disconnect_event_stream(source, "myAttr2", CHANGE)
    assert len(sched.diagnostics().streams) == 1  # a callback still uses it
    sched.unregister_callback(cid)
    wait_for(
        lambda: sched.diagnostics().totals.unsubscribe_calls == 1,
        timeout=30,
        message="the unsubscribe once the pinned stream's last callback left",
    )
    assert sched.diagnostics().streams == ()


def test_slow_callback_does_not_hold_up_other_streams(
    source: tango.DeviceProxy, recorder: MakeRecorder
) -> None:
    """Spec: "Slow callbacks": thread_count=2, a 0.5 s callback on a flooded attribute."""
    with CallbackScheduler(thread_count=2, name="slow") as sched:
        slow = recorder(delay=0.5)
        quiet = recorder()
        sched.register_event_callback(
            source,
            "myAttr1",
            CHANGE,
            slow,
            queue_factory=lambda: sched.allocate_queue(queue_size=512),
        ).result(timeout=30)
        sched.register_event_callback(source, "myAttr2", CHANGE, quiet).result(timeout=30)
        source.command_inout("StartPushing", ([200.0, 5.0], ["myAttr1", "myAttr2"]))
        try:
            wait_for(
                lambda: len(quiet.values()) >= 16,
                timeout=60,
                message="16 events of the quiet stream beside the flooded one",
            )
        finally:
            source.command_inout("StopPushing", [])
        # The flood's callbacks are far behind (0.5 s each at 200 Hz)...
        assert len(slow.values()) < int(source.read_attribute("pushedCounts").value[0]) / 4
        # ... while every quiet event arrived, each within a generous bound
        # (a plain Tango callback would wait behind the whole backlog).
        quiet_values = quiet.values()
        assert quiet_values == list(range(quiet_values[0], quiet_values[-1] + 1))
        late = [round(x, 3) for x in quiet.latencies()[1:] if x > 2.0]
        assert not late, f"quiet events held up: {late}"


def test_shutdown_right_after_unregister_leaves_no_subscription(
    source: tango.DeviceProxy, recorder: MakeRecorder
) -> None:
    """An unsubscription handed to the connector just before shutdown still happens."""
    for _ in range(5):
        proxy = tango.DeviceProxy(source.dev_name())
        sched = CallbackScheduler(name="quick-exit")
        future = sched.register_event_callback(proxy, "myAttr1", CHANGE, recorder())
        cid = future.result(timeout=30)
        sched.unregister_callback(cid)
        sched.shutdown(timeout=30)
        totals = sched.diagnostics().totals
        assert totals.subscribe_calls == totals.unsubscribe_calls == 1
        assert not proxy.__dict__.get("_subscribed_events")
