"""Worker pool that serves event queues fairly.

Part of the pure core: no :mod:`tango` import. Worker threads can be wrapped
in a context (the Tango layer passes ``tango.EnsureOmniThread``).

Fairness: a queue that has events and no worker waits in a ring. A worker
takes the queue at the head of the ring, delivers ONE event, and puts the
queue back at the tail if it still has events. A quiet queue that becomes
non-empty therefore waits behind at most one event of every other queue in
the ring, and never behind a backlog.

Wake-ups: a worker that finds no work sleeps :data:`LINGER` once before it
waits on the condition, and :meth:`Dispatcher.put` signals the condition only
when a worker waits there and none lingers. During a burst the Tango event
thread then rarely pays for waking a thread (measured by the benchmarks: the
wake-up per event cost more than the delivery of a no-op callback).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from ._queues import Counters, EventQueue, Sink

__all__ = ["CallbackRegistration", "Dispatcher", "RateLimitedLogger", "run_callbacks"]

ThreadContext = Callable[[], AbstractContextManager[Any]]

#: Seconds an idle worker waits for more work (sleeping, not wakeable)
#: before it parks on the condition. During a burst, events then reach a
#: lingering worker without a wake-up per event, which on a busy Tango event
#: thread costs more than the delivery itself.
LINGER = 0.0005


class RateLimitedLogger:
    """Log a recurring problem at most once per interval per key.

    Occurrences in between are counted and reported with the next message, so
    a flooding failure cannot flood the log while nothing is hidden.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        """Create the limiter.

        Args:
            logger: Where messages go.
            interval: Minimum seconds between two messages of one key.
        """
        self._logger = logger
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[object, float] = {}
        self._suppressed: dict[object, int] = {}

    def log(
        self,
        level: int,
        key: object,
        msg: str,
        *args: object,
        exc_info: bool = False,
    ) -> None:
        """Log ``msg % args`` unless ``key`` was logged less than an interval ago.

        Args:
            level: Logging level.
            key: Identity of the recurring problem.
            msg: Message format.
            args: Message arguments.
            exc_info: Whether to add the current exception's traceback.
        """
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d similar message(s) suppressed)"
            args = (*args, suppressed)
        self._logger.log(level, msg, *args, exc_info=exc_info)

    def forget(self, key: object) -> None:
        """Drop what is remembered about ``key``.

        Args:
            key: Identity of the problem.
        """
        with self._lock:
            self._last.pop(key, None)
            self._suppressed.pop(key, None)


@dataclass(eq=False)
class CallbackRegistration:
    """One callback of a stream.

    Attributes:
        callback_id: The identifier handed to the user.
        callback: The user's callable.
        active: Cleared when the callback is unregistered; a cleared
            registration is never called again.
    """

    callback_id: int
    callback: Callable[[Any], None]
    active: bool = True


def run_callbacks(
    registrations: Iterable[CallbackRegistration],
    payload: Any,
    counters: Counters,
    errors: RateLimitedLogger,
    label: str,
) -> int:
    """Call every active registration with ``payload``, in order.

    An exception in one callback is counted and logged (rate-limited) and does
    not keep the event from the following callbacks.

    Args:
        registrations: The callbacks, in registration order.
        payload: The event.
        counters: Where callback errors are counted.
        errors: Rate-limited logger for callback errors.
        label: Name of the stream, for the log.

    Returns:
        The number of callbacks that raised.
    """
    failures = 0
    for registration in registrations:
        if not registration.active:
            continue
        try:
            registration.callback(payload)
        except Exception:  # noqa: BLE001 - isolation is the point
            counters.callback_errors += 1
            failures += 1
            errors.log(
                logging.ERROR,
                ("callback", registration.callback_id),
                "Callback %r of %s raised",
                registration.callback,
                label,
                exc_info=True,
            )
    return failures


