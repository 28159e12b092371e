"""Client side of SKA long running commands (LRC), on a :class:`CallbackScheduler`.

A long running command replies at once with a command identifier; what happens to
the command afterwards reaches clients as change events. :func:`invoke_lrc` hides that
protocol: it subscribes to the device's LRC event streams, invokes the command, and
calls ``lrc_callback`` with keyword arguments (``status``, ``progress``, ``result``,
``error`` and any further keys the device sends) about this one command, until the
command reaches a terminal status.

Both wire versions are spoken. Version 2 uses one attribute, ``_lrcEvent``; version 1
uses ``longRunningCommandStatus``, ``longRunningCommandProgress`` and
``longRunningCommandResult``. The version is agreed with the device through its
``lrcProtocolVersions`` attribute (a device without it speaks version 1).

Callbacks run on the scheduler's worker threads, never on Tango's event thread. Pass
your own scheduler with ``callback_scheduler=``; otherwise a module-level one is
created on first use and shut down when the interpreter exits. To stop every
invocation from subscribing and unsubscribing (which pauses all event callbacks of the
process), keep the device's LRC streams connected with :func:`connect_lrc_interface`.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import inspect
import json
import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import tango

from . import _compat
from ._queues import EventQueue
from .control_model import (
    ACCEPTED_RESULT_CODES,
    TERMINAL_STATUSES,
    ResultCode,
    TaskStatus,
    parse_task_status,
)
from .scheduler import (
    CallbackID,
    CallbackScheduler,
    SchedulerShutdownError,
    StreamNotFoundError,
    UnknownCallbackError,
)

__all__ = [
    "EARLY_EVENT_LIMIT",
    "EVENTS_DROPPED_REASON",
    "INVOKE_FAILED_REASON",
    "LRC_QUEUE_SIZE",
    "REGISTRATION_TIMEOUT",
    "SUPPORTED_PROTOCOL_VERSIONS",
    "CommandError",
    "LRCSubscriptionsProtocol",
    "LrcCallback",
    "NoCommonProtocolVersionError",
    "ResultCodeError",
    "connect_lrc_interface",
    "disconnect_lrc_interface",
    "invoke_lrc",
    "lrc_attribute_names",
    "module_callback_scheduler",
    "negotiate_lrc_protocol_version",
]

_LOGGER = logging.getLogger(__name__)

SUPPORTED_PROTOCOL_VERSIONS: tuple[int, int] = (1, 2)
"""Lowest and highest LRC protocol versions this client speaks."""

LRC_QUEUE_SIZE = 1024
"""Capacity of the scheduler queue that feeds a device's LRC event streams.

Large, because the updates of many commands share these streams and arrive in bursts;
a full queue discards its oldest events (callbacks are told, see
:data:`EVENTS_DROPPED_REASON`). It also bounds the calls an invocation holds for an
``lrc_callback`` that falls behind.
"""

EARLY_EVENT_LIMIT = 1024
"""Events an invocation keeps while it waits for the command's reply."""

REGISTRATION_TIMEOUT = 30.0
"""Seconds :func:`invoke_lrc` and :func:`connect_lrc_interface` wait for subscriptions."""

INVOKE_FAILED_REASON = "SKA_InvokeLrcFailed"
"""Reason of the error that :func:`invoke_lrc` adds, last, to a ``DevFailed`` it re-raises."""

EVENTS_DROPPED_REASON = "SKA_LrcEventsDropped"
"""Reason of the error passed as ``error=`` when LRC events may have been lost."""

_SUBSCRIPTION_TIMEOUT_REASON = "SKA_LrcSubscriptionTimeout"
_VERSIONS_ATTRIBUTE = "lrcProtocolVersions"
_V2_ATTRIBUTES = ("_lrcEvent",)
_V1_STATUS = "longRunningCommandStatus"
_V1_PROGRESS = "longRunningCommandProgress"
_V1_RESULT = "longRunningCommandResult"
_V1_ATTRIBUTES = (_V1_STATUS, _V1_PROGRESS, _V1_RESULT)
_ORIGIN = "ska_tango_scheduler.long_running_commands"
# How long invoke_lrc waits for the error event of a stream that failed to subscribe.
_FAILURE_DETAIL_WAIT = 2.0
_MODULE_SCHEDULER_THREADS = 2

