"""Running a stream's callbacks: registrations, isolation, slow-callback reports.

Part of the pure core: no :mod:`tango` import. A worker of the dispatcher
(:mod:`._dispatch`) hands each event to its sink; a stream's sink
(:class:`StreamCallbacks`, the worker-thread side of a stream) calls
:func:`run_callbacks` with the stream's registrations (a stream with a single
callback, the usual case, runs the same steps inline), and gives a callback
registered late the stream's last event through a :class:`CatchUp` item.
Every callback runs in isolation: whatever it raises is counted and logged,
rate-limited by a :class:`RateLimitedLogger`, and the following callbacks
still get the event. Nothing here runs under a lock of the scheduler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from ._queues import Counters

__all__ = [
    "CallbackRegistration",
    "CatchUp",
    "RateLimitedLogger",
    "StreamCallbacks",
    "as_function",
    "report_raised",
    "report_slow",
    "run_callbacks",
]

_clock = time.monotonic
_get_ident = threading.get_ident


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
        running: Identifier of the thread that is about to call the
            callback or is calling it, 0 when none. Set before ``active``
            is read, so that whoever clears ``active`` and then finds
            ``running`` at 0 knows no call can start any more (see
            :meth:`wait_until_idle`).
    """

    callback_id: int
    callback: Callable[[Any], None]
    active: bool = True
    running: int = 0

    def wait_until_idle(self, poll: float = 0.0002) -> None:
        """Wait until no thread other than this one is in (or entering) the callback.

        Call after clearing :attr:`active`: from then on no call starts, and
        this returns once a call that had already started has returned.

        Args:
            poll: Seconds between two looks.
        """
        me = _get_ident()
        delay = poll
        while True:
            running = self.running
            if not running or running == me:
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.005)


def run_callbacks(
    registrations: Iterable[CallbackRegistration],
    payload: Any,
    counters: Counters,
    errors: RateLimitedLogger,
    label: str,
    slow_after: float | None = None,
) -> int:
    """Call every active registration with ``payload``, in order.

    An exception raised by a callback, of any kind (``SystemExit`` and
    ``KeyboardInterrupt`` included: on a worker thread they would only end
    that worker, never the process), is counted and logged (rate-limited)
    and does not keep the event from the following callbacks.

    Args:
        registrations: The callbacks, in registration order.
        payload: The event.
        counters: Where callback errors and slow callbacks are counted.
        errors: Rate-limited logger for callback errors and slow callbacks.
        label: Name of the stream, for the log.
        slow_after: A callback that runs longer than this many seconds is
            counted in ``counters.slow_callbacks`` and logged at WARNING;
            None: not timed.

    Returns:
        The number of callbacks that raised.
    """
    failures = 0
    me = _get_ident()
    started = _clock() if slow_after is not None else 0.0
    for registration in registrations:
        # Mark the call before looking at ``active``: see CallbackRegistration.
        registration.running = me
        try:
            if not registration.active:
                continue
            registration.callback(payload)
        except BaseException:  # noqa: BLE001 - isolation is the point
            failures += 1
            report_raised(registration, counters, errors, label)
        finally:
            registration.running = 0
        if slow_after is not None:
            ended = _clock()
            if ended - started > slow_after:
                report_slow(registration, ended - started, slow_after, counters, errors, label)
            started = ended
    return failures


def report_raised(
    registration: CallbackRegistration,
    counters: Counters,
    errors: RateLimitedLogger,
    label: str,
) -> None:
    """Count a callback that raised and log it with its traceback (rate-limited).

    Call from the ``except`` block that caught the exception.

    Args:
        registration: The callback.
        counters: Where it is counted (``callback_errors``).
        errors: The rate-limited logger.
        label: Name of the stream.
    """
    counters.callback_errors += 1
    errors.log(
        logging.ERROR,
        ("callback", registration.callback_id),
        "Callback %r of %s raised",
        registration.callback,
        label,
        exc_info=True,
    )


def report_slow(
    registration: CallbackRegistration,
    took: float,
    slow_after: float,
    counters: Counters,
    errors: RateLimitedLogger,
    label: str,
) -> None:
    """Count a slow callback and log it (rate-limited per callback).

    Args:
        registration: The callback.
        took: Seconds it ran.
        slow_after: The threshold it exceeded.
        counters: Where it is counted (``slow_callbacks``).
        errors: The rate-limited logger.
        label: Name of the stream.
    """
    counters.slow_callbacks += 1
    errors.log(
        logging.WARNING,
        ("slow", registration.callback_id),
        "Slow callback: %r of %s took %.3f s (slow_callback_duration is %g s)",
        registration.callback,
        label,
        took,
        slow_after,
    )


class _Dispatcher(Protocol):
    def put(self, queue: Any, sink: Any, payload: Any) -> None: ...
    def count_callback_errors(self, count: int, slow: int = 0) -> None: ...


class _Shared(Protocol):
    @property
    def dispatcher(self) -> _Dispatcher: ...
    @property
    def limited(self) -> RateLimitedLogger: ...
    @property
    def slow_callback_duration(self) -> float | None: ...


