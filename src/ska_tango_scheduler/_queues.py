"""Bounded event queues that discard their oldest entry when full.

This module is part of the pure core: it never imports :mod:`tango`.
A queue does no locking of its own; the dispatcher that owns it serialises
every access under its intake lock (plain field updates only: see
:class:`._dispatch.Dispatcher`).

Each entry is ``(sink, payload, arrival)``: where the event goes, the event,
and the monotonic time at which it was put (for the queue-wait statistics).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._window import LENGTH, SampleWindow

__all__ = ["DEFAULT_QUEUE_SIZE", "Counters", "Entry", "EventQueue", "Sink"]

#: Number of events a queue holds before it starts discarding the oldest one.
#: Small on purpose: for most attributes a fresh value matters more than
#: every intermediate transition.
DEFAULT_QUEUE_SIZE = 32

_queue_numbers = itertools.count(1)


@dataclass(eq=False)
class Counters:
    """Event accounting for one stream (sink) or queue.

    Every event put is delivered, dropped or still queued: for a sink,
    ``received - delivered - dropped`` is what still waits; for a queue,
    ``delivered + dropped + len(queue)`` is what it received. The dispatcher
    counts its total of received events on its own.

    Attributes:
        delivered: Events taken off the queue by a worker for delivery to the
            callbacks of their stream (an event of a stream that has no
            callback left is delivered to nobody but still counted here).
        dropped: Events discarded because the queue was full.
        received: Events put (counted by the dispatcher for sinks, so that a
            snapshot needs no walk over the queue; for queues it stays 0: a
            queue's depth is its length).
        callback_errors: Exceptions raised by callbacks.
        slow_callbacks: Callbacks that ran longer than the scheduler's
            ``slow_callback_duration``.
        window: Queue waits and delivery durations over the sliding window
            (kept for sinks; unused for queues).
    """

    delivered: int = 0
    dropped: int = 0
    received: int = 0
    callback_errors: int = 0
    slow_callbacks: int = 0
    window: SampleWindow = field(default_factory=lambda: SampleWindow(LENGTH), repr=False)


class Sink(Protocol):
    """What an entry of an :class:`EventQueue` is delivered to."""

    @property
    def counters(self) -> Counters:
        """Counters of the sink, updated by the dispatcher."""
        ...

    def deliver(self, payload: Any) -> None:
        """Hand one event to the sink's callbacks, on a worker thread.

        Args:
            payload: The event.
        """
        ...


#: An entry of a queue: the sink, the event and its arrival time (monotonic).
Entry = tuple[Sink, Any, float]


class EventQueue:
    """A bounded FIFO of events waiting for a worker.

    Instances are created by a scheduler (``allocate_queue``) and handed to
    its streams; they are opaque handles for users. One queue may serve
    several streams, keeping the order of their events.

    Attributes:
        name: A label shown in diagnostics.
        maxsize: How many events the queue holds before it discards the oldest.
        counters: Accounting for the whole queue.
    """

    __slots__ = ("_held", "_items", "_owner", "_reported_drops", "counters", "maxsize", "name")

    def __init__(self, maxsize: int, name: str | None = None, owner: object = None) -> None:
        """Create a queue.

        Args:
            maxsize: Capacity, at least 1.
            name: Label for diagnostics; a unique one is made up if omitted.
            owner: The object (a dispatcher) allowed to use this queue.

        Raises:
            ValueError: If ``maxsize`` is smaller than 1.
            TypeError: If ``maxsize`` is not an integer.
        """
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"queue_size must be an int, got {maxsize!r}")
        if maxsize < 1:
            raise ValueError(f"queue_size must be at least 1, got {maxsize}")
        self.name = name if name is not None else f"queue-{next(_queue_numbers)}"
        self.maxsize = maxsize
        self.counters = Counters()
        self._items: deque[Entry] = deque()
        self._owner = owner
        # True while the queue waits in the dispatcher's ready ring or a
        # worker serves it: a held queue is never put in the ring again.
        self._held = False
        # Drops already reported by the dispatcher: each report names new ones only.
        self._reported_drops = 0

    def __len__(self) -> int:
        """Return the number of events waiting."""
        return len(self._items)

    def __repr__(self) -> str:
        """Return a short description."""
        return f"<EventQueue {self.name!r} {len(self._items)}/{self.maxsize}>"

    @property
    def received(self) -> int:
        """Events put on the queue so far (delivered + dropped + queued)."""
        return self.counters.delivered + self.counters.dropped + len(self._items)
