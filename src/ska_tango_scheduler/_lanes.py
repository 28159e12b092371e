"""The one service for the package's threads: per-device lanes, timers, one-off jobs.

Part of the pure core: no :mod:`tango` import. The scheduler runs every Tango
subscribe, unsubscribe and probe of a device in that device's *lane*: jobs of
one lane run one at a time, in order (two concurrent subscriptions on one
proxy can duplicate events), while lanes of different devices run on up to
``max_threads`` connector threads at once, so a device whose attempt hangs
holds up only its own lane. The same service runs delayed jobs (retries, the
LRC status checks) and one-off jobs on short-lived threads of their own
(completing futures, replaying LRC updates).

Why it cannot deadlock with Tango's event thread (the structure, not care at
each call site):

- :class:`LaneService` has **no lock**. :meth:`~LaneService.submit`,
  :meth:`~LaneService.call_later`, :meth:`~LaneService.notify` and
  :meth:`TimerHandle.cancel` only write a flag or put a message into a
  :class:`queue.SimpleQueue`, whose ``put`` never waits. Tango's event thread
  (and a finaliser run by the garbage collector on any thread) can call them
  at any moment.
- One *control thread* per service (its ``Control`` actor in
  :mod:`._lane_control`, which
  also runs the connector threads' bodies) alone owns the lane table, the
  timer heap and the list of idle connector threads. It reads its inbox,
  hands each runnable lane's next job to an idle connector thread (through
  that thread's own ``SimpleQueue``) and starts threads when needed. It holds
  no lock while doing so, so a collection that frees a ``DeviceProxy`` there,
  however long its destructor waits for Tango's event thread, blocks nobody
  that the event thread waits for.
- Connector threads run the jobs, then drop them, then report back with a
  message. :meth:`~LaneService.run_here` asks the control thread for a lane
  and waits for the grant on a queue of its own, with a timeout; a grant that
  comes after the caller gave up is handed back by a withdraw message.
- Every thread of the package is started by :func:`start_thread`, from the
  control thread or a constructor, never from Tango's event thread (starting
  a thread waits for the new thread, whose first allocations can run the
  collector).

Connector and control threads are not daemon threads: at interpreter exit the
package's one exit hook (:mod:`._exit`) abandons every service first (no new
job starts, idle threads end), so the exit waits for jobs already inside Tango
to come back instead of finalising under them (a thread that comes back from
Tango into a finalising interpreter aborts the process).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Sequence

from . import _exit
from ._lane_control import (
    ABANDON,
    ACQUIRE,
    CLOSE,
    DONE,
    NOTIFY,
    SUBMIT,
    TIMER,
    WITHDRAW,
    Control,
    Grant,
    TimerHandle,
)
from ._threads import ThreadContext, start_thread

__all__ = ["ConnectorPool", "LaneService", "TimerHandle", "start_thread"]

#: Connector threads a service starts at most (see :class:`LaneService`).
DEFAULT_MAX_THREADS = 8


class LaneService:
    """Run jobs one at a time per lane, lanes in parallel on a few threads.

    See the module's description for why no call can make Tango's event
    thread wait. This thread-safe face holds no lock and no lane table: it
    only writes flags and puts messages into the inbox of its :class:`~._lane_control.Control`.

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
        thread_context: ThreadContext = contextlib.nullcontext,
        max_threads: int = DEFAULT_MAX_THREADS,
    ) -> None:
        """Create the service and start its control thread."""
        self._core = Control(name, logger, thread_context, max(1, max_threads))
        # Set (plain write) by abandon, so that a later close runs its final jobs here.
        self._abandoned = False
        _live_services.add(self)
        self._control = self._core.start(self)

    # -- introspection --------------------------------------------------------

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """The service's threads started so far (connectors and control thread)."""
        return (*self._core.connectors, self._control)

    def in_pool(self) -> bool:
        """Tell whether the caller runs a job of this service (or holds a lane)."""
        return bool(getattr(self._core.local, "lanes", None))

    # -- submitting (lock-free: safe from Tango's event thread and finalisers) --

    def submit(self, lane: Hashable, job: Callable[[], None]) -> TimerHandle:
        """Run ``job`` in ``lane`` once the lane's earlier jobs are done.

        Args:
            lane: Jobs of one lane never run at the same time.
            job: The callable.

        Returns:
            A handle to cancel it (already cancelled if the service is closed).
        """
        return self._post(SUBMIT, lane, job)

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
        return self._post(TIMER, lane, job, time.monotonic() + delay)

    def _post(self, kind: int, lane: Hashable, job: Callable[[], None], *due: float) -> TimerHandle:
        handle = TimerHandle()
        if self._core.closing:
            handle.cancelled = True
        else:
            self._core.inbox.put((kind, lane, handle, job, *due))
            if self._core.ended:  # too late for the control thread to see it
                handle.cancelled = True
        return handle

    def notify(self, job: Callable[[], None]) -> None:
        """Run ``job`` on a short-lived thread of its own (never on a connector).

        Used to complete futures that have done-callbacks, and to deliver user
        callbacks that must not hold a connector: user code that must stall
        neither connects nor other such jobs. The control thread starts the
        thread; once the control thread has ended, the job runs on the
        calling thread.

        Args:
            job: The callable.
        """
        self._core.inbox.put((NOTIFY, job))
        if self._core.ended:
            self._core.refuse_inbox()

    def run_here(self, lane: Hashable, job: Callable[[], None], timeout: float | None) -> bool:
        """Run ``job`` on the calling thread, holding ``lane`` meanwhile.

        For callers that must make a Tango call themselves (for example
        because they hold a device's monitor that a connector thread would
        wait for). The lane's serialisation is kept: the caller waits until
        no job of the lane runs (it goes before the lane's queued jobs), and
        the lane's queued jobs wait for this one. A caller that already holds
        the lane (a job of the lane, or a nested call) runs ``job`` at once.

        Args:
            lane: The lane.
            job: The callable; its exceptions propagate to the caller.
            timeout: Seconds to wait for the lane; None waits as long as needed.

        Returns:
            True if the job ran, False if the lane stayed busy or the service closed.
        """
        core = self._core
        held: list[Hashable] | None = getattr(core.local, "lanes", None)
        if held and lane in held:
            job()
            return True
        if core.closing:
            return False
        grant = Grant()
        core.inbox.put((ACQUIRE, lane, grant))
        if core.ended:
            core.refuse_inbox()
        try:
            granted = grant.reply.get(timeout=timeout)
        except queue.Empty:
            grant.withdrawn = True
            core.inbox.put((WITHDRAW, lane, grant))  # hands back a late grant
            return False
        if not granted:
            return False
        try:
            with core.holding(lane):
                job()
        finally:
            core.inbox.put((DONE, lane, grant))
        return True

    # -- closing ----------------------------------------------------------------

    def close(
        self, final_jobs: Sequence[tuple[Hashable, Callable[[], None]]], timeout: float | None
    ) -> bool:
        """Stop the service once the queued jobs and ``final_jobs`` have run.

        Jobs already queued (submitted, or whose delay has passed) still run,
        in order per lane, so that work handed over before closing (an
        unsubscription, say) is not lost; jobs scheduled for later are
        cancelled. After :meth:`abandon`, the final jobs run on the calling
        thread once the service's threads have ended.

        Args:
            final_jobs: ``(lane, job)`` pairs run after the queued jobs of their lane.
            timeout: Seconds to wait for the threads; None waits as long as
                they take.

        Returns:
            True if every thread of the service ended within the timeout (when
            called from a thread of the service, it does not wait and
            returns True: the threads end once the jobs have run).
        """
        self._core.closing = True
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._abandoned:
            if not self._join(deadline):
                return False
            for _, job in final_jobs:
                self._core.run_one(job)
            return True
        self._core.inbox.put((CLOSE, list(final_jobs)))
        if threading.current_thread() in self.threads:
            return True
        return self._join(deadline)

    def abandon(self) -> None:
        """Drop every job not yet started and end the threads (interpreter exit).

        Jobs running go on to their end. A later :meth:`close` runs its final
        jobs on the calling thread.
        """
        self._abandoned = True
        self._core.closing = True
        self._core.inbox.put((ABANDON,))

    def _join(self, deadline: float | None) -> bool:
        current = threading.current_thread()
        threads = [t for t in self.threads if t is not current]
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        # Threads started meanwhile (a job queued before closing) are joined too.
        late = [t for t in self.threads if t is not current and t not in threads]
        for thread in late:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads if t is not current)


#: The name the scheduler's code knows the service by.
ConnectorPool = LaneService

_live_services: weakref.WeakSet[LaneService] = weakref.WeakSet()


def _abandon_all() -> None:
    for service in list(_live_services):
        service.abandon()


def _close_all() -> None:
    for service in list(_live_services):
        service.close([], timeout=_exit.THREAD_WAIT)


_exit.at_exit(_exit.REFUSE_NEW_WORK, _abandon_all)
_exit.at_exit(_exit.CLOSE_SERVICES, _close_all)
