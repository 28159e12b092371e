"""Bounded drop-oldest queues."""

from __future__ import annotations

import pytest

from ska_tango_scheduler._queues import Counters, EventQueue


class _Sink:
    def __init__(self) -> None:
        self.counters = Counters()

    def deliver(self, payload: object) -> None:  # pragma: no cover - not called here
        raise AssertionError


def test_fifo_order_and_counts() -> None:
    queue, sink, totals = EventQueue(10), _Sink(), Counters()
    for i in range(5):
        assert queue._push(sink, i, totals) is None
    assert [queue._pop(totals)[1] for _ in range(5)] == [0, 1, 2, 3, 4]
    assert (queue.counters.received, queue.counters.delivered, queue.counters.dropped) == (5, 5, 0)
    assert totals == queue.counters == sink.counters


def test_full_queue_drops_oldest_and_counts_exactly() -> None:
    queue, totals = EventQueue(3), Counters()
    a, b = _Sink(), _Sink()
    for i in range(10):
        queue._push(a if i % 2 else b, i, totals)
    assert len(queue) == 3
    assert [queue._pop(totals)[1] for _ in range(3)] == [7, 8, 9]
    assert queue.counters.dropped == 7
    assert a.counters.dropped + b.counters.dropped == 7
    assert b.counters.dropped == 4  # 0, 2, 4, 6
    assert a.counters.dropped == 3  # 1, 3, 5
    for c in (queue.counters, a.counters, b.counters, totals):
        assert c.received == c.delivered + c.dropped


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
