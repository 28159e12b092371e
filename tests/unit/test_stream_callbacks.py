"""A stream's delivery of one event to its callbacks (``StreamCallbacks.deliver``).

A stream with one callback takes a shorter path than a stream with several;
each test runs on both, called directly on the test thread (no worker, no
Tango): the promises are the same.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from tango import EventType

from ska_tango_scheduler import CallbackScheduler
from ska_tango_scheduler._callbacks import CallbackRegistration
from ska_tango_scheduler._streams import EventStream, StreamKey
from ska_tango_scheduler._trl import DeviceKey

# One callback (the short path), or the same callback followed by a second one.
PATHS = pytest.mark.parametrize("several", [False, True], ids=["one callback", "several"])


@pytest.fixture
def stream_of(sched: CallbackScheduler) -> Callable[..., EventStream]:
    """Make a stream of ``sched`` (never subscribed) with the given callbacks."""

    def make(*callbacks: Callable[[Any], None]) -> EventStream:
        device = DeviceKey("localhost", 10000, "test/deliver/1")
        key = StreamKey(device, "a", EventType.CHANGE_EVENT)
        queue = sched._dispatcher.new_queue(8)  # noqa: SLF001
        stream = EventStream(sched._ctx, key, "a", queue, None)  # noqa: SLF001
        stream.registrations = tuple(CallbackRegistration(i, cb) for i, cb in enumerate(callbacks))
        return stream

    return make


def _callbacks(first: Callable[[Any], None], several: bool) -> list[Callable[[Any], None]]:
    return [first, lambda event: None] if several else [first]


@PATHS
def test_a_callback_runs_with_its_registration_marked_running(stream_of, several: bool) -> None:
    seen: list[tuple[Any, int]] = []
    stream: EventStream

    def callback(event: Any) -> None:
        seen.append((event, stream.registrations[0].running))

    stream = stream_of(*_callbacks(callback, several))
    stream.deliver("e1")
    assert seen == [("e1", threading.get_ident())], "the call, marked as this thread's"
    assert [r.running for r in stream.registrations] == [0] * len(stream.registrations), (
        "every registration marked idle after the delivery"
    )
    assert stream.last_event == "e1"


@PATHS
def test_a_raising_callback_is_counted_logged_and_survived(
    stream_of, sched: CallbackScheduler, several: bool, caplog
) -> None:
    calls: list[Any] = []

    def bad(event: Any) -> None:
        calls.append(event)
        raise RuntimeError(f"boom {event}")

    stream = stream_of(*_callbacks(bad, several))
    with caplog.at_level(logging.ERROR):
        stream.deliver(1)
        stream.deliver(2)
    assert calls == [1, 2], "the callback still gets the event after the one it raised on"
    assert stream.counters.callback_errors == 2
    totals = sched._dispatcher.totals  # noqa: SLF001
    assert totals.callback_errors == 2, "the scheduler's total counts them too"
    assert stream.registrations[0].running == 0, "marked idle after raising"
    logged = [r for r in caplog.records if "raised" in r.getMessage()]
    assert logged, "the error is logged"
    assert stream.name in logged[0].getMessage(), "naming the stream"
    assert logged[0].exc_info is not None, "with its traceback"


@PATHS
def test_an_unregistered_callback_is_not_called(stream_of, several: bool) -> None:
    calls: list[Any] = []
    stream = stream_of(*_callbacks(calls.append, several))
    stream.registrations[0].active = False
    stream.deliver("e1")
    assert calls == [], "a cleared registration is never called again"
    assert stream.registrations[0].running == 0
