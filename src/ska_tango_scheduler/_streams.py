"""One Tango event stream: its subscription, its retries and its callbacks.

A stream is (device, attribute, event type). Tango's event thread only hands
its events to the dispatcher; everything that calls Tango to connect or
disconnect runs on the scheduler's connector threads, in the device's lane:
one job at a time per device (so subscribe and unsubscribe on one proxy never
overlap), several devices at once. Before a proxy is created, the device's
Tango host must answer a bounded pure-Python check (:mod:`._hostprobe`): the
lane asks for it and is given the connect job back once the outcome is
known, so a host that accepts connections but does not answer costs no
connector thread and never enters Tango. A call that timed out inside Tango
anyway is retried on the slow schedule (:data:`SLOW_RETRY`), and its host
must pass a check again first.

Connecting, by PyTango version:

* >= 10.1: subscribe with ``AsyncRead``. The call returns at once; the
  outcome arrives as a ``SubSuccess`` event (with the current value) or a
  ``SubFail`` error event. While the stream fails to connect, the connector
  pings the device on the stream's back-off schedule and subscribes afresh as
  soon as the device answers, instead of waiting for Tango's 10 s retry. The
  ping goes through a new proxy: cppTango refuses to reconnect a proxy whose
  connection failed less than a second ago, whatever our schedule says.
  Failures that a quick retry cannot mend (the attribute does not exist, its
  events are not configured) are left to Tango's own retry.
* < 10.1: subscribe synchronously; a failure raises, becomes a synthetic
  error event for the callbacks, and is retried on the back-off schedule.

Once a subscription has connected it is never renewed by the scheduler: if
the server goes away later, Tango's keep-alive re-subscribes when it is back
(within its 10 s tick). Subscribing afresh ourselves on the restarted server
raced that keep-alive: the event channel, still marked lost, was timed out
and re-subscribed once more a few seconds later, giving every stream of the
server a second ``API_EventTimeout`` and its current value twice.

Inside a device server, no subscription is made before the server has
finished starting: its admin device refuses subscriptions until then, and a
subscription to a device of the same server refused that way leaves the
process unable to subscribe to that server again until it restarts.

A callback registered on a stream that already exists is first given the
stream's last delivered event (value or error) through the stream's queue,
unless an event reached it before that catch-up item came up (then it already
has a current value); see :class:`~._callbacks.CatchUp`.
When a device proxy cannot be created (the device is not in the database
yet), every failed try is reported to the callbacks as a synthetic error
event and retried on the back-off schedule.
"""

from __future__ import annotations

import enum
import logging
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import tango

from . import _compat
from ._backoff import BackoffState
from ._callbacks import CallbackRegistration, StreamCallbacks
from ._devices import StreamContext, timed_out_in_tango
from ._lanes import TimerHandle
from ._queues import Counters, EventQueue
from ._trl import DeviceKey
from .type_hints import DeviceType

__all__ = [
    "PERMANENT_REASONS",
    "EventStream",
    "StreamKey",
    "StreamState",
    "stream_key",
]

#: Error reasons that retrying every second cannot mend; such failures (and
#: calls that timed out inside Tango, see :func:`timed_out_in_tango`) are
#: retried no more often than every :data:`SLOW_RETRY` seconds.
PERMANENT_REASONS = frozenset(
    {
        "API_AttrNotFound",
        "API_AttributePollingNotStarted",
        "API_EventPropertiesNotSet",
        "API_AttributeNotDataReadyEnabled",
        "API_DSFailedRegisteringEvent",
        "API_NotSupportedFeature",
        "API_NotUpdatedAnyMore",
    }
)
SLOW_RETRY = 10.0
#: Seconds between checks, inside a device server that is still starting,
#: of whether it has started (no subscription is made before).
STARTUP_POLL = 0.1


@dataclass(frozen=True)
class StreamKey:
    """Identity of a stream.

    Attributes:
        device: The device.
        attribute: Attribute name in lower case.
        event_type: The Tango event type.
    """

    device: DeviceKey
    attribute: str
    event_type: tango.EventType