class StreamCallbacks:
    """The worker-thread side of a stream: its callbacks and their catch-up.

    :class:`~._streams.EventStream` builds on it and sets its attributes; a
    worker of the dispatcher calls :meth:`deliver` with each event of the
    stream's queue, and :meth:`slow_delivery` after a slow one.

    Attributes:
        ctx: What the streams of a scheduler share.
        queue: The stream's queue.
        name: The stream's name, for logs.
        counters: The stream's accounting.
        registrations: Its callbacks, in registration order (set under the
            context lock, replaced and never mutated).
        last_event: The last event delivered, for late callbacks.
        pending_catch_up: Ids of late callbacks whose catch-up is queued.
    """

    ctx: _Shared
    queue: Any
    name: str
    counters: Counters
    registrations: tuple[CallbackRegistration, ...]
    last_event: Any
    pending_catch_up: set[int]
    # The registrations of the delivery in progress (worker threads only).
    _delivering: tuple[CallbackRegistration, ...]

    def deliver(self, payload: Any) -> None:
        """Call the stream's callbacks with one event (on a worker thread).

        With several callbacks, each is timed for the slow-callback check;
        with one, the worker's timing of the whole delivery is enough (see
        :meth:`slow_delivery`).

        Args:
            payload: The event.
        """
        registrations = self.registrations
        self.last_event = payload
        self._delivering = registrations
        if len(registrations) == 1 and not self.pending_catch_up:
            # The usual case, one callback: run_callbacks inlined (this runs
            # once per event on a worker), same order of steps.
            registration = registrations[0]
            registration.running = _get_ident()
            try:
                if registration.active:
                    registration.callback(payload)
            except BaseException:  # noqa: BLE001 - isolation is the point
                report_raised(registration, self.counters, self.ctx.limited, self.name)
                self.ctx.dispatcher.count_callback_errors(1)
            finally:
                registration.running = 0
            return
        if self.pending_catch_up:
            self.pending_catch_up.difference_update(r.callback_id for r in registrations)
        counters = self.counters
        several = len(registrations) > 1
        slow = counters.slow_callbacks
        failures = run_callbacks(
            registrations,
            payload,
            counters,
            self.ctx.limited,
            self.name,
            self.ctx.slow_callback_duration if several else None,
        )
        slow = counters.slow_callbacks - slow if several else 0
        if slow:
            self.queue.counters.slow_callbacks += slow
        if failures or slow:
            self.ctx.dispatcher.count_callback_errors(failures, slow)

    def slow_delivery(self, took: float) -> None:
        """Count a delivery that took ``took`` seconds, more than the threshold (worker).

        Called by the dispatcher after :meth:`deliver`. A delivery to one
        callback is that callback's duration; with several, :meth:`deliver`
        timed each one already.

        Args:
            took: Seconds the delivery took.
        """
        registrations = self._delivering
        limit = self.ctx.slow_callback_duration
        if len(registrations) != 1 or limit is None:
            return
        report_slow(registrations[0], took, limit, self.counters, self.ctx.limited, self.name)
        self.queue.counters.slow_callbacks += 1
        self.ctx.dispatcher.count_callback_errors(0, 1)

    def add_late(self, registration: CallbackRegistration) -> None:
        """Register a callback on an existing stream and queue its catch-up.

        Called under the context lock.

        Args:
            registration: The new callback.
        """
        self.pending_catch_up.add(registration.callback_id)
        self.registrations = (*self.registrations, registration)
        self.ctx.dispatcher.put(self.queue, CatchUp(self, registration), None)

    def catch_up(self, registration: CallbackRegistration) -> None:
        """Deliver the last event to a late callback (worker thread).

        Args:
            registration: The new callback.
        """
        if registration.callback_id not in self.pending_catch_up:
            return  # an event reached it already
        self.pending_catch_up.discard(registration.callback_id)
        event = self.last_event
        if event is None or not registration.active:
            return
        failures = run_callbacks((registration,), event, self.counters, self.ctx.limited, self.name)
        if failures:
            self.ctx.dispatcher.count_callback_errors(failures)


class CatchUp:
    """Queue item giving a late callback the stream's last delivered event.

    It goes through the stream's queue behind the events already queued, so
    the new callback sees the current value in order; the callbacks already
    registered see nothing of it. It is its own sink, so the stream's
    counters count Tango events only.

    Attributes:
        stream: The stream.
        registration: The new callback.
        counters: Accounting of catch-up items (queue totals include them).
    """

    __slots__ = ("counters", "registration", "stream")

    def __init__(self, stream: StreamCallbacks, registration: CallbackRegistration) -> None:
        """Make the item for one new registration."""
        self.stream = stream
        self.registration = registration
        self.counters = Counters()

    def deliver(self, payload: Any) -> None:
        """Give the registration the last event if no event reached it yet.

        Args:
            payload: Unused.
        """
        self.stream.catch_up(self.registration)


def as_function(callback: object) -> Callable[[Any], None]:
    """Return what to call for a callback given as a callable or a ``push_event`` object.

    Raises:
        TypeError: If ``callback`` is neither callable nor has a callable
            ``push_event`` attribute.
    """
    if callable(callback):
        return callback
    push_event = getattr(callback, "push_event", None)
    if callable(push_event):
        return push_event  # type: ignore[no-any-return]
    raise TypeError(
        f"callback must be callable or have a push_event(event) method, got {callback!r}"
    )