LrcCallback = Callable[..., None]
"""A callback taking ``status``, ``progress``, ``result``, ``error`` and ``**kwargs``."""


class CommandError(RuntimeError):
    """The device rejected the long running command (reply ``ResultCode.REJECTED``)."""


class ResultCodeError(ValueError):
    """The device replied with a result code other than QUEUED, STARTED or REJECTED."""


class NoCommonProtocolVersionError(RuntimeError):
    """The device and this client share no LRC protocol version.

    Attributes:
        device: Name of the device.
        client_versions: ``(min, max)`` versions this client speaks.
        server_versions: ``(min, max)`` versions the device advertises (empty if it
            advertised nothing usable).
    """

    def __init__(
        self,
        device: str,
        client_versions: tuple[int, int],
        server_versions: tuple[int, ...],
    ) -> None:
        """Create the error.

        Args:
            device: Name of the device.
            client_versions: ``(min, max)`` versions this client speaks.
            server_versions: What the device's ``lrcProtocolVersions`` holds.
        """
        self.device = device
        self.client_versions = client_versions
        self.server_versions = server_versions
        if server_versions:
            served = f"versions {server_versions[0]} to {server_versions[-1]}"
        else:
            served = "no usable version range"
        super().__init__(
            f"{device} serves LRC protocol {served}, but this client speaks versions "
            f"{client_versions[0]} to {client_versions[1]}: there is no common version"
        )


@runtime_checkable
class LRCSubscriptionsProtocol(Protocol):
    """What :func:`invoke_lrc` returns: a handle on one invocation."""

    @property
    def command_id(self) -> str:
        """Identifier the device gave the command."""
        ...

    @property
    def protocol_version(self) -> int:
        """LRC protocol version used with the device."""
        ...

    def unsubscribe_lrc_events(self) -> None:
        """Stop calling the callback: unregister it from the scheduler (idempotent).

        This does not unsubscribe from Tango by itself: the scheduler does that when a
        stream has no callback left and is not kept by :func:`connect_lrc_interface`.
        """
        ...


# --------------------------------------------------------------------------- module scheduler

_module_scheduler: CallbackScheduler | None = None
_module_scheduler_lock = threading.Lock()
_atexit_registered = False


def module_callback_scheduler() -> CallbackScheduler:
    """Return the scheduler used when no ``callback_scheduler`` is given.

    It is created on first use (thread-safe) and shut down when the interpreter exits.
    If it was shut down by someone else, a new one is created.

    Returns:
        The module-level scheduler.
    """
    global _module_scheduler, _atexit_registered
    with _module_scheduler_lock:
        if _module_scheduler is None or _module_scheduler.is_shutdown:
            _module_scheduler = CallbackScheduler(
                thread_count=_MODULE_SCHEDULER_THREADS, name="lrc-module-scheduler"
            )
            if not _atexit_registered:
                atexit.register(_shutdown_module_scheduler)
                _atexit_registered = True
        return _module_scheduler


def _shutdown_module_scheduler() -> None:
    global _module_scheduler
    with _module_scheduler_lock:
        scheduler, _module_scheduler = _module_scheduler, None
    if scheduler is not None:
        scheduler.shutdown(timeout=5.0)


# --------------------------------------------------------------------------- negotiation


def negotiate_lrc_protocol_version(proxy: tango.DeviceProxy) -> int:
    """Agree on the LRC protocol version to use with a device.

    The device's ``lrcProtocolVersions`` attribute, when it has one, holds the
    ``(min, max)`` versions it serves; the highest version both sides speak is chosen.
    A device without the attribute speaks version 1.

    Args:
        proxy: Proxy of the device.

    Returns:
        The version to use.

    Raises:
        NoCommonProtocolVersionError: If the ranges do not overlap.
        tango.DevFailed: If the device cannot be asked.
    """
    names = {str(name).lower() for name in proxy.get_attribute_list()}
    if _VERSIONS_ATTRIBUTE.lower() not in names:
        server: tuple[int, ...] = (1, 1)
    else:
        value = proxy.read_attribute(_VERSIONS_ATTRIBUTE).value
        server = tuple(int(v) for v in value) if value is not None else ()
    low, high = SUPPORTED_PROTOCOL_VERSIONS
    if not server or server[0] > high or server[-1] < low or server[0] > server[-1]:
        raise NoCommonProtocolVersionError(_device_name(proxy), SUPPORTED_PROTOCOL_VERSIONS, server)
    return min(server[-1], high)


