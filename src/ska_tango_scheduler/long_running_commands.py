"""Client side of SKA long running commands (LRC), on a :class:`CallbackScheduler`.

A long running command replies at once with a command identifier; what happens to
the command afterwards reaches clients as change events. :func:`invoke_lrc` hides that
protocol: it subscribes to the device's LRC event streams, invokes the command, and
calls ``lrc_callback`` with keyword arguments (``status``, ``progress``, ``result``,
``error`` and any further keys the device sends) about this one command, until the
command ends. Its signature and meaning are ska-tango-base's: ``command_args`` is a
tuple unpacked into the command call, and dropping the returned handle stops the
callbacks. Unlike ska-tango-base's client it always ends: a command whose device dies
or forgets it ends with ``status=TaskStatus.NOT_FOUND`` or an ``error=`` saying the
outcome is lost.

Both wire versions are spoken. Version 2 uses one attribute, ``_lrcEvent``; version 1
uses ``longRunningCommandStatus``, ``longRunningCommandProgress`` and
``longRunningCommandResult``. The version is agreed with the device through its
``lrcProtocolVersions`` attribute (a device without it speaks version 1).

Callbacks run on the scheduler's worker threads, never on Tango's event thread. Pass
your own scheduler with ``callback_scheduler=``; otherwise a module-level one is
created on first use and shut down when the interpreter exits. To stop every
invocation from subscribing and unsubscribing (which pauses all event callbacks of the
process), keep the device's LRC streams connected with :func:`connect_lrc_interface`.

The package root exports :func:`invoke_lrc`, :func:`connect_lrc_interface`,
:func:`disconnect_lrc_interface`, ``LRCSubscriptionsProtocol`` and the errors
(``CommandError``, ``NoCommonProtocolVersionError``, ``ResultCodeError``). Second
tier, importable from this module only: ``CHECK_INTERVAL_MAX``,
``EARLY_EVENT_LIMIT``, ``EVENTS_DROPPED_REASON``, ``INVOKE_FAILED_REASON``,
``LRC_QUEUE_SIZE``, ``LrcCallback``, ``OUTCOME_LOST_AFTER``, ``OUTCOME_LOST_REASON``,
``REGISTRATION_TIMEOUT``, ``SUPPORTED_PROTOCOL_VERSIONS``, ``lrc_attribute_names``,
``module_callback_scheduler`` and ``negotiate_lrc_protocol_version``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import inspect
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import tango

from . import _compat, _exit
from ._lanes import LaneService
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
    _connecting_on_calling_thread,
)

__all__ = [
    "CHECK_INTERVAL_MAX",
    "EARLY_EVENT_LIMIT",
    "EVENTS_DROPPED_REASON",
    "INVOKE_FAILED_REASON",
    "LRC_QUEUE_SIZE",
    "OUTCOME_LOST_AFTER",
    "OUTCOME_LOST_REASON",
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

OUTCOME_LOST_AFTER = 30.0
"""Seconds a device may go without a sign of life before its command's outcome is lost.

Counted from the device's last sign of life: its reply to the command, the last event
that arrived on an LRC stream, or the last status check it answered. Once that long
has passed, the first status check the device does not answer ends the invocation:
the callback gets a last call with ``error=`` (reason :data:`OUTCOME_LOST_REASON`).
While the device gives no sign of life it is checked every second, and a check that
is not answered takes about twice the proxy's timeout (the status query, then a
ping), so a device that freezes is given up at most about ``OUTCOME_LOST_AFTER`` + 7 s
after its last sign of life with Tango's default 3 s timeout. (The clock used to start
at the first error event, about 10 s into a hang, which made that 40 s and more.)
"""

OUTCOME_LOST_REASON = "SKA_LrcOutcomeLost"
"""Reason of the final ``error=`` of an invocation whose device stayed away too long."""

CHECK_INTERVAL_MAX = 10.0
"""Longest time, in seconds, an unfinished invocation goes without hearing of its command.