def stream_key(device: DeviceType, attr_name: str, event_type: tango.EventType) -> StreamKey:
    """Check a stream's arguments and return its key.

    Raises:
        TypeError: If ``attr_name`` is not a string, ``event_type`` is not a
            ``tango.EventType`` or ``device`` is neither a proxy nor a string.
        ValueError: For an empty or qualified attribute name, an unsupported
            event type or a malformed TRL.
    """
    if not isinstance(attr_name, str):
        raise TypeError(f"attr_name must be a string, got {attr_name!r}")
    if not attr_name.strip() or "/" in attr_name:
        raise ValueError(f"attr_name must be a plain attribute name, got {attr_name!r}")
    if not isinstance(event_type, tango.EventType):
        raise TypeError(f"event_type must be a tango.EventType, got {event_type!r}")
    if event_type not in _compat.SUPPORTED_EVENT_TYPES:
        supported = ", ".join(sorted(t.name for t in _compat.SUPPORTED_EVENT_TYPES))
        raise ValueError(f"event type {event_type.name} is not supported; use one of {supported}")
    return StreamKey(_compat.key_of(device), attr_name.strip().lower(), event_type)


class StreamState(enum.Enum):
    """Where a stream's subscription stands."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILING = "failing"
    CLOSED = "closed"


class EventStream(StreamCallbacks):
    """One event stream with its queue, callbacks and subscription.

    Its worker-thread side (delivering events to the callbacks, catching up
    late ones) is :class:`~._callbacks.StreamCallbacks`.

    Attributes set under the context lock: ``registrations``, ``pinned``,
    ``closed``, ``waiters``. Everything about the subscription is touched
    only on the connector thread.
    """

    ctx: StreamContext
    queue: EventQueue

    def __init__(
        self,
        ctx: StreamContext,
        key: StreamKey,
        attribute: str,
        queue: EventQueue,
        proxy: tango.DeviceProxy | None,
    ) -> None:
        """Create a stream; :meth:`connect` must then run on the connector.

        Args:
            ctx: Shared scheduler state.
            key: The stream's identity.
            attribute: Attribute name as the user gave it.
            queue: The queue feeding the stream's callbacks.
            proxy: A proxy to use for the device, if known.
        """
        self.ctx = ctx
        self.key = key
        self.attribute = attribute
        self.queue = queue
        self.attribute_trl = key.device.attribute_trl(attribute)
        self.name = f"{key.device.attribute_trl(key.attribute)}#{key.event_type.name}"
        self.counters = Counters()
        self.registrations: tuple[CallbackRegistration, ...] = ()
        # The registrations of the delivery in progress (worker threads only).
        self._delivering: tuple[CallbackRegistration, ...] = ()
        self.pinned = False
        self.closed = False
        self.waiters: list[tuple[Future[Any], Any]] = []
        self.outcome_known = False
        self.state = StreamState.CONNECTING
        self.last_error = ""
        self.backoff = BackoffState()
        self._proxy = proxy
        self._subscription: int | None = None
        self._generation = 0
        self._retry: TimerHandle | None = None
        self._established = False
        self.last_event: Any = None
        self.pending_catch_up: set[int] = set()

    # -- Tango's event thread ------------------------------------------------

    def _tango_callback(self, generation: int) -> Callable[[Any], None]:
        # The callback lives in the proxy's subscription map: it holds the
        # stream only weakly, or a proxy still subscribed would sit in a
        # reference cycle (proxy -> callback -> stream -> proxy) that only the
        # garbage collector frees, running ~DeviceProxy on whatever thread it
        # interrupts (see docs/explanation/design.rst, "The hand-off").
        ref = weakref.ref(self)
        put = self.ctx.dispatcher.put
        connected = StreamState.CONNECTED

        def on_event(event: Any) -> None:
            # The share of Tango's event thread: keep it short. Only a
            # connected stream's good events skip the bookkeeping (reading
            # ``event_reason`` alone costs about half a microsecond).
            stream = ref()
            if stream is None or stream.closed:
                return
            if stream.state is not connected or event.err:
                stream._note_event(generation, event)  # noqa: SLF001
            put(stream.queue, stream, event)

        return on_event

    def _note_event(self, generation: int, event: Any) -> None:
        """Follow the subscription's state from an event (Tango's event thread)."""
        if event.err:
            self.last_error = _compat.describe_errors(event.errors)
        if _compat.ASYNC_SUBSCRIPTION and _compat.is_subscription_outcome(event):
            self.submit(lambda: self._on_outcome(generation, event))
        elif (
            event.err
            and self.state is StreamState.CONNECTED
            and not _compat.reports_missed_events(event)
        ):
            # Lost events (API_MissedEvents) are passed on, but the
            # subscription itself still works: it is not failing.
            self.state = StreamState.FAILING
        elif not event.err and self.state is StreamState.FAILING and self.outcome_known:
            self.state = StreamState.CONNECTED

    def submit(self, job: Callable[[], None]) -> TimerHandle:
        """Run ``job`` in this device's connector lane.

        Args:
            job: The callable.

        Returns:
            A handle to cancel it.
        """
        return self.ctx.connector.submit(self.key.device, job)

    # -- connector thread ----------------------------------------------------

    def connect(self, synchronous: bool = False) -> None:
        """Make one attempt to connect (connector thread).

        Inside a device server that has not finished starting, the attempt
        waits (polling every :data:`STARTUP_POLL` seconds) until it has: see
        :func:`._compat.server_starting`.

        Args:
            synchronous: Subscribe synchronously, whatever the PyTango version (see
                :meth:`connect_on_calling_thread`).
        """
        self._retry = None
        if self.closed or self.state is StreamState.CONNECTED:
            return
        if _compat.server_starting():
            self._retry = self.ctx.connector.call_later(STARTUP_POLL, self.key.device, self.connect)
            return
        key = self.key.device
        proxy = self._proxy or self.ctx.cached_proxy(key)
        try:
            if proxy is None and not synchronous:
                # Never wait for a host on a connector lane: ask, and come back.
                known, problem = self.ctx.ask_host(key, self.connect)
                if not known:
                    return
                if problem is not None:
                    raise _compat.host_not_answering(key, problem)
            if proxy is None:
                proxy = self.ctx.proxy_for(key)
        except Exception as exc:  # noqa: BLE001 - reported to the callbacks
            self._proxy_failed(_compat.errors_of(exc))
            self._failed(_compat.errors_of(exc), synthetic=True)
            return
        self._proxy = proxy
        if self._subscription is not None:
            self._unsubscribe()
        self._generation += 1
        self._established = False
        callback = self._tango_callback(self._generation)
        self.state = StreamState.CONNECTING
        self.ctx.subscribe_calls += 1
        try:
            subscription = _compat.subscribe(
                proxy, self.attribute, self.key.event_type, callback, synchronous=synchronous
            )
        except Exception as exc:  # noqa: BLE001 - reported to the callbacks
            self._failed(_compat.errors_of(exc), synthetic=True)
            return
        self._subscription = subscription
        if synchronous or not _compat.ASYNC_SUBSCRIPTION:
            self._connected()

    def connect_on_calling_thread(self) -> None:
        """First attempt of a new stream, made synchronously on the calling thread.

        Private hook for a caller that may hold the device's monitor (see
        ``on_calling_thread`` of ``CallbackScheduler.register_event_callback``);
        it runs while the caller holds the device's connector lane, so no other
        subscription on the proxy runs at the same time. Should the stream have
        been released meanwhile, closing is handed to the connector.
        """
        self.connect(synchronous=True)
        if self.closed:
            self.submit(self.close)

    def close(self, error: BaseException | None = None) -> None:
        """Cancel retries and the Tango subscription (connector thread).

        Args:
            error: Exception for futures still waiting for a first outcome;
                they get their normal result if None.
        """
        self.closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._subscription is not None:
            self._unsubscribe()
        self.state = StreamState.CLOSED
        self.backoff.reset()
        # Let the proxy and the last event (which refers to the proxy) go, here
        # on the connector thread and with no lock held.
        self._proxy = None
        self.last_event = None
        self.resolve_waiters(error)

    def resolve_waiters(self, error: BaseException | None = None) -> None:
        """Complete the futures waiting for the first connection outcome.

        Args:
            error: Set as the futures' exception instead of their results.
        """
        with self.ctx.lock:
            waiters, self.waiters = self.waiters, []
            self.outcome_known = True
        if not waiters:
            return

        def complete() -> None:
            for future, value in waiters:
                if future.done():
                    continue
                if error is None:
                    future.set_result(value)
                else:
                    future.set_exception(error)

        # Done-callbacks are user code: never on a connector thread. Futures
        # without any (the usual case: the caller waits on result()) complete here.
        if any(getattr(f, "_done_callbacks", True) for f, _ in waiters):
            self.ctx.connector.notify(complete)
        else:
            complete()

    def _unsubscribe(self) -> None:
        subscription, self._subscription = self._subscription, None
        self._generation += 1
        self.ctx.unsubscribe_calls += 1
        try:
            _compat.unsubscribe(self._proxy, subscription)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - nothing more to do about it
            self.ctx.logger.debug("Unsubscribing %s failed", self.name, exc_info=True)

    def _on_outcome(self, generation: int, event: Any) -> None:
        if self.closed or generation != self._generation:
            return
        if self._established:
            # Tango's keep-alive reports on a subscription that had connected:
            # it re-subscribes by itself; a subscription of ours would race it.
            if event.err:
                self.last_error = _compat.describe_errors(tuple(event.errors))
                if not _compat.reports_missed_events(event):
                    self.state = StreamState.FAILING
            else:
                self.state = StreamState.CONNECTED
                self.last_error = ""
            return
        if event.err:
            self._failed(tuple(event.errors), synthetic=False)
        else:
            self._connected()

    def _connected(self) -> None:
        if self.backoff.active:
            self.ctx.logger.info(
                "%s connected after %d failed attempt(s)", self.name, self.backoff.attempts
            )
        self.state = StreamState.CONNECTED
        self._established = True
        self.last_error = ""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self.backoff.reset()
        self.resolve_waiters()

    def _failed(self, errors: tuple[Any, ...], synthetic: bool) -> None:
        text = _compat.describe_errors(errors)
        self.state = StreamState.FAILING
        self.last_error = text
        if synthetic:
            event = _compat.make_error_event(self.attribute_trl, self.key.event_type, errors)
            self.ctx.dispatcher.put(self.queue, self, event)
        reason = str(getattr(errors[0], "reason", "")) if errors else ""
        permanent = reason in PERMANENT_REASONS
        # A call that timed out inside Tango would block as long again if
        # tried soon: slow retry.
        slow = SLOW_RETRY if permanent or timed_out_in_tango(errors) else 0.0
        delay = self.backoff.failed(self.ctx.policy, text, slow)
        self.ctx.limited.log(
            logging.WARNING, ("fail", self.name), "%s cannot connect: %s", self.name, text
        )
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        # With a live asynchronous subscription Tango retries every 10 s by
        # itself; for failures a quick retry cannot mend, that is enough.
        if self._subscription is not None and permanent:
            self.backoff.next_attempt_at = None
        else:
            self._retry = self.ctx.connector.call_later(delay, self.key.device, self._retry_now)
        self.resolve_waiters()

    def _proxy_failed(self, errors: tuple[Any, ...]) -> None:
        """Make the next proxy wait for a fresh check of the host (connector thread).

        A proxy creation that timed out inside Tango met a host that passed
        the check and then hung: it is reported as silent, without asking,
        for the probe's ``silent_for`` seconds.
        """
        if timed_out_in_tango(errors):
            self.ctx.distrust_host(self.key.device, _compat.describe_errors(errors))
        else:
            self.ctx.forget_host(self.key.device)

    def _retry_now(self) -> None:
        self._retry = None
        if self.closed or self.state is StreamState.CONNECTED:
            return
        if self._subscription is not None and self._proxy is not None:
            # Only subscribe again once the device answers: a new subscription
            # to a device that is still down would just fail again.
            # Ping through a new proxy: a proxy whose connection failed does not
            # try to connect again for about a second, whatever the back-off says.
            key = self.key.device
            known, problem = self.ctx.ask_host(key, self._retry_now)
            if not known:
                return  # back on the lane once the host is known
            proxy = None
            try:
                if problem is not None:
                    raise _compat.host_not_answering(key, problem)
                proxy = self.ctx.new_proxy(key)
                proxy.ping()
            except Exception as exc:  # noqa: BLE001 - still down
                errors = _compat.errors_of(exc)
                if proxy is None:
                    self._proxy_failed(errors)
                else:
                    self.ctx.forget_host(key)
                text = _compat.describe_errors(errors)
                slow = SLOW_RETRY if timed_out_in_tango(errors) else 0.0
                delay = self.backoff.failed(self.ctx.policy, text, slow)
                self._retry = self.ctx.connector.call_later(delay, key, self._retry_now)
                return
            self._unsubscribe()  # through the old proxy, before it is replaced
            self._proxy = proxy
            with self.ctx.lock:
                old = self.ctx.proxies.get(self.key.device)
                self.ctx.proxies[self.key.device] = proxy
            del old  # the replaced proxy goes here, with the lock free
        self.connect()
