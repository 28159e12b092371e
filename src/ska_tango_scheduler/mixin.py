"""``SchedulerMixin``: a :class:`CallbackScheduler` owned by a Tango device.

Use it as the first base of a device class, before ``tango.server.Device`` or
any device class derived from it (an ska-tango-base class, for instance)::

    class MyDevice(SchedulerMixin, tango.server.Device):
        def init_device(self) -> None:
            super().init_device()  # the scheduler exists from here on
            self.scheduler.register_event_callback(
                "sys/tg_test/1", "double_scalar", tango.EventType.CHANGE_EVENT, self._on_change
            )

What the mixin adds:

* ``self.scheduler``: a new :class:`CallbackScheduler` on every ``init_device``
  (device start-up and every ``Init`` command), shut down by ``delete_device``
  inside :meth:`SchedulerMixin.allow_internal_threads`, so callbacks that take
  the device monitor (``tango.AutoTangoMonitor(self)``) or push events cannot
  deadlock the shutdown. (Where the monitor cannot be released safely, see
  :data:`SAFE_MONITOR_RELEASE`, ``delete_device`` does not wait for them.)
* :meth:`SchedulerMixin.allow_internal_threads`: a context manager that lets the
  device's own threads take the device monitor while the calling thread holds
  it, and keeps client requests waiting until the block ends.
* Twelve read-only diagnostic attributes (``schedulerThreadCount`` ...
  ``schedulerDiagnostics``, see :data:`DIAGNOSTIC_ATTRIBUTES`) whose change
  events are pushed by a background thread at most once per
  :attr:`SchedulerMixin.scheduler_diagnostics_period` seconds, and only for
  values that changed, so Taranta (through TangoGQL) follows them without
  polling.

Configuration, per class (class attributes) or per device (device
properties, which win when set):

====================  ====================================  =================================
what                  class attribute                       device property
====================  ====================================  =================================
worker threads        ``scheduler_thread_count``            ``SchedulerThreadCount``
scheduler name        ``scheduler_name``                    ``SchedulerName``
slow callbacks (s)    ``scheduler_slow_callback_duration``  ``SchedulerSlowCallbackDuration``
====================  ====================================  =================================

Valid values: a thread count from 1 to 128, a name of printable characters
(not blank), a threshold from 0 to 3,600 s (0 turns the check off), and for
the class attributes ``scheduler_diagnostics_period`` 0.05-3,600 s and
``scheduler_shutdown_timeout`` None or 0-3,600 s (the reasons for these
bounds are in the reference page "Limits"). A bad value (a thread count of 0
or 20,000 or not a number, a blank name, a negative threshold) puts the
device in FAULT, with a status naming the
setting and its value, instead of stopping the server; ``Init`` then fails
with a ``DevFailed`` (reason :data:`CONFIGURATION_ERROR_REASON`) saying why.
Correct the property and send ``Init`` again.

The default name is the device name, so the worker threads are called
``<device name>.worker-<i>``. Override :meth:`SchedulerMixin.create_scheduler`
for anything else (queue size, back-off policy, logger).

How PyTango finds the mixin's attributes and properties: ``DeviceMeta``
collects Tango attributes, commands and properties from the class being
defined and from the ``__dict__`` of its *direct* bases only. A device class
that lists ``SchedulerMixin`` among its bases gets them; so does any class
derived from such a device class. A plain mixin derived from
``SchedulerMixin`` gets copies of them in its own ``__dict__`` when it is
defined (see :meth:`SchedulerMixin.__init_subclass__`), so listing that mixin
directly works too.

Only synchronous (default green mode) device servers are supported.

The package root exports :class:`SchedulerMixin`, :data:`DIAGNOSTIC_ATTRIBUTES`,
:data:`SAFE_MONITOR_RELEASE` and ``MonitorNotReleasableWarning``. Second tier,
importable from this module only: ``CONFIGURATION_ERROR_REASON``,
``MAX_REPORTED_QUEUES``, ``SCHEDULER_PROPERTIES``, ``SchedulerConfigurationError``,
``changed_values``, ``diagnostic_values`` and the validators ``check_thread_count``,
``check_scheduler_name``, ``check_slow_callback_duration``,
``check_diagnostics_period``, ``check_shutdown_timeout`` and ``check_property_texts``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Final, NoReturn, TypeVar, cast

import tango
from tango.server import BaseDevice, attribute, device_property

from . import _exit
from ._checks import (
    MAX_DIAGNOSTICS_PERIOD,
    MAX_SHUTDOWN_TIMEOUT,
    MAX_SLOW_CALLBACK_DURATION,
    MAX_THREAD_COUNT,
    MIN_DIAGNOSTICS_PERIOD,
    ArgumentRangeError,
    ArgumentTypeError,
    check_seconds,
    check_whole_number,
)
from ._threads import start_thread
from .diagnostics import LATENCY_WINDOW, SchedulerDiagnostics
from .scheduler import CallbackScheduler

__all__ = [
    "CONFIGURATION_ERROR_REASON",
    "DIAGNOSTIC_ATTRIBUTES",
    "MAX_REPORTED_QUEUES",
    "SAFE_MONITOR_RELEASE",
    "SCHEDULER_PROPERTIES",
    "MonitorNotReleasableWarning",
    "SchedulerConfigurationError",
    "SchedulerMixin",
    "changed_values",
    "check_diagnostics_period",
    "check_property_texts",
    "check_scheduler_name",
    "check_shutdown_timeout",
    "check_slow_callback_duration",
    "check_thread_count",
    "diagnostic_values",
]

_LOGGER = logging.getLogger(__name__)

#: Names of the diagnostic attributes, in the order they are documented.
DIAGNOSTIC_ATTRIBUTES: Final[tuple[str, ...]] = (
    "schedulerThreadCount",
    "schedulerQueueNames",
    "schedulerQueueDepths",
    "schedulerReceivedEvents",
    "schedulerDeliveredEvents",
    "schedulerDroppedEvents",
    "schedulerCallbackErrors",
    "schedulerMaxLatency",
    "schedulerQueueLatencies",
    "schedulerSlowCallbacks",
    "schedulerBackoffState",
    "schedulerDiagnostics",
)

#: The device properties the mixin reads, in the order they are documented.
SCHEDULER_PROPERTIES: Final[tuple[str, ...]] = (
    "SchedulerThreadCount",
    "SchedulerName",
    "SchedulerSlowCallbackDuration",
)

#: Reason of the ``DevFailed`` errors about a device's scheduler configuration
#: (``Init`` answers with it; the diagnostic attributes raise it while the
#: device has no scheduler).
CONFIGURATION_ERROR_REASON: Final = "SKA_SchedulerConfiguration"

#: At most this many queues are listed by ``schedulerQueueNames`` and
#: ``schedulerQueueDepths`` (the full list is in ``schedulerDiagnostics``).
MAX_REPORTED_QUEUES: Final = 10_000

# How long a snapshot taken for one read request may serve later reads when
# a subclass's read_attr_hardware does not call super() to invalidate it.
_SNAPSHOT_MAX_AGE = 0.5
# How long delete_device waits for the diagnostics pusher thread.
_PUSHER_JOIN_TIMEOUT = 10.0
# How long delete_device waits for callbacks when the monitor stays held: a
# callback waiting for it cannot finish before delete_device returns anyway.
_KEPT_MONITOR_SHUTDOWN_WAIT = 0.2


def _pytango_version() -> tuple[int, int]:
    major, minor = tango.__version_info__[:2]
    return int(major), int(minor)


#: Whether ``tango.AutoTangoAllowThreads`` can be used safely: PyTango < 10.1
#: releases the monitor in a loop that spins for ever, holding the GIL, when
#: another thread takes the monitor between two of its steps (seen with 9.5.1
#: and 10.0.4 within 20 releases while a thread waits for the monitor; not with
#: 10.1.6 and 10.3.1). The whole server then hangs.
SAFE_MONITOR_RELEASE: Final[bool] = _pytango_version() >= (10, 1)

_F = TypeVar("_F", bound=Callable[..., Any])


class MonitorNotReleasableWarning(RuntimeWarning):
    """The device monitor cannot be released safely here.

    Issued (once per device) by :meth:`SchedulerMixin.allow_internal_threads`
    under the ``BY_CLASS`` and ``BY_PROCESS`` serial models, and with PyTango
    older than 10.1 (see :data:`SAFE_MONITOR_RELEASE`): the monitor the
    calling thread holds stays held, so a thread that waits for it inside the
    block (a callback using ``tango.AutoTangoMonitor``, an event push) waits
    until the block's thread lets it go or Tango gives up (about 3.2 s).
    """


def _typed_attribute(**kwargs: Any) -> Callable[[_F], _F]:
    """Give ``tango.server.attribute`` a type, so decorated methods keep theirs."""
    return cast(Callable[[_F], _F], attribute(**kwargs))


def diagnostic_values(snapshot: SchedulerDiagnostics) -> dict[str, Any]:
    """Compute the values of the diagnostic attributes from a snapshot.

    Args:
        snapshot: A scheduler's diagnostics.

    Returns:
        Attribute name to value, for every name of
        :data:`DIAGNOSTIC_ATTRIBUTES`. Spectra are lists; the two JSON
        attributes are strings.
    """
    queues = snapshot.queues[:MAX_REPORTED_QUEUES]
    totals = snapshot.totals
    return {
        "schedulerThreadCount": snapshot.thread_count,
        "schedulerQueueNames": [q.name for q in queues],
        "schedulerQueueDepths": [q.depth for q in queues],
        "schedulerReceivedEvents": totals.received,
        "schedulerDeliveredEvents": totals.delivered,
        "schedulerDroppedEvents": totals.dropped,
        "schedulerCallbackErrors": totals.callback_errors,
        "schedulerMaxLatency": float(totals.max_latency_ms),
        "schedulerQueueLatencies": [float(q.latency.p99_ms) for q in queues],
        "schedulerSlowCallbacks": totals.slow_callbacks,
        "schedulerBackoffState": json.dumps(snapshot.backoff_dict(), sort_keys=True),
        "schedulerDiagnostics": json.dumps(snapshot.to_dict(), sort_keys=True),
    }


def _comparable(name: str, value: Any) -> Any:
    """Return what decides whether an attribute value changed.

    The snapshot's own timestamp is left out of ``schedulerDiagnostics``:
    a new snapshot of an idle scheduler is not a change.
    """
    if name == "schedulerDiagnostics":
        data = json.loads(value)
        data.pop("timestamp", None)
        return data
    return value


def changed_values(previous: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """Select the attribute values that differ from those pushed last.

    Args:
        previous: Values pushed last (empty before the first push).
        current: Values just computed.

    Returns:
        The entries of ``current`` worth a change event.
    """
    return {
        name: value
        for name, value in current.items()
        if name not in previous or _comparable(name, previous[name]) != _comparable(name, value)
    }


class SchedulerConfigurationError(ValueError):
    """A scheduler setting of a device (a device property or a class attribute) is not valid.

    The message names the setting and its value, and says what is expected.
    """


def _bad(where: str, value: object, expected: str) -> SchedulerConfigurationError:
    return SchedulerConfigurationError(f"{where} = {value!r} is not valid: {expected}")


def check_thread_count(value: object, where: str = "SchedulerThreadCount") -> int:
    """Check a number of worker threads (the same rule as ``CallbackScheduler``'s).

    Args:
        value: An ``int``, or the text of a device property.
        where: The name of the setting, for the message.

    Returns:
        The number.

    Raises:
        SchedulerConfigurationError: It is not a whole number from 1 to
            :data:`~ska_tango_scheduler.MAX_THREAD_COUNT` (128).
    """
    try:
        return check_whole_number(where, value, 1, MAX_THREAD_COUNT, from_text=True)
    except (ArgumentTypeError, ArgumentRangeError) as exc:
        raise _bad(where, value, f"give {exc.expected} (worker threads)") from None


def check_scheduler_name(value: object, where: str = "SchedulerName") -> str:
    """Check a scheduler name.

    Args:
        value: The name.
        where: The name of the setting, for the message.

    Returns:
        The name.

    Raises:
        SchedulerConfigurationError: It is not a string, is blank, or holds
            characters that cannot be printed (a line break, for instance).
    """
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise _bad(where, value, "give a name of printable characters, not blank")
    return value


def check_slow_callback_duration(
    value: object, where: str = "SchedulerSlowCallbackDuration"
) -> float | None:
    """Check a slow-callback threshold (the same rule as ``CallbackScheduler``'s, plus 0).

    Args:
        value: Seconds (a number, or the text of a device property); 0 or
            None turns the check off.
        where: The name of the setting, for the message.

    Returns:
        The seconds, or None when the check is off.

    Raises:
        SchedulerConfigurationError: It is not a finite number of seconds
            from 0 to :data:`~ska_tango_scheduler.MAX_SLOW_CALLBACK_DURATION`
            (3,600).
    """
    if value is None:
        return None
    try:
        seconds = check_seconds(
            where, value, MAX_SLOW_CALLBACK_DURATION, allow_zero=True, from_text=True
        )
    except (ArgumentTypeError, ArgumentRangeError) as exc:
        expected = f"give {exc.expected} (0 turns the slow-callback check off)"
        raise _bad(where, value, expected) from None
    return seconds if seconds > 0 else None


def check_diagnostics_period(value: object, where: str = "scheduler_diagnostics_period") -> float:
    """Check the period of the diagnostics pusher.

    Args:
        value: Seconds.
        where: The name of the setting, for the message.

    Returns:
        The seconds.

    Raises:
        SchedulerConfigurationError: It is not a number of seconds from 0.05
            to 3,600.
    """
    expected = f"give seconds from {MIN_DIAGNOSTICS_PERIOD:g} to {MAX_DIAGNOSTICS_PERIOD:g}"
    try:
        seconds = check_seconds(where, value, MAX_DIAGNOSTICS_PERIOD, allow_zero=False)
    except (ArgumentTypeError, ArgumentRangeError):
        raise _bad(where, value, expected) from None
    if seconds < MIN_DIAGNOSTICS_PERIOD:
        raise _bad(where, value, expected)
    return seconds


def check_shutdown_timeout(
    value: object, where: str = "scheduler_shutdown_timeout"
) -> float | None:
    """Check how long ``delete_device`` may wait for running callbacks.

    Args:
        value: Seconds, or None to wait as long as they take.
        where: The name of the setting, for the message.

    Returns:
        The seconds, or None.

    Raises:
        SchedulerConfigurationError: It is neither None nor a number of
            seconds from 0 to 3,600.
    """
    if value is None:
        return None
    try:
        return check_seconds(where, value, MAX_SHUTDOWN_TIMEOUT, allow_zero=True)
    except (ArgumentTypeError, ArgumentRangeError) as exc:
        raise _bad(where, value, f"give None or {exc.expected}") from None


_PROPERTY_CHECKS: Final[dict[str, Callable[[object, str], object]]] = {
    "SchedulerThreadCount": check_thread_count,
    "SchedulerName": check_scheduler_name,
    "SchedulerSlowCallbackDuration": check_slow_callback_duration,
}


def check_property_texts(texts: Mapping[str, Sequence[str]]) -> None:
    """Check the scheduler properties as the database holds them (lists of strings).

    Args:
        texts: Property name to its values; properties that are not set are
            missing or have no values.

    Raises:
        SchedulerConfigurationError: A property has several values or a bad one.
    """
    for name in SCHEDULER_PROPERTIES:
        values = list(texts.get(name) or [])
        if not values:
            continue
        if len(values) > 1:
            raise _bad(name, values, "give one value")
        if name == "SchedulerName" and values[0] == "":
            continue
        _PROPERTY_CHECKS[name](values[0], name)


class _InternalThreadsGate:
    """Book-keeping of open :meth:`SchedulerMixin.allow_internal_threads` blocks.

    Knows which threads have a block open and lets other threads wait until
    none is. Tango-free: the caller decides what to release while waiting.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._holders: dict[int, int] = {}
        self.stalled = 0

    def open(self) -> None:
        """Record a block opened by the calling thread (blocks nest)."""
        me = threading.get_ident()
        with self._cond:
            self._holders[me] = self._holders.get(me, 0) + 1

    def close(self) -> None:
        """Record the end of the calling thread's innermost block."""
        me = threading.get_ident()
        with self._cond:
            count = self._holders.get(me, 0) - 1
            if count > 0:
                self._holders[me] = count
            else:
                self._holders.pop(me, None)
            if not self._holders:
                self._cond.notify_all()

    def _blocks(self, ident: int) -> bool:
        return any(holder != ident for holder in self._holders)

    def blocks_caller(self) -> bool:
        """Tell whether another thread has a block open."""
        me = threading.get_ident()
        with self._cond:
            return self._blocks(me)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no other thread has a block open.

        Args:
            timeout: Seconds to wait at most; None waits as long as it takes.

        Returns:
            True if no other thread has a block open on return.
        """
        me = threading.get_ident()
        with self._cond:
            self.stalled += 1
            try:
                return self._cond.wait_for(lambda: not self._blocks(me), timeout)
            finally:
                self.stalled -= 1

    @property
    def open_blocks(self) -> int:
        """Number of blocks open, over all threads."""
        with self._cond:
            return sum(self._holders.values())


_GATE_LOCK = threading.Lock()


class _DiagnosticsPusher:
    """Background omni thread that pushes changed diagnostic values as change events.

    Started by the package's one thread starter; asked to stop by ``delete_device``
    or, at interpreter exit, by the exit sequence (step 1), which joins it in step 3.
    """

    def __init__(
        self,
        device: SchedulerMixin,
        scheduler: CallbackScheduler,
        period: float,
        logger: logging.Logger,
    ) -> None:
        self._device = device
        self._scheduler = scheduler
        self._period = period
        self._logger = logger
        self._stop = threading.Event()
        self._last: dict[str, Any] = {}
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread."""
        self.thread = start_thread(
            f"{self._scheduler.name}.diagnostics",
            self._run,
            daemon=True,
            context=tango.EnsureOmniThread,
        )
        _live_pushers.add(self)

    def request_stop(self) -> None:
        """Ask the thread to end; it pushes nothing more once this returns."""
        self._stop.set()

    def join(self, timeout: float | None) -> bool:
        """Wait for the thread to end.

        Args:
            timeout: Seconds to wait at most.

        Returns:
            True if the thread has ended.
        """
        thread = self.thread
        if thread is None:
            return True
        if thread is not threading.current_thread():
            thread.join(timeout)
        return not thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self._push_changes()
            except Exception:  # noqa: BLE001 - the thread must keep going
                self._logger.warning("Pushing scheduler diagnostics failed", exc_info=True)

    def _push_changes(self) -> None:
        if self._scheduler.is_shutdown:
            return
        values = diagnostic_values(self._scheduler.diagnostics())
        changed = changed_values(self._last, values)
        if not changed:
            return
        device = cast(tango.server.Device, self._device)
        try:
            with tango.AutoTangoMonitor(device):
                # Checked under the monitor: delete_device asks for the stop
                # while holding it, so nothing is pushed once it has.
                if self._stop.is_set():
                    return
                for name, value in changed.items():
                    device.push_change_event(name, value)
                    self._last[name] = value
        except tango.DevFailed as exc:
            # Typically the device stayed busy for longer than Tango waits for
            # its monitor: what was not pushed is pushed next period.
            self._logger.debug("Diagnostics not pushed this time: %s", _describe(exc))


_live_pushers: weakref.WeakSet[_DiagnosticsPusher] = weakref.WeakSet()


def _stop_pushers() -> None:
    for pusher in list(_live_pushers):
        pusher.request_stop()


def _join_pushers() -> None:
    for pusher in list(_live_pushers):
        pusher.join(_exit.THREAD_WAIT)


_exit.at_exit(_exit.REFUSE_NEW_WORK, _stop_pushers)
_exit.at_exit(_exit.CLOSE_SERVICES, _join_pushers)


class SchedulerMixin:
    """Give a Tango device its own :class:`CallbackScheduler` and diagnostic attributes.

    List it before ``tango.server.Device`` (or any class derived from it) in
    the bases; a :class:`TypeError` is raised at class definition otherwise.
    Every method that PyTango calls (``init_device``, ``delete_device``,
    ``always_executed_hook``, ``read_attr_hardware``) calls ``super()``, so
    the mixin composes with other device classes, and subclasses overriding
    them must call ``super()`` too.

    Attributes:
        scheduler_thread_count: Default number of worker threads, 1 to 128
            (the device property ``SchedulerThreadCount`` wins when set).
        scheduler_name: Default scheduler name; None means the device name
            (the device property ``SchedulerName`` wins when set).
        scheduler_slow_callback_duration: Default slow-callback threshold in
            seconds: a callback that runs longer is counted and logged (the
            device property ``SchedulerSlowCallbackDuration`` wins when set;
            0 or None turns the check off; at most 3,600).
        scheduler_diagnostics_period: Seconds between two checks of the
            diagnostic values, 0.05 to 3,600; change events are pushed at
            most once per period per attribute, and only for values that
            changed.
        scheduler_shutdown_timeout: Seconds ``delete_device`` waits for
            running callbacks when shutting the scheduler down, 0 to 3,600;
            None waits as long as they take. When the monitor cannot be released (see
            :attr:`monitor_released_by_allow_internal_threads`) it waits
            0.2 s at most: callbacks waiting for the monitor finish once
            ``delete_device`` (or ``Init``) has returned, and then end.
    """

    scheduler_thread_count: ClassVar[int] = 1
    scheduler_name: ClassVar[str | None] = None
    scheduler_slow_callback_duration: ClassVar[float | None] = 0.1
    scheduler_diagnostics_period: ClassVar[float] = 1.0
    scheduler_shutdown_timeout: ClassVar[float | None] = 30.0

    _scheduler_gate_obj: _InternalThreadsGate
    _scheduler_pusher: _DiagnosticsPusher | None
    _scheduler_snapshot: tuple[float, dict[str, Any]] | None

    # -- device properties -----------------------------------------------------------

    SchedulerThreadCount = device_property(  # noqa: N815 - Tango property names are CamelCase
        dtype=tango.DevLong,
        doc="Number of worker threads of the device's callback scheduler, 1 to 128 "
        "(default: the class's scheduler_thread_count, normally 1).",
    )
    SchedulerName = device_property(  # noqa: N815
        dtype=tango.DevString,
        doc="Name of the device's callback scheduler and prefix of its thread names "
        "(default: the device name).",
    )
    SchedulerSlowCallbackDuration = device_property(  # noqa: N815
        dtype=tango.DevDouble,
        doc="Seconds after which a callback counts as slow: it is counted "
        "(schedulerSlowCallbacks) and logged at WARNING; at most 3600. 0 turns the check off "
        "(default: the class's scheduler_slow_callback_duration, normally 0.1).",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Create the device; a bad scheduler configuration leaves it in FAULT.

        At start-up, the ``DevFailed`` that :meth:`init_device` raises for a
        bad configuration is caught here, so the device is exported in FAULT
        (its status says why) and the server's other devices start as usual.

        Args:
            *args: Passed on to the device class.
            **kwargs: Passed on to the device class.
        """
        try:
            super().__init__(*args, **kwargs)
        except tango.DevFailed as exc:
            fault = self.__dict__.get("_scheduler_fault")
            if fault is None or not _has_reason(exc, CONFIGURATION_ERROR_REASON):
                raise

    @property
    def scheduler(self) -> CallbackScheduler:
        """The device's scheduler, created in ``init_device`` and shut down in ``delete_device``.

        It exists before the next class's ``init_device`` runs, so hooks
        called from there can use it.

        Raises:
            RuntimeError: The device has no scheduler: its configuration is
                bad (the message says why) or ``init_device`` has not run.
        """
        scheduler = self.__dict__.get("_scheduler_obj")
        if scheduler is None:
            fault = self.__dict__.get("_scheduler_fault")
            raise RuntimeError(fault or f"{self._device_name()} has no scheduler yet")
        return cast(CallbackScheduler, scheduler)

    @scheduler.setter
    def scheduler(self, value: CallbackScheduler) -> None:
        self.__dict__["_scheduler_obj"] = value

    # -- class checks ----------------------------------------------------------------

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check where the mixin sits in a device class, and help plain sub-mixins.

        For a device class, the mixin must come before PyTango's ``Device`` in
        the method resolution order, or its ``init_device`` would never run.
        For a plain class derived from the mixin (a mixin of mixins), the
        mixin's Tango attributes and properties are copied into the new class's
        ``__dict__``, where PyTango's ``DeviceMeta`` finds them when that class
        is listed directly in a device class's bases.

        Args:
            **kwargs: Passed on to ``super().__init_subclass__``.

        Raises:
            TypeError: If a device class lists a Device class before the mixin.
        """
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        if issubclass(cls, BaseDevice):
            if mro.index(SchedulerMixin) > mro.index(BaseDevice):
                raise TypeError(
                    f"{cls.__name__}: list SchedulerMixin before tango.server.Device (and any "
                    "class derived from it) in the bases, e.g. "
                    f"class {cls.__name__}(SchedulerMixin, Device)"
                )
            return
        for klass in mro[1:]:
            for key, value in vars(klass).items():
                if key not in cls.__dict__ and _is_tango_object(value):
                    setattr(cls, key, value)

    # -- life cycle ------------------------------------------------------------------

    def init_device(self) -> None:
        """Create the scheduler, initialise the rest of the device, start the pusher.

        The scheduler exists before the next class's ``init_device`` runs.

        Registering callbacks from ``init_device`` does not wait for the
        devices involved to be reachable, including devices of the same
        server, which are not exported yet at start-up: the scheduler keeps
        retrying and connects once they are. With PyTango >= 10.1 the
        registration returns at once. Before 10.1 it waits for one synchronous
        subscription attempt, which fails at once for a device that is not
        exported; subscribing to the device's *own* attribute during an
        ``Init`` command waits about 3.2 s there, because Tango's first read
        needs the device monitor that ``Init`` holds.
        """
        self._scheduler_gate()
        self._scheduler_pusher = None
        self._scheduler_snapshot = None
        self.__dict__["_scheduler_obj"] = None
        device = self._as_device()
        try:
            # Load the properties now (the base class loads them again) so that
            # the scheduler properties apply to the new scheduler.
            self._load_scheduler_properties()
            self._check_class_settings()
            scheduler = self.create_scheduler()
        except Exception as exc:  # noqa: BLE001 - any failure here is reported the same way
            self._fail_configuration(exc)
        if self.__dict__.pop("_scheduler_fault", None) is not None:
            # Fixed: back to the state a new device starts in.
            initial = getattr(self, "DEVICE_CLASS_INITIAL_STATE", None) or tango.DevState.UNKNOWN
            device.set_state(initial)
            device.set_status(
                getattr(self, "DEVICE_CLASS_INITIAL_STATUS", None)
                or f"The device is in {initial} state."
            )
        self.scheduler = scheduler
        try:
            super().init_device()  # type: ignore[misc]
            for name in DIAGNOSTIC_ATTRIBUTES:
                device.set_change_event(name, True, False)
            pusher = _DiagnosticsPusher(
                self, self.scheduler, self.scheduler_diagnostics_period, _LOGGER
            )
            pusher.start()
            self._scheduler_pusher = pusher
        except BaseException:
            self._shut_scheduler_down(self.scheduler)
            raise

    def delete_device(self) -> None:
        """Stop the diagnostics pusher, clean up the device, shut the scheduler down.

        The pusher is stopped and the scheduler shut down inside
        :meth:`allow_internal_threads`, so threads waiting for the device
        monitor can finish while client requests wait. The next class's
        ``delete_device`` runs in between, while the scheduler still works.
        """
        pusher = getattr(self, "_scheduler_pusher", None)
        self._scheduler_pusher = None
        if pusher is not None:
            pusher.request_stop()
            if self.monitor_released_by_allow_internal_threads:
                with self.allow_internal_threads():
                    if not pusher.join(_PUSHER_JOIN_TIMEOUT):
                        _LOGGER.warning("%s: diagnostics thread did not stop", self._device_name())
            # Otherwise it ends by itself once it gets the monitor: it checks
            # the stop request under the monitor and pushes nothing more.
        try:
            super().delete_device()  # type: ignore[misc]
        finally:
            scheduler = self.__dict__.get("_scheduler_obj")
            self.__dict__["_scheduler_obj"] = None
            if scheduler is not None and not scheduler.is_shutdown:
                self._shut_scheduler_down(scheduler)
        self._check_configuration_before_init()

    def _check_configuration_before_init(self) -> None:
        """Fail an ``Init`` command with a bad scheduler configuration, clearly.

        ``Init`` runs ``delete_device`` and then ``init_device``. PyTango 10
        does not pass a ``DevFailed`` raised by ``init_device`` on to the
        client (it gets ``UNKNOWN CORBA system exception``); one raised by
        ``delete_device`` reaches it, and ends the command before
        ``init_device`` runs. So the new configuration is checked here, once
        the old scheduler is gone, unless the server is shutting down or
        restarting the device (its constructor checks it then).

        Raises:
            tango.DevFailed: The configuration is bad; the device is in FAULT.
        """
        try:
            util = tango.Util.instance(False)
            if util.is_svr_shutting_down() or util.is_device_restarting(self._device_name()):
                return
        except Exception:  # noqa: BLE001 - not in a device server
            return
        try:
            self._load_scheduler_properties()
            self._check_class_settings()
            self.scheduler_default_thread_count()
            self.scheduler_default_name()
            self.scheduler_default_slow_callback_duration()
        except Exception as exc:  # noqa: BLE001 - any failure is reported the same way
            self._fail_configuration(exc)

    def _check_class_settings(self) -> None:
        """Check the class attributes that no device property overrides.

        Raises:
            SchedulerConfigurationError: One of them is not valid.
        """
        check_diagnostics_period(self.scheduler_diagnostics_period)
        check_shutdown_timeout(self.scheduler_shutdown_timeout)

    def _load_scheduler_properties(self) -> None:
        """Load the device properties; check the scheduler's as the database holds them.

        Raises:
            SchedulerConfigurationError: A scheduler property is not valid.
            Exception: The properties could not be loaded (what PyTango raises).
        """
        texts = self._scheduler_property_texts()
        if texts is not None:
            check_property_texts(texts)
        self._as_device().get_device_properties()

    def _scheduler_property_texts(self) -> dict[str, list[str]] | None:
        """Return the scheduler properties as the database holds them; None without one."""
        try:
            util = tango.Util.instance(False)
            if not getattr(util, "_UseDb", True):
                return None
            database = util.get_database()
            found = database.get_device_property(self._device_name(), list(SCHEDULER_PROPERTIES))
        except Exception:  # noqa: BLE001 - no database: the typed values are checked later
            return None
        return {name: [str(v) for v in found.get(name, [])] for name in SCHEDULER_PROPERTIES}

    def _fail_configuration(self, exc: Exception) -> NoReturn:
        """Put the device in FAULT because its scheduler cannot be made, and raise.

        Raises:
            tango.DevFailed: Always, with :data:`CONFIGURATION_ERROR_REASON`.
        """
        if isinstance(exc, SchedulerConfigurationError):
            why = str(exc)
        elif isinstance(exc, tango.DevFailed):
            why = f"cannot create the scheduler: {_describe(exc)}"
        else:
            why = f"cannot create the scheduler: {type(exc).__name__}: {exc}"
        message = (
            f"No callback scheduler: {why}. Correct the device property (or class attribute) "
            "and send Init."
        )
        self.__dict__["_scheduler_fault"] = message
        device = self._as_device()
        device.set_state(tango.DevState.FAULT)
        device.set_status(message)
        _LOGGER.error("%s: %s", self._device_name(), message)
        _raise_configuration_error(message, f"{type(self).__name__}.init_device")

    def _shut_scheduler_down(self, scheduler: CallbackScheduler) -> None:
        timeout = self.scheduler_shutdown_timeout
        if not self.monitor_released_by_allow_internal_threads:
            timeout = (
                _KEPT_MONITOR_SHUTDOWN_WAIT
                if timeout is None
                else min(timeout, _KEPT_MONITOR_SHUTDOWN_WAIT)
            )
        with self.allow_internal_threads():
            scheduler.shutdown(timeout)

    def create_scheduler(self) -> CallbackScheduler:
        """Make the device's scheduler; called by every ``init_device``.

        Override it to choose queue sizes, a back-off policy or a logger.
        Device properties are loaded when it is called.

        Returns:
            A new scheduler named :meth:`scheduler_default_name` with
            :meth:`scheduler_default_thread_count` worker threads and
            :meth:`scheduler_default_slow_callback_duration` as its
            slow-callback threshold.
        """
        logger = getattr(self, "logger", None)
        # Never block init_device on a synchronous subscription (PyTango < 10.1):
        # one to this device's own attributes needs the monitor Init holds.
        return CallbackScheduler(
            thread_count=self.scheduler_default_thread_count(),
            name=self.scheduler_default_name(),
            logger=logger if isinstance(logger, logging.Logger) else None,
            wait_for_subscription=False,
            slow_callback_duration=self.scheduler_default_slow_callback_duration(),
        )

    def scheduler_default_thread_count(self) -> int:
        """Return the thread count to use: the device property, else the class attribute.

        Returns:
            The number of worker threads.

        Raises:
            SchedulerConfigurationError: The value is not a number from 1 to 128.
        """
        configured = self.SchedulerThreadCount
        if configured is not None:
            return check_thread_count(configured, "SchedulerThreadCount")
        return check_thread_count(self.scheduler_thread_count, "scheduler_thread_count")

    def scheduler_default_name(self) -> str:
        """Return the scheduler name to use: the property, the class attribute, the device name.

        Returns:
            The scheduler name.

        Raises:
            SchedulerConfigurationError: The name is blank or not printable.
        """
        configured = self.SchedulerName
        if configured:
            return check_scheduler_name(configured, "SchedulerName")
        if self.scheduler_name is not None:
            return check_scheduler_name(self.scheduler_name, "scheduler_name")
        return self._device_name()

    def scheduler_default_slow_callback_duration(self) -> float | None:
        """Return the slow-callback threshold: the device property, else the class attribute.

        Returns:
            Seconds, or None when the check is off (a value of 0).

        Raises:
            SchedulerConfigurationError: The value is negative, not finite or
                above 3,600.
        """
        configured = self.SchedulerSlowCallbackDuration
        if configured is not None:
            return check_slow_callback_duration(configured, "SchedulerSlowCallbackDuration")
        return check_slow_callback_duration(
            self.scheduler_slow_callback_duration, "scheduler_slow_callback_duration"
        )

    # -- internal threads --------------------------------------------------------------

    @contextlib.contextmanager
    def allow_internal_threads(self) -> Iterator[None]:
        """Let the device's own threads take the device monitor; hold client requests.

        Inside the block, the device monitor held by the calling thread is
        released (``tango.AutoTangoAllowThreads``), so threads of the device
        (scheduler callbacks, pushers, anything that takes the monitor with
        ``tango.AutoTangoMonitor`` or pushes events) can run and be joined.
        Client requests from other processes (commands, attribute reads and
        writes) and Tango's attribute polling that arrive meanwhile wait in
        ``always_executed_hook``, without the monitor, until no block is open
        any more: they never see the device half torn down. The monitor is
        taken back before the block ends. Blocks nest; the thread that opened
        a block is never held.

        Requests made by this very process (a callback reading its own
        device through a ``DeviceProxy``, Tango's own reads when it
        subscribes to one of the device's attributes, another device of the
        server) are not held: the block may be waiting for the very thread
        that made them. Telling them apart needs PyTango >= 10.1; older
        versions hold them too.

        A held request then waits for the monitor like any other: if the
        thread that ran the block keeps it for longer than Tango waits
        (about 3.2 s), the request fails with ``API_CommandTimedOut``, as it
        would have without the block.

        Subclasses that override ``always_executed_hook`` must call
        ``super().always_executed_hook()``, or requests are not held.

        Under the ``BY_CLASS`` and ``BY_PROCESS`` serial models the monitor
        cannot be released this way (PyTango 9.5 even hangs trying), and with
        PyTango < 10.1 releasing it can hang the server (see
        :data:`SAFE_MONITOR_RELEASE`): then the monitor stays held, a
        :class:`MonitorNotReleasableWarning` is issued and logged (once per
        device), and the block only holds client requests. Under ``NO_SYNC``
        no monitor is held and there is nothing to release.
        :attr:`monitor_released_by_allow_internal_threads` tells which case
        applies.

        Yields:
            Nothing.
        """
        gate = self._scheduler_gate()
        model = _serial_model()
        gate.open()
        try:
            if _releases_monitor(model):
                with tango.AutoTangoAllowThreads(self._as_device()):
                    yield
            else:
                if model != tango.SerialModel.NO_SYNC:
                    self._warn_monitor_kept(model)
                yield
        finally:
            gate.close()

    @property
    def internal_threads_allowed(self) -> bool:
        """True while an :meth:`allow_internal_threads` block is open on any thread."""
        return self._scheduler_gate().open_blocks > 0

    @property
    def monitor_released_by_allow_internal_threads(self) -> bool:
        """Whether threads waiting for the device monitor can get it inside a block.

        True under the ``BY_DEVICE`` serial model with PyTango >= 10.1 (the
        monitor is released) and under ``NO_SYNC`` (no monitor is held).
        """
        model = _serial_model()
        return model == tango.SerialModel.NO_SYNC or _releases_monitor(model)

    def always_executed_hook(self) -> None:
        """Hold a client request while an :meth:`allow_internal_threads` block is open.

        While it waits the request does not hold the device monitor. Calls
        ``super().always_executed_hook()`` afterwards.
        """
        gate = self._scheduler_gate()
        if gate.blocks_caller() and not _from_this_process(self._as_device()):
            release = _releases_monitor(_serial_model())
            # Checked again once the monitor is ours: a thread that ended one
            # block may open the next (delete_device does) before this
            # request got the monitor back.
            while gate.blocks_caller():
                if release:
                    with tango.AutoTangoAllowThreads(self._as_device()):
                        gate.wait()
                else:
                    gate.wait()
        super().always_executed_hook()  # type: ignore[misc]

    def _warn_monitor_kept(self, model: tango.SerialModel) -> None:
        if self.__dict__.get("_scheduler_warned_monitor_kept"):
            return
        self.__dict__["_scheduler_warned_monitor_kept"] = True
        if model == tango.SerialModel.BY_DEVICE:
            why = (
                f"PyTango {tango.__version__}'s AutoTangoAllowThreads can hang the whole "
                "server when another thread waits for the monitor; use PyTango >= 10.1"
            )
        else:
            why = f"serial model {model.name} does not allow it; use BY_DEVICE"
        message = (
            f"{self._device_name()}: allow_internal_threads() keeps the device monitor held "
            f"({why}). Threads that wait for it (callbacks using tango.AutoTangoMonitor, event "
            "pushes) get it only after the block's thread lets it go, or time out after "
            "about 3.2 s; delete_device does not wait for them."
        )
        _LOGGER.warning(message)
        warnings.warn(message, MonitorNotReleasableWarning, stacklevel=4)

    def _scheduler_gate(self) -> _InternalThreadsGate:
        gate = self.__dict__.get("_scheduler_gate_obj")
        if gate is None:
            with _GATE_LOCK:
                gate = self.__dict__.setdefault("_scheduler_gate_obj", _InternalThreadsGate())
        return cast(_InternalThreadsGate, gate)

    # -- diagnostic attributes -----------------------------------------------------------

    def read_attr_hardware(self, attr_list: Sequence[int]) -> None:
        """Start a new read request: its diagnostic attributes share one snapshot.

        Args:
            attr_list: Indexes of the attributes being read.
        """
        self._scheduler_snapshot = None
        super().read_attr_hardware(attr_list)  # type: ignore[misc]

    def _read_diagnostics(self) -> dict[str, Any]:
        fault = self.__dict__.get("_scheduler_fault")
        if fault is not None or self.__dict__.get("_scheduler_obj") is None:
            _raise_configuration_error(
                fault or "The device has no callback scheduler (init_device has not run).",
                f"{type(self).__name__}.read_attribute",
            )
        now = time.monotonic()
        cached = getattr(self, "_scheduler_snapshot", None)
        if cached is None or now - cached[0] > _SNAPSHOT_MAX_AGE:
            cached = (now, diagnostic_values(self.scheduler.diagnostics()))
            self._scheduler_snapshot = cached
        return cached[1]

    @_typed_attribute(
        dtype=tango.DevLong,
        access=tango.AttrWriteType.READ,
        label="Scheduler threads",
        doc="Number of worker threads of the device's callback scheduler.",
    )
    def schedulerThreadCount(self) -> int:  # noqa: N802 - Tango attribute names are camelCase
        """Return the scheduler's number of worker threads."""
        return cast(int, self._read_diagnostics()["schedulerThreadCount"])

    @_typed_attribute(
        dtype=(tango.DevString,),
        max_dim_x=MAX_REPORTED_QUEUES,
        access=tango.AttrWriteType.READ,
        label="Scheduler queues",
        doc="Names of the scheduler's event queues, in the order of schedulerQueueDepths.",
    )
    def schedulerQueueNames(self) -> list[str]:  # noqa: N802
        """Return the names of the scheduler's queues."""
        return cast(list[str], self._read_diagnostics()["schedulerQueueNames"])

    @_typed_attribute(
        dtype=(tango.DevLong,),
        max_dim_x=MAX_REPORTED_QUEUES,
        access=tango.AttrWriteType.READ,
        label="Scheduler queue depths",
        doc="Events waiting in each queue, in the order of schedulerQueueNames.",
    )
    def schedulerQueueDepths(self) -> list[int]:  # noqa: N802
        """Return the number of events waiting in each queue."""
        return cast(list[int], self._read_diagnostics()["schedulerQueueDepths"])

    @_typed_attribute(
        dtype=tango.DevLong64,
        access=tango.AttrWriteType.READ,
        label="Events received",
        doc="Events the scheduler received since it was created (at the last Init).",
    )
    def schedulerReceivedEvents(self) -> int:  # noqa: N802
        """Return the number of events received."""
        return cast(int, self._read_diagnostics()["schedulerReceivedEvents"])

    @_typed_attribute(
        dtype=tango.DevLong64,
        access=tango.AttrWriteType.READ,
        label="Events delivered",
        doc="Events taken off the queues for delivery to callbacks. "
        "received = delivered + dropped + events still queued.",
    )
    def schedulerDeliveredEvents(self) -> int:  # noqa: N802
        """Return the number of events delivered."""
        return cast(int, self._read_diagnostics()["schedulerDeliveredEvents"])

    @_typed_attribute(
        dtype=tango.DevLong64,
        access=tango.AttrWriteType.READ,
        label="Events dropped",
        doc="Events discarded (oldest first) by full queues.",
    )
    def schedulerDroppedEvents(self) -> int:  # noqa: N802
        """Return the number of events dropped by full queues."""
        return cast(int, self._read_diagnostics()["schedulerDroppedEvents"])

    @_typed_attribute(
        dtype=tango.DevLong64,
        access=tango.AttrWriteType.READ,
        label="Callback errors",
        doc="Exceptions raised by callbacks (caught, counted and logged).",
    )
    def schedulerCallbackErrors(self) -> int:  # noqa: N802
        """Return the number of exceptions raised by callbacks."""
        return cast(int, self._read_diagnostics()["schedulerCallbackErrors"])

    @_typed_attribute(
        dtype=tango.DevDouble,
        access=tango.AttrWriteType.READ,
        unit="ms",
        label="Worst queue wait",
        doc="Longest time an event waited in any queue before its callbacks started, over "
        f"the last {LATENCY_WINDOW:g} s (milliseconds; 0 when nothing was delivered then).",
    )
    def schedulerMaxLatency(self) -> float:  # noqa: N802
        """Return the worst queue wait over the window, in milliseconds."""
        return cast(float, self._read_diagnostics()["schedulerMaxLatency"])

    @_typed_attribute(
        dtype=(tango.DevDouble,),
        max_dim_x=MAX_REPORTED_QUEUES,
        access=tango.AttrWriteType.READ,
        unit="ms",
        label="Queue waits (p99)",
        doc=f"99th percentile of each queue's waits over the last {LATENCY_WINDOW:g} s "
        "(milliseconds), in the order of schedulerQueueNames.",
    )
    def schedulerQueueLatencies(self) -> list[float]:  # noqa: N802
        """Return each queue's 99th-percentile wait over the window, in milliseconds."""
        return cast(list[float], self._read_diagnostics()["schedulerQueueLatencies"])

    @_typed_attribute(
        dtype=tango.DevLong64,
        access=tango.AttrWriteType.READ,
        label="Slow callbacks",
        doc="Callbacks that ran longer than the slow-callback threshold "
        "(SchedulerSlowCallbackDuration), since the scheduler was created.",
    )
    def schedulerSlowCallbacks(self) -> int:  # noqa: N802
        """Return the number of slow callbacks so far."""
        return cast(int, self._read_diagnostics()["schedulerSlowCallbacks"])

    @_typed_attribute(
        dtype=tango.DevString,
        access=tango.AttrWriteType.READ,
        label="Scheduler back-off",
        doc="JSON object: for each event stream being retried, its attempts, the delay "
        "before the next attempt, seconds until it, the last error and since when it fails.",
    )
    def schedulerBackoffState(self) -> str:  # noqa: N802
        """Return the retry state of failing streams as JSON."""
        return cast(str, self._read_diagnostics()["schedulerBackoffState"])

    @_typed_attribute(
        dtype=tango.DevString,
        access=tango.AttrWriteType.READ,
        label="Scheduler diagnostics",
        doc="JSON object: the scheduler's full snapshot (totals, every queue, every "
        "stream, every retry).",
    )
    def schedulerDiagnostics(self) -> str:  # noqa: N802
        """Return the scheduler's full diagnostics as JSON."""
        return cast(str, self._read_diagnostics()["schedulerDiagnostics"])

    # -- helpers -------------------------------------------------------------------------

    def _as_device(self) -> tango.server.Device:
        return cast(tango.server.Device, self)

    def _device_name(self) -> str:
        try:
            return str(self._as_device().get_name())
        except Exception:  # noqa: BLE001 - only for names in messages
            return type(self).__name__


def _is_tango_object(value: object) -> bool:
    """Tell whether PyTango's DeviceMeta would collect ``value`` from a class."""
    if isinstance(value, (attribute, device_property, tango.server.class_property)):
        return True
    return hasattr(value, "__tango_command__")


def _raise_configuration_error(message: str, origin: str) -> NoReturn:
    error = tango.DevError()
    error.reason = CONFIGURATION_ERROR_REASON
    error.desc = message
    error.origin = origin
    error.severity = tango.ErrSeverity.ERR
    raise tango.DevFailed(error)


def _has_reason(exc: tango.DevFailed, reason: str) -> bool:
    return any(getattr(error, "reason", None) == reason for error in exc.args)


def _describe(exc: tango.DevFailed) -> str:
    """Return ``REASON: description`` of the first error of a ``DevFailed``."""
    if not exc.args:
        return repr(exc)
    first = exc.args[0]
    return f"{getattr(first, 'reason', '?')}: {' '.join(str(getattr(first, 'desc', '')).split())}"


def _from_this_process(device: tango.server.Device) -> bool:
    """Tell whether the request being served comes from this very process.

    PyTango >= 10.1 tells who the client is; older versions cannot, and
    neither can Tango for requests that no client made (attribute polling):
    those count as coming from elsewhere.
    """
    get_client_ident = getattr(device, "get_client_ident", None)
    if get_client_ident is None:
        return False
    try:
        client = get_client_ident()
    except Exception:  # noqa: BLE001 - unknown client: treat as external
        return False
    if client is None or not getattr(client, "client_ident", False):
        return False
    return bool(getattr(client, "client_pid", 0) == os.getpid())


def _releases_monitor(model: tango.SerialModel) -> bool:
    """Tell whether allow_internal_threads releases the monitor under ``model``."""
    return model == tango.SerialModel.BY_DEVICE and SAFE_MONITOR_RELEASE


def _serial_model() -> tango.SerialModel:
    """Return the server's serial model (BY_DEVICE outside a running server)."""
    try:
        # instance(False) raises instead of ending the process when there is no Util.
        return tango.Util.instance(False).get_serial_model()
    except Exception:  # noqa: BLE001 - no Util: not in a device server
        return tango.SerialModel.BY_DEVICE
