"""Worker pool that serves event queues fairly, and the hand-off from Tango's thread.

Part of the pure core: no :mod:`tango` import. Worker threads can be wrapped
in a context (the Tango layer passes ``tango.EnsureOmniThread``). This module
holds the fair ring, the workers and the hand-off (:meth:`Dispatcher.put`)
with every critical section of the intake lock; what a worker hands an event
to (a stream running its callbacks) is :mod:`._callbacks`.

Fairness: a queue that has events and no worker waits in a ring. A worker
takes the queue at the head of the ring and delivers ONE event; then, if the
ring is not empty, it puts its queue (if it still has events) at the tail
and takes the head. A quiet queue that becomes non-empty therefore waits
behind at most one event of every other queue in the ring, and never behind
a backlog. While the ring is empty a worker keeps serving its queue without
touching the ring: one short critical section per event.

The Tango event thread's share of an event (:meth:`Dispatcher.put`) is one
clock read, the intake lock held across a few plain field updates (an
append and a few counters), and at most the release of one parked worker's
own lock after it; everything else (statistics, drop reports) is done by the
workers or at snapshot time.

Wake-ups: a worker that finds no work sleeps a while (it lingers) before it
parks on a lock of its own, and :meth:`Dispatcher.put` wakes a parked worker
only when none lingers. During a burst the Tango event thread then rarely
pays for waking a thread (measured by the benchmarks: the wake-up per event
cost more than the delivery of a no-op callback). The first linger after
a park lasts :data:`LINGER`; each linger that ends with work waiting doubles
the next one, up to :data:`LINGER_MAX`, and a linger that ends with none
parks the worker. Under a sustained flood a worker therefore takes the GIL
once per batch of events, not once per few events. Each time it does,
Tango's event thread (which holds the GIL for most of each event) waits for
it, and those hand-overs, not our code, were most of the cost per event.
The price is latency under a flood: an event then waits up to
:data:`LINGER_MAX` for its batch. An event after a quiet spell finds the
worker parked and wakes it at once.

The GIL: Tango's event thread needs the GIL for every event. A worker that
delivers events back to back would otherwise keep it for a whole switch
interval (5 ms by default) each time Tango asks, long enough for ZeroMQ's
buffer to overflow in a burst. So a worker that has been delivering for
:data:`YIELD_INTERVAL` lets go of the GIL once (a zero-length sleep) before
the next event.
"""

from __future__ import annotations

import _thread
import contextlib
import functools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from ._callbacks import RateLimitedLogger
from ._queues import Counters, EventQueue, Sink
from ._threads import ThreadContext, start_thread
from ._window import LENGTH, BusyWindow

__all__ = ["LINGER", "LINGER_MAX", "YIELD_INTERVAL", "Dispatcher"]


#: Seconds a worker that has just run out of work waits for more (sleeping,
#: not wakeable) before it parks. During a burst, events then reach a
#: lingering worker without a wake-up per event, which on a busy Tango event
#: thread costs more than the delivery itself.
LINGER = 0.0005

#: The longest linger: while each linger ends with work waiting (a flood),
#: the next one is twice as long, up to this many seconds.
LINGER_MAX = 0.004

#: Seconds a worker delivers events back to back before it lets go of the
#: GIL once, so that Tango's event thread (which needs the GIL for every
#: event) never waits a whole switch interval for it.
YIELD_INTERVAL = 0.0005

_clock = time.monotonic
# Seconds between two hand-overs of a worker's busy time to its window.
_FLUSH = 0.1
# Whether workers record queue waits, durations and busy time (read when a
# worker starts; the benchmarks turn it off to measure what it costs).
_TRACK = True
_get_ident = threading.get_ident
# Makes the intake lock (a test substitutes one that records its holder).
_new_lock = _thread.allocate_lock