After that the device is asked for the command's status (see :func:`invoke_lrc`); the
interval starts at 1 s and doubles while nothing is heard.
"""
_CHECK_INTERVAL_MIN = 1.0
# How often a device in trouble is asked again.
_TROUBLE_INTERVAL = 1.0
_CHECK_THREADS = 4

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


def _ska_tango_base_faults() -> tuple[type[Exception], type[Exception]]:
    """ska-tango-base's ``CommandError`` and ``ResultCodeError``, when it is importable."""
    try:
        from ska_tango_base import faults  # type: ignore[import-not-found,unused-ignore]
    except Exception:  # noqa: BLE001 - not installed, or broken: use the plain bases
        return RuntimeError, ValueError
    return faults.CommandError, faults.ResultCodeError


if TYPE_CHECKING:
    _CommandErrorBase = RuntimeError
    _ResultCodeErrorBase = ValueError
else:
    _CommandErrorBase, _ResultCodeErrorBase = _ska_tango_base_faults()


class CommandError(_CommandErrorBase):
    """The device rejected the long running command (reply ``ResultCode.REJECTED``).

    A :class:`RuntimeError`. When ska-tango-base is importable it is also an instance of
    ``ska_tango_base.faults.CommandError``, so ``except`` clauses written for
    ska-tango-base's ``invoke_lrc`` catch it.
    """


class ResultCodeError(_ResultCodeErrorBase):
    """The device replied with a result code other than QUEUED, STARTED or REJECTED.

    A :class:`ValueError`. When ska-tango-base is importable it is also an instance of
    ``ska_tango_base.faults.ResultCodeError``.
    """


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


def module_callback_scheduler() -> CallbackScheduler:
    """Return the scheduler used when no ``callback_scheduler`` is given.

    It is created on first use (thread-safe) and shut down when the interpreter exits.
    If it was shut down by someone else, a new one is created.

    Returns:
        The module-level scheduler.
    """
    global _module_scheduler
    with _module_scheduler_lock:
        if _module_scheduler is None or _module_scheduler.is_shutdown:
            _module_scheduler = CallbackScheduler(
                thread_count=_MODULE_SCHEDULER_THREADS, name="lrc-module-scheduler"
            )
        return _module_scheduler


def _shutdown_module_scheduler() -> None:
    global _module_scheduler
    with _module_scheduler_lock:
        scheduler, _module_scheduler = _module_scheduler, None
    if scheduler is not None:
        scheduler.shutdown(timeout=5.0)


