"""Connector threads: jobs serialised per lane, lanes run in parallel.

Part of the pure core: no :mod:`tango` import. The scheduler runs every
Tango subscribe, unsubscribe and probe of a device in that device's *lane*:
jobs of one lane run one at a time, in order (two concurrent subscriptions on
one proxy can duplicate events), while lanes of different devices run on up
to ``max_threads`` threads at once, so a device whose attempt hangs holds up
only its own lane.

Threads are started on demand and are not daemon threads: when the
interpreter exits, a hook closes every pool first (no new job starts), so the
exit waits for jobs already inside Tango to come back instead of finalising
under them (a thread that comes back from Tango into a finalising
interpreter aborts the process).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from typing import Any

__all__ = ["ConnectorPool", "TimerHandle"]

#: Threads a pool starts at most (see :class:`ConnectorPool`).
DEFAULT_MAX_THREADS = 8


class TimerHandle:
    """A job scheduled for later; :meth:`cancel` keeps it from running."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        """Create a live handle."""
        self.cancelled = False

    def cancel(self) -> None:
        """Keep the job from running (no effect once it ran)."""
        self.cancelled = True


_Job = tuple[TimerHandle, Callable[[], None]]


class _Lane:
    __slots__ = ("busy", "jobs", "owner")

    def __init__(self) -> None:
        self.jobs: deque[_Job] = deque()
        self.busy = False
        self.owner: threading.Thread | None = None


class ConnectorPool:
    """Run jobs one at a time per lane, lanes in parallel on a few threads.

    Args:
        name: Prefix of the threads' names.
        logger: Where exceptions of jobs are reported.
        thread_context: Context each thread runs inside.
        max_threads: How many lanes may run at once.
    """

    def __init__(
        self,
        name: str,
        logger: logging.Logger,
        thread_context: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
        max_threads: int = DEFAULT_MAX_THREADS,
    ) -> None:
        """Create the pool; threads start with the first jobs."""
        self._name = name
        self._logger = logger
        self._thread_context = thread_context
        self._max_threads = max(1, max_threads)
        self._cond = threading.Condition(threading.Lock())
        self._timers: list[tuple[float, int, TimerHandle, Hashable, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._lanes: dict[Hashable, _Lane] = {}
        self._ready: deque[Hashable] = deque()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        # Connector threads asked for by _enqueue, started by _spawn with the
        # lock free: making a thread allocates, an allocation can run the
        # garbage collector, and a DeviceProxy it frees can wait for Tango's
        # event thread, which may be waiting for this lock.
        self._starting = 0
        self._thread_numbers = itertools.count()
        self._closing = False
        self._abandoned = False
        self._timer_thread: threading.Thread | None = None
        _live_pools.add(self)

    # -- introspection --------------------------------------------------------

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """The pool's threads started so far (connectors and timer)."""
        with self._cond:
            extra = [self._timer_thread] if self._timer_thread is not None else []
            return (*self._threads, *extra)

    def in_pool(self) -> bool:
        """Tell whether the caller runs a job of this pool."""
        current = threading.current_thread()
        with self._cond:
            return any(lane.owner is current for lane in self._lanes.values())

    # -- submitting -------------------------------------------------------------

    def submit(self, lane: Hashable, job: Callable[[], None]) -> TimerHandle:
        """Run ``job`` in ``lane`` once the lane's earlier jobs are done.

        Args:
            lane: Jobs of one lane never run at the same time.
            job: The callable.

        Returns:
            A handle to cancel it.
        """
        handle = TimerHandle()
        with self._cond:
            if self._closing:
                handle.cancelled = True
                return handle
            self._enqueue(lane, handle, job)
        self._spawn()
        return handle

    def call_later(self, delay: float, lane: Hashable, job: Callable[[], None]) -> TimerHandle:
        """Run ``job`` in ``lane`` after ``delay`` seconds.

        Args:
            delay: Seconds from now.
            lane: As for :meth:`submit`.
            job: The callable.

        Returns:
            A handle to cancel it.
        """
        if delay <= 0:
            return self.submit(lane, job)
        handle = TimerHandle()
        with self._cond:
            if self._closing:
                handle.cancelled = True
                return handle
            due = time.monotonic() + delay
            heapq.heappush(self._timers, (due, next(self._seq), handle, lane, job))
            timer = None
            if self._timer_thread is None:
                timer = self._timer_thread = threading.Thread(
                    target=self._run_timers, name=f"{self._name}.timer", daemon=True
                )
            self._cond.notify_all()
        if timer is not None:
            timer.start()
        return handle

    def run_here(self, lane: Hashable, job: Callable[[], None], timeout: float | None) -> bool:
        """Run ``job`` on the calling thread, holding ``lane`` meanwhile.

        For callers that must make a Tango call themselves (for example
        because they hold a device's monitor that a connector thread would
        wait for). The lane's serialisation is kept: the caller waits until
        no job of the lane runs, and the lane's queued jobs wait for this one.

        Args:
            lane: The lane.
            job: The callable; its exceptions propagate to the caller.
            timeout: Seconds to wait for the lane; None waits as long as needed.

        Returns:
            True if the job ran, False if the lane stayed busy or the pool closed.
        """
        current = threading.current_thread()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            lane_state = self._lanes.setdefault(lane, _Lane())
            if lane_state.owner is current:
                reentrant = True
            else:
                reentrant = False
                while lane_state.busy and not self._closing:
                    wait = None if deadline is None else deadline - time.monotonic()
                    if wait is not None and wait <= 0:
                        return False
                    self._cond.wait(wait)
                if self._closing:
                    return False
                lane_state.busy = True
                lane_state.owner = current
        if reentrant:
            job()
            return True
        try:
            job()
        finally:
            with self._cond:
                self._release(lane, lane_state)
        return True

    def notify(self, job: Callable[[], None]) -> None:
        """Run ``job`` on a short-lived thread of its own (never on a connector).

        Used to complete futures that have done-callbacks: user code that
        must stall neither connects nor the completion of other futures.

        Args:
            job: The callable.
        """

        def run() -> None:
            try:
                job()
            except Exception:  # noqa: BLE001 - nothing above to report to
                self._logger.exception("Scheduler notification %r failed", job)

        threading.Thread(target=run, name=f"{self._name}.futures", daemon=True).start()

    # -- closing ----------------------------------------------------------------

    def close(
        self, final_jobs: Sequence[tuple[Hashable, Callable[[], None]]], timeout: float | None
    ) -> bool:
        """Stop the pool once the queued jobs and ``final_jobs`` have run.

        Jobs already queued (submitted, or whose delay has passed) still run,
        in order per lane, so that work handed over before closing (an
        unsubscription, say) is not lost; jobs scheduled for later are
        cancelled.

        Args:
            final_jobs: ``(lane, job)`` pairs run after the queued jobs of their lane.
            timeout: Seconds to wait for the threads; None waits as long as
                they take.

        Returns:
            True if every connector thread ended within the timeout (the
            caller's own thread, if it is one, is not waited for).
        """
        with self._cond:
            for item in self._timers:
                item[2].cancel()
            # Released after the lock (see _run).
            dropped: list[object] = [self._timers]
            self._timers = []
            abandoned = self._abandoned
            if not abandoned:
                for lane, job in final_jobs:
                    self._enqueue(lane, TimerHandle(), job)
            self._closing = True
            self._cond.notify_all()
        dropped.clear()
        self._spawn()  # a thread still to start runs the final jobs, then ends
        with self._cond:
            threads = list(self._threads)
        deadline = None if timeout is None else time.monotonic() + timeout
        current = threading.current_thread()
        if abandoned:
            return self._close_abandoned(final_jobs, threads, deadline)
        for thread in threads:
            if thread is current:
                continue
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        timer = self._timer_thread
        if timer is not None and timer is not current:
            timer.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads if t is not current)

    def _close_abandoned(
        self,
        final_jobs: Sequence[tuple[Hashable, Callable[[], None]]],
        threads: list[threading.Thread],
        deadline: float | None,
    ) -> bool:
        # After abandon() (interpreter exit) no connector thread takes jobs, and
        # a new one might not start: the final jobs run here, once the threads
        # are gone, so that subscriptions are cancelled before finalisation
        # (an event Tango delivers to a finalising interpreter aborts it).
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in threads if t is not current):
            return False
        for _, job in final_jobs:
            self._run_one(job)
        return True

    def abandon(self) -> None:
        """Drop every job not yet started and stop the threads (interpreter exit).

        A later :meth:`close` runs its final jobs on the calling thread.
        """
        with self._cond:
            self._abandoned = True
            for item in self._timers:
                item[2].cancel()
            # Released after the lock (see _run).
            dropped: list[object] = [self._timers]
            self._timers = []
            for lane in self._lanes.values():
                dropped.append(lane.jobs)
                lane.jobs = deque()
            self._ready.clear()
            self._closing = True
            self._cond.notify_all()
        dropped.clear()

    # -- internals (lock held) --------------------------------------------------

    def _enqueue(self, lane: Hashable, handle: TimerHandle, job: Callable[[], None]) -> None:
        lane_state = self._lanes.setdefault(lane, _Lane())
        lane_state.jobs.append((handle, job))
        if not lane_state.busy and len(lane_state.jobs) == 1:
            self._ready.append(lane)
        if self._idle == 0 and len(self._threads) + self._starting < self._max_threads:
            self._starting += 1  # started by _spawn once the lock is free
        self._cond.notify_all()

    def _release(self, lane: Hashable, lane_state: _Lane) -> None:
        lane_state.busy = False
        lane_state.owner = None
        if lane_state.jobs:
            self._ready.append(lane)
        elif self._lanes.get(lane) is lane_state:
            del self._lanes[lane]
        self._cond.notify_all()

    def _spawn(self) -> None:
        """Start the connector threads that :meth:`_enqueue` asked for (lock free)."""
        while True:
            with self._cond:
                if not self._starting:
                    return
                self._starting -= 1
                number = next(self._thread_numbers)
            thread = threading.Thread(
                target=self._run, name=f"{self._name}-{number}", daemon=not _exit_hook
            )
            with self._cond:
                self._threads.append(thread)
            thread.start()

    # -- threads ----------------------------------------------------------------

    def _run(self) -> None:
        current = threading.current_thread()
        with self._thread_context():
            while True:
                with self._cond:
                    while True:
                        lane = self._next_ready()
                        if lane is not None:
                            break
                        if self._closing:
                            return
                        self._idle += 1
                        self._cond.wait()
                        self._idle -= 1
                    lane_state = self._lanes[lane]
                    handle, job = lane_state.jobs.popleft()
                    lane_state.busy = True
                    lane_state.owner = current
                try:
                    if not handle.cancelled:
                        self._run_one(job)
                finally:
                    # Release the job (and the events and proxies it holds) before
                    # taking the lock: a DeviceProxy destructor can wait for Tango's
                    # event thread, which may be waiting in submit() for this lock.
                    del handle, job
                    with self._cond:
                        self._release(lane, lane_state)

    def _next_ready(self) -> Hashable | None:
        while self._ready:
            lane = self._ready.popleft()
            lane_state = self._lanes.get(lane)
            if lane_state is not None and not lane_state.busy and lane_state.jobs:
                return lane
        return None

    def _run_timers(self) -> None:
        # Cancelled jobs are released, and connector threads started, once the
        # lock is free (see _run and _spawn).
        cancelled: list[Callable[[], None]] = []
        while True:
            cancelled.clear()
            self._spawn()
            with self._cond:
                while True:
                    if self._closing:
                        return
                    if self._timers:
                        wait = self._timers[0][0] - time.monotonic()
                        if wait <= 0:
                            _, _, handle, lane, job = heapq.heappop(self._timers)
                            if handle.cancelled:
                                cancelled.append(job)
                            else:
                                self._enqueue(lane, handle, job)
                            del job
                            if cancelled or self._starting:
                                break
                            continue
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()

    def _run_one(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:  # noqa: BLE001 - keep the thread alive
            self._logger.exception("Scheduler job %r failed", job)


_live_pools: weakref.WeakSet[ConnectorPool] = weakref.WeakSet()


def _at_exit() -> None:
    """Close every pool before the interpreter joins its non-daemon threads."""
    for pool in list(_live_pools):
        pool.abandon()


# Without the hook (an interpreter that lacks it), connector threads are
# daemon threads, so that they never keep the process from exiting.
_exit_hook = False
with contextlib.suppress(AttributeError, RuntimeError):  # private, but since Python 3.9
    threading._register_atexit(_at_exit)  # type: ignore[attr-defined]  # noqa: SLF001
    _exit_hook = True