class _CountReaders:
    """The lock-free readers of a :class:`Dispatcher`'s counts, for snapshots.

    Snapshots read counters WITHOUT the intake lock: a reader that holds the
    GIL while Tango's event thread waits for the lock would make that thread
    wait for the GIL too (a whole switch interval) each time they meet. Each
    counter only grows and is read once; reading ``received`` last makes
    ``received - delivered - dropped`` (the events still queued) never negative.
    """

    name: str
    received: int
    totals: Counters
    _busy: list[BusyWindow]
    _threads: list[threading.Thread]

    def busy_fractions(self, now: float | None = None) -> list[tuple[str, float]]:
        """Return each worker's share of the window spent delivering events.

        Args:
            now: Monotonic time of the snapshot (default: now).

        Returns:
            ``(thread name, fraction from 0.0 to 1.0)`` per worker.
        """
        now = _clock() if now is None else now
        threads = self._threads
        return [
            (
                f"{self.name}.worker-{index}",
                busy.fraction(now) if index < len(threads) else 0.0,
            )
            for index, busy in enumerate(self._busy)
        ]

    def sink_counts(self, sink: Sink) -> tuple[int, int, int]:
        """Read a sink's counts (no lock; see the class doc).

        Args:
            sink: A stream (or any sink of this dispatcher).

        Returns:
            ``(queued, delivered, dropped)``; received is their sum.
        """
        counters = sink.counters
        delivered = counters.delivered
        dropped = counters.dropped
        received = counters.received
        return received - delivered - dropped, delivered, dropped

    def queue_counts(self, queue: EventQueue) -> tuple[int, int, int]:
        """Read a queue's counts (no lock; see the class doc).

        Args:
            queue: A queue of this dispatcher.

        Returns:
            ``(depth, delivered, dropped)``; received is their sum.
        """
        counters = queue.counters
        delivered = counters.delivered
        dropped = counters.dropped
        return len(queue), delivered, dropped

    def total_counts(self) -> tuple[int, int, int, int, int]:
        """Read the dispatcher's totals (no lock; see the class doc).

        Returns:
            ``(received, delivered, dropped, callback_errors, slow_callbacks)``;
            queued is received - delivered - dropped.
        """
        totals = self.totals
        delivered = totals.delivered
        dropped = totals.dropped
        return (
            self.received,
            delivered,
            dropped,
            totals.callback_errors,
            totals.slow_callbacks,
        )


class _Reports:
    """What a :class:`Dispatcher`'s workers log: slow deliveries and drops.

    Called by a worker with no lock held (logging allocates).
    """

    _limited: RateLimitedLogger

    def _slow(self, sink: Sink, took: float) -> None:
        report = getattr(sink, "slow_delivery", None)
        if report is not None:
            try:
                report(took)
            except Exception:  # noqa: BLE001 - a worker must survive
                self._limited.log(
                    logging.ERROR,
                    ("slow", id(sink)),
                    "Reporting a slow delivery failed",
                    exc_info=True,
                )

    def _report_drops(self, queue: EventQueue, dropped: int) -> None:
        queue._reported_drops = dropped  # noqa: SLF001
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
        self._limited.forget(("drops", queue.name))


