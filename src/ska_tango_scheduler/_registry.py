"""The scheduler's registry: its streams, their callbacks, and the queues they use.

:class:`~ska_tango_scheduler.CallbackScheduler` hands on to this module: it
checks the scheduler's arguments (:func:`check_options`) and each stream's
(:meth:`Registry.key`, :meth:`Registry.request`), and its :class:`Registry`
finds or creates the stream, binds a callback or a pin to it, starts the
first connection attempt of a new stream, and releases a stream that has
neither callbacks nor a pin left.

The registry lock (``StreamContext.lock``, shared with the streams) guards the
three tables and the fields of the streams that are set under it
(``registrations``, ``pinned``, ``closed``, ``waiters``). It is held only
across look-ups and updates of those: never while calling user code (a queue
factory, a done-callback), Tango or a logger, and no object that may hold a
``DeviceProxy`` is released under it. Tango's event thread never takes it
(see ``docs/explanation/design.rst``, "The hand-off and the lock rules").
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NewType

import tango

from . import _compat
from ._backoff import BackoffPolicy
from ._callbacks import CallbackRegistration, RateLimitedLogger
from ._checks import (
    MAX_ATTEMPT_TIMEOUT,
    MAX_QUEUE_SIZE,
    MAX_SLOW_CALLBACK_DURATION,
    MAX_THREAD_COUNT,
    check_seconds,
    check_whole_number,
)
from ._devices import StreamContext
from ._dispatch import Dispatcher
from ._hostprobe import HostProbe
from ._lanes import ConnectorPool
from ._queues import EventQueue
from ._streams import SLOW_RETRY, EventStream, StreamKey, stream_key
from .diagnostics import StreamStatus
from .type_hints import DeviceType, QueueFactory

__all__ = [
    "CallbackID",
    "Registry",
    "Request",
    "SchedulerShutdownError",
    "StreamNotFoundError",
    "UnknownCallbackError",
    "check_options",
    "describe",
    "new_context",
]

#: Identifier of a registered callback, returned (through a future) by
#: :meth:`CallbackScheduler.register_event_callback`.
CallbackID = NewType("CallbackID", int)

_callback_numbers = itertools.count(1)

# How long PyTango < 10.1 callers wait for their synchronous subscription.
_SYNC_REGISTER_WAIT = 30.0

#: Binds a callback or a pin to a stream under the lock: gets the stream and
#: whether it was just created, returns True when its future waits for the
#: stream's first connection outcome.
Bind = Callable[[EventStream, bool], bool]


class SchedulerShutdownError(RuntimeError):
    """The scheduler was shut down; it accepts no more calls."""


class UnknownCallbackError(KeyError):
    """No callback is registered under this id (never was, or already removed)."""


class StreamNotFoundError(KeyError):
    """No such event stream exists in this scheduler."""


@dataclass(frozen=True)
class Request:
    """A checked request to register a callback on a stream or to pin it.

    Attributes:
        key: The stream's identity.
        device: The device as the caller gave it (its proxy may be used).
        attribute: The attribute as the caller gave it (stripped).
        queue_factory: Gives a new stream its queue.
        on_caller: Whether a new stream's first attempt runs on the calling thread.
        lane_timeout: Seconds to wait for the device's lane then (None: waits).
    """

    key: StreamKey
    device: DeviceType
    attribute: str
    queue_factory: QueueFactory | None
    on_caller: bool = False
    lane_timeout: float | None = None


class Registry:
    """The streams of one scheduler, their callbacks and queue users.

    Attributes:
        name: The scheduler's name, for messages.
        ctx: What the streams share (the lock is ``ctx.lock``).
        lock: The registry lock (see the module doc for what runs under it).
        streams: The streams by key.
        callbacks: Stream and registration of every callback id.
        queue_users: The streams that use each queue.
        shut_down: Set once by :meth:`close_all`.
    """

    def __init__(
        self,
        name: str,
        ctx: StreamContext,
        default_queue_size: int,
        wait_for_subscription: bool,
    ) -> None:
        """Create an empty registry.

        Args:
            name: The scheduler's name.
            ctx: What the streams share.
            default_queue_size: Capacity of the queue of a stream created
                without a queue factory.
            wait_for_subscription: On PyTango < 10.1, whether a caller waits
                for the synchronous subscription of a new stream.
        """
        self.name = name
        self.ctx = ctx
        self.lock = ctx.lock
        self.streams: dict[StreamKey, EventStream] = {}
        self.callbacks: dict[int, tuple[EventStream, CallbackRegistration]] = {}
        self.queue_users: dict[EventQueue, set[EventStream]] = {}
        self.shut_down = False
        self._default_queue_size = default_queue_size
        self._wait_for_subscription = wait_for_subscription

    def check_running(self) -> None:
        """Raise :class:`SchedulerShutdownError` once the scheduler is shut down."""
        if self.shut_down:
            raise SchedulerShutdownError(f"{self.name} was shut down")

    def key(self, device: DeviceType, attr_name: str, event_type: tango.EventType) -> StreamKey:
        """Check a stream's arguments (see :func:`~._streams.stream_key`) and return its key.

        Raises:
            SchedulerShutdownError: Once the scheduler is shut down.
        """
        self.check_running()
        return stream_key(device, attr_name, event_type)

    def request(
        self,
        device: DeviceType,
        attr_name: str,
        event_type: tango.EventType,
        queue_factory: QueueFactory | None,
        on_caller: bool,
        lane_timeout: float | None,
    ) -> Request:
        """Check the arguments of a registration or a pin and make its request.

        Raises:
            TypeError: If ``queue_factory`` is neither None nor callable, or
                as :meth:`key`.
            ValueError: As :meth:`key`.
            SchedulerShutdownError: Once the scheduler is shut down.
        """
        if queue_factory is not None and not callable(queue_factory):
            raise TypeError(f"queue_factory must be callable, got {queue_factory!r}")
        key = self.key(device, attr_name, event_type)
        return Request(key, device, attr_name.strip(), queue_factory, on_caller, lane_timeout)

    def find(self, key: StreamKey) -> EventStream | None:
        """Return the stream of ``key``, or None.

        Args:
            key: The stream's identity.

        Returns:
            The stream, if the registry has it.
        """
        with self.lock:
            return self.streams.get(key)

    def status(self, key: StreamKey) -> StreamStatus | None:
        """Tell where a stream's subscription stands.

        Args:
            key: The stream's identity.

        Returns:
            The stream's status, or None if the registry has no such stream
            (or was shut down).
        """
        with self.lock:
            stream = None if self.shut_down else self.streams.get(key)
        if stream is None:
            return None
        return StreamStatus(
            name=stream.name, state=stream.state.value, last_error=stream.last_error
        )

    def queue_of(self, key: StreamKey) -> EventQueue:
        """Return the queue of an existing stream.

        Args:
            key: The stream's identity.

        Returns:
            The stream's queue.

        Raises:
            StreamNotFoundError: If the stream does not exist.
            SchedulerShutdownError: After shutdown.
        """
        with self.lock:
            self.check_running()
            stream = self.streams.get(key)
            if stream is None:
                raise StreamNotFoundError(f"no stream {describe(key)} in {self.name}")
            return stream.queue

    def table(self) -> tuple[list[EventStream], list[tuple[EventQueue, tuple[EventStream, ...]]]]:
        """Copy the streams, and the queues with their users, under the lock.

        Returns:
            The streams, and each queue with the streams that use it.
        """
        with self.lock:
            streams = list(self.streams.values())
            queue_users = [(q, tuple(users)) for q, users in self.queue_users.items()]
        return streams, queue_users

    # -- attach ----------------------------------------------------------------

    def add_callback(self, request: Request, function: Callable[[Any], None]) -> Future[CallbackID]:
        """Register a callback on a stream, creating the stream if needed.

        Args:
            request: The stream, and where a new one connects.
            function: What to call with each event.

        Returns:
            A future of the callback's id (see
            ``CallbackScheduler.register_event_callback``).
        """
        future: Future[CallbackID] = Future()

        def bind(stream: EventStream, created: bool) -> bool:
            callback_id = CallbackID(next(_callback_numbers))
            registration = CallbackRegistration(callback_id, function)
            if created:
                stream.registrations = (*stream.registrations, registration)
            else:  # give it the current value first, through the queue
                stream.add_late(registration)
            self.callbacks[callback_id] = (stream, registration)
            return _await_outcome(stream, future, callback_id)

        self.attach(request, bind)
        return future

    def pin(self, request: Request) -> Future[None]:
        """Pin a stream (keep it connected without callbacks), creating it if needed.

        Args:
            request: The stream, and where a new one connects.

        Returns:
            A future that completes once the first connection attempt has an outcome.
        """
        future: Future[None] = Future()

        def bind(stream: EventStream, created: bool) -> bool:
            stream.pinned = True
            return _await_outcome(stream, future, None)

        self.attach(request, bind)
        return future

    def attach(self, request: Request, bind: Bind) -> None:
        """Find or create the stream and run ``bind`` on it under the lock.

        On PyTango < 10.1, when ``bind`` returns True the caller then waits
        here for the synchronous subscription, as a direct
        ``subscribe_event`` would. With ``request.on_caller``, a new stream's
        first attempt runs on the calling thread, holding the device's
        connector lane, if that lane is free within ``request.lane_timeout``
        seconds (None: as long as it takes); else on a connector thread.

        Args:
            request: The stream, and where a new one connects.
            bind: See :data:`Bind`.
        """
        key, device = request.key, request.device
        with self.lock:
            self.check_running()
            stream = self.streams.get(key)
            if stream is not None:
                bind(stream, False)
                return
        # Create the queue outside the lock: the factory may call get_queue.
        queue = self._make_queue(request.queue_factory, key)
        # A proxy in another green mode returns futures or coroutines: use one of our own.
        proxy = (
            device
            if isinstance(device, tango.DeviceProxy) and _compat.is_synchronous(device)
            else None
        )
        with self.lock:
            self.check_running()
            stream = self.streams.get(key)
            created = stream is None
            if stream is None:
                if proxy is not None:
                    proxy = self.ctx.proxies.setdefault(key.device, proxy)
                stream = EventStream(self.ctx, key, request.attribute, queue, proxy)
                self.streams[key] = stream
                self.queue_users.setdefault(queue, set()).add(stream)
            waiting = bind(stream, created)
            waiter = stream.waiters[-1][0] if waiting else None
        connector = self.ctx.connector
        if created:
            here = stream.connect_on_calling_thread
            if not (
                request.on_caller and connector.run_here(key.device, here, request.lane_timeout)
            ):
                stream.submit(stream.connect)
        if waiter is not None and not _compat.ASYNC_SUBSCRIPTION and self._wait_for_subscription:
            # A server that is still starting subscribes only once started:
            # waiting for that here (in its init_device, say) would only stall.
            if not connector.in_pool() and not _compat.server_starting():
                concurrent.futures.wait([waiter], timeout=_SYNC_REGISTER_WAIT)

    def _make_queue(self, queue_factory: QueueFactory | None, key: StreamKey) -> EventQueue:
        dispatcher = self.ctx.dispatcher
        if queue_factory is None:
            name = f"{key.device.attribute_trl(key.attribute)}#{key.event_type.name}"
            return dispatcher.new_queue(self._default_queue_size, name)
        queue = queue_factory()
        if not isinstance(queue, EventQueue):
            raise TypeError(f"queue_factory must return an EventQueue, got {queue!r}")
        if not dispatcher.owns(queue):
            raise ValueError(f"{queue!r} belongs to another scheduler")
        return queue

    # -- release ---------------------------------------------------------------

    def remove_callback(self, callback_id: int) -> CallbackRegistration:
        """Unregister a callback; release its stream if nothing else uses it.

        Args:
            callback_id: The callback's id.

        Returns:
            The registration, now inactive.

        Raises:
            UnknownCallbackError: If the id is unknown or already unregistered.
            SchedulerShutdownError: After shutdown.
        """
        with self.lock:
            self.check_running()
            try:
                entry = self.callbacks.pop(callback_id, None)
            except TypeError:  # unhashable: certainly not an id of ours
                entry = None
            if entry is None:
                raise UnknownCallbackError(
                    f"callback id {callback_id!r} is not registered with {self.name}"
                )
            stream, registration = entry
            registration.active = False
            stream.registrations = tuple(r for r in stream.registrations if r is not registration)
            self._release_if_unused(stream)
        return registration

    def unpin(self, key: StreamKey) -> None:
        """Unpin a stream; release it if it has no callbacks.

        Args:
            key: The stream's identity.

        Raises:
            StreamNotFoundError: If the stream is not pinned.
            SchedulerShutdownError: After shutdown.
        """
        with self.lock:
            self.check_running()
            stream = self.streams.get(key)
            if stream is None or not stream.pinned:
                raise StreamNotFoundError(
                    f"stream {describe(key)} was not connected with connect_event_stream"
                )
            stream.pinned = False
            self._release_if_unused(stream)

    def close_all(self) -> list[EventStream] | None:
        """Mark the registry shut down and empty it (once).

        The streams are only marked closed and their callbacks inactive; the
        caller closes them (on the connector) with no lock held.

        Returns:
            The streams that were registered, or None if already shut down.
        """
        with self.lock:
            if self.shut_down:
                return None
            self.shut_down = True
            streams = list(self.streams.values())
            self.streams.clear()
            self.callbacks.clear()
            for stream in streams:
                stream.closed = True
                for registration in stream.registrations:
                    registration.active = False
        return streams

    def disconnect(self, streams: list[EventStream], wait: float) -> None:
        """Close the streams :meth:`close_all` returned, on the connector (no lock held).

        Their futures still waiting for a first outcome get a
        :class:`SchedulerShutdownError`.

        Args:
            streams: The streams.
            wait: Seconds to wait for Tango to take back the subscriptions.
        """
        error = SchedulerShutdownError(f"{self.name} was shut down")
        self.ctx.probe.close()  # interrupt host checks in progress
        jobs = [(s.key.device, functools.partial(s.close, error)) for s in streams]
        if not self.ctx.connector.close(jobs, wait):
            self.ctx.logger.warning(
                "%s: Tango did not take back every subscription within %.1f s", self.name, wait
            )
        for stream in streams:
            stream.resolve_waiters(error)

    def let_go(self, streams: list[EventStream]) -> None:
        """Drop the events still queued and the shared proxies, once the workers stopped.

        Queued events are counted as dropped. Nothing of the scheduler may
        keep a proxy alive after shutdown (events refer to theirs, and a
        queued event and its stream refer to each other). They are released
        with no lock held, on an omni thread (a proxy's destructor needs one).

        Args:
            streams: The streams :meth:`close_all` returned.
        """
        with self.lock:
            proxies, self.ctx.proxies = self.ctx.proxies, {}
        with tango.EnsureOmniThread():
            for queue in {stream.queue for stream in streams}:
                self.ctx.dispatcher.discard_queued(queue)
            proxies.clear()
            del proxies

    def _release_if_unused(self, stream: EventStream) -> None:
        """Close a stream that has neither callbacks nor a pin (lock held)."""
        if stream.registrations or stream.pinned or stream.closed:
            return
        stream.closed = True
        if self.streams.get(stream.key) is stream:
            del self.streams[stream.key]
        users = self.queue_users.get(stream.queue)
        if users is not None:
            users.discard(stream)
            if not users:
                del self.queue_users[stream.queue]
                self.ctx.dispatcher.forget_queue(stream.queue)
        stream.submit(stream.close)


def _await_outcome(stream: EventStream, future: Future[Any], value: Any) -> bool:
    """Give ``future`` its ``value`` once the stream's first connection attempt has an outcome.

    Called under the lock: a future completed here has no done-callbacks yet.

    Returns:
        True when the future waits for the outcome.
    """
    if stream.outcome_known:
        future.set_result(value)
        return False
    stream.waiters.append((future, value))
    return True


def check_options(
    thread_count: int,
    default_queue_size: int,
    slow_callback_duration: float | None,
    attempt_timeout: float,
    backoff: BackoffPolicy | None,
    logger: logging.Logger | None,
) -> float | None:
    """Check the arguments of a new scheduler (see :class:`~ska_tango_scheduler.CallbackScheduler`).

    Returns:
        ``slow_callback_duration`` as a float, or None.

    Raises:
        TypeError: For an argument of the wrong type.
        ValueError: For a number out of its range.
    """
    check_whole_number("thread_count", thread_count, 1, MAX_THREAD_COUNT)
    check_whole_number("default_queue_size", default_queue_size, 1, MAX_QUEUE_SIZE)
    slow_after = (
        None
        if slow_callback_duration is None
        else check_seconds(
            "slow_callback_duration",
            slow_callback_duration,
            MAX_SLOW_CALLBACK_DURATION,
            allow_zero=False,
        )
    )
    if backoff is not None and not isinstance(backoff, BackoffPolicy):
        raise TypeError(f"backoff must be a BackoffPolicy, got {backoff!r}")
    if logger is not None and not isinstance(logger, logging.Logger):
        raise TypeError(f"logger must be a logging.Logger or None, got {logger!r}")
    check_seconds("attempt_timeout", attempt_timeout, MAX_ATTEMPT_TIMEOUT, allow_zero=False)
    return slow_after


def new_context(
    name: str,
    logger: logging.Logger,
    thread_count: int,
    slow_after: float | None,
    attempt_timeout: float,
    backoff: BackoffPolicy | None,
) -> StreamContext:
    """Make what the streams of a new scheduler share: its workers, connectors and lock.

    Args:
        name: The scheduler's name (its threads are named after it).
        logger: Where the scheduler logs.
        thread_count: Number of worker threads.
        slow_after: Seconds after which a callback counts as slow, or None.
        attempt_timeout: Seconds one step of a connection attempt may take.
        backoff: Retry policy; the default one if None.

    Returns:
        The context; its dispatcher's workers are not started yet.
    """
    dispatcher = Dispatcher(
        thread_count, name, logger, thread_context=tango.EnsureOmniThread, slow_after=slow_after
    )
    connector = ConnectorPool(f"{name}.connector", logger, thread_context=tango.EnsureOmniThread)
    return StreamContext(
        lock=threading.Lock(),
        dispatcher=dispatcher,
        connector=connector,
        probe=HostProbe(
            timeout=attempt_timeout,
            silent_for=SLOW_RETRY,
            thread_context=tango.EnsureOmniThread,
        ),
        attempt_timeout=attempt_timeout,
        policy=backoff if backoff is not None else BackoffPolicy(),
        logger=logger,
        limited=RateLimitedLogger(logger),
        slow_callback_duration=slow_after,
    )


def describe(key: StreamKey) -> str:
    """Name a stream in a message.

    Args:
        key: The stream's identity.

    Returns:
        ``<attribute TRL> (<event type>)``.
    """
    return f"{key.device.attribute_trl(key.attribute)} ({key.event_type.name})"
