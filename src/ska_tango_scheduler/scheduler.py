"""The :class:`CallbackScheduler`: Tango event callbacks off Tango's event thread."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, NewType

import tango

from . import _compat, _exit
from ._backoff import BackoffPolicy
from ._checks import (
    MAX_ATTEMPT_TIMEOUT,
    MAX_QUEUE_SIZE,
    MAX_SLOW_CALLBACK_DURATION,
    MAX_THREAD_COUNT,
    MAX_WAIT,
    check_seconds,
    check_whole_number,
)
from ._dispatch import YIELD_INTERVAL, CallbackRegistration, Dispatcher, RateLimitedLogger
from ._hostprobe import HostProbe
from ._lanes import ConnectorPool
from ._queues import DEFAULT_QUEUE_SIZE, EventQueue
from ._streams import EventStream, StreamContext, StreamKey, StreamState
from ._window import WindowStats, merge
from .diagnostics import (
    LATENCY_WINDOW,
    BackoffDiagnostics,
    LatencyStats,
    QueueDiagnostics,
    SchedulerDiagnostics,
    StreamDiagnostics,
    StreamStatus,
    Totals,
    WorkerDiagnostics,
)
from .type_hints import DeviceType, EventCallbackType, QueueFactory

__all__ = [
    "CallbackID",
    "CallbackScheduler",
    "SchedulerShutdownError",
    "StreamNotFoundError",
    "UnknownCallbackError",
]

#: Identifier of a registered callback, returned (through a future) by
#: :meth:`CallbackScheduler.register_event_callback`.
CallbackID = NewType("CallbackID", int)

_scheduler_numbers = itertools.count(1)
_callback_numbers = itertools.count(1)

# How long PyTango < 10.1 callers wait for their synchronous subscription.
_SYNC_REGISTER_WAIT = 30.0
# How long shutdown waits for Tango to take back the subscriptions.
_UNSUBSCRIBE_WAIT = 5.0
#: Default bound of one step (host check, proxy call) of a connection attempt.
DEFAULT_ATTEMPT_TIMEOUT = 3.0


# Private hook (see _connecting_on_calling_thread): per thread, whether new streams
# subscribe on the calling thread, and how long such a caller waits for the device's lane.
_on_calling_thread = threading.local()
_CALLER_LANE_WAIT = 5.0


@contextlib.contextmanager
def _connecting_on_calling_thread(active: bool = True) -> Iterator[None]:
    """Private: streams created in this block connect on the calling thread.

    For a caller that may hold the device's monitor (a device subscribing to itself
    from one of its commands): a connector thread would wait for that monitor while
    the caller waits for the connector. Covers :meth:`CallbackScheduler.connect_event_stream`
    as well as registrations (as :meth:`CallbackScheduler._register_on_caller_thread`
    does): the first subscription attempt of a new stream is made synchronously by the
    caller, holding the device's connector lane; retries, unsubscription and the rest
    stay with the connector.

    Args:
        active: False makes the block do nothing (for callers deciding at run time).

    Yields:
        Nothing.
    """
    previous = getattr(_on_calling_thread, "active", False)
    _on_calling_thread.active = active
    try:
        yield
    finally:
        _on_calling_thread.active = previous


class SchedulerShutdownError(RuntimeError):
    """The scheduler was shut down; it accepts no more calls."""


class UnknownCallbackError(KeyError):
    """No callback is registered under this id (never was, or already removed)."""


class StreamNotFoundError(KeyError):
    """No such event stream exists in this scheduler."""


class CallbackScheduler:
    """Run Tango event callbacks on worker threads, fairly, from bounded queues.

    Tango's event thread only puts each event on its stream's queue and goes
    back to receiving. Worker threads take events from the queues that have
    some, in turn, one event at a time, so a slow callback or a flooding
    attribute cannot hold up the other streams for longer than one callback.
    A full queue discards its oldest event and counts it.

    Args:
        thread_count: Number of worker threads: how many callbacks may run at
            once, from 1 to 128 (``MAX_THREAD_COUNT``). Use one more than the
            number of slow callbacks that may be running at the same time.
        name: Name of the scheduler, used for its threads and in logs and
            diagnostics; a unique one is made up if omitted.
        logger: Logger to use; ``logging.getLogger("ska_tango_scheduler")``
            if omitted.
        default_queue_size: Capacity of the queue each new stream gets when
            no ``queue_factory`` is given, from 1 to 1,000,000
            (``MAX_QUEUE_SIZE``).
        backoff: How quickly streams that fail to connect are retried.
        wait_for_subscription: On PyTango < 10.1 only, whether
            ``register_event_callback`` and ``connect_event_stream`` wait (up
            to 30 s) for the synchronous subscription of a new stream, so
            that the future they return is already done. Pass False where a
            caller must not block, e.g. in ``init_device`` of a device that
            subscribes to itself; the future then completes later, as it
            does on PyTango >= 10.1. Inside a device server that has not
            finished starting there is no wait either: no subscription is
            made before the server has started.
        slow_callback_duration: Seconds after which a callback counts as
            slow: it is counted (per stream, per queue and in the totals of
            :meth:`diagnostics`) and logged at WARNING, at most once per
            10 s per callback, naming the callback, its stream and how long
            it took, above 0 and at most 3,600 s
            (``MAX_SLOW_CALLBACK_DURATION``). None turns the check off (and
            saves two clock reads per callback).
        attempt_timeout: Seconds one step of a connection attempt may take:
            the check that the device's Tango host answers, and each Tango
            call on the scheduler's own proxies. Attempts run on a few
            connector threads, one at a time per device, so a device or host
            that hangs delays only its own streams. Above 0 and at most 300 s
            (``MAX_ATTEMPT_TIMEOUT``).

    The upper bounds are explained in :doc:`/reference/limits`.

    Raises:
        ValueError: If ``thread_count`` or ``default_queue_size`` is out of
            its range, or ``slow_callback_duration`` or ``attempt_timeout``
            is not a positive finite number within its bound.
        TypeError: If they are not integers, ``slow_callback_duration`` is
            neither a number nor None, ``attempt_timeout`` is not a number,
            ``logger`` is not a ``logging.Logger``, or ``backoff`` is not a
            :class:`BackoffPolicy`.
    """

    def __init__(
        self,
        thread_count: int = 1,
        name: str | None = None,
        logger: logging.Logger | None = None,
        *,
        default_queue_size: int = DEFAULT_QUEUE_SIZE,
        backoff: BackoffPolicy | None = None,
        wait_for_subscription: bool = True,
        slow_callback_duration: float | None = 0.1,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
    ) -> None:
        """Create the scheduler and start its threads."""
        _check_count("thread_count", thread_count, MAX_THREAD_COUNT)
        _check_count("default_queue_size", default_queue_size, MAX_QUEUE_SIZE)
        slow_after = _check_duration("slow_callback_duration", slow_callback_duration)
        if backoff is not None and not isinstance(backoff, BackoffPolicy):
            raise TypeError(f"backoff must be a BackoffPolicy, got {backoff!r}")
        if logger is not None and not isinstance(logger, logging.Logger):
            raise TypeError(f"logger must be a logging.Logger or None, got {logger!r}")
        _check_seconds("attempt_timeout", attempt_timeout, MAX_ATTEMPT_TIMEOUT, allow_zero=False)
        self._name = name if name is not None else f"CallbackScheduler-{next(_scheduler_numbers)}"
        self._logger = logger if logger is not None else logging.getLogger("ska_tango_scheduler")
        self._default_queue_size = default_queue_size
        self._wait_for_subscription = bool(wait_for_subscription)
        self._lock = threading.Lock()
        self._dispatcher = Dispatcher(
            thread_count,
            self._name,
            self._logger,
            thread_context=tango.EnsureOmniThread,
            slow_after=slow_after,
        )
        connector = ConnectorPool(
            f"{self._name}.connector", self._logger, thread_context=tango.EnsureOmniThread
        )
        self._ctx = StreamContext(
            lock=self._lock,
            dispatcher=self._dispatcher,
            connector=connector,
            probe=HostProbe(timeout=float(attempt_timeout)),
            attempt_timeout=float(attempt_timeout),
            policy=backoff if backoff is not None else BackoffPolicy(),
            logger=self._logger,
            limited=RateLimitedLogger(self._logger),
            slow_callback_duration=slow_after,
        )
        self._streams: dict[StreamKey, EventStream] = {}
        self._callbacks: dict[int, tuple[EventStream, CallbackRegistration]] = {}
        self._queue_users: dict[EventQueue, set[EventStream]] = {}
        self._shut_down = False
        # Diagnostics fields of window statistics (see _fields).
        self._fields_cache: dict[int, tuple[WindowStats, dict[str, Any]]] = {}
        self._dispatcher.start()
        with _live_lock:
            _live_schedulers.add(self)

    # -- properties ----------------------------------------------------------

    @property
    def name(self) -> str:
        """The scheduler's name."""
        return self._name

    @property
    def thread_count(self) -> int:
        """The number of worker threads."""
        return self._dispatcher.thread_count

    @property
    def slow_callback_duration(self) -> float | None:
        """Seconds after which a callback counts as slow (None: not checked)."""
        return self._ctx.slow_callback_duration

    @property
    def is_shutdown(self) -> bool:
        """True once :meth:`shutdown` has been called."""
        return self._shut_down

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """The scheduler's own threads: workers, and connector threads started so far."""
        return (*self._dispatcher.threads, *self._ctx.connector.threads)

    # -- queues --------------------------------------------------------------

    def allocate_queue(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> EventQueue:
        """Create a new queue, for a ``queue_factory`` that wants a bigger one.

        Args:
            queue_size: How many events the queue holds before it discards
                the oldest, from 1 to 1,000,000 (``MAX_QUEUE_SIZE``).

        Returns:
            The queue.

        Raises:
            ValueError: If ``queue_size`` is below 1 or above 1,000,000.
            TypeError: If ``queue_size`` is not an integer.
            SchedulerShutdownError: After :meth:`shutdown`.
        """
        self._check_running()
        _check_count("queue_size", queue_size, MAX_QUEUE_SIZE)
        return self._dispatcher.new_queue(queue_size)

    def get_queue(
        self, device: DeviceType, attr_name: str, event_type: tango.EventType
    ) -> EventQueue:
        """Return the queue of an existing stream, for a ``queue_factory`` that shares it.

        Streams sharing a queue have their events delivered in the order they
        were received.

        Args:
            device: The device, as a proxy or a TRL.
            attr_name: The attribute.
            event_type: The event type.

        Returns:
            The stream's queue.

        Raises:
            StreamNotFoundError: If the stream does not exist.
            SchedulerShutdownError: After :meth:`shutdown`.
        """
        key = self._key(device, attr_name, event_type)
        with self._lock:
            self._check_running()
            stream = self._streams.get(key)
            if stream is None:
                raise StreamNotFoundError(f"no stream {_describe(key)} in {self._name}")
            return stream.queue

    # -- callbacks -----------------------------------------------------------

    def register_event_callback(
        self,
        device: DeviceType,
        attr_name: str,
        event_type: tango.EventType,
        callback: EventCallbackType,
        queue_factory: QueueFactory | None = None,
    ) -> Future[CallbackID]:
        """Call ``callback`` with every event of a stream, on a worker thread.

        The stream (device, attribute, event type) is connected if it is not
        yet. Callbacks of one stream are called in registration order.

        Args:
            device: A ``tango.DeviceProxy``, or the device's TRL
                (``"domain/family/member"`` or
                ``"tango://host:port/domain/family/member"``); the device need
                not exist yet.
            attr_name: The attribute.
            event_type: The event type, e.g. ``tango.EventType.CHANGE_EVENT``.
            callback: Called with each event (``tango.EventData`` or the like,
                including error events with ``err`` true). Like Tango, the
                scheduler also takes an object with a ``push_event(event)``
                method, such as ``tango.utils.EventCallback()``.
            queue_factory: Called without arguments when the stream is
                created, to give it a queue (``allocate_queue`` or
                ``get_queue``); ignored if the stream exists already.

        Returns:
            A future of the callback's id. It completes once the stream's
            first connection attempt has an outcome (at once if the stream is
            already connected, and before returning on PyTango < 10.1). A
            failed attempt also completes it: the callback then receives error
            events while the scheduler keeps retrying.

        Raises:
            TypeError: If ``callback`` is neither callable nor has a
                ``push_event`` method, ``queue_factory`` is not callable,
                ``device`` is neither a proxy nor a string, ``event_type`` is
                not a ``tango.EventType``, or the factory returns no queue.
            ValueError: For an empty attribute name, an unsupported event
                type, a malformed TRL, or a queue of another scheduler.
            SchedulerShutdownError: After :meth:`shutdown`.
        """
        return self._register(device, attr_name, event_type, callback, queue_factory, False, None)

    def _register_on_caller_thread(
        self,
        device: DeviceType,
        attr_name: str,
        event_type: tango.EventType,
        callback: EventCallbackType,
        queue_factory: QueueFactory | None = None,
        lane_timeout: float | None = 5.0,
    ) -> Future[CallbackID]:
        """Register like :meth:`register_event_callback`, connecting on this thread.

        Private, for callers that must make the first subscription themselves:
        a command of a device that subscribes to that same device holds the
        device's monitor, which a connector thread would wait for. If the
        stream is new, its first connection attempt runs on the calling
        thread while holding the device's connector lane (so subscriptions on
        one proxy stay serialised); if the lane stays busy for
        ``lane_timeout`` seconds the attempt is left to a connector thread.
        Retries and later work run on the connector threads as usual.

        Args:
            device: As for :meth:`register_event_callback`.
            attr_name: As for :meth:`register_event_callback`.
            event_type: As for :meth:`register_event_callback`.
            callback: As for :meth:`register_event_callback`.
            queue_factory: As for :meth:`register_event_callback`.
            lane_timeout: Seconds to wait for the device's lane; None waits.

        Returns:
            As for :meth:`register_event_callback`.
        """
        return self._register(
            device, attr_name, event_type, callback, queue_factory, True, lane_timeout
        )

    def _register(
        self,
        device: DeviceType,
        attr_name: str,
        event_type: tango.EventType,
        callback: EventCallbackType,
        queue_factory: QueueFactory | None,
        on_caller: bool,
        lane_timeout: float | None,
    ) -> Future[CallbackID]:
        function = _as_function(callback)
        future: Future[CallbackID] = Future()

        def bind(stream: EventStream, created: bool) -> bool:
            callback_id = CallbackID(next(_callback_numbers))
            registration = CallbackRegistration(callback_id, function)
            if created:
                stream.registrations = (*stream.registrations, registration)
            else:  # give it the current value first, through the queue
                stream.add_late(registration)
            self._callbacks[callback_id] = (stream, registration)
            if stream.outcome_known:
                future.set_result(callback_id)  # no done-callbacks yet: safe under the lock
                return False
            stream.waiters.append((future, callback_id))
            return True

        self._attach(device, attr_name, event_type, queue_factory, bind, on_caller, lane_timeout)
        return future

    def unregister_callback(self, callback_id: CallbackID) -> None:
        """Stop calling a callback.

        Once this returns the callback is not called again, not even for an
        event whose delivery has begun. A call that is running on a worker
        when this is called from any other thread is waited for: this
        returns once it has returned (as Tango's ``unsubscribe_event`` waits
        for a running callback), so do not call it while holding a lock that
        the callback needs. Called on one of the scheduler's own threads
        (inside a callback, or in a done-callback of a registration future),
        it does not wait: a callback may unregister itself or others, and a
        call of the unregistered callback already running on another worker
        finishes on its own.

        The stream is disconnected when its last callback leaves, unless it
        is pinned by :meth:`connect_event_stream`.

        Args:
            callback_id: The id the registration's future gave.

        Raises:
            UnknownCallbackError: If the id is unknown or already unregistered.
            SchedulerShutdownError: After :meth:`shutdown`.
        """
        with self._lock:
            self._check_running()
            try:
                entry = self._callbacks.pop(callback_id, None)
            except TypeError:  # unhashable: certainly not an id of ours
                entry = None
            if entry is None:
                raise UnknownCallbackError(
                    f"callback id {callback_id!r} is not registered with {self._name}"
                )
            stream, registration = entry
            registration.active = False
            stream.registrations = tuple(r for r in stream.registrations if r is not registration)
            self._release_if_unused(stream)
        if registration.running and not self._on_own_thread():
            registration.wait_until_idle()

    # -- persistent streams --------------------------------------------------

    def connect_event_stream(
        self,
        device: DeviceType,
        attr_name: str,
        event_type: tango.EventType,
        queue_factory: QueueFactory | None = None,
    ) -> Future[None]:
        """Connect a stream and keep it connected until :meth:`disconnect_event_stream`.

        Registering and unregistering callbacks on a pinned stream makes no
        Tango call, which spares every other callback in the process the pause
        that a subscription or unsubscription causes. Events that arrive while
        no callback is registered are discarded.

        Args:
            device: The device, as a proxy or a TRL.
            attr_name: The attribute.
            event_type: The event type.
            queue_factory: As for :meth:`register_event_callback`.

        Returns:
            A future that completes once the first connection attempt has an
            outcome.

        Raises:
            TypeError: For arguments of the wrong type.
            ValueError: For malformed arguments.
            SchedulerShutdownError: After :meth:`shutdown`.
        """
        return self._connect(device, attr_name, event_type, queue_factory, False, None)

    def _connect(
        self,
        device: DeviceType,
        attr_name: str,
        event_type: tango.EventType,
        queue_factory: QueueFactory | None,
        on_caller: bool,
        lane_timeout: float | None,
    ) -> Future[None]:
        future: Future[None] = Future()

        def bind(stream: EventStream, created: bool) -> bool:
            stream.pinned = True
            if stream.outcome_known:
                future.set_result(None)  # no done-callbacks yet: safe under the lock
                return False
            stream.waiters.append((future, None))
            return True

        self._attach(device, attr_name, event_type, queue_factory, bind, on_caller, lane_timeout)
        return future

    def _connect_on_caller_thread(
        self,
        device: DeviceType,
        attr_name: str,
        event_type: tango.EventType,
        queue_factory: QueueFactory | None = None,
        lane_timeout: float | None = 5.0,
    ) -> Future[None]:
        """Pin a stream like :meth:`connect_event_stream`, connecting on this thread.

        Private; see :meth:`_register_on_caller_thread`.

        Args:
            device: As for :meth:`connect_event_stream`.
            attr_name: As for :meth:`connect_event_stream`.
            event_type: As for :meth:`connect_event_stream`.
            queue_factory: As for :meth:`connect_event_stream`.
            lane_timeout: Seconds to wait for the device's lane; None waits.

        Returns:
            As for :meth:`connect_event_stream`.
        """
        return self._connect(device, attr_name, event_type, queue_factory, True, lane_timeout)

    def disconnect_event_stream(
        self, device: DeviceType, attr_name: str, event_type: tango.EventType
    ) -> None:
        """Release a stream pinned by :meth:`connect_event_stream`.

        The stream is disconnected now if no callback is registered, else when
        its last callback leaves.

        Args:
            device: The device, as a proxy or a TRL.
            attr_name: The attribute.
            event_type: The event type.

        Raises:
            StreamNotFoundError: If the stream is not pinned.
            SchedulerShutdownError: After :meth:`shutdown`.
        """
        key = self._key(device, attr_name, event_type)
        with self._lock:
            self._check_running()
            stream = self._streams.get(key)
            if stream is None or not stream.pinned:
                raise StreamNotFoundError(
                    f"stream {_describe(key)} was not connected with connect_event_stream"
                )
            stream.pinned = False
            self._release_if_unused(stream)

    # -- lifecycle -----------------------------------------------------------

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the scheduler: unsubscribe everything and stop the workers.

        No new work is accepted; callbacks that are running finish; events
        still queued are not delivered (they are counted as dropped).
        Calling it again does nothing. It may be called from a callback (that
        worker then ends after the callback).
        A scheduler still running when the interpreter exits is shut down by
        an exit hook, so that Tango delivers no event into a finalising
        interpreter (which would abort the process).

        Args:
            timeout: Seconds to wait for running callbacks; None waits as long
                as they take. Unsubscribing waits at most 5 s more.

        Raises:
            TypeError: If ``timeout`` is neither None nor a number.
            ValueError: If ``timeout`` is negative, not finite or longer
                than Python can wait (``threading.TIMEOUT_MAX``). A call that
                raises changes nothing: the scheduler keeps running.
        """
        _check_seconds("timeout", timeout, MAX_WAIT, allow_zero=True)
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
            with _live_lock:
                _live_schedulers.discard(self)
            streams = list(self._streams.values())
            self._streams.clear()
            self._callbacks.clear()
            for stream in streams:
                stream.closed = True
                for registration in stream.registrations:
                    registration.active = False
        wait = _UNSUBSCRIBE_WAIT if timeout is None else min(timeout, _UNSUBSCRIBE_WAIT)
        error = SchedulerShutdownError(f"{self._name} was shut down")
        self._ctx.probe.close()  # interrupt host checks in progress
        jobs = [(s.key.device, functools.partial(s.close, error)) for s in streams]
        if not self._ctx.connector.close(jobs, wait):
            self._logger.warning(
                "%s: Tango did not take back every subscription within %.1f s", self._name, wait
            )
        for stream in streams:
            stream.resolve_waiters(error)
        if not self._dispatcher.stop(timeout):
            self._logger.warning("%s: some callbacks were still running at shutdown", self._name)
        # Drop the events still queued (counted as dropped) and the scheduler's
        # proxies: nothing of ours may keep a proxy alive (events refer to theirs,
        # and a queued event and its stream refer to each other) after shutdown.
        # Released with no lock held, on an omni thread (a proxy's destructor
        # needs one).
        with self._lock:
            proxies, self._ctx.proxies = self._ctx.proxies, {}
        with tango.EnsureOmniThread():
            for queue in {stream.queue for stream in streams}:
                self._dispatcher.discard_queued(queue)
            proxies.clear()
            del proxies

    def __enter__(self) -> CallbackScheduler:
        """Return the scheduler, to shut it down at the end of a ``with`` block."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Shut the scheduler down."""
        self.shutdown()

    def __repr__(self) -> str:
        """Return a short description."""
        state = "shut down" if self._shut_down else f"{len(self._streams)} stream(s)"
        return f"<CallbackScheduler {self._name!r}, {self.thread_count} thread(s), {state}>"

    # -- diagnostics ---------------------------------------------------------

    def diagnostics(self) -> SchedulerDiagnostics:
        """Take a consistent snapshot of streams, queues, retries and totals.

        The counts agree with each other (``received == delivered + dropped
        + queued`` for every stream, every queue and the totals). The
        latency, callback duration and busy figures cover the last
        :data:`~ska_tango_scheduler.diagnostics.LATENCY_WINDOW` seconds
        (see :class:`~ska_tango_scheduler.diagnostics.LatencyStats`).

        Returns:
            The snapshot; ``to_dict()`` makes it JSON-ready.
        """
        now_mono = time.monotonic()
        dispatcher = self._dispatcher
        # Copy the registry (no lock of Tango's event thread is involved); the
        # counts are then read row by row, each row at one instant, under the
        # dispatcher's intake lock, which is held only for a few int reads
        # (see Dispatcher): building the rows never holds a lock.
        with self._lock:
            streams = list(self._streams.values())
            queue_users = [(q, tuple(users)) for q, users in self._queue_users.items()]
        stream_rows: list[StreamDiagnostics] = []
        fields_of: dict[EventStream, dict[str, Any]] = {}
        last_yield = now_mono
        for s in streams:
            if len(stream_rows) % 16 == 15:
                now = time.monotonic()
                if now - last_yield > YIELD_INTERVAL:
                    # Let Tango's event thread have the GIL, as the workers do.
                    time.sleep(0)
                    last_yield = now
            queued, delivered, dropped = dispatcher.sink_counts(s)
            fields = fields_of[s] = self._fields(s.counters.window.stats(now_mono))
            stream_rows.append(
                StreamDiagnostics(
                    name=s.name,
                    device=s.key.device.trl,
                    attribute=s.attribute,
                    event_type=s.key.event_type.name,
                    state=s.state.value,
                    pinned=s.pinned,
                    callbacks=len(s.registrations),
                    queue=s.queue.name,
                    queued=queued,
                    received=delivered + dropped + queued,
                    delivered=delivered,
                    dropped=dropped,
                    callback_errors=s.counters.callback_errors,
                    last_error=s.last_error,
                    slow_callbacks=s.counters.slow_callbacks,
                    **fields,
                )
            )
        queue_rows: list[QueueDiagnostics] = []
        for q, users in queue_users:
            depth, delivered, dropped = dispatcher.queue_counts(q)
            if len(users) == 1 and users[0] in fields_of:
                fields = fields_of[users[0]]
            else:
                fields = _window_fields(merge([u.counters.window for u in users], now_mono))
            queue_rows.append(
                QueueDiagnostics(
                    name=q.name,
                    size=q.maxsize,
                    depth=depth,
                    received=delivered + dropped + depth,
                    delivered=delivered,
                    dropped=dropped,
                    streams=tuple(sorted(u.name for u in users)),
                    latency=fields["latency"],
                    slow_callbacks=q.counters.slow_callbacks,
                )
            )
        backoff_rows = tuple(
            BackoffDiagnostics(
                stream=s.name,
                attempts=s.backoff.attempts,
                delay=round(s.backoff.delay, 6),
                next_attempt_in=(
                    None
                    if s.backoff.next_attempt_at is None
                    else round(max(0.0, s.backoff.next_attempt_at - now_mono), 6)
                ),
                last_error=s.backoff.last_error or s.last_error,
                failing_since=s.backoff.failing_since,
            )
            for s in streams
            if s.backoff.active or s.state is StreamState.FAILING
        )
        received, delivered, dropped, errors, slow = dispatcher.total_counts()
        totals = Totals(
            received=received,
            delivered=delivered,
            dropped=dropped,
            queued=received - delivered - dropped,
            callback_errors=errors,
            subscribe_calls=self._ctx.subscribe_calls,
            unsubscribe_calls=self._ctx.unsubscribe_calls,
            slow_callbacks=slow,
            max_latency_ms=max((q.latency.max_ms for q in queue_rows), default=0.0),
        )
        workers = tuple(
            WorkerDiagnostics(name=name, busy_fraction=round(fraction, 4))
            for name, fraction in self._dispatcher.busy_fractions(now_mono)
        )
        return SchedulerDiagnostics(
            name=self._name,
            thread_count=self.thread_count,
            running=not self._shut_down,
            timestamp=time.time(),
            totals=totals,
            queues=tuple(queue_rows),
            streams=tuple(stream_rows),
            backoff=backoff_rows,
            workers=workers,
            window=LATENCY_WINDOW,
        )

    def stream_status(
        self,
        device: DeviceType,
        attr_name: str,
        event_type: tango.EventType = tango.EventType.CHANGE_EVENT,
    ) -> StreamStatus | None:
        """Tell where one stream's subscription stands.

        A cheap query for a client that needs one stream's state (for
        example to report a failed subscription), instead of reading the rows
        of :meth:`diagnostics`. The device may be given as a proxy or a TRL,
        as for :meth:`register_event_callback`.

        Args:
            device: The device, as a ``tango.DeviceProxy`` or a TRL.
            attr_name: The attribute name.
            event_type: The event type.

        Returns:
            The stream's status, or None when the scheduler has no such stream
            (never registered, released, or the scheduler was shut down).

        Raises:
            TypeError: If an argument has the wrong type.
            ValueError: If ``attr_name`` is not a plain attribute name or the
                event type is not supported.
        """
        if self._shut_down:
            return None
        try:
            key = self._key(device, attr_name, event_type)
        except SchedulerShutdownError:
            return None
        with self._lock:
            stream = self._streams.get(key)
        if stream is None:
            return None
        return StreamStatus(
            name=stream.name, state=stream.state.value, last_error=stream.last_error
        )

    # -- internals -----------------------------------------------------------

    def _fields(self, stats: WindowStats) -> dict[str, Any]:
        """Return the diagnostics fields of window statistics, remembered per object.

        A window hands out the same statistics object until its samples change
        (see ``SampleWindow.stats``), so quiet streams cost a lookup here.
        """
        cache = self._fields_cache
        fields = cache.get(id(stats))
        if fields is None or fields[0] is not stats:
            if len(cache) > 4 * len(self._streams) + 64:
                cache.clear()
            fields = cache[id(stats)] = (stats, _window_fields(stats))
        return fields[1]

    def _on_own_thread(self) -> bool:
        """Tell whether the caller is a worker or a connector thread of this scheduler."""
        return self._dispatcher.in_worker() or self._ctx.connector.in_pool()

    def _check_running(self) -> None:
        if self._shut_down:
            raise SchedulerShutdownError(f"{self._name} was shut down")

    def _key(self, device: DeviceType, attr_name: str, event_type: tango.EventType) -> StreamKey:
        self._check_running()
        if not isinstance(attr_name, str):
            raise TypeError(f"attr_name must be a string, got {attr_name!r}")
        if not attr_name.strip() or "/" in attr_name:
            raise ValueError(f"attr_name must be a plain attribute name, got {attr_name!r}")
        if not isinstance(event_type, tango.EventType):
            raise TypeError(f"event_type must be a tango.EventType, got {event_type!r}")
        if event_type not in _compat.SUPPORTED_EVENT_TYPES:
            supported = ", ".join(sorted(t.name for t in _compat.SUPPORTED_EVENT_TYPES))
            raise ValueError(
                f"event type {event_type.name} is not supported; use one of {supported}"
            )
        return StreamKey(_compat.key_of(device), attr_name.strip().lower(), event_type)

    def _attach(
        self,
        device: DeviceType,
        attr_name: str,
        event_type: tango.EventType,
        queue_factory: QueueFactory | None,
        bind: Callable[[EventStream, bool], bool],
        on_caller: bool = False,
        lane_timeout: float | None = None,
    ) -> None:
        """Find or create the stream and run ``bind`` on it under the lock.

        ``bind`` gets the stream and whether it was just created, and returns
        True when its future waits for the connection outcome; on PyTango <
        10.1 the caller then waits here for the synchronous subscription, as
        a direct ``subscribe_event`` would. With ``on_caller`` a new stream's
        first attempt runs on the calling thread (see
        :meth:`_register_on_caller_thread`).
        """
        if queue_factory is not None and not callable(queue_factory):
            raise TypeError(f"queue_factory must be callable, got {queue_factory!r}")
        key = self._key(device, attr_name, event_type)
        with self._lock:
            self._check_running()
            stream = self._streams.get(key)
            if stream is not None:
                bind(stream, False)
                return
        # Create the queue outside the lock: the factory may call get_queue.
        queue = self._make_queue(queue_factory, key)
        # A proxy in another green mode returns futures or coroutines: use one of our own.
        proxy = (
            device
            if isinstance(device, tango.DeviceProxy) and _compat.is_synchronous(device)
            else None
        )
        with self._lock:
            self._check_running()
            stream = self._streams.get(key)
            created = stream is None
            if stream is None:
                if proxy is not None:
                    proxy = self._ctx.proxies.setdefault(key.device, proxy)
                stream = EventStream(self._ctx, key, attr_name.strip(), queue, proxy)
                self._streams[key] = stream
                self._queue_users.setdefault(queue, set()).add(stream)
            waiting = bind(stream, created)
            waiter = stream.waiters[-1][0] if waiting else None
        if created:
            connector = self._ctx.connector
            if getattr(_on_calling_thread, "active", False) and not on_caller:
                on_caller, lane_timeout = True, _CALLER_LANE_WAIT
            here = stream.connect_on_calling_thread
            if not (on_caller and connector.run_here(key.device, here, lane_timeout)):
                stream.submit(stream.connect)
        if waiter is not None and not _compat.ASYNC_SUBSCRIPTION and self._wait_for_subscription:
            # A server that is still starting subscribes only once started:
            # waiting for that here (in its init_device, say) would only stall.
            if not self._ctx.connector.in_pool() and not _compat.server_starting():
                concurrent.futures.wait([waiter], timeout=_SYNC_REGISTER_WAIT)

    def _make_queue(self, queue_factory: QueueFactory | None, key: StreamKey) -> EventQueue:
        if queue_factory is None:
            name = f"{key.device.attribute_trl(key.attribute)}#{key.event_type.name}"
            return self._dispatcher.new_queue(self._default_queue_size, name)
        queue = queue_factory()
        if not isinstance(queue, EventQueue):
            raise TypeError(f"queue_factory must return an EventQueue, got {queue!r}")
        if not self._dispatcher.owns(queue):
            raise ValueError(f"{queue!r} belongs to another scheduler")
        return queue

    def _release_if_unused(self, stream: EventStream) -> None:
        """Close a stream that has neither callbacks nor a pin (lock held)."""
        if stream.registrations or stream.pinned or stream.closed:
            return
        stream.closed = True
        if self._streams.get(stream.key) is stream:
            del self._streams[stream.key]
        users = self._queue_users.get(stream.queue)
        if users is not None:
            users.discard(stream)
            if not users:
                del self._queue_users[stream.queue]
                self._dispatcher.forget_queue(stream.queue)
        stream.submit(stream.close)


def _as_function(callback: object) -> Callable[[Any], None]:
    """Return what to call for a callback given as a callable or a push_event object."""
    if callable(callback):
        return callback
    push_event = getattr(callback, "push_event", None)
    if callable(push_event):
        return push_event  # type: ignore[no-any-return]
    raise TypeError(
        f"callback must be callable or have a push_event(event) method, got {callback!r}"
    )


def _check_count(name: str, value: object, maximum: int) -> None:
    check_whole_number(name, value, 1, maximum)


def _window_fields(stats: WindowStats) -> dict[str, Any]:
    """Turn window statistics (seconds) into the diagnostics fields (milliseconds)."""
    return {
        "latency": LatencyStats(
            last_ms=round(stats.last_wait * 1e3, 4),
            max_ms=round(stats.max_wait * 1e3, 4),
            p99_ms=round(stats.p99_wait * 1e3, 4),
            samples=stats.samples,
        ),
        "callback_mean_ms": round(stats.mean_duration * 1e3, 4),
        "callback_max_ms": round(stats.max_duration * 1e3, 4),
    }


def _check_duration(name: str, value: object) -> float | None:
    if value is None:
        return None
    return check_seconds(name, value, MAX_SLOW_CALLBACK_DURATION, allow_zero=False)


def _check_seconds(name: str, value: object, high: float, *, allow_zero: bool) -> None:
    if value is None and allow_zero:
        return
    check_seconds(name, value, high, allow_zero=allow_zero)


def _describe(key: StreamKey) -> str:
    return f"{key.device.attribute_trl(key.attribute)} ({key.event_type.name})"


# Strong references: a scheduler that was not shut down keeps running (its
# subscriptions, queues and workers) even when its caller dropped it.
_live_schedulers: set[CallbackScheduler] = set()
_live_lock = threading.Lock()


def _shutdown_at_exit() -> None:
    """Shut down every scheduler still running, before the interpreter finalises.

    Step 2 of the exit sequence (see ``_exit``): runs after the interpreter
    has waited for its non-daemon threads (the connector threads, told to end
    in step 1), so the subscriptions are cancelled on this thread.
    Tango's event thread must not deliver an event once finalisation has
    begun: Python ends a thread that asks for the GIL then, and Tango's
    catch-all around the callback turns that into an abort.
    """
    with _live_lock:
        schedulers = list(_live_schedulers)
    for scheduler in schedulers:
        try:
            scheduler.shutdown(timeout=_UNSUBSCRIBE_WAIT)
        except Exception:  # noqa: BLE001 - the others must still be shut down
            scheduler._logger.exception("%s: shutdown at exit failed", scheduler.name)  # noqa: SLF001


_exit.at_exit(_exit.SHUT_DOWN_SCHEDULERS, _shutdown_at_exit)
