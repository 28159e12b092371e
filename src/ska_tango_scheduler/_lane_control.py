"""The actor behind a lane service: the control thread and the connector threads.

Part of the pure core: no :mod:`tango` import. :class:`Control` is what
:class:`~._lanes.LaneService` (the face other threads call, lock-free) sends
its messages to. Its control thread alone owns the lane table, the timer heap
and the idle connector threads, and holds no lock while it works; why that
keeps Tango's event thread from ever waiting on it is told in :mod:`._lanes`.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from . import _exit
from ._threads import ThreadContext, start_thread

__all__ = [
    "ABANDON",
    "ACQUIRE",
    "CLOSE",
    "DONE",
    "NOTIFY",
    "SUBMIT",
    "TIMER",
    "WITHDRAW",
    "Control",
    "Grant",
    "TimerHandle",
]


class TimerHandle:
    """A job scheduled for later; :meth:`cancel` keeps it from running."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        """Create a live handle."""
        self.cancelled = False

    def cancel(self) -> None:
        """Keep the job from running (no effect once it ran); takes no lock."""
        self.cancelled = True


class Grant:
    """A :meth:`~._lanes.LaneService.run_here` request: granted, denied, or withdrawn."""

    __slots__ = ("reply", "withdrawn")

    def __init__(self) -> None:
        self.reply: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self.withdrawn = False


_Job = tuple[TimerHandle, Callable[[], None]]
_Box = queue.SimpleQueue[tuple[Hashable, TimerHandle, Callable[[], None]] | None]


class _Lane:
    __slots__ = ("busy", "items")

    def __init__(self) -> None:
        self.items: deque[_Job | Grant] = deque()
        # The connector's box, or the grant of a run_here caller, while a job runs.
        self.busy: _Box | Grant | None = None


#: Kinds of message in the control thread's inbox (a message's first item).
SUBMIT, TIMER, DONE, ACQUIRE, WITHDRAW, NOTIFY, CLOSE, ABANDON = range(8)


class Control:
    """The actor behind a :class:`~._lanes.LaneService`: its control and connector threads.

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

    def start(self, owner: object) -> threading.Thread:
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
        if kind == SUBMIT:
            _, lane, handle, job = message
            if self._closing_seen:
                handle.cancelled = True  # submitted as close() began: refused
            else:
                self._enqueue(lane, (handle, job))
        elif kind == TIMER:
            _, lane, handle, job, due = message
            if self._closing_seen:
                handle.cancelled = True
            else:
                heapq.heappush(self._timers, (due, next(self._seq), handle, lane, job))
        elif kind == DONE:
            self._release(message[1], message[2])
        elif kind == ACQUIRE:
            _, lane, grant = message
            if self._closing_seen:
                grant.reply.put(False)
            else:
                self._lane(lane).items.appendleft(grant)
                self._mark_ready(lane)
        elif kind == WITHDRAW:
            _, lane, grant = message
            state = self._lanes.get(lane)
            if state is not None and state.busy is grant:
                self._release(lane, grant)  # granted after the caller gave up
        elif kind == NOTIFY:
            self._start_notify(message[1])
        elif kind == CLOSE:
            self._fire_due_timers()  # a job whose delay has passed is queued: it runs
            self._closing_seen = True
            self._drop_timers()
            for lane, job in message[1]:
                self._lane(lane).items.append((TimerHandle(), job))
                self._mark_ready(lane)
            self._deny_grants()
            self._prune()
        elif kind == ABANDON:
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
            for item in [i for i in state.items if isinstance(i, Grant)]:
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
                if isinstance(item, Grant):
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
            if kind == ACQUIRE:
                message[2].reply.put(False)
            elif kind in (SUBMIT, TIMER):
                message[2].cancelled = True
            elif kind == NOTIFY:
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
                self.inbox.put((DONE, lane, box))

    def run_one(self, job: Callable[[], None]) -> None:
        """Run ``job``, logging its exception."""
        try:
            job()
        except Exception:  # noqa: BLE001 - keep the thread alive
            self._logger.exception("Scheduler job %r failed", job)


# Without the exit order's first step (an interpreter that lacks it), the
# threads are daemon threads, so that they never keep the process from exiting.
_DAEMON = not _exit.ENDS_THREADS_BEFORE_JOIN
