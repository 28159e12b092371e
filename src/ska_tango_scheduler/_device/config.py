"""The scheduler settings of a device: device properties, class attributes, their checks.

A device's scheduler is configured per class (class attributes of the
device class) or per device (device properties, which win when set). Every
value is checked with the validators shared with
:class:`~ska_tango_scheduler.CallbackScheduler` (:mod:`.._checks`), so a value
is accepted or refused the same way whichever door it comes in by; only the
message differs, naming the setting and saying what to give.

A bad setting is reported as a ``DevFailed`` with reason
:data:`CONFIGURATION_ERROR_REASON` (built by :mod:`.._tango_errors`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NoReturn

import tango
from tango.server import device_property

from .._checks import (
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
from .._tango_errors import describe, dev_failed
from . import LOGGER, device_name

__all__ = [
    "CONFIGURATION_ERROR_REASON",
    "NAME_PROPERTY",
    "SCHEDULER_PROPERTIES",
    "SLOW_CALLBACK_DURATION_PROPERTY",
    "THREAD_COUNT_PROPERTY",
    "SchedulerConfigurationError",
    "check_diagnostics_period",
    "check_property_texts",
    "check_scheduler_name",
    "check_shutdown_timeout",
    "check_slow_callback_duration",
    "check_thread_count",
    "configuration_error",
    "fail",
    "fault_message",
    "load_settings",
    "property_texts",
]

#: Reason of the ``DevFailed`` errors about a device's scheduler configuration
#: (``Init`` answers with it; the diagnostic attributes raise it while the
#: device has no scheduler).
CONFIGURATION_ERROR_REASON: Final = "SKA_SchedulerConfiguration"

# -- the device properties (SchedulerMixin lists them in its own class body) ------------------

THREAD_COUNT_PROPERTY: Final = device_property(
    dtype=tango.DevLong,
    doc="Number of worker threads of the device's callback scheduler, 1 to 128 "
    "(default: the class's scheduler_thread_count, normally 1).",
)
NAME_PROPERTY: Final = device_property(
    dtype=tango.DevString,
    doc="Name of the device's callback scheduler and prefix of its thread names "
    "(default: the device name).",
)
SLOW_CALLBACK_DURATION_PROPERTY: Final = device_property(
    dtype=tango.DevDouble,
    doc="Seconds after which a callback counts as slow: it is counted "
    "(schedulerSlowCallbacks) and logged at WARNING; at most 3600. 0 turns the check off "
    "(default: the class's scheduler_slow_callback_duration, normally 0.1).",
)


class SchedulerConfigurationError(ValueError):
    """A scheduler setting of a device (a device property or a class attribute) is not valid.

    The message names the setting and its value, and says what is expected.
    """


def _bad(where: str, value: object, expected: str) -> SchedulerConfigurationError:
    return SchedulerConfigurationError(f"{where} = {value!r} is not valid: {expected}")


# -- the checks ---------------------------------------------------------------------------------


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


# The device properties the mixin reads, in the order they are documented, and their checks.
_PROPERTY_CHECKS: Final[dict[str, Callable[[object, str], object]]] = {
    "SchedulerThreadCount": check_thread_count,
    "SchedulerName": check_scheduler_name,
    "SchedulerSlowCallbackDuration": check_slow_callback_duration,
}

#: The device properties the mixin reads, in the order they are documented.
SCHEDULER_PROPERTIES: Final[tuple[str, ...]] = tuple(_PROPERTY_CHECKS)


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


# -- reading the database, reporting a bad setting ------------------------------------------------


def property_texts(device_name: str) -> dict[str, list[str]] | None:
    """Return a device's scheduler properties as the database holds them.

    Args:
        device_name: The device.

    Returns:
        Property name to its values (as text); None without a database (the
        typed values are checked later).
    """
    try:
        util = tango.Util.instance(False)
        if not getattr(util, "_UseDb", True):
            return None
        database = util.get_database()
        found = database.get_device_property(device_name, list(SCHEDULER_PROPERTIES))
    except Exception:  # noqa: BLE001 - no database: the typed values are checked later
        return None
    return {name: [str(v) for v in found.get(name, [])] for name in SCHEDULER_PROPERTIES}


def fault_message(exc: Exception) -> str:
    """Say why a device has no scheduler, and what to do.

    Args:
        exc: What went wrong: a :class:`SchedulerConfigurationError`, or
            whatever making the scheduler raised.

    Returns:
        The text of the device's status and of the configuration error.
    """
    if isinstance(exc, SchedulerConfigurationError):
        why = str(exc)
    elif isinstance(exc, tango.DevFailed):
        why = f"cannot create the scheduler: {describe(exc)}"
    else:
        why = f"cannot create the scheduler: {type(exc).__name__}: {exc}"
    return (
        f"No callback scheduler: {why}. Correct the device property (or class attribute) "
        "and send Init."
    )


def configuration_error(message: str, origin: str) -> tango.DevFailed:
    """Make the ``DevFailed`` about a device's scheduler configuration.

    Args:
        message: What is wrong (see :func:`fault_message`).
        origin: Where it was found, e.g. ``"MyDevice.init_device"``.

    Returns:
        The exception (reason :data:`CONFIGURATION_ERROR_REASON`), ready to raise.
    """
    return dev_failed(CONFIGURATION_ERROR_REASON, message, origin)


def load_settings(device: Any) -> None:
    """Check a device's scheduler properties as the database holds them, then load them all.

    The class attributes that no device property overrides
    (``scheduler_diagnostics_period``, ``scheduler_shutdown_timeout``) are
    checked too.

    Args:
        device: A device of a ``SchedulerMixin`` class.

    Raises:
        SchedulerConfigurationError: A scheduler setting is not valid.
        Exception: The properties could not be loaded (what PyTango raises).
    """
    texts = property_texts(device_name(device))
    if texts is not None:
        check_property_texts(texts)
    device.get_device_properties()
    check_diagnostics_period(device.scheduler_diagnostics_period)
    check_shutdown_timeout(device.scheduler_shutdown_timeout)


def fail(device: Any, exc: Exception) -> NoReturn:
    """Put a device in FAULT because its scheduler cannot be made, and raise.

    The reason is kept in the device's ``__dict__`` (``_scheduler_fault``)
    until an ``init_device`` succeeds.

    Args:
        device: A device of a ``SchedulerMixin`` class.
        exc: What went wrong (see :func:`fault_message`).

    Raises:
        tango.DevFailed: Always, with :data:`CONFIGURATION_ERROR_REASON`.
    """
    message = fault_message(exc)
    device.__dict__["_scheduler_fault"] = message
    device.set_state(tango.DevState.FAULT)
    device.set_status(message)
    LOGGER.error("%s: %s", device_name(device), message)
    raise configuration_error(message, f"{type(device).__name__}.init_device")
