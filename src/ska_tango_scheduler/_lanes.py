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
- One *control thread* per service (its private ``_Control`` actor, which
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
import heapq
import itertools
import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

from . import _exit
from ._threads import ThreadContext, start_thread

__all__ = ["ConnectorPool", "LaneService", "TimerHandle", "start_thread"]

#: Connector threads a service starts at most (see :class:`LaneService`).
DEFAULT_MAX_THREADS = 8


class TimerHandle:
    """A job scheduled for later; :meth:`cancel` keeps it from running."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        """Create a live handle."""
        self.cancelled = False

    def cancel(self) -> None:
        """Keep the job from running (no effect once it ran); takes no lock."""
        self.cancelled = True


class _Grant:
    """A :meth:`LaneService.run_here` request: granted, denied, or withdrawn."""

    __slots__ = ("reply", "withdrawn")

    def __init__(self) -> None:
        self.reply: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self.withdrawn = False


_Job = tuple[TimerHandle, Callable[[], None]]
_Box = queue.SimpleQueue[tuple[Hashable, TimerHandle, Callable[[], None]] | None]


class _Lane:
    __slots__ = ("busy", "items")

    def __init__(self) -> None:
        self.items: deque[_Job | _Grant] = deque()
        # The connector's box, or the grant of a run_here caller, while a job runs.
        self.busy: _Box | _Grant | None = None


# Messages of the control thread's inbox (the first item says which).
_SUBMIT, _TIMER, _DONE, _ACQUIRE, _WITHDRAW, _NOTIFY, _CLOSE, _ABANDON = range(8)


class LaneService:
    """Run jobs one at a time per lane, lanes in parallel on a few threads.

    See the module's description for why no call can make Tango's event
    thread wait. This thread-safe face holds no lock and no lane table: it
    only writes flags and puts messages into the inbox of its :class:`_Control`.

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
        self._core = _Control(name, logger, thread_context, max(1, max_threads))
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
        return self._post(_SUBMIT, lane, job)

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
        return self._post(_TIMER, lane, job, time.monotonic() + delay)

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
        self._core.inbox.put((_NOTIFY, job))
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
        grant = _Grant()
        core.inbox.put((_ACQUIRE, lane, grant))
        if core.ended:
            core.refuse_inbox()
        try:
            granted = grant.reply.get(timeout=timeout)
        except queue.Empty:
            grant.withdrawn = True
            core.inbox.put((_WITHDRAW, lane, grant))  # hands back a late grant
            return False
        if not granted:
            return False
        try:
            with core.holding(lane):
                job()
        finally:
            core.inbox.put((_DONE, lane, grant))
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
        self._core.inbox.put((_CLOSE, list(final_jobs)))
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
        self._core.inbox.put((_ABANDON,))

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


class _Control:
    """The actor behind a :class:`LaneService`: its control and connector threads.

    The control thread alone touches the lane table, the timer heap and the
    idle connector boxes. Other threads touch only: :attr:`inbox` (``put``),
    :attr:`closing` (plain writes), :attr:`ended` and :attr:`connectors`
    (read; written by the control thread, the tuple replaced, never mutated),
    :attr:`local` (each thread its own lanes), :meth:`refuse_inbox` and
    :meth:`run_one`, none of which takes a lock.
    """

    def __init__(
        self, name: str, logger: logging.Logger, thread_context: ThreadContext, max_threads: int
    ) -> None:
        self._name = name
        self._logger = logger
        self._thread_context = thread_context
        self._max_threads = max_threads
        self.inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.local = threading.local()
        # Set (plain writes) by close/abandon, so that later submits are refused
        # at once; the control thread learns it from its inbox.
        self.closing = False
        self.ended = False  # the control thread has read its inbox for the last time
        # Replaced, never mutated: readable from any thread without a lock.
        self.connectors: tuple[threading.Thread, ...] = ()
        # Owned by the control thread alone.
        self._lanes: dict[Hashable, _Lane] = {}
        self._ready: deque[Hashable] = deque()
        self._timers: list[tuple[float, int, TimerHandle, Hashable, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._idle: list[_Box] = []
        self._boxes: list[_Box] = []
        self._numbers = itertools.count()
        self._closed = False
        self._closing_seen = False  # the control thread has seen close() or abandon()

    def start(self, owner: LaneService) -> threading.Thread:
        """Start the control thread (from the service's constructor).

        The service is kept, so that while a thread of it runs, it stays in
        ``_live_services`` (closed at exit) even if nobody else refers to it.
        """
        self._owner = owner
        return start_thread(
            f"{self._name}.control", self._run, daemon=_DAEMON, context=self._thread_context
        )

    # -- the caller's lanes (thread-local, no lock) ------------------------------

    @contextlib.contextmanager
    def holding(self, lane: Hashable) -> Iterator[None]:
        """Mark ``lane`` as held by the calling thread meanwhile."""
        lanes: list[Hashable] | None = getattr(self.local, "lanes", None)
        if lanes is None:
            lanes = self.local.lanes = []
        lanes.append(lane)
        try:
            yield
        finally:
            lanes.pop()

    # -- the control thread -------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closed:
                wait = None
                if self._timers:
                    wait = max(0.0, self._timers[0][0] - time.monotonic())
                try:
                    message = self.inbox.get(timeout=wait)
                except queue.Empty:
                    message = None
                if message is not None:
                    self._handle(message)
                    del message  # released here, with no lock held anywhere
                self._fire_due_timers()
                self._dispatch()
                self._finish_if_drained()
        except BaseException:  # pragma: no cover - a bug here must not go unseen
            self._logger.exception("%s: the control thread failed", self._name)
            raise
        finally:
            self.closing = True
            for box in self._boxes:
                box.put(None)
            self.refuse_inbox()
            self.ended = True
            self.refuse_inbox()  # what came in meanwhile (see submit, notify, run_here)

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == _SUBMIT:
            _, lane, handle, job = message
            if self._closing_seen:
                handle.cancelled = True  # submitted as close() began: refused
            else:
                self._enqueue(lane, (handle, job))
        elif kind == _TIMER:
            _, lane, handle, job, due = message
            if self._closing_seen:
                handle.cancelled = True
            else:
                heapq.heappush(self._timers, (due, next(self._seq), handle, lane, job))
        elif kind == _DONE:
            self._release(message[1], message[2])
        elif kind == _ACQUIRE:
            _, lane, grant = message
            if self._closing_seen:
                grant.reply.put(False)
            else:
                self._lane(lane).items.appendleft(grant)
                self._mark_ready(lane)
        elif kind == _WITHDRAW:
            _, lane, grant = message
            state = self._lanes.get(lane)
            if state is not None and state.busy is grant:
                self._release(lane, grant)  # granted after the caller gave up
        elif kind == _NOTIFY:
            self._start_notify(message[1])
        elif kind == _CLOSE:
            self._fire_due_timers()  # a job whose delay has passed is queued: it runs
            self._closing_seen = True
            self._drop_timers()
            for lane, job in message[1]:
                self._lane(lane).items.append((TimerHandle(), job))
                self._mark_ready(lane)
            self._deny_grants()
            self._prune()
        elif kind == _ABANDON:
            self._closing_seen = True
            self._drop_timers()
            self._ready.clear()
            for state in self._lanes.values():
                state.items.clear()  # released here, with no lock held
            self._deny_grants()
            self._prune()

    def _drop_timers(self) -> None:
        for item in self._timers:
            item[2].cancel()
        self._timers.clear()  # the jobs are released here, with no lock held

    def _prune(self) -> None:
        for lane in [k for k, s in self._lanes.items() if s.busy is None and not s.items]:
            del self._lanes[lane]

    def _lane(self, lane: Hashable) -> _Lane:
        state = self._lanes.get(lane)
        if state is None:
            state = self._lanes[lane] = _Lane()
        return state

    def _enqueue(self, lane: Hashable, item: _Job) -> None:
        self._lane(lane).items.append(item)
        self._mark_ready(lane)

    def _mark_ready(self, lane: Hashable) -> None:
        state = self._lanes[lane]
        if state.busy is None and len(state.items) == 1:
            self._ready.append(lane)  # (a lane with more is in _ready already)

    def _release(self, lane: Hashable, owner: object) -> None:
        state = self._lanes.get(lane)
        if state is None or state.busy is not owner:
            return
        state.busy = None
        if isinstance(owner, queue.SimpleQueue):
            self._idle.append(owner)
        if state.items:
            self._ready.append(lane)
        else:
            del self._lanes[lane]

    def _deny_grants(self) -> None:
        for state in self._lanes.values():
            for item in [i for i in state.items if isinstance(i, _Grant)]:
                state.items.remove(item)
                item.reply.put(False)

    def _fire_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, handle, lane, job = heapq.heappop(self._timers)
            if not handle.cancelled:
                self._enqueue(lane, (handle, job))
            del job  # a cancelled job is released here, with no lock held

    def _dispatch(self) -> None:
        while self._ready:
            lane = self._ready.popleft()
            state = self._lanes.get(lane)
            if state is None or state.busy is not None:
                continue
            while state.items:
                item = state.items[0]
                if isinstance(item, _Grant):
                    state.items.popleft()
                    if item.withdrawn:
                        continue
                    state.busy = item
                    item.reply.put(True)
                    break
                handle, job = item
                if handle.cancelled:
                    state.items.popleft()
                    del item, job  # released here, with no lock held
                    continue
                box = self._idle_box()
                if box is None:
                    self._ready.appendleft(lane)  # waits for a connector to come back
                    return
                state.items.popleft()
                state.busy = box
                box.put((lane, handle, job))
                del item, job
                break
            if state.busy is None and not state.items:
                del self._lanes[lane]

    def _idle_box(self) -> _Box | None:
        if self._idle:
            return self._idle.pop()
        if len(self._boxes) >= self._max_threads:
            return None
        box: _Box = queue.SimpleQueue()
        number = next(self._numbers)
        thread = start_thread(
            f"{self._name}-{number}",
            lambda: self._run_connector(box),
            daemon=_DAEMON,
            context=self._thread_context,
        )
        self._boxes.append(box)
        self.connectors = (*self.connectors, thread)
        return box

    def _start_notify(self, job: Callable[[], None]) -> None:
        try:
            start_thread(f"{self._name}.futures", lambda: self.run_one(job), daemon=True)
        except RuntimeError:  # no thread to be had (interpreter exit): run it here
            self.run_one(job)

    def _finish_if_drained(self) -> None:
        if not self._closing_seen or self._lanes:
            return
        self._closed = True

    def refuse_inbox(self) -> None:
        """Cancel whatever came in after closing; free grants, run notifications."""
        while True:
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                return
            kind = message[0]
            if kind == _ACQUIRE:
                message[2].reply.put(False)
            elif kind in (_SUBMIT, _TIMER):
                message[2].cancelled = True
            elif kind == _NOTIFY:
                self.run_one(message[1])
            del message

    # -- connector threads ----------------------------------------------------------

    def _run_connector(self, box: _Box) -> None:
        while True:
            item = box.get()
            if item is None:
                return
            lane, handle, job = item
            del item
            try:
                if not handle.cancelled:
                    with self.holding(lane):
                        self.run_one(job)
            finally:
                # Released before reporting back: whatever it holds (events,
                # proxies) is freed on this thread, with no lock held.
                del handle, job
                self.inbox.put((_DONE, lane, box))

    def run_one(self, job: Callable[[], None]) -> None:
        """Run ``job``, logging its exception."""
        try:
            job()
        except Exception:  # noqa: BLE001 - keep the thread alive
            self._logger.exception("Scheduler job %r failed", job)


#: The name the scheduler's code knows the service by.
ConnectorPool = LaneService

_live_services: weakref.WeakSet[LaneService] = weakref.WeakSet()


def _abandon_all() -> None:
    for service in list(_live_services):
        service.abandon()


def _close_all() -> None:
    for service in list(_live_services):
        service.close([], timeout=_exit.THREAD_WAIT)


# Without the exit order's first step (an interpreter that lacks it), the
# threads are daemon threads, so that they never keep the process from exiting.
_DAEMON = not _exit.ENDS_THREADS_BEFORE_JOIN
_exit.at_exit(_exit.REFUSE_NEW_WORK, _abandon_all)
_exit.at_exit(_exit.CLOSE_SERVICES, _close_all)