# Step 2 of the exit sequence (see _exit); the service is closed in step 3.
_exit.at_exit(_exit.SHUT_DOWN_SCHEDULERS, _shutdown_module_scheduler)


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
    proxy: tango.DeviceProxy | str, scheduler: CallbackScheduler | None = None
) -> None:
    """Keep a device's LRC event streams connected until :func:`disconnect_lrc_interface`.

    Later :func:`invoke_lrc` calls on this device with the same scheduler then register
    and unregister callbacks without any Tango subscribe or unsubscribe call. As with
    :func:`invoke_lrc`, the streams of a device served by the calling process are
    connected on the calling thread, so it may be called from the device's own commands.

    Args:
        proxy: Proxy of the device, or its TRL.
        scheduler: The scheduler to connect the streams in; the module-level one if
            omitted.

    Raises:
        TypeError: If ``scheduler`` is not a :class:`CallbackScheduler`, or ``proxy``
            is neither a proxy nor a string (before the device is asked anything).
        NoCommonProtocolVersionError: If the device speaks no version this client does.
        tango.DevFailed: If the device cannot be reached or asked for its protocol
            versions, or the streams do not reach a connection outcome in time.
    """
    sched = _check_scheduler(scheduler, "scheduler")
    proxy = _as_proxy(proxy)
    version = negotiate_lrc_protocol_version(proxy)
    attributes = lrc_attribute_names(version)
    with _connecting_on_calling_thread(_served_here(proxy)):
        futures = [
            sched.connect_event_stream(
                proxy, name, tango.EventType.CHANGE_EVENT, queue_factory=factory
            )
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
    proxy: tango.DeviceProxy | str, scheduler: CallbackScheduler | None = None
) -> None:
    """Release the LRC event streams kept by :func:`connect_lrc_interface`.

    Each stream is unsubscribed now if no invocation is listening to it, else when the
    last one finishes.

    Args:
        proxy: Proxy of the device, or its TRL.
        scheduler: The scheduler given to :func:`connect_lrc_interface`; the
            module-level one if omitted.

    Raises:
        TypeError: If ``scheduler`` is not a :class:`CallbackScheduler`.
        StreamNotFoundError: If the device's LRC interface is not connected in this
            scheduler.
    """
    sched = _check_scheduler(scheduler, "scheduler")
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
    proxy: tango.DeviceProxy | str,
    command: str,
    command_args: tuple[Any, ...] | None = None,
    logger: logging.Logger | None = None,
    *,
    callback_scheduler: CallbackScheduler | None = None,
) -> LRCSubscriptionsProtocol:
    """Invoke a long running command and report its progress to a callback.

    The signature and its meaning are ska-tango-base's: ``command_args`` is a tuple
    unpacked into the command call (``invoke_lrc(cb, proxy, "Slow", (2.5,))`` calls
    ``Slow(2.5)``), and the returned handle must be kept for as long as updates are
    wanted: once it is garbage-collected the callback is not called again and the
    invocation's registrations are released, whether or not the command has ended.

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

    The command always ends for the callback. Besides a terminal status (ABORTED,
    COMPLETED, REJECTED, FAILED) sent by the device, the last call can be:

    * ``status=TaskStatus.NOT_FOUND``, when the device, asked about the command, no
      longer knows it (typically it was restarted);
    * ``error=`` with reason :data:`OUTCOME_LOST_REASON`, when the device could not be
      reached for :data:`OUTCOME_LOST_AFTER` seconds.

    To tell these apart from a quiet command, and to catch up on updates that events
    did not bring, an invocation that has heard nothing about its command for a while
    (1 s at first, doubling up to :data:`CHECK_INTERVAL_MAX`, every second while an LRC
    stream reports errors) asks the device: its ``lrcFinished`` attribute, its
    ``CheckLongRunningCommandStatus`` command or its ``longRunningCommandStatus``
    attribute, whichever it has. A status found that way is passed on only if it is
    further on than what the callback already got. After the last call the invocation
    unregisters its callbacks by itself.

    Called on a device served by the calling process (for example from one of the
    device's own commands, which hold its monitor), the subscriptions are made on the
    calling thread, as ska-tango-base's client does, so that nothing waits for a
    monitor the caller holds.

    Args:
        lrc_callback: Called with the updates; must accept ``**kwargs``.
        proxy: Proxy of the device, or its TRL.
        command: Name of the command.
        command_args: The command's argument as a 1-tuple, ``(argument,)``; None or
            ``()`` for a command without argument. Anything but a tuple is refused, so
            that a tuple-typed argument is never taken apart by mistake: write
            ``((codes, texts),)`` for a ``DevVarLongStringArray``.
        logger: Logger for problems with updates; this module's logger if omitted.
        callback_scheduler: Scheduler running the callbacks; the module-level one if
            omitted.

    Returns:
        A handle with the command id, the protocol version and
        ``unsubscribe_lrc_events()``. Keep it: dropping it stops the callbacks.

    Raises:
        ValueError: If ``lrc_callback`` does not accept ``**kwargs``.
        TypeError: If ``lrc_callback`` is not callable, ``command_args`` is not a tuple
            (or holds more than one value), ``proxy`` is neither a proxy nor a string,
            or ``callback_scheduler`` is not a :class:`CallbackScheduler`; raised before
            the device is asked anything.
        NoCommonProtocolVersionError: If the device speaks no version this client does.
        CommandError: If the device rejected the command.
        ResultCodeError: If the device replied with an unexpected result code.
        tango.DevFailed: If reaching the device, asking it, subscribing or invoking
            failed; the original errors come first and one with reason
            :data:`INVOKE_FAILED_REASON` is added last.
        SchedulerShutdownError: If the scheduler was shut down.
    """
    _check_callback(lrc_callback)
    args = _check_command_args(command_args)
    sched = _check_scheduler(callback_scheduler, "callback_scheduler")
    log = logger if logger is not None else _LOGGER
    try:
        device_proxy = _as_proxy(proxy)
    except tango.DevFailed as exc:
        raise _invoke_failed(exc, f"Cannot reach the device {proxy!r}") from exc
    device = _device_name(device_proxy)
    _warn_if_only_worker(sched, log, device, command)
    try:
        version = negotiate_lrc_protocol_version(device_proxy)
    except tango.DevFailed as exc:
        raise _invoke_failed(exc, f"Cannot learn the LRC protocol version of {device}") from exc

    invocation = _Invocation(lrc_callback, device_proxy, device, command, version, sched, log)
    invocation.register(here=_served_here(device_proxy))
    try:
        reply = device_proxy.command_inout(command, *args)
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
    handle = _LrcSubscriptions(invocation)
    invocation.start(text)
    return handle