def lrc_attribute_names(protocol_version: int) -> tuple[str, ...]:
    """Return the attributes whose change events carry LRC updates in a protocol version.

    Args:
        protocol_version: 1 or 2.

    Returns:
        The attribute names, as devices declare them.

    Raises:
        ValueError: For a version this client does not speak.
    """
    if protocol_version == 2:
        return _V2_ATTRIBUTES
    if protocol_version == 1:
        return _V1_ATTRIBUTES
    raise ValueError(f"LRC protocol version {protocol_version} is not supported")


# --------------------------------------------------------------------------- interface pinning

# What connect_lrc_interface pinned, per scheduler and device, for disconnect_lrc_interface.
_pinned: weakref.WeakKeyDictionary[CallbackScheduler, dict[str, tuple[str, ...]]] = (
    weakref.WeakKeyDictionary()
)
_pinned_lock = threading.Lock()


def connect_lrc_interface(
    proxy: tango.DeviceProxy, scheduler: CallbackScheduler | None = None
) -> None:
    """Keep a device's LRC event streams connected until :func:`disconnect_lrc_interface`.

    Later :func:`invoke_lrc` calls on this device with the same scheduler then register
    and unregister callbacks without any Tango subscribe or unsubscribe call.

    Args:
        proxy: Proxy of the device.
        scheduler: The scheduler to connect the streams in; the module-level one if
            omitted.

    Raises:
        NoCommonProtocolVersionError: If the device speaks no version this client does.
        tango.DevFailed: If the device cannot be asked for its protocol versions, or
            the streams do not reach a connection outcome in time.
    """
    sched = scheduler if scheduler is not None else module_callback_scheduler()
    version = negotiate_lrc_protocol_version(proxy)
    attributes = lrc_attribute_names(version)
    futures = [
        sched.connect_event_stream(proxy, name, tango.EventType.CHANGE_EVENT, queue_factory=factory)
        for name, factory in zip(
            attributes, _queue_factories(sched, proxy, attributes), strict=True
        )
    ]
    with _pinned_lock:
        _pinned.setdefault(sched, {})[_device_key(proxy)] = attributes
    _, pending = concurrent.futures.wait(futures, timeout=REGISTRATION_TIMEOUT)
    if pending:
        raise tango.DevFailed(
            _dev_error(
                _SUBSCRIPTION_TIMEOUT_REASON,
                f"The LRC event streams of {_device_name(proxy)} did not connect within "
                f"{REGISTRATION_TIMEOUT} s",
            )
        )
    for future in futures:
        future.result()  # re-raises SchedulerShutdownError


def disconnect_lrc_interface(
    proxy: tango.DeviceProxy, scheduler: CallbackScheduler | None = None
) -> None:
    """Release the LRC event streams kept by :func:`connect_lrc_interface`.

    Each stream is unsubscribed now if no invocation is listening to it, else when the
    last one finishes.

    Args:
        proxy: Proxy of the device.
        scheduler: The scheduler given to :func:`connect_lrc_interface`; the
            module-level one if omitted.

    Raises:
        StreamNotFoundError: If the device's LRC interface is not connected in this
            scheduler.
    """
    sched = scheduler if scheduler is not None else module_callback_scheduler()
    with _pinned_lock:
        attributes = _pinned.get(sched, {}).pop(_device_key(proxy), None)
    candidates = attributes if attributes is not None else (*_V2_ATTRIBUTES, *_V1_ATTRIBUTES)
    released = 0
    for name in candidates:
        try:
            sched.disconnect_event_stream(proxy, name, tango.EventType.CHANGE_EVENT)
        except StreamNotFoundError:
            continue
        released += 1
    if released == 0:
        raise StreamNotFoundError(
            f"the LRC interface of {_device_name(proxy)} is not connected in {sched.name}"
        )