class Dispatcher(_CountReaders, _Reports):
    """A pool of worker threads serving :class:`EventQueue` objects fairly.

    Events of one queue are delivered in order by one worker at a time; up to
    ``thread_count`` queues are served at once.

    The intake lock: every field shared between Tango's event thread, the
    workers and snapshots (the queues' items and counts, the ready ring, the
    idle workers, the totals) is changed only under one lock, and that lock
    is held ONLY across plain field updates: appends and pops on deques of
    objects that already exist, int counters, flags. Nothing under it
    creates a garbage-collected object (no tuple, list, dict, iterator,
    bound method, Condition, logging) or drops the last reference to an
    event. So no garbage collection, and hence no ``DeviceProxy``
    destructor (which waits for Tango's event thread), can ever run while
    the lock is held, and Tango's event thread, which takes it in
    :meth:`put`, only ever waits for a few plain field updates. The
    critical sections are :meth:`put`, the marked blocks of ``_work``,
    :meth:`stop`, :meth:`discard_queued` and :meth:`count_callback_errors`;
    keep them that way
    (``tests/unit/test_dispatch.py`` runs them with a collection at every
    allocation and fails if one starts inside). Snapshots read the counters
    without it (see :class:`_CountReaders`).

    Workers park on a lock of their own (a raw lock used as a binary
    semaphore): a worker with nothing to do puts its wake-up lock in the
    idle stack under the intake lock and then blocks on it with the intake
    lock free; whoever wakes it pops it under the intake lock and releases
    it after letting the intake lock go.

    Attributes:
        totals: Counts over every queue this dispatcher ever served (its
            ``window`` is unused).
        received: Events put over the dispatcher's life.
        slow_after: Seconds after which a delivery is slow: the worker then
            calls the sink's ``slow_delivery(seconds)``, if it has one.
    """

    def __init__(
        self,
        thread_count: int,
        name: str,
        logger: logging.Logger,
        thread_context: ThreadContext = contextlib.nullcontext,
        *,
        slow_after: float | None = None,
    ) -> None:
        """Create the pool; call :meth:`start` to run it.

        Args:
            thread_count: Number of worker threads, at least 1.
            name: Prefix of the worker thread names.
            logger: Where problems are reported.
            thread_context: Context each worker thread runs inside.
            slow_after: See :attr:`slow_after`; None: never slow.
        """
        self.slow_after = slow_after
        self.name = name
        self.thread_count = thread_count
        self._logger = logger
        self._limited = RateLimitedLogger(logger)
        self._thread_context = thread_context
        # The intake lock (see the class doc for what may run under it).
        self._lock: Any = _new_lock()
        self._ready: deque[EventQueue] = deque()
        self._stopping = False
        # Wake-up locks of the parked workers (each held, i.e. "not signalled",
        # until its waker releases it), and the number of lingering workers.
        self._idle: deque[Any] = deque()
        self._lingering = 0
        self.totals = Counters()
        self.received = 0
        # Started by start() (see _threads.start_thread).
        self._threads: list[threading.Thread] = []
        self._busy = [BusyWindow(LENGTH) for _ in range(thread_count)]
        self._idents: frozenset[int] = frozenset()

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """The worker threads."""
        return tuple(self._threads)

    @property
    def parked(self) -> int:
        """Number of workers parked with nothing to do (a racy look, for tests)."""
        return len(self._idle)

    def in_worker(self) -> bool:
        """Tell whether the calling thread is one of the workers."""
        return _get_ident() in self._idents

    def start(self) -> None:
        """Start the worker threads."""
        self._threads = [
            start_thread(f"{self.name}.worker-{i}", functools.partial(self._work, i), daemon=True)
            for i in range(self.thread_count)
        ]
        self._idents = frozenset(t.ident for t in self._threads if t.ident is not None)

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

    # -- critical sections: plain field updates only (see the class doc) -----

    def put(self, queue: EventQueue, sink: Sink, payload: Any) -> None:
        """Queue an event; waits at most for a few plain field updates.

        Safe to call from the Tango event thread. When the queue is full its
        oldest event is discarded (and counted).

        Args:
            queue: The queue of the event's stream.
            sink: Where the event is delivered.
            payload: The event.
        """
        entry = (sink, payload, _clock())  # built before the lock
        discarded = None
        wake = None
        lock = self._lock
        lock.acquire()
        try:
            items = queue._items  # noqa: SLF001
            if len(items) >= queue.maxsize:
                discarded = items.popleft()
                queue.counters.dropped += 1
                discarded[0].counters.dropped += 1
                self.totals.dropped += 1
            items.append(entry)
            sink.counters.received += 1
            self.received += 1
            if not queue._held:  # noqa: SLF001 - neither waiting in the ring nor served
                queue._held = True  # noqa: SLF001
                self._ready.append(queue)
                if self._idle and not self._lingering:
                    wake = self._idle.pop()
        finally:
            lock.release()
        if wake is not None:
            wake.release()
        # ``discarded`` (maybe the last reference to an event) goes here, lock free.

    def discard_queued(self, queue: EventQueue) -> int:
        """Discard the events still waiting in a queue, counted as dropped.

        For a scheduler that is shut down: its queued events would otherwise
        keep their streams (and the events their proxies) alive. One event
        is taken per critical section and released after it.

        Args:
            queue: A queue of this dispatcher.

        Returns:
            How many events were discarded.
        """
        count = 0
        items = queue._items  # noqa: SLF001
        lock = self._lock
        while True:
            entry = None
            lock.acquire()
            try:
                if items:
                    entry = items.popleft()
                    queue.counters.dropped += 1
                    entry[0].counters.dropped += 1
                    self.totals.dropped += 1
            finally:
                lock.release()
            if entry is None:
                return count
            count += 1
            entry = None  # released here, with the lock free

    def count_callback_errors(self, count: int, slow: int = 0) -> None:
        """Add callback errors (and slow callbacks) to :attr:`totals`.

        Args:
            count: How many callbacks raised.
            slow: How many callbacks were slow.
        """
        lock = self._lock
        lock.acquire()
        try:
            self.totals.callback_errors += count
            self.totals.slow_callbacks += slow
        finally:
            lock.release()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the intake lock (tests only: nothing that allocates may run inside).

        Yields:
            Nothing; counters do not change inside the block.
        """
        with self._lock:
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
        lock = self._lock
        idle = self._idle
        lock.acquire()
        self._stopping = True
        lock.release()
        while True:  # wake every parked worker, one at a time
            wake = None
            lock.acquire()
            if idle:
                wake = idle.pop()
            lock.release()
            if wake is None:
                break
            wake.release()
        deadline = None if timeout is None else time.monotonic() + timeout
        current = threading.current_thread()
        for thread in self._threads:
            if thread is current or not thread.is_alive() and thread.ident is None:
                continue
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return not any(t.is_alive() for t in self._threads if t is not current)

    def _work(self, index: int) -> None:  # noqa: C901, PLR0912, PLR0915 - the hot loop, inlined
        lock = self._lock
        acquire, release = lock.acquire, lock.release
        ready = self._ready
        idle = self._idle
        totals = self.totals
        busy = self._busy[index]
        clock = _clock
        slow_after = math.inf if self.slow_after is None else self.slow_after
        track = _TRACK
        # This worker's wake-up lock: held except between its waker's release
        # and the worker's next park.
        me = _thread.allocate_lock()
        me.acquire()
        queue: EventQueue | None = None
        entry: Any = None
        sink: Any = None
        payload: Any = None
        arrival = 0.0
        dropped = 0
        # The next linger's length, and whether the last linger is the last
        # thing this worker did.
        linger = LINGER
        lingered = False
        # Busy time is summed here and handed to the window every _FLUSH s.
        busy_sum = 0.0
        with self._thread_context():
            busy.started = last_yield = clock()
            flush_at = last_yield + _FLUSH
            while True:
                # What to do after the critical section: 0 deliver, 1 linger,
                # 2 park, 3 stop.
                wake = None
                acquire()
                # ---- intake lock held: plain field updates only ----
                try:
                    if queue is not None:
                        if not queue._items:  # noqa: SLF001
                            queue._held = False  # noqa: SLF001
                            queue = None  # (an empty queue: nothing heavy is released)
                        elif ready:
                            ready.append(queue)  # still held: it waits for its turn
                            queue = None
                    if self._stopping:
                        action = 3
                    elif queue is None and not ready:
                        if lingered:
                            idle.append(me)
                            action = 2
                        else:
                            self._lingering += 1
                            action = 1
                    else:
                        if queue is None:
                            queue = ready.popleft()
                            if ready and idle:
                                wake = idle.pop()  # more work than this worker
                        items = queue._items  # noqa: SLF001
                        # Indexing, not unpacking: Python 3.11's generic
                        # UNPACK_SEQUENCE makes an iterator (an allocation).
                        entry = items.popleft()
                        sink = entry[0]
                        payload = entry[1]
                        arrival = entry[2]
                        sink.counters.delivered += 1
                        queue.counters.delivered += 1
                        totals.delivered += 1
                        dropped = queue.counters.dropped
                        action = 0
                finally:
                    release()
                # ---- intake lock free ----
                if wake is not None:
                    wake.release()
                if action == 3:
                    return
                if action == 2:
                    linger = LINGER
                    lingered = False
                    me.acquire()  # parked until a waker releases it
                    last_yield = clock()
                    continue
                if action == 1:
                    if busy_sum:
                        busy.add(clock(), busy_sum)
                        busy_sum = 0.0
                    # Wait a little for more work without being woken per event.
                    time.sleep(linger)
                    acquire()
                    self._lingering -= 1
                    release()
                    lingered = True
                    last_yield = clock()
                    continue
                if lingered:  # the linger ended with work waiting: a flood
                    lingered = False
                    linger = min(linger * 2, LINGER_MAX)
                assert queue is not None  # noqa: S101 - for the type checker
                if dropped != queue._reported_drops:  # noqa: SLF001
                    self._report_drops(queue, dropped)
                if track:
                    busy.since = start = clock()
                try:
                    sink.deliver(payload)
                except BaseException:  # noqa: BLE001 - a worker must survive
                    self._limited.log(
                        logging.ERROR, ("deliver", id(sink)), "Delivery failed", exc_info=True
                    )
                end = clock()  # needed for the GIL hand-over below anyway
                if track:
                    busy.since = 0.0
                    took = end - start
                    # SampleWindow.add, inlined: this runs once per event.
                    window = sink.counters.window
                    if end >= window._end:  # noqa: SLF001
                        window._rotate(end)  # noqa: SLF001
                    bucket = window._current  # noqa: SLF001
                    bucket.waits.append(start - arrival)
                    bucket.durations.append(took)
                    window.last_at = end
                    busy_sum += took
                    if took > slow_after:
                        self._slow(sink, took)
                    if end >= flush_at:
                        busy.add(end, busy_sum)
                        busy_sum = 0.0
                        flush_at = end + _FLUSH
                # Release the event here, with the lock free: its release can run
                # a DeviceProxy destructor, which may wait for Tango's event thread.
                entry = sink = payload = None
                if end - last_yield > YIELD_INTERVAL:
                    # Let Tango's event thread have the GIL (see the module doc).
                    time.sleep(0)
                    last_yield = clock()
