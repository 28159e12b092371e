"""Bounded drop-oldest queues."""

from __future__ import annotations

import logging

import pytest

from ska_tango_scheduler._dispatch import Dispatcher
from ska_tango_scheduler._queues import Counters, EventQueue


class _Sink:
    def __init__(self) -> None:
        self.counters = Counters()

    def deliver(self, payload: object) -> None:  # pragma: no cover - not called here
        raise AssertionError


def _dispatcher() -> Dispatcher:
    """A dispatcher whose workers are never started: events stay queued."""
    return Dispatcher(1, "unstarted", logging.getLogger("test.queues"))


def test_fifo_order_and_counts() -> None:
    dispatcher, sink = _dispatcher(), _Sink()
    queue = dispatcher.new_queue(10)
    for i in range(5):
        dispatcher.put(queue, sink, i)
    assert [payload for _, payload, _ in queue._items] == [0, 1, 2, 3, 4]
    stamps = [stamp for _, _, stamp in queue._items]
    assert stamps == sorted(stamps)
    assert (queue.received, queue.counters.delivered, queue.counters.dropped) == (5, 0, 0)
    assert dispatcher.received == 5


def test_full_queue_drops_oldest_and_counts_exactly() -> None:
    dispatcher = _dispatcher()
    queue = dispatcher.new_queue(3)
    a, b = _Sink(), _Sink()
    for i in range(10):
        dispatcher.put(queue, a if i % 2 else b, i)
    assert len(queue) == 3
    assert [payload for _, payload, _ in queue._items] == [7, 8, 9]
    assert queue.counters.dropped == 7 == dispatcher.totals.dropped
    assert b.counters.dropped == 4  # 0, 2, 4, 6
    assert a.counters.dropped == 3  # 1, 3, 5
    assert queue.received == 10 == dispatcher.received


@pytest.mark.parametrize("size", [0, -1])
def test_size_below_one_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        EventQueue(size)


@pytest.mark.parametrize("size", [1.5, "3", True])
def test_size_must_be_int(size: object) -> None:
    with pytest.raises(TypeError, match="must be an int"):
        EventQueue(size)  # type: ignore[arg-type]


def test_names_are_unique_unless_given() -> None:
    assert EventQueue(1).name != EventQueue(1).name
    assert EventQueue(1, "mine").name == "mine"


def test_counts_without_walking_the_queue() -> None:
    """Per-sink counts come from counters kept on put, not from the queue's items."""
    dispatcher = _dispatcher()
    queue = dispatcher.new_queue(3)
    a, b = _Sink(), _Sink()
    for i in range(10):
        dispatcher.put(queue, a if i % 2 else b, i)
    # Queued: 7 (a), 8 (b), 9 (a).
    assert dispatcher.sink_counts(a) == (2, 0, 3)
    assert dispatcher.sink_counts(b) == (1, 0, 4)
    assert dispatcher.queue_counts(queue) == (3, 0, 7)
    assert dispatcher.total_counts() == (10, 0, 7, 0, 0)
    assert a.counters.received == 5 and b.counters.received == 5
