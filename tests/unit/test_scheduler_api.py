"""Argument checking and lifecycle of CallbackScheduler (no Tango server needed).

Devices are named by TRLs on a closed port: the scheduler's connector keeps
failing in the background, which these tests do not care about.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import tango

from ska_tango_scheduler import (
    BackoffPolicy,
    CallbackScheduler,
    EventQueue,
    SchedulerShutdownError,
    StreamNotFoundError,
    UnknownCallbackError,
)
from ska_tango_scheduler.testing import wait_for

NOWHERE = "tango://127.0.0.1:1/test/nowhere/1"


def _key(trl: str) -> object:
    from ska_tango_scheduler._compat import key_of

    return key_of(trl)


CHANGE = tango.EventType.CHANGE_EVENT


def noop(event: object) -> None:
    """A callback that does nothing."""


@pytest.fixture
def sched(make_scheduler: Callable[..., CallbackScheduler]) -> CallbackScheduler:
    return make_scheduler(name="api-test", backoff=BackoffPolicy(max_delay=5.0))


@pytest.mark.parametrize("value", [0, -3])
def test_thread_count_below_one(value: int) -> None:
    with pytest.raises(ValueError, match="thread_count must be a whole number from 1 to 128"):
        CallbackScheduler(thread_count=value)


@pytest.mark.parametrize("value", [1.0, "2", None, True])
def test_thread_count_not_int(value: object) -> None:
    with pytest.raises(TypeError, match="thread_count must be a whole number"):
        CallbackScheduler(thread_count=value)  # type: ignore[arg-type]


def test_default_queue_size_checked() -> None:
    with pytest.raises(ValueError, match="default_queue_size"):
        CallbackScheduler(default_queue_size=0)


def test_backoff_type_checked() -> None:
    with pytest.raises(TypeError, match="BackoffPolicy"):
        CallbackScheduler(backoff={"max_delay": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -1])
def test_queue_size_below_one(sched: CallbackScheduler, size: int) -> None:
    with pytest.raises(ValueError, match="queue_size must be a whole number from 1 to 1000000"):
        sched.allocate_queue(queue_size=size)


def test_allocate_queue(sched: CallbackScheduler) -> None:
    queue = sched.allocate_queue(queue_size=8192)
    assert isinstance(queue, EventQueue) and queue.maxsize == 8192


@pytest.mark.parametrize("callback", [None, 42, "print"])
def test_callback_not_callable(sched: CallbackScheduler, callback: object) -> None:
    with pytest.raises(TypeError, match="callback must be callable or have a push_event"):
        sched.register_event_callback(NOWHERE, "attr", CHANGE, callback)  # type: ignore[arg-type]
    assert sched.diagnostics().streams == ()


@pytest.mark.parametrize(
    "event_type",
    [tango.EventType.INTERFACE_CHANGE_EVENT]
    + ([tango.EventType.PIPE_EVENT] if hasattr(tango.EventType, "PIPE_EVENT") else []),
)
def test_unsupported_event_type(sched: CallbackScheduler, event_type: tango.EventType) -> None:
    with pytest.raises(ValueError, match="is not supported"):
        sched.register_event_callback(NOWHERE, "attr", event_type, noop)


@pytest.mark.parametrize("event_type", [0, "CHANGE_EVENT", None])
def test_event_type_not_an_event_type(sched: CallbackScheduler, event_type: object) -> None:
    with pytest.raises(TypeError, match="tango.EventType"):
        sched.register_event_callback(NOWHERE, "attr", event_type, noop)  # type: ignore[arg-type]


@pytest.mark.parametrize("attr", ["", "  ", "a/b"])
def test_bad_attribute_name(sched: CallbackScheduler, attr: str) -> None:
    with pytest.raises(ValueError, match="attr_name"):
        sched.register_event_callback(NOWHERE, attr, CHANGE, noop)


@pytest.mark.parametrize("device", ["not a trl", "a/b/c/d", 42])
def test_bad_device(sched: CallbackScheduler, device: object) -> None:
    with pytest.raises((ValueError, TypeError), match="TRL"):
        sched.register_event_callback(device, "attr", CHANGE, noop)  # type: ignore[arg-type]


def test_queue_factory_checked(sched: CallbackScheduler) -> None:
    with pytest.raises(TypeError, match="queue_factory must be callable"):
        sched.register_event_callback(NOWHERE, "a", CHANGE, noop, queue_factory=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must return an EventQueue"):
        sched.register_event_callback(NOWHERE, "a", CHANGE, noop, queue_factory=lambda: 5)  # type: ignore[arg-type, return-value]
    other = CallbackScheduler()
    try:
        foreign = other.allocate_queue(4)
        with pytest.raises(ValueError, match="another scheduler"):
            sched.register_event_callback(NOWHERE, "a", CHANGE, noop, queue_factory=lambda: foreign)
    finally:
        other.shutdown()
    assert sched.diagnostics().streams == ()


def test_unregister_unknown_id(sched: CallbackScheduler) -> None:
    with pytest.raises(UnknownCallbackError, match="not registered"):
        sched.unregister_callback(12345)  # type: ignore[arg-type]


def test_unregister_twice(sched: CallbackScheduler) -> None:
    cid = sched.register_event_callback(NOWHERE, "a", CHANGE, noop).result(timeout=30)
    sched.unregister_callback(cid)
    with pytest.raises(UnknownCallbackError):
        sched.unregister_callback(cid)


def test_get_queue_of_unknown_stream(sched: CallbackScheduler) -> None:
    with pytest.raises(StreamNotFoundError):
        sched.get_queue(NOWHERE, "a", CHANGE)


def test_disconnect_unpinned_stream(sched: CallbackScheduler) -> None:
    with pytest.raises(StreamNotFoundError, match="connect_event_stream"):
        sched.disconnect_event_stream(NOWHERE, "a", CHANGE)
    sched.register_event_callback(NOWHERE, "a", CHANGE, noop).result(timeout=30)
    with pytest.raises(StreamNotFoundError, match="connect_event_stream"):
        sched.disconnect_event_stream(NOWHERE, "a", CHANGE)


def test_failures_reach_callbacks_as_error_events(sched: CallbackScheduler) -> None:
    got: list[object] = []
    two = threading.Event()

    def callback(event: object) -> None:
        got.append(event)
        if len(got) >= 2:
            two.set()

    sched.register_event_callback(NOWHERE, "myAttr", CHANGE, callback).result(timeout=30)
    assert two.wait(30)
    event = got[0]
    assert event.err  # type: ignore[attr-defined]
    assert event.attr_name == NOWHERE + "/myAttr"  # type: ignore[attr-defined]
    assert event.errors  # type: ignore[attr-defined]
    if hasattr(tango, "EventReason"):
        assert event.event_reason == tango.EventReason.SubFail  # type: ignore[attr-defined]
    backoff = sched.diagnostics().backoff
    assert len(backoff) == 1 and backoff[0].attempts >= 2


def test_every_call_after_shutdown_raises() -> None:
    sched = CallbackScheduler()
    cid = sched.register_event_callback(NOWHERE, "a", CHANGE, noop).result(timeout=30)
    sched.shutdown()
    sched.shutdown()  # idempotent
    assert sched.is_shutdown and not sched.diagnostics().running
    calls = [
        lambda: sched.register_event_callback(NOWHERE, "a", CHANGE, noop),
        lambda: sched.unregister_callback(cid),
        lambda: sched.allocate_queue(4),
        lambda: sched.get_queue(NOWHERE, "a", CHANGE),
        lambda: sched.connect_event_stream(NOWHERE, "a", CHANGE),
        lambda: sched.disconnect_event_stream(NOWHERE, "a", CHANGE),
    ]
    for call in calls:
        with pytest.raises(SchedulerShutdownError, match="shut down"):
            call()
    assert not any(t.is_alive() for t in sched.threads)


@pytest.mark.skipif(
    not hasattr(tango, "EventSubMode"),
    reason="pytango < 10.1 subscribes synchronously: no future is left pending",
)
def test_pending_futures_fail_at_shutdown() -> None:
    sched = CallbackScheduler()
    gate = threading.Event()
    # Hold the connector so the stream's first attempt cannot run.
    sched._ctx.connector.submit(_key(NOWHERE), lambda: gate.wait(30))
    future = sched.register_event_callback(NOWHERE, "a", CHANGE, noop)
    assert not future.done()
    stopper = threading.Thread(target=sched.shutdown)
    stopper.start()
    try:
        wait_for(
            lambda: sched.is_shutdown, timeout=30, interval=0.001, message="the shutdown to begin"
        )
    finally:
        gate.set()
    stopper.join(30)
    with pytest.raises(SchedulerShutdownError):
        future.result(timeout=30)


def test_registration_need_not_wait_for_the_subscription() -> None:
    sched = CallbackScheduler(wait_for_subscription=False)
    gate = threading.Event()
    # Hold the connector: with waiting, PyTango < 10.1 would block here for 30 s.
    sched._ctx.connector.submit(_key(NOWHERE), lambda: gate.wait(30))
    try:
        future = sched.register_event_callback(NOWHERE, "a", CHANGE, noop)
        assert not future.done()
        gate.set()
        assert future.result(timeout=30) > 0
    finally:
        gate.set()
        sched.shutdown()


def test_threads_are_named_after_the_scheduler() -> None:
    with CallbackScheduler(thread_count=3, name="named") as sched:
        names = sorted(t.name for t in sched.threads)
    assert names[-3:] == ["named.worker-0", "named.worker-1", "named.worker-2"]
    assert all(n.startswith("named.") for n in names)
    assert sched.is_shutdown


@pytest.mark.parametrize("value", ["0.1", [1], True, object()])
def test_slow_callback_duration_type_checked(value: object) -> None:
    with pytest.raises(TypeError, match="slow_callback_duration"):
        CallbackScheduler(slow_callback_duration=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1, -0.5, float("nan"), float("inf")])
def test_slow_callback_duration_must_be_positive(value: float) -> None:
    with pytest.raises(ValueError, match="slow_callback_duration"):
        CallbackScheduler(slow_callback_duration=value)


@pytest.mark.parametrize("value", [None, 1, 0.25])
def test_slow_callback_duration_accepted(value: float | None) -> None:
    with CallbackScheduler(slow_callback_duration=value) as sched:
        assert sched.slow_callback_duration == value
        snap = sched.diagnostics()
    assert snap.totals.slow_callbacks == 0 and len(snap.workers) == 1


def test_stream_status(sched: CallbackScheduler) -> None:
    """stream_status reports a stream's state and error; None for no stream."""
    assert sched.stream_status(NOWHERE, "state") is None
    sched.register_event_callback(NOWHERE, "State", CHANGE, noop)
    status = wait_for(
        lambda: (s := sched.stream_status(NOWHERE, "STATE")) is not None and s.failing and s,
        timeout=30,
        interval=0.01,
        message=lambda: f"the stream to fail: {sched.stream_status(NOWHERE, 'state', CHANGE)}",
    )
    assert status is not None and status.failing
    assert status.state == "failing" and status.last_error
    assert status.name == sched.diagnostics().streams[0].name
    assert sched.stream_status(NOWHERE, "state", tango.EventType.PERIODIC_EVENT) is None
    with pytest.raises(ValueError, match="plain attribute"):
        sched.stream_status(NOWHERE, "a/b")
    sched.shutdown(timeout=30)
    assert sched.stream_status(NOWHERE, "state") is None
