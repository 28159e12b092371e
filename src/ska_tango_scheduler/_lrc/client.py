"""The client's entry points: ``invoke_lrc`` and the pinning of a device's LRC streams.

The user documentation of these functions is the module docstring of
:mod:`ska_tango_scheduler.long_running_commands` and their own docstrings.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

import tango

from ..control_model import ACCEPTED_RESULT_CODES, ResultCode
from ..scheduler import CallbackScheduler, StreamNotFoundError
from . import LOGGER, limits
from .errors import (
    SUBSCRIPTION_TIMEOUT_REASON,
    CommandError,
    ResultCodeError,
    invoke_failed,
    lrc_error,
)
from .handle import LrcSubscriptions, LRCSubscriptionsProtocol
from .invocation import Invocation
from .ports import LrcScheduler, check_scheduler, queue_factories, warn_if_only_worker
from .protocol import (
    V1_ATTRIBUTES,
    V2_ATTRIBUTES,
    code_name,
    lrc_attribute_names,
    negotiate_lrc_protocol_version,
    parse_reply,
)
from .proxies import as_proxy, device_key, device_name, served_here

LrcCallback = Callable[..., None]
"""A callback taking ``status``, ``progress``, ``result``, ``error`` and ``**kwargs``."""

# What connect_lrc_interface pinned, per scheduler and device, for disconnect_lrc_interface.
_pinned: weakref.WeakKeyDictionary[LrcScheduler, dict[str, tuple[str, ...]]] = (
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
    sched = check_scheduler(scheduler, "scheduler")
    proxy = as_proxy(proxy)
    version = negotiate_lrc_protocol_version(proxy)
    attributes = lrc_attribute_names(version)
    here = served_here(proxy)
    futures = [
        sched.connect_event_stream(
            proxy,
            name,
            tango.EventType.CHANGE_EVENT,
            queue_factory=factory,
            on_calling_thread=here,
        )
        for name, factory in zip(attributes, queue_factories(sched, proxy, attributes), strict=True)
    ]
    with _pinned_lock:
        _pinned.setdefault(sched, {})[device_key(proxy)] = attributes
    _, pending = concurrent.futures.wait(futures, timeout=limits.REGISTRATION_TIMEOUT)
    if pending:
        raise tango.DevFailed(
            lrc_error(
                SUBSCRIPTION_TIMEOUT_REASON,
                f"The LRC event streams of {device_name(proxy)} did not connect within "
                f"{limits.REGISTRATION_TIMEOUT} s",
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
    sched = check_scheduler(scheduler, "scheduler")
    with _pinned_lock:
        attributes = _pinned.get(sched, {}).pop(device_key(proxy), None)
    candidates = attributes if attributes is not None else (*V2_ATTRIBUTES, *V1_ATTRIBUTES)
    released = 0
    for name in candidates:
        try:
            sched.disconnect_event_stream(proxy, name, tango.EventType.CHANGE_EVENT)
        except StreamNotFoundError:
            continue
        released += 1
    if released == 0:
        raise StreamNotFoundError(
            f"the LRC interface of {device_name(proxy)} is not connected in {sched.name}"
        )


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
    sched = check_scheduler(callback_scheduler, "callback_scheduler")
    log = logger if logger is not None else LOGGER
    try:
        device_proxy = as_proxy(proxy)
    except tango.DevFailed as exc:
        raise invoke_failed(exc, f"Cannot reach the device {proxy!r}") from exc
    device = device_name(device_proxy)
    warn_if_only_worker(sched, log, device, command)
    try:
        version = negotiate_lrc_protocol_version(device_proxy)
    except tango.DevFailed as exc:
        raise invoke_failed(exc, f"Cannot learn the LRC protocol version of {device}") from exc

    invocation = Invocation(lrc_callback, device_proxy, device, command, version, sched, log)
    invocation.register(here=served_here(device_proxy))
    try:
        reply = device_proxy.command_inout(command, *args)
    except tango.DevFailed as exc:
        invocation.abandon()
        raise invoke_failed(exc, f"Invoking {command} on {device} failed") from exc
    except BaseException:
        invocation.abandon()
        raise

    try:
        code, text = parse_reply(reply, command, device)
    except ResultCodeError:
        invocation.abandon()
        raise
    if code == ResultCode.REJECTED:
        invocation.abandon()
        raise CommandError(f"{device} rejected {command}: {text}")
    if code not in ACCEPTED_RESULT_CODES:
        invocation.abandon()
        raise ResultCodeError(
            f"{device} replied to {command} with unexpected result code {code_name(code)}: {text}"
        )
    handle = LrcSubscriptions(invocation)
    invocation.start(text)
    return handle


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
