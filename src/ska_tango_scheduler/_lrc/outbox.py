"""Ordered delivery to the user's callback, and the updates kept until the reply.

Both are guarded by their owner's lock (an invocation's), held only for plain field
updates: the callback itself is always called with no lock held.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

import tango

from . import limits
from .errors import dropped_update
from .interpreter import Item
from .service import lrc_service


class Outbox:
    """Calls waiting for the user's callback, made in order by one thread at a time.

    Any thread that adds calls may become the one that makes them (see
    :meth:`claim` and :meth:`drain`); the others leave at once, so calls never
    overlap and no thread waits for another. When more than
    :data:`~.limits.LRC_QUEUE_SIZE` calls wait, the oldest are discarded and the
    callback is told how many.
    """

    def __init__(
        self,
        lock: threading.Lock,
        callback: Callable[..., None],
        command: str,
        logger: logging.Logger,
    ) -> None:
        """Create an empty outbox.

        Args:
            lock: The owner's lock, which guards the outbox.
            callback: The user's callback.
            command: The command's name, for messages.
            logger: Where a callback's exception is logged.
        """
        self.command_id: str | None = None
        self.cancelled = False  # no further call is made
        self._lock = lock
        self._callback = callback
        self._command = command
        self._logger = logger
        self._calls: collections.deque[dict[str, Any]] = collections.deque()
        self._dropped = 0
        self._draining = False

    def put(self, kwargs: dict[str, Any]) -> None:
        """Queue one call (lock held); the oldest is discarded when full."""
        if len(self._calls) >= limits.LRC_QUEUE_SIZE:
            self._calls.popleft()
            self._dropped += 1
        self._calls.append(kwargs)

    def clear(self) -> None:
        """Forget the queued calls (lock held)."""
        self._calls.clear()

    def claim(self) -> bool:
        """Become the thread that drains, if there is work and no one drains (lock held)."""
        if self._draining or not self._calls:
            return False
        self._draining = True
        return True

    def drain(self) -> None:
        """Make the queued calls until there are none left (after :meth:`claim`, no lock held)."""
        while True:
            with self._lock:
                if self.cancelled:
                    self._calls.clear()
                    self._dropped = 0
                if self._dropped:
                    kwargs = dropped_update(
                        f"{self._dropped} updates of {self.command_id} were discarded "
                        "because lrc_callback could not keep up"
                    )
                    self._dropped = 0
                elif self._calls:
                    kwargs = self._calls.popleft()
                else:
                    self._draining = False
                    return
            try:
                self._callback(**kwargs)
            except Exception:
                self._logger.exception(
                    "LRC callback %r raised for %s %s", self._callback, self._command, kwargs
                )

    def drain_elsewhere(self) -> threading.Event:
        """Drain on a short-lived thread of its own (a job of the LRC lanes service).

        For the updates kept until the reply. Not on the calling thread: it may hold a
        lock that the callback takes, and the caller expects ``invoke_lrc`` to return
        without running user code. Not on a scheduler worker either: no worker may
        come, if every update of the command arrived before the reply. Live updates
        that arrive meanwhile are appended and delivered by this same thread, in order.

        Returns:
            An event set once the job has run.
        """
        done = threading.Event()

        def replay() -> None:
            try:
                with tango.EnsureOmniThread():
                    self.drain()
            finally:
                done.set()

        # If no thread is to be had, the service runs it here rather than never.
        lrc_service().notify(replay)
        return done


class EarlyUpdates:
    """Updates that arrived before the command's reply told its identifier.

    At most :data:`~.limits.EARLY_EVENT_LIMIT` are kept (the oldest are discarded
    and counted). Guarded by the owner's lock, except :meth:`wait_for_error`.
    """

    def __init__(self) -> None:
        """Create an empty buffer."""
        self._items: collections.deque[Item] = collections.deque(maxlen=limits.EARLY_EVENT_LIMIT)
        self._dropped = 0
        self._error = threading.Event()

    def keep(self, item: Item) -> None:
        """Keep one update (lock held)."""
        if len(self._items) == self._items.maxlen:
            self._dropped += 1
        self._items.append(item)
        if item[0] == "error":
            self._error.set()

    def take(self) -> tuple[list[Item], int]:
        """Return the kept updates and how many were discarded, and forget them (lock held)."""
        items, dropped = list(self._items), self._dropped
        self._items.clear()
        return items, dropped

    def clear(self) -> None:
        """Forget the kept updates (lock held)."""
        self._items.clear()

    def wait_for_error(self, timeout: float) -> bool:
        """Wait until an error event is kept (no lock held); True if one is."""
        return self._error.wait(timeout)

    def first_error(self) -> tuple[Any, ...]:
        """Return the errors of the first kept error event, or ``()`` (lock held)."""
        return next((payload for kind, payload in self._items if kind == "error"), ())