class _LrcSubscriptions:
    """The handle :func:`invoke_lrc` returns; losing it ends the invocation.

    It is the only object holding a strong reference to nothing but the invocation:
    the scheduler, the replay thread and the status checks refer to the invocation,
    never to the handle, so the handle's life is the user's to decide.
    """

    __slots__ = ("__weakref__", "_finalizer", "_invocation")

    def __init__(self, invocation: _Invocation) -> None:
        self._invocation = invocation
        self._finalizer = weakref.finalize(self, _handle_dropped, invocation, _lrc_service())
        self._finalizer.atexit = False

    @property
    def command_id(self) -> str:
        """Identifier the device gave the command."""
        return self._invocation.command_id

    @property
    def protocol_version(self) -> int:
        """LRC protocol version used with the device."""
        return self._invocation.protocol_version

    def unsubscribe_lrc_events(self) -> None:
        """Stop calling the callback and unregister it from the scheduler (idempotent)."""
        self._finalizer.detach()
        self._invocation.unsubscribe_lrc_events()

    def __repr__(self) -> str:
        """Return a short description."""
        return repr(self._invocation)


# The service that runs the status checks (timers in a lane per invocation, so that
# a device that does not answer delays no other invocation), the release of
# invocations whose handle was garbage-collected, and the replay of early updates.
_service: LaneService | None = None
_service_lock = threading.Lock()


def _lrc_service() -> LaneService:
    """Return the LRC client's lanes service, started on first use."""
    service = _service
    if service is not None:
        return service
    # Made with no lock held (it starts a thread); the first one in is kept.
    made = LaneService("lrc", _LOGGER, tango.EnsureOmniThread, max_threads=_CHECK_THREADS)
    with _service_lock:
        kept = _set_service(made)
    if kept is not made:
        made.close([], timeout=None)
    return kept


def _set_service(made: LaneService) -> LaneService:
    global _service
    if _service is None:
        _service = made
    return _service


def _handle_dropped(invocation: _Invocation, service: LaneService) -> None:
    """Finalizer of a handle: stop the calls at once, release the rest elsewhere.

    A finaliser can run inside any allocation of any thread, even one holding a
    lock the release needs: it takes no lock (``submit`` only puts a message).
    """
    invocation.stop_calls()
    service.submit(invocation, invocation.release_dropped)


# An update as kept by an invocation: the stream kind and the strings or errors it carried.
_Item = tuple[str, tuple[Any, ...]]

# How far on in its life a command is; a status from a check is passed on only if further.
_RANKS = {"STAGING": 0, "QUEUED": 1, "IN_PROGRESS": 2}


def _rank(status: Any) -> int:
    if isinstance(status, TaskStatus) and status in TERMINAL_STATUSES:
        return 3
    return _RANKS.get(str(getattr(status, "name", "")), -1)


