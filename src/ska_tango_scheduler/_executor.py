"""A single thread that runs jobs in order, now or after a delay.

Part of the pure core: no :mod:`tango` import. The scheduler runs every
Tango subscribe and unsubscribe on one such thread, which serialises them per
device proxy (two concurrent subscriptions on one proxy can duplicate
events) and keeps them off user threads.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

__all__ = ["SerialExecutor", "TimerHandle"]


class TimerHandle:
    """A job scheduled for later; :meth:`cancel` keeps it from running."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        """Create a live handle."""
        self.cancelled = False

    def cancel(self) -> None:
        """Keep the job from running (no effect once it ran)."""
        self.cancelled = True


class SerialExecutor:
    """Run callables one at a time on a dedicated thread."""

    def __init__(
        self,
        name: str,
        logger: logging.Logger,
        thread_context: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        """Create and start the executor thread.

        Args:
            name: Name of the thread.
            logger: Where exceptions of jobs are reported.
            thread_context: Context the thread runs inside.
        """
        self._logger = logger
        self._thread_context = thread_context
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, TimerHandle, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        """The executor thread."""
        return self._thread

    def in_executor(self) -> bool:
        """Tell whether the caller runs on the executor thread."""
        return threading.current_thread() is self._thread

    def submit(self, job: Callable[[], None]) -> TimerHandle:
        """Run ``job`` as soon as the jobs before it are done.

        Args:
            job: The callable.

        Returns:
            A handle to cancel it.
        """
        return self.call_later(0.0, job)

    def call_later(self, delay: float, job: Callable[[], None]) -> TimerHandle:
        """Run ``job`` after ``delay`` seconds.

        Jobs due at the same time run in submission order.

        Args:
            delay: Seconds from now.
            job: The callable.

        Returns:
            A handle to cancel it.
        """
        handle = TimerHandle()
        with self._cond:
            if self._closing:
                handle.cancelled = True
                return handle
            due = time.monotonic() + max(delay, 0.0)
            heapq.heappush(self._heap, (due, next(self._seq), handle, job))
            self._cond.notify()
        return handle

    def close(self, final_jobs: Sequence[Callable[[], None]], timeout: float | None) -> bool:
        """Stop the thread once the jobs that are due and ``final_jobs`` have run.

        Jobs already due (submitted, or whose delay has passed) still run, in
        order, so that work handed over before closing (an unsubscription,
        say) is not lost; jobs scheduled for later are cancelled.

        Args:
            final_jobs: Jobs run after the due ones, before the thread ends.
            timeout: Seconds to wait for them; None waits as long as they take.

        Returns:
            True if the thread ended within the timeout (always True when
            called from the executor thread itself, which ends once it has
            run the remaining jobs after the current one).
        """
        with self._cond:
            now = time.monotonic()
            due = []
            for item in self._heap:
                if item[0] <= now:
                    due.append(item)
                else:
                    item[2].cancelled = True
            for job in final_jobs:
                due.append((now, next(self._seq), TimerHandle(), job))
            heapq.heapify(due)
            self._heap = due
            self._closing = True
            self._cond.notify()
        if self.in_executor():
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        with self._thread_context():
            while True:
                with self._cond:
                    while True:
                        if self._heap:
                            due = self._heap[0][0]
                            wait = due - time.monotonic()
                            if wait <= 0:
                                _, _, handle, job = heapq.heappop(self._heap)
                                break
                            self._cond.wait(wait)
                        elif self._closing:
                            return
                        else:
                            self._cond.wait()
                if not handle.cancelled:
                    self._run_one(job)

    def _run_one(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:  # noqa: BLE001 - keep the thread alive
            self._logger.exception("Scheduler job %r failed", job)