# --------------------------------------------------------------------------- invoke_lrc


def invoke_lrc(
    lrc_callback: LrcCallback,
    proxy: tango.DeviceProxy,
    command: str,
    command_args: Any = None,
    logger: logging.Logger | None = None,
    *,
    callback_scheduler: CallbackScheduler | None = None,
) -> LRCSubscriptionsProtocol:
    """Invoke a long running command and report its progress to a callback.

    The callbacks are registered with the scheduler (and their subscriptions
    connected) before the command is invoked, so no update is missed. Updates that
    arrive before the device has replied are kept (up to :data:`EARLY_EVENT_LIMIT`) and
    passed on once the reply tells which command they belong to, from a short-lived
    thread of the invocation; later updates are passed from a scheduler worker thread.
    ``lrc_callback`` is never called from the calling thread, never twice at once for
    one invocation, and always in the order the updates were received. An exception it
    raises is logged and does not stop later calls.

    ``lrc_callback`` receives keyword arguments only, any subset of:

    * ``status``: a :class:`~ska_tango_scheduler.control_model.TaskStatus`;
    * ``progress``: whatever the device reports (an int, or text);
    * ``result``: the decoded result, normally ``[ResultCode, message]``;
    * ``error``: a tuple of ``tango.DevError``, for an error event on an LRC stream, or
      with reason :data:`EVENTS_DROPPED_REASON` when updates may have been lost because
      the scheduler queue, the early-update buffer or the calls waiting for a slow
      ``lrc_callback`` overflowed (the oldest are dropped, so the latest status stays);
    * any other key the device sends (version 2).

    After a terminal status (ABORTED, COMPLETED, REJECTED, FAILED) the invocation
    unregisters its callbacks by itself.

    Args:
        lrc_callback: Called with the updates; must accept ``**kwargs``.
        proxy: Proxy of the device.
        command: Name of the command.
        command_args: Argument of the command, if it takes one.
        logger: Logger for problems with updates; this module's logger if omitted.
        callback_scheduler: Scheduler running the callbacks; the module-level one if
            omitted.

    Returns:
        A handle with the command id, the protocol version and
        ``unsubscribe_lrc_events()``.

    Raises:
        ValueError: If ``lrc_callback`` does not accept ``**kwargs``.
        TypeError: If ``lrc_callback`` is not callable.
        NoCommonProtocolVersionError: If the device speaks no version this client does.
        CommandError: If the device rejected the command.
        ResultCodeError: If the device replied with an unexpected result code.
        tango.DevFailed: If asking the device, subscribing or invoking failed; the
            original errors come first and one with reason
            :data:`INVOKE_FAILED_REASON` is added last.
        SchedulerShutdownError: If the scheduler was shut down.
    """
    _check_callback(lrc_callback)
    log = logger if logger is not None else _LOGGER
    sched = callback_scheduler if callback_scheduler is not None else module_callback_scheduler()
    device = _device_name(proxy)
    try:
        version = negotiate_lrc_protocol_version(proxy)
    except tango.DevFailed as exc:
        raise _invoke_failed(exc, f"Cannot learn the LRC protocol version of {device}") from exc

    invocation = _Invocation(lrc_callback, proxy, device, command, version, sched, log)
    invocation.register()
    try:
        if command_args is None:
            reply = proxy.command_inout(command)
        else:
            reply = proxy.command_inout(command, command_args)
    except tango.DevFailed as exc:
        invocation.abandon()
        raise _invoke_failed(exc, f"Invoking {command} on {device} failed") from exc
    except BaseException:
        invocation.abandon()
        raise

    code, text = _parse_reply(reply, command, device, invocation)
    if code == ResultCode.REJECTED:
        invocation.abandon()
        raise CommandError(f"{device} rejected {command}: {text}")
    if code not in ACCEPTED_RESULT_CODES:
        invocation.abandon()
        raise ResultCodeError(
            f"{device} replied to {command} with unexpected result code {_code_name(code)}: {text}"
        )
    invocation.start(text)
    return invocation


# An update as kept by an invocation: the stream kind and the strings or errors it carried.
_Item = tuple[str, tuple[Any, ...]]


