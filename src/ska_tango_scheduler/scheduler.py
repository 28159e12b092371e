"""The :class:`CallbackScheduler`: Tango event callbacks off Tango's event thread."""

from __future__ import annotations

import itertools
import logging
import threading
from concurrent.futures import Future

import tango

# The names marked F401 are no longer used here but were importable from this module
# before it was split (tests/unit/test_public_api.py): they stay importable.
from . import _exit, _registry
from ._backoff import BackoffPolicy
from ._callbacks import as_function
from ._checks import (
    MAX_ATTEMPT_TIMEOUT,  # noqa: F401
    MAX_QUEUE_SIZE,
    MAX_SLOW_CALLBACK_DURATION,  # noqa: F401
    MAX_THREAD_COUNT,  # noqa: F401
    MAX_WAIT,
    check_seconds,
    check_whole_number,
)
from ._dispatch import YIELD_INTERVAL, Dispatcher  # noqa: F401
from ._queues import DEFAULT_QUEUE_SIZE, EventQueue
from ._registry import (
    CallbackID,
    SchedulerShutdownError,
    StreamNotFoundError,
    UnknownCallbackError,
)
from ._snapshot import Snapshots as _Snapshots
from ._streams import StreamKey, StreamState  # noqa: F401
from .diagnostics import (
    LATENCY_WINDOW,  # noqa: F401
    BackoffDiagnostics,  # noqa: F401
    LatencyStats,  # noqa: F401
    QueueDiagnostics,  # noqa: F401
    SchedulerDiagnostics,
    StreamDiagnostics,  # noqa: F401
    StreamStatus,
    Totals,  # noqa: F401
    WorkerDiagnostics,  # noqa: F401
)
from .type_hints import DeviceType, EventCallbackType, QueueFactory

__all__ = [
    "CallbackID",
    "CallbackScheduler",
    "SchedulerShutdownError",
    "StreamNotFoundError",
    "UnknownCallbackError",
]

# The errors and CallbackID live with the registry that raises and hands them
# out; they are named after this module, where users import them from.
for _public in (CallbackID, SchedulerShutdownError, StreamNotFoundError, UnknownCallbackError):
    _public.__module__ = __name__
del _public

_scheduler_numbers = itertools.count(1)

# How long shutdown waits for Tango to take back the subscriptions.
_UNSUBSCRIBE_WAIT = 5.0
#: Default bound of one step (host check, proxy call) of a connection attempt.
DEFAULT_ATTEMPT_TIMEOUT = 3.0