class Dispatcher:
    """A pool of worker threads serving :class:`EventQueue` objects fairly.

    Events of one queue are delivered in order by one worker at a time; up to
    ``thread_count`` queues are served at once.
    """

    def __init__(
        self,
        thread_count: int,
        name: str,
        logger: logging.Logger,
        thread_context: ThreadContext = contextlib.nullcontext,
    ) -> None:
        """Create the pool; call :meth:`start` to run it.

        Args:
            thread_count: Number of worker threads, at least 1.
            name: Prefix of the worker thread names.
            logger: Where problems are reported.
            thread_context: Context each worker thread runs inside.
        """
        self.name = name
        self.thread_count = thread_count
        self._logger = logger
        self._limited = RateLimitedLogger(logger)
        self._thread_context = thread_context
        self._cond = threading.Condition(threading.Lock())
        self._ready: deque[EventQueue] = deque()
        self._stopping = False
        # Workers waiting on the condition, and workers lingering (see LINGER).
        self._parked = 0
        self._lingering = 0
        #: Counts over every queue this dispatcher ever served.
        self.totals = Counters()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}.worker-{i}", daemon=True)
            for i in range(thread_count)
        ]
        # Drops already reported per queue, so each report names new drops only.
        self._reported_drops: dict[EventQueue, int] = {}

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """The worker threads."""
        return tuple(self._threads)

    def count_callback_errors(self, count: int) -> None:
        """Add callback errors to :attr:`totals`.

        Args:
            count: How many callbacks raised.
        """
        with self._cond:
            self.totals.callback_errors += count

    def start(self) -> None:
        """Start the worker threads."""
        for thread in self._threads:
            thread.start()

    def new_queue(self, maxsize: int, name: str | None = None) -> EventQueue:
        """Create a queue served by this dispatcher.

        Args:
            maxsize: Capacity of the queue.
            name: Label for diagnostics.

        Returns:
            The queue.
        """
        return EventQueue(maxsize, name, owner=self)

    def owns(self, queue: object) -> bool:
        """Tell whether ``queue`` is a queue of this dispatcher.

        Args:
            queue: Any object.

        Returns:
            True for a queue made by :meth:`new_queue` of this dispatcher.
        """
        return isinstance(queue, EventQueue) and queue._owner is self  # noqa: SLF001

    def put(self, queue: EventQueue, sink: Sink, payload: Any) -> None:
        """Queue an event; never blocks on anything but this short lock.

        Safe to call from the Tango event thread.

        Args:
            queue: The queue of the event's stream.
            sink: Where the event is delivered.
            payload: The event.
        """
        with self._cond:
            queue._push(sink, payload, self.totals)  # noqa: SLF001
            if not queue._busy and not queue._scheduled:  # noqa: SLF001
                queue._scheduled = True  # noqa: SLF001
                self._ready.append(queue)
                if self._parked and not self._lingering:
                    self._cond.notify()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the dispatcher lock, for a consistent snapshot of counters.

        Yields:
            Nothing; counters do not change inside the block.
        """
        with self._cond:
            yield

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the workers after their current event and join them.

        Events still queued stay queued (and counted as such).

        Args:
            timeout: Seconds to wait for all workers, or None to wait as long
                as the running callbacks take.

        Returns:
            True if every worker (other than the calling thread) has ended.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        current = threading.current_thread()
        for thread in self._threads:
            if thread is current or not thread.is_alive() and thread.ident is None:
                continue
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return not any(t.is_alive() for t in self._threads if t is not current)

    def _work(self) -> None:
        lingered = False
        with self._thread_context():
            while True:
                with self._cond:
                    if lingered and not self._ready and not self._stopping:
                        self._parked += 1
                        while not self._ready and not self._stopping:
                            self._cond.wait()
                        self._parked -= 1
                    if self._stopping:
                        return
                    if not self._ready:
                        self._lingering += 1
                        queue = None
                    else:
                        queue = self._ready.popleft()
                        queue._scheduled = False  # noqa: SLF001
                        queue._busy = True  # noqa: SLF001
                        sink, payload = queue._pop(self.totals)  # noqa: SLF001
                        dropped = queue.counters.dropped
                        if self._ready and self._parked:
                            self._cond.notify()  # more work than this worker: wake another
                if queue is None:
                    # Wait a little for more work without being woken per event.
                    time.sleep(LINGER)
                    with self._cond:
                        self._lingering -= 1
                    lingered = True
                    continue
                lingered = False
                try:
                    if dropped != self._reported_drops.get(queue, 0):
                        self._report_drops(queue, dropped)
                    sink.deliver(payload)
                except BaseException:  # noqa: BLE001 - a worker must survive
                    self._limited.log(
                        logging.ERROR, ("deliver", id(sink)), "Delivery failed", exc_info=True
                    )
                finally:
                    with self._cond:
                        queue._busy = False  # noqa: SLF001
                        if queue._items and not queue._scheduled:  # noqa: SLF001
                            queue._scheduled = True  # noqa: SLF001
                            self._ready.append(queue)

    def _report_drops(self, queue: EventQueue, dropped: int) -> None:
        self._reported_drops[queue] = dropped
        self._limited.log(
            logging.WARNING,
            ("drops", queue.name),
            "Queue %s is full: %d event(s) discarded so far (oldest first); "
            "its callbacks are slower than its events arrive",
            queue.name,
            dropped,
        )

    def forget_queue(self, queue: EventQueue) -> None:
        """Forget the drop reports of a queue that is no longer used.

        Args:
            queue: The queue.
        """
        self._reported_drops.pop(queue, None)
        self._limited.forget(("drops", queue.name))