class _Invocation:
    """One call of :func:`invoke_lrc`: its callbacks, buffer and state.

    Everything mutable is guarded by ``_lock``, which is only ever held for short,
    non-blocking work: never while calling the user's callback or the scheduler.
    """

    def __init__(
        self,
        lrc_callback: LrcCallback,
        proxy: tango.DeviceProxy,
        device: str,
        command: str,
        version: int,
        scheduler: CallbackScheduler,
        logger: logging.Logger,
    ) -> None:
        self._lrc_callback = lrc_callback
        self._proxy = proxy
        self._device = device
        self._command = command
        self._version = version
        self._scheduler = scheduler
        self._logger = logger
        self._attributes = lrc_attribute_names(version)
        self._lock = threading.Lock()
        self._command_id: str | None = None
        self._early: collections.deque[_Item] = collections.deque(maxlen=EARLY_EVENT_LIMIT)
        self._early_dropped = 0
        self._early_error = threading.Event()
        self._outbox: collections.deque[dict[str, Any]] = collections.deque()
        self._outbox_dropped = 0
        self._draining = False
        self._closed = False  # no further update is taken in
        self._cancelled = False  # no further call is made
        self._callback_ids: list[CallbackID] = []
        self._queues: dict[EventQueue, int] = {}
        self._last_status: str | None = None
        self._last_progress: str | None = None
        self._replay_thread: threading.Thread | None = None

    # -- LRCSubscriptionsProtocol -------------------------------------------------

    @property
    def command_id(self) -> str:
        """Identifier the device gave the command."""
        return self._command_id or ""

    @property
    def protocol_version(self) -> int:
        """LRC protocol version used with the device."""
        return self._version

    def unsubscribe_lrc_events(self) -> None:
        """Unregister the callbacks from the scheduler; later calls do nothing."""
        with self._lock:
            self._closed = True
            self._cancelled = True
            self._outbox.clear()
            self._early.clear()
        self._unregister()

    def __repr__(self) -> str:
        """Return a short description."""
        return (
            f"<LRC invocation {self._command} on {self._device}, id {self._command_id!r}, "
            f"protocol {self._version}>"
        )

    # -- set-up and tear-down (calling thread) ------------------------------------

    def register(self) -> None:
        """Register one callback per LRC stream and wait until they are connected."""
        futures: list[concurrent.futures.Future[CallbackID]] = []
        factories = _queue_factories(self._scheduler, self._proxy, self._attributes)
        try:
            for kind, name, factory in zip(self._kinds(), self._attributes, factories, strict=True):
                futures.append(
                    self._scheduler.register_event_callback(
                        self._proxy,
                        name,
                        tango.EventType.CHANGE_EVENT,
                        self._listener(kind),
                        queue_factory=factory,
                    )
                )
        except BaseException:
            self._abandon_futures(futures)
            raise
        done, pending = concurrent.futures.wait(futures, timeout=REGISTRATION_TIMEOUT)
        failure: BaseException | None = None
        for future in futures:
            if future in done and future.exception() is None:
                with self._lock:
                    self._callback_ids.append(future.result())
            elif future in done and failure is None:
                failure = future.exception()
        if failure is not None or pending:
            self.abandon()
            self._abandon_futures(list(pending))
            if failure is not None:
                raise failure
            raise _invoke_failed(
                tango.DevFailed(
                    _dev_error(
                        _SUBSCRIPTION_TIMEOUT_REASON,
                        f"The LRC event streams of {self._device} did not connect within "
                        f"{REGISTRATION_TIMEOUT} s",
                    )
                ),
                f"Subscribing to the LRC events of {self._device} failed",
            )
        for name in self._attributes:
            try:
                queue = self._scheduler.get_queue(self._proxy, name, tango.EventType.CHANGE_EVENT)
            except StreamNotFoundError:
                continue
            with self._lock:
                self._queues.setdefault(queue, queue.counters.dropped)
        self._raise_if_subscription_failed()

    def abandon(self) -> None:
        """Forget the invocation without calling the callback (the command did not start)."""
        self.unsubscribe_lrc_events()

    def start(self, command_id: str) -> None:
        """Learn the command id and pass on the updates that were waiting for it."""
        with self._lock:
            self._command_id = command_id
            early = list(self._early)
            self._early.clear()
            if self._early_dropped:
                self._emit(
                    _dropped_update(
                        f"{self._early_dropped} LRC events of {self._device} that arrived "
                        f"before {self._command} replied were discarded (buffer full); "
                        f"updates of {command_id} may be missing"
                    )
                )
            self._note_queue_drops()
            for item in early:
                if self._closed:
                    break
                self._interpret(item)
            drain = self._claim_drain()
        if drain:
            self._replay_elsewhere()
        self._unregister_if_closed()

    def _replay_elsewhere(self) -> None:
        """Deliver the kept updates on a short-lived thread of their own.

        Not on the calling thread: it may hold a lock that the callback takes, and the
        caller expects ``invoke_lrc`` to return without running user code. Not on a
        scheduler worker either: no worker may come, if every update of the command
        arrived before the reply. Live updates that arrive meanwhile are appended and
        delivered by this same thread, in order (see :meth:`_drain`).
        """

        def replay() -> None:
            with tango.EnsureOmniThread():
                self._drain()

        thread = threading.Thread(target=replay, name=f"lrc-replay-{self._command}", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: deliver here rather than never
            self._drain()
            return
        self._replay_thread = thread

    # -- scheduler worker threads ---------------------------------------------------

    def _kinds(self) -> tuple[str, ...]:
        return ("v2",) if self._version == 2 else ("status", "progress", "result")

    def _listener(self, kind: str) -> Callable[[Any], None]:
        def on_event(event: Any) -> None:
            if event.err:
                self._accept(("error", tuple(event.errors)))
                return
            attr_value = getattr(event, "attr_value", None)
            value = getattr(attr_value, "value", None) if attr_value is not None else None
            strings = tuple(str(v) for v in value) if value is not None else ()
            if not strings or not strings[0]:
                return  # the empty value delivered when subscribing
            self._accept((kind, strings))

        return on_event

    def _accept(self, item: _Item) -> None:
        with self._lock:
            if self._closed:
                return
            if self._command_id is None:
                if len(self._early) == self._early.maxlen:
                    self._early_dropped += 1
                self._early.append(item)
                if item[0] == "error":
                    self._early_error.set()
                return
            self._note_queue_drops()
            self._interpret(item)
            drain = self._claim_drain()
        if drain:
            self._drain()
        self._unregister_if_closed()

    # -- interpretation (lock held) ---------------------------------------------------

    def _emit(self, kwargs: dict[str, Any]) -> None:
        """Queue one callback call; the oldest is discarded (and counted) when full."""
        if len(self._outbox) >= LRC_QUEUE_SIZE:
            self._outbox.popleft()
            self._outbox_dropped += 1
        self._outbox.append(kwargs)

    def _claim_drain(self) -> bool:
        if self._draining or not self._outbox:
            return False
        self._draining = True
        return True

    def _interpret(self, item: _Item) -> None:
        kind, payload = item
        if kind == "error":
            self._emit({"error": payload})
        elif kind == "v2":
            self._interpret_v2(payload)
        elif kind == "status":
            self._interpret_v1_status(payload)
        elif kind == "progress":
            self._interpret_v1_progress(payload)
        elif kind == "result":
            if len(payload) >= 2 and payload[0] == self._command_id:
                self._emit({"result": _decode(payload[1])})

    def _interpret_v2(self, payload: tuple[Any, ...]) -> None:
        if len(payload) < 2 or payload[0] != self._command_id:
            return
        try:
            update = json.loads(payload[1])
        except ValueError:
            self._logger.warning(
                "Ignoring LRC update of %s that is not JSON: %r", self._command_id, payload[1]
            )
            return
        if not isinstance(update, dict):
            self._logger.warning(
                "Ignoring LRC update of %s that is not a JSON object: %r",
                self._command_id,
                payload[1],
            )
            return
        kwargs = {str(key): value for key, value in update.items()}
        if not kwargs:
            return
        if "status" in kwargs:
            kwargs["status"] = self._status(kwargs["status"])
        self._emit(kwargs)
        if "status" in kwargs:
            self._close_if_terminal(kwargs["status"])

    def _interpret_v1_status(self, payload: tuple[Any, ...]) -> None:
        found = _lookup(payload, self._command_id)
        if found is None or found == self._last_status:
            return
        self._last_status = found
        status = self._status(found)
        self._emit({"status": status})
        self._close_if_terminal(status)

    def _interpret_v1_progress(self, payload: tuple[Any, ...]) -> None:
        found = _lookup(payload, self._command_id)
        if found is None or found == self._last_progress:
            return
        self._last_progress = found
        self._emit({"progress": _progress_value(found)})

    def _status(self, raw: Any) -> TaskStatus | Any:
        try:
            return parse_task_status(raw)
        except ValueError:
            self._logger.warning("Unknown LRC status %r for %s", raw, self._command_id)
            return raw

    def _close_if_terminal(self, status: Any) -> None:
        if isinstance(status, TaskStatus) and status in TERMINAL_STATUSES:
            self._closed = True

    def _note_queue_drops(self) -> None:
        lost = 0
        for queue, seen in self._queues.items():
            now = queue.counters.dropped
            if now > seen:
                lost += now - seen
                self._queues[queue] = now
        if lost:
            self._emit(
                _dropped_update(
                    f"{lost} LRC events of {self._device} were discarded because their "
                    f"queue was full; updates of {self._command_id} may be missing"
                )
            )

    # -- delivery (no lock held) ------------------------------------------------------

    def _drain(self) -> None:
        """Call the callback with the queued calls until there are none left.

        Only one thread drains at a time (``_draining``); others append and leave, so
        that calls stay in order and never overlap, and no thread waits for another.
        """
        while True:
            with self._lock:
                if self._cancelled:
                    self._outbox.clear()
                    self._outbox_dropped = 0
                if self._outbox_dropped:
                    kwargs = _dropped_update(
                        f"{self._outbox_dropped} updates of {self._command_id} were discarded "
                        "because lrc_callback could not keep up"
                    )
                    self._outbox_dropped = 0
                elif self._outbox:
                    kwargs = self._outbox.popleft()
                else:
                    self._draining = False
                    return
            try:
                self._lrc_callback(**kwargs)
            except Exception:
                self._logger.exception(
                    "LRC callback %r raised for %s %s", self._lrc_callback, self._command, kwargs
                )

    def _unregister_if_closed(self) -> None:
        with self._lock:
            closed = self._closed and bool(self._callback_ids)
        if closed:
            self._unregister()

    def _unregister(self) -> None:
        with self._lock:
            ids, self._callback_ids = self._callback_ids, []
        for callback_id in ids:
            try:
                self._scheduler.unregister_callback(callback_id)
            except (UnknownCallbackError, SchedulerShutdownError):
                pass

    def _abandon_futures(self, futures: Sequence[concurrent.futures.Future[CallbackID]]) -> None:
        """Unregister callbacks whose registration completes only later."""

        def release(future: concurrent.futures.Future[CallbackID]) -> None:
            if future.cancelled() or future.exception() is not None:
                return
            try:
                self._scheduler.unregister_callback(future.result())
            except (UnknownCallbackError, SchedulerShutdownError):
                pass

        for future in futures:
            future.add_done_callback(release)

    def _raise_if_subscription_failed(self) -> None:
        """Turn a stream that could not be subscribed into a ``DevFailed``."""
        device_trl = _device_key(self._proxy)
        wanted = {name.lower() for name in self._attributes}
        failing = [
            row
            for row in self._scheduler.diagnostics().streams
            if _same_device(row.device, device_trl)
            and row.attribute.lower() in wanted
            and row.event_type == "CHANGE_EVENT"
            and row.state == "failing"
        ]
        if not failing:
            return
        # The stream's own error event is on its way to our buffer: prefer its errors.
        errors: tuple[Any, ...] = ()
        if self._early_error.wait(_FAILURE_DETAIL_WAIT):
            with self._lock:
                errors = next((payload for kind, payload in self._early if kind == "error"), ())
        if not errors:
            errors = (
                _dev_error(
                    "SKA_LrcSubscriptionFailed",
                    "; ".join(f"{row.name}: {row.last_error}" for row in failing),
                ),
            )
        self.abandon()
        raise _invoke_failed(
            tango.DevFailed(*errors), f"Subscribing to the LRC events of {self._device} failed"
        )


# --------------------------------------------------------------------------- helpers


def _check_callback(lrc_callback: Any) -> None:
    if not callable(lrc_callback):
        raise TypeError(f"lrc_callback must be callable, got {lrc_callback!r}")
    try:
        signature = inspect.signature(lrc_callback)
    except (TypeError, ValueError):
        return  # cannot be inspected (some built-ins): trust the caller
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        raise ValueError(
            f"lrc_callback {lrc_callback!r} must accept **kwargs: devices may send keys "
            "beyond status, progress, result and error"
        )


def _queue_factories(
    scheduler: CallbackScheduler, proxy: tango.DeviceProxy, attributes: Sequence[str]
) -> list[Callable[[], EventQueue]]:
    """Queue factories for a device's LRC streams: one big queue shared by all of them.

    Sharing keeps the order of the updates across the version 1 attributes (the result
    is pushed before the terminal status, and must be delivered before it too).
    """
    first = attributes[0]

    def new_queue() -> EventQueue:
        return scheduler.allocate_queue(queue_size=LRC_QUEUE_SIZE)

    def shared_queue() -> EventQueue:
        try:
            return scheduler.get_queue(proxy, first, tango.EventType.CHANGE_EVENT)
        except StreamNotFoundError:
            return new_queue()

    return [new_queue, *(shared_queue for _ in attributes[1:])]


def _parse_reply(reply: Any, command: str, device: str, invocation: _Invocation) -> tuple[int, str]:
    try:
        codes, texts = reply
        code = int(codes[0])
        text = str(texts[0]) if len(texts) else ""
    except (TypeError, ValueError, IndexError) as exc:
        invocation.abandon()
        raise ResultCodeError(
            f"{device} replied to {command} with {reply!r}, not ([result_code], [text])"
        ) from exc
    return code, text


def _code_name(code: int) -> str:
    try:
        return ResultCode(code).name
    except ValueError:
        return str(code)


def _lookup(flat: Sequence[Any], command_id: str | None) -> str | None:
    """Find the value paired with ``command_id`` in ``[id1, v1, id2, v2, ...]`` (last wins)."""
    found = None
    for index in range(0, len(flat) - 1, 2):
        if flat[index] == command_id:
            found = str(flat[index + 1])
    return found


def _progress_value(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _dev_error(reason: str, desc: str) -> tango.DevError:
    error = tango.DevError()
    error.reason = reason
    error.desc = desc
    error.origin = _ORIGIN
    error.severity = tango.ErrSeverity.ERR
    return error


def _dropped_update(desc: str) -> dict[str, Any]:
    return {"error": (_dev_error(EVENTS_DROPPED_REASON, desc),)}


def _invoke_failed(exc: tango.DevFailed, desc: str) -> tango.DevFailed:
    """A ``DevFailed`` with the errors of ``exc`` and :data:`INVOKE_FAILED_REASON` last."""
    errors = [e for e in exc.args if isinstance(e, tango.DevError)]
    if not errors:
        errors = [_dev_error("PyAPI_Error", str(exc))]
    errors.append(_dev_error(INVOKE_FAILED_REASON, desc))
    return tango.DevFailed(*errors)


def _device_name(proxy: tango.DeviceProxy) -> str:
    try:
        return str(proxy.dev_name())
    except Exception:  # noqa: BLE001 - a name for messages only
        return repr(proxy)


def _device_key(proxy: tango.DeviceProxy) -> str:
    """The device's canonical TRL as the scheduler writes it, else its plain name."""
    try:
        return _compat.key_of(proxy).trl
    except Exception:  # noqa: BLE001 - fall back to the plain name
        return _device_name(proxy).lower()


def _same_device(scheduler_trl: str, key: str) -> bool:
    """Compare a TRL from diagnostics with what :func:`_device_key` gave."""
    if scheduler_trl == key:
        return True
    if "://" in key:
        return False
    return scheduler_trl.lower().removesuffix("#dbase=no").endswith("/" + key)