# How long a caller connecting on its own thread waits for the device's connector lane.
_CALLER_LANE_WAIT = 5.0


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
        wait_for_subscription: On PyTango < 10.1 only: whether registering
            or pinning a new stream waits (up to 30 s) for its synchronous
            subscription, so that the returned future is done. Pass False
            where a caller must not block (``init_device`` of a device that
            subscribes to itself); the future then completes later, as on
            PyTango >= 10.1. A device server that has not finished starting
            never waits: it subscribes only once started.
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
        slow_after = _registry.check_options(
            thread_count,
            default_queue_size,
            slow_callback_duration,
            attempt_timeout,
            backoff,
            logger,
        )
        self._name = name if name is not None else f"CallbackScheduler-{next(_scheduler_numbers)}"
        self._logger = logger if logger is not None else logging.getLogger("ska_tango_scheduler")
        self._ctx = _registry.new_context(
            self._name, self._logger, thread_count, slow_after, float(attempt_timeout), backoff
        )
        self._dispatcher = self._ctx.dispatcher
        self._registry = _registry.Registry(
            self._name, self._ctx, default_queue_size, bool(wait_for_subscription)
        )
        self._snapshots = _Snapshots(self._registry)
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
        return self._registry.shut_down

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
        self._registry.check_running()
        check_whole_number("queue_size", queue_size, 1, MAX_QUEUE_SIZE)
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
        return self._registry.queue_of(self._registry.key(device, attr_name, event_type))

    # -- callbacks -----------------------------------------------------------

    def register_event_callback(
        self,
        device: DeviceType,
        attr_name: str,
        event_type: tango.EventType,
        callback: EventCallbackType,
        queue_factory: QueueFactory | None = None,
        *,
        on_calling_thread: bool = False,
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
            on_calling_thread: Advanced. Make a new stream's first attempt
                on the calling thread, not on a connector thread (retries stay
                with the connectors): for a device that subscribes to itself
                from a command, whose monitor a connector would wait for. If
                the device's connector lane stays busy for 5 s, a connector
                makes the attempt. The LRC client uses it for local devices.

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
        function = as_function(callback)
        request = self._registry.request(
            device, attr_name, event_type, queue_factory, on_calling_thread, _CALLER_LANE_WAIT
        )
        return self._registry.add_callback(request, function)

    def unregister_callback(self, callback_id: CallbackID) -> None:
        """Stop calling a callback.

        Once this returns the callback is not called again, not even for an
        event whose delivery has begun. Called from any other thread, it
        waits for a call running on a worker (as Tango's
        ``unsubscribe_event`` does), so do not call it while holding a lock
        the callback needs. Called on a thread of the scheduler (in a
        callback, or a done-callback of a registration future) it does not
        wait: a callback may unregister itself or others, and a call already
        running on another worker finishes on its own.

        The stream is disconnected when its last callback leaves, unless it
        is pinned by :meth:`connect_event_stream`.

        Args:
            callback_id: The id the registration's future gave.

        Raises:
            UnknownCallbackError: If the id is unknown or already unregistered.
            SchedulerShutdownError: After :meth:`shutdown`.
        """
        registration = self._registry.remove_callback(callback_id)
        if registration.running and not self._on_own_thread():
            registration.wait_until_idle()

    # -- persistent streams --------------------------------------------------

    def connect_event_stream(
        self,
        device: DeviceType,
        attr_name: str,
        event_type: tango.EventType,
        queue_factory: QueueFactory | None = None,
        *,
        on_calling_thread: bool = False,
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
            on_calling_thread: Advanced; as for :meth:`register_event_callback`.

        Returns:
            A future that completes once the first connection attempt has an
            outcome.

        Raises:
            TypeError: For arguments of the wrong type.
            ValueError: For malformed arguments.
            SchedulerShutdownError: After :meth:`shutdown`.
        """
        request = self._registry.request(
            device, attr_name, event_type, queue_factory, on_calling_thread, _CALLER_LANE_WAIT
        )
        return self._registry.pin(request)

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
        self._registry.unpin(self._registry.key(device, attr_name, event_type))

    # -- lifecycle -----------------------------------------------------------

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the scheduler: unsubscribe everything and stop the workers.

        No new work is accepted; running callbacks finish; queued events are
        not delivered (they are counted as dropped). Calling it again does
        nothing; a callback may call it (its worker ends afterwards). A
        scheduler still running at interpreter exit is shut down by an exit
        hook, so that Tango delivers no event into a finalising interpreter
        (which would abort the process).

        Args:
            timeout: Seconds to wait for running callbacks; None waits as long
                as they take. Unsubscribing waits at most 5 s more.

        Raises:
            TypeError: If ``timeout`` is neither None nor a number.
            ValueError: If ``timeout`` is negative, not finite or longer
                than Python can wait (``threading.TIMEOUT_MAX``). A call that
                raises changes nothing: the scheduler keeps running.
        """
        if timeout is not None:
            check_seconds("timeout", timeout, MAX_WAIT, allow_zero=True)
        streams = self._registry.close_all()
        if streams is None:
            return
        with _live_lock:
            _live_schedulers.discard(self)
        wait = _UNSUBSCRIBE_WAIT if timeout is None else min(timeout, _UNSUBSCRIBE_WAIT)
        self._registry.disconnect(streams, wait)
        if not self._dispatcher.stop(timeout):
            self._logger.warning("%s: some callbacks were still running at shutdown", self._name)
        self._registry.let_go(streams)

    def __enter__(self) -> CallbackScheduler:
        """Return the scheduler, to shut it down at the end of a ``with`` block."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Shut the scheduler down."""
        self.shutdown()

    def __repr__(self) -> str:
        """Return a short description."""
        state = "shut down" if self.is_shutdown else f"{len(self._registry.streams)} stream(s)"
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
        return self._snapshots.take()

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
        try:
            key = self._registry.key(device, attr_name, event_type)
        except SchedulerShutdownError:
            return None
        return self._registry.status(key)

    # -- internals -----------------------------------------------------------

    def _on_own_thread(self) -> bool:
        """Tell whether the caller is a worker or a connector thread of this scheduler."""
        return self._dispatcher.in_worker() or self._ctx.connector.in_pool()


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
