"""Bounded event queues that discard their oldest entry when full.

This module is part of the pure core: it never imports :mod:`tango`.
A queue does no locking of its own; the dispatcher that owns it serialises
every access under its lock.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["DEFAULT_QUEUE_SIZE", "Counters", "EventQueue", "Sink"]

#: Number of events a queue holds before it starts discarding the oldest one.
#: Small on purpose: for most attributes a fresh value matters more than
#: every intermediate transition.
DEFAULT_QUEUE_SIZE = 32

_queue_numbers = itertools.count(1)


@dataclass
class Counters:
    """Event accounting for one stream or queue.

    At every consistent snapshot ``received == delivered + dropped + queued``.

    Attributes:
        received: Events put on the queue.
        delivered: Events taken off the queue by a worker for delivery to the
            callbacks of their stream (an event of a stream that has no
            callback left is delivered to nobody but still counted here).
        dropped: Events discarded because the queue was full.
        callback_errors: Exceptions raised by callbacks.
    """

    received: int = 0
    delivered: int = 0
    dropped: int = 0
    callback_errors: int = 0


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

    __slots__ = ("_busy", "_items", "_owner", "_scheduled", "counters", "maxsize", "name")

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
        self._items: deque[tuple[Sink, Any]] = deque()
        self._owner = owner
        # True while a worker delivers an event of this queue.
        self._busy = False
        # True while the queue waits in the dispatcher's ready ring.
        self._scheduled = False

    def __len__(self) -> int:
        """Return the number of events waiting."""
        return len(self._items)

    def __repr__(self) -> str:
        """Return a short description."""
        return f"<EventQueue {self.name!r} {len(self._items)}/{self.maxsize}>"

    def _push(self, sink: Sink, payload: Any, totals: Counters) -> Sink | None:
        """Append an event, discarding the oldest one if the queue is full.

        Args:
            sink: Where the event goes.
            payload: The event.
            totals: Owner-wide counters, updated too.

        Returns:
            The sink of the discarded event, or ``None`` if none was discarded.
        """
        self.counters.received += 1
        sink.counters.received += 1
        totals.received += 1
        victim: Sink | None = None
        if len(self._items) >= self.maxsize:
            victim, _ = self._items.popleft()
            self.counters.dropped += 1
            victim.counters.dropped += 1
            totals.dropped += 1
        self._items.append((sink, payload))
        return victim

    def _pop(self, totals: Counters) -> tuple[Sink, Any]:
        """Take the oldest event for delivery and count it as delivered.

        Args:
            totals: Owner-wide counters, updated too.

        Returns:
            The event's sink and the event.
        """
        sink, payload = self._items.popleft()
        self.counters.delivered += 1
        sink.counters.delivered += 1
        totals.delivered += 1
        return sink, payload