class _Invocation:
    """One call of :func:`invoke_lrc`: its callbacks, buffer and state.

    Everything mutable is guarded by ``_lock``, which is only ever held for short,
    non-blocking work: never while calling the user's callback, the scheduler or Tango.
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
        self._replayed: threading.Event | None = None  # set once the replay has run
        # Status checks (see invoke_lrc).
        self._rank = -1
        self._result_seen = False
        self._heard_at = time.monotonic()
        self._interval = _CHECK_INTERVAL_MIN
        self._stream_trouble = False
        self._unreachable_since: float | None = None
        # Last sign of life of the device: the outcome-lost clock runs from it.
        self._alive_at = time.monotonic()
        self._timer_generation = 0
        self._means: tuple[set[str], set[str]] | None = None
        self._checked_status: TaskStatus | None = None

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

    def release_dropped(self) -> None:
        """Unregister the callbacks of an invocation whose handle was dropped."""
        try:
            self.unsubscribe_lrc_events()
        except Exception:  # noqa: BLE001 - a bug here must not go unseen
            _LOGGER.exception("Releasing %r failed", self)

    def stop_calls(self) -> None:
        """Make no further call, without taking any lock (safe in a finalizer)."""
        self._cancelled = True
        self._closed = True

    def __repr__(self) -> str:
        """Return a short description."""
        return (
            f"<LRC invocation {self._command} on {self._device}, id {self._command_id!r}, "
            f"protocol {self._version}>"
        )

    # -- set-up and tear-down (calling thread) ------------------------------------

    def register(self, here: bool = False) -> None:
        """Register one callback per LRC stream and wait until they are connected.

        Args:
            here: Connect new streams on the calling thread (a device of this process).
        """
        futures: list[concurrent.futures.Future[CallbackID]] = []
        factories = _queue_factories(self._scheduler, self._proxy, self._attributes)
        try:
            with _connecting_on_calling_thread(here):
                for kind, name, factory in zip(
                    self._kinds(), self._attributes, factories, strict=True
                ):
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
                queue_ = self._scheduler.get_queue(self._proxy, name, tango.EventType.CHANGE_EVENT)
            except StreamNotFoundError:
                continue
            with self._lock:
                self._queues.setdefault(queue_, queue_.counters.dropped)
        self._raise_if_subscription_failed()

    def abandon(self) -> None:
        """Forget the invocation without calling the callback (the command did not start)."""
        self.unsubscribe_lrc_events()

    def start(self, command_id: str) -> None:
        """Learn the command id and pass on the updates that were waiting for it."""
        with self._lock:
            self._command_id = command_id
            self._heard_at = self._alive_at = time.monotonic()
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
        self._schedule_check(self._interval)

    def _replay_elsewhere(self) -> None:
        """Deliver the kept updates on a short-lived thread of their own (a service job).

        Not on the calling thread: it may hold a lock that the callback takes, and the
        caller expects ``invoke_lrc`` to return without running user code. Not on a
        scheduler worker either: no worker may come, if every update of the command
        arrived before the reply. Live updates that arrive meanwhile are appended and
        delivered by this same thread, in order (see :meth:`_drain`).
        """
        done = self._replayed = threading.Event()

        def replay() -> None:
            try:
                with tango.EnsureOmniThread():
                    self._drain()
            finally:
                done.set()

        # If no thread is to be had, the service runs it here rather than never.
        _lrc_service().notify(replay)

    # -- scheduler worker threads ---------------------------------------------------

    def _kinds(self) -> tuple[str, ...]:
        return ("v2",) if self._version == 2 else ("status", "progress", "result")

    def _listener(self, kind: str) -> Callable[[Any], None]:
        def on_event(event: Any) -> None:
            if event.err:
                self._accept(("error", tuple(event.errors)))
                return
            self._stream_ok()
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

    def _stream_ok(self) -> None:
        """A stream delivered data: if it was in error, check the command soon."""
        with self._lock:
            self._alive_at = time.monotonic()
            recovered = self._stream_trouble and self._command_id is not None
            self._stream_trouble = False
        if recovered:
            self._schedule_check(0.0)

    # -- status checks (timers of the LRC lanes service) -------------------------------

    def _schedule_check(self, delay: float) -> None:
        with self._lock:
            if self._closed or self._command_id is None:
                return
            self._timer_generation += 1
            generation = self._timer_generation
        _lrc_service().call_later(delay, self, functools.partial(self._checked, generation))

    def _checked(self, generation: int) -> None:
        try:
            self._check(generation)
        except Exception:  # noqa: BLE001 - a bug here must not go unseen
            _LOGGER.exception("LRC status check %r failed", self)

    def _check(self, generation: int) -> None:
        """Ask the device about the command, unless something was heard meanwhile."""
        with self._lock:
            if self._closed or generation != self._timer_generation:
                return
            quiet = time.monotonic() - self._heard_at
            urgent = self._stream_trouble or self._unreachable_since is not None
            if not urgent and quiet < self._interval:
                wait = self._interval - quiet
            else:
                wait = None
        if wait is not None:
            self._schedule_check(wait)
            return
        try:
            found = self._query()
        except Exception as exc:  # noqa: BLE001 - the device did not answer, or failed
            try:
                self._proxy.ping()
            except Exception:  # noqa: BLE001 - it does not answer
                self._not_answered(exc)
                return
            # It answers but could not tell (a failing attribute, say): not lost.
            self._logger.debug("Status check of %s failed", self._command_id, exc_info=True)
            found = (None, None, False)
        with self._lock:
            self._unreachable_since = None
            self._alive_at = time.monotonic()
        self._accept(("check", found))
        with self._lock:
            self._interval = min(self._interval * 2, CHECK_INTERVAL_MAX)
            delay = _TROUBLE_INTERVAL if self._stream_trouble else self._interval
        self._schedule_check(delay)

    def _not_answered(self, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            if self._closed:
                return
            if self._unreachable_since is None:
                self._unreachable_since = now
            away = now - self._alive_at
        if away < OUTCOME_LOST_AFTER:
            self._schedule_check(_TROUBLE_INTERVAL)
            return
        errors = _compat.errors_of(exc)
        desc = (
            f"{self._device} gave no sign of life for {away:.0f} s "
            f"({_compat.describe_errors(errors)}); the outcome of {self._command_id} is lost"
        )
        self._accept(("lost", (_dev_error(OUTCOME_LOST_REASON, desc),)))

    def _query(self) -> tuple[Any, ...]:
        """Ask the device what became of the command.

        Returns:
            ``(status, result, has_result)``; status is None if the device has no way
            to tell (it answered a ping).
        """
        proxy = self._proxy
        if self._means is None:
            attributes = {str(name).lower() for name in proxy.get_attribute_list()}
            commands = {str(name).lower() for name in proxy.get_command_list()}
            self._means = (attributes, commands)
        attributes, commands = self._means
        command_id = self._command_id
        if "lrcfinished" in attributes:
            for text in proxy.read_attribute("lrcFinished").value or ():
                entry = _decode(str(text))
                if isinstance(entry, dict) and entry.get("uid") == command_id:
                    return entry.get("status"), entry.get("result"), "result" in entry
        if "checklongrunningcommandstatus" in commands:
            status: Any = str(proxy.command_inout("CheckLongRunningCommandStatus", command_id))
        elif _V1_STATUS.lower() in attributes:
            listed = proxy.read_attribute(_V1_STATUS).value or ()
            status = _lookup(listed, command_id) or TaskStatus.NOT_FOUND.name
        else:
            proxy.ping()
            return None, None, False
        if _V1_RESULT.lower() in attributes and _is_terminal_name(status):
            value: Sequence[Any] = proxy.read_attribute(_V1_RESULT).value or ()
            if len(value) >= 2 and value[0] == command_id:
                return status, _decode(str(value[1])), True
        return status, None, False

    # -- interpretation (lock held) ---------------------------------------------------

    def _emit(self, kwargs: dict[str, Any]) -> None:
        """Queue one callback call; the oldest is discarded (and counted) when full."""
        if len(self._outbox) >= LRC_QUEUE_SIZE:
            self._outbox.popleft()
            self._outbox_dropped += 1
        self._outbox.append(kwargs)
        if "result" in kwargs:
            self._result_seen = True

    def _claim_drain(self) -> bool:
        if self._draining or not self._outbox:
            return False
        self._draining = True
        return True

    def _interpret(self, item: _Item) -> None:
        kind, payload = item
        if kind == "error":
            self._emit({"error": payload})
            self._stream_trouble = True
            if self._unreachable_since is None:
                self._unreachable_since = time.monotonic()
            return
        if kind == "check":
            self._interpret_check(payload)
            return
        if kind == "lost":
            self._emit({"error": payload})
            self._closed = True
            return
        if kind == "v2":
            self._interpret_v2(payload)
        elif kind == "status":
            self._interpret_v1_status(payload)
        elif kind == "progress":
            self._interpret_v1_progress(payload)
        elif kind == "result":
            if len(payload) >= 2 and payload[0] == self._command_id:
                self._emit({"result": _decode(payload[1])})
                self._heard()

    def _heard(self) -> None:
        """Something about the command arrived: checks can wait again."""
        self._heard_at = time.monotonic()
        self._interval = _CHECK_INTERVAL_MIN

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
        self._heard()
        if "status" in kwargs:
            kwargs["status"] = self._status(kwargs["status"])
            if kwargs["status"] == self._checked_status:
                del kwargs["status"]  # a check told it already
                if not kwargs:
                    return
            else:
                self._note_rank(kwargs["status"])
        self._emit(kwargs)
        if "status" in kwargs:
            self._close_if_terminal(kwargs["status"])

    def _interpret_v1_status(self, payload: tuple[Any, ...]) -> None:
        found = _lookup(payload, self._command_id)
        if found is None or found == self._last_status:
            return
        self._heard()
        self._last_status = found
        status = self._status(found)
        self._note_rank(status)
        self._emit({"status": status})
        self._close_if_terminal(status)

    def _interpret_v1_progress(self, payload: tuple[Any, ...]) -> None:
        found = _lookup(payload, self._command_id)
        if found is None or found == self._last_progress:
            return
        self._heard()
        self._last_progress = found
        self._emit({"progress": _progress_value(found)})

    def _interpret_check(self, payload: tuple[Any, ...]) -> None:
        """Pass on what a status check found, if it is news."""
        raw, result, has_result = payload
        if raw is None:
            return
        try:
            status = parse_task_status(raw)
        except ValueError:
            return
        if status == TaskStatus.NOT_FOUND:
            self._emit({"status": status})
            self._closed = True
            return
        rank = _rank(status)
        if rank <= self._rank:
            return
        self._note_rank(status)
        self._heard()
        if rank < 3:
            self._last_status = status.name
            self._checked_status = status
            self._emit({"status": status})
            return
        if has_result and not self._result_seen:
            if self._version == 1:  # as the device would: the result first
                self._emit({"result": result})
                self._emit({"status": status})
            else:
                self._emit({"status": status, "result": result})
        else:
            self._emit({"status": status})
        self._closed = True

    def _note_rank(self, status: Any) -> None:
        self._rank = max(self._rank, _rank(status))

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
        for queue_, seen in self._queues.items():
            now = queue_.counters.dropped
            if now > seen:
                lost += now - seen
                self._queues[queue_] = now
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
        device = _device_key(self._proxy)
        failing = []
        for name in self._attributes:
            status = self._scheduler.stream_status(device, name, tango.EventType.CHANGE_EVENT)
            if status is not None and status.failing:
                failing.append(status)
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


def _check_command_args(command_args: Any) -> tuple[Any, ...]:
    if command_args is None:
        return ()
    if not isinstance(command_args, tuple):
        raise TypeError(
            f"command_args must be a tuple holding the command's argument, as in "
            f"ska-tango-base: write command_args=({command_args!r},) to pass "
            f"{command_args!r} to the command"
        )
    if len(command_args) > 1:
        raise TypeError(
            f"command_args {command_args!r} holds {len(command_args)} values, but a Tango "
            "command takes at most one argument: pass an array argument as one value, "
            f"e.g. command_args=({list(command_args)!r},)"
        )
    return command_args


def _check_scheduler(scheduler: Any, name: str) -> CallbackScheduler:
    if scheduler is None:
        return module_callback_scheduler()
    if not isinstance(scheduler, CallbackScheduler):
        raise TypeError(f"{name} must be a CallbackScheduler or None, got {scheduler!r}")
    return scheduler


def _as_proxy(device: Any) -> tango.DeviceProxy:
    """The proxy given, or a new one for a TRL (``DevFailed`` if it cannot be made)."""
    if isinstance(device, str):
        return tango.DeviceProxy(device)
    if isinstance(device, tango.DeviceProxy) or callable(getattr(device, "command_inout", None)):
        return device
    raise TypeError(f"proxy must be a tango.DeviceProxy or a device TRL, got {device!r}")


def _served_here(proxy: tango.DeviceProxy) -> bool:
    """Tell whether this process is the device's server (its monitor may be ours)."""
    try:
        util = tango.Util.instance(False)
    except Exception:  # noqa: BLE001 - not a device server
        return False
    try:
        util.get_device_by_name(_device_name(proxy))
    except Exception:  # noqa: BLE001 - not one of ours
        return False
    return True


def _warn_if_only_worker(
    scheduler: CallbackScheduler, logger: logging.Logger, device: str, command: str
) -> None:
    """Say why waiting here for the command's outcome would never end."""
    if scheduler.thread_count == 1 and threading.current_thread() in scheduler.threads:
        logger.warning(
            "invoke_lrc(%s on %s) was called from the only worker of %s: the command's "
            "updates are delivered by that worker, so they wait until this callback "
            "returns; do not wait for them here (use more threads, or another scheduler)",
            command,
            device,
            scheduler.name,
        )


def _is_terminal_name(status: Any) -> bool:
    try:
        return parse_task_status(status) in TERMINAL_STATUSES
    except ValueError:
        return False


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
