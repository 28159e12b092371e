"""Argument validators and their bounds, shared by the API and the device mixin.

:class:`~ska_tango_scheduler.CallbackScheduler` checks its arguments with these
functions, and :class:`~ska_tango_scheduler.mixin.SchedulerMixin` checks its
device properties and class attributes with the same ones, so a value is
accepted (or refused) the same way whichever door it comes in by.

Why the upper bounds (a value past them is a mistake, never a configuration):

* :data:`MAX_THREAD_COUNT` (128): worker threads exist to let slow callbacks
  run side by side; Python runs one thread at a time, so more threads than
  callbacks that may block at once buy nothing. Each one is an omni thread
  with its own stack; 20,000 of them took 25 s to start, 437 MB of memory, and
  left a device server that no longer stopped on SIGTERM.
* :data:`MAX_QUEUE_SIZE` (1,000,000 events): a full minute of a 10 kHz
  stream, or 16 minutes at 1 kHz. A queue that needs more is a leak, not a
  buffer: at about 1 KB per event it already holds a gigabyte.
* :data:`MAX_SLOW_CALLBACK_DURATION` (3,600 s): a threshold above an hour
  never fires in practice; turn the check off instead.
* :data:`MAX_ATTEMPT_TIMEOUT` (300 s): one step of a connection attempt
  (Tango's own client timeout is 3 s) that may wait longer than five minutes
  keeps a connector lane, and shutdown, waiting that long.
* :data:`MAX_DIAGNOSTICS_PERIOD` (3,600 s) and :data:`MIN_DIAGNOSTICS_PERIOD`
  (0.05 s): change events of the diagnostic attributes are meant to follow
  the scheduler at a human pace, and a period below 50 ms would push them
  for nearly every event.
* :data:`MAX_SHUTDOWN_TIMEOUT` (3,600 s): how long a device's ``Init`` or
  shutdown may wait for running callbacks.
* :data:`MAX_WAIT` (:data:`threading.TIMEOUT_MAX`): the longest wait Python
  can make at all; any other timeout an API call takes is bounded by it.
"""

from __future__ import annotations

import math
import threading
from typing import Final

__all__ = [
    "MAX_ATTEMPT_TIMEOUT",
    "MAX_DIAGNOSTICS_PERIOD",
    "MAX_QUEUE_SIZE",
    "MAX_SHUTDOWN_TIMEOUT",
    "MAX_SLOW_CALLBACK_DURATION",
    "MAX_THREAD_COUNT",
    "MAX_WAIT",
    "MIN_DIAGNOSTICS_PERIOD",
    "ArgumentRangeError",
    "ArgumentTypeError",
    "check_seconds",
    "check_whole_number",
]

#: Most worker threads a scheduler may have.
MAX_THREAD_COUNT: Final = 128
#: Most events a queue may hold.
MAX_QUEUE_SIZE: Final = 1_000_000
#: Longest slow-callback threshold, in seconds.
MAX_SLOW_CALLBACK_DURATION: Final = 3600.0
#: Longest time one step of a connection attempt may take, in seconds.
MAX_ATTEMPT_TIMEOUT: Final = 300.0
#: Shortest period of the mixin's diagnostics pusher, in seconds.
MIN_DIAGNOSTICS_PERIOD: Final = 0.05
#: Longest period of the mixin's diagnostics pusher, in seconds.
MAX_DIAGNOSTICS_PERIOD: Final = 3600.0
#: Longest time the mixin waits for running callbacks at shutdown, in seconds.
MAX_SHUTDOWN_TIMEOUT: Final = 3600.0
#: Longest timeout Python can wait for (``threading.TIMEOUT_MAX``), in seconds.
MAX_WAIT: Final = float(threading.TIMEOUT_MAX)


class ArgumentTypeError(TypeError):
    """A value is not of the kind expected.

    Attributes:
        expected: What is expected, e.g. ``"a whole number from 1 to 128"``.
    """

    def __init__(self, name: str, value: object, expected: str) -> None:
        """Make the error.

        Args:
            name: The name of the argument or setting.
            value: The value given.
            expected: What is expected.
        """
        super().__init__(f"{name} must be {expected}, got {value!r}")
        self.expected = expected


class ArgumentRangeError(ValueError):
    """A value is of the right kind but out of its range.

    Attributes:
        expected: What is expected, e.g. ``"a whole number from 1 to 128"``.
    """

    def __init__(self, name: str, value: object, expected: str) -> None:
        """Make the error.

        Args:
            name: The name of the argument or setting.
            value: The value given.
            expected: What is expected.
        """
        super().__init__(f"{name} must be {expected}, got {value!r}")
        self.expected = expected


def check_whole_number(
    name: str, value: object, low: int, high: int, *, from_text: bool = False
) -> int:
    """Check a whole number against its bounds (both included).

    Args:
        name: The name of the argument or setting, for the message.
        value: An ``int`` (``bool`` is refused), or with ``from_text`` also
            the text of a device property.
        low: The smallest valid value.
        high: The largest valid value.
        from_text: Accept a string holding the number.

    Returns:
        The number.

    Raises:
        ArgumentTypeError: It is not a whole number (a ``TypeError``).
        ArgumentRangeError: It is below ``low`` or above ``high`` (a
            ``ValueError``).
    """
    expected = f"a whole number from {low} to {high}"
    if from_text and isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            raise ArgumentTypeError(name, value, expected) from None
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise ArgumentTypeError(name, value, expected)
    if not low <= number <= high:
        raise ArgumentRangeError(name, value, expected)
    return number


def check_seconds(
    name: str,
    value: object,
    high: float,
    *,
    allow_zero: bool,
    from_text: bool = False,
) -> float:
    """Check a number of seconds: finite, above 0 (or from 0), at most ``high``.

    Args:
        name: The name of the argument or setting, for the message.
        value: An ``int`` or ``float`` (``bool`` is refused), or with
            ``from_text`` also the text of a device property.
        high: The largest valid value.
        allow_zero: Whether 0 is valid.
        from_text: Accept a string holding the number.

    Returns:
        The seconds, as a ``float``.

    Raises:
        ArgumentTypeError: It is not a number (a ``TypeError``).
        ArgumentRangeError: It is not finite, is negative (or 0 without
            ``allow_zero``), or is above ``high`` (a ``ValueError``).
    """
    expected = f"seconds from {_number(0)} to {_number(high)}"
    if not allow_zero:
        expected = f"seconds above {_number(0)} and at most {_number(high)}"
    if from_text and isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            raise ArgumentTypeError(name, value, expected) from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ArgumentTypeError(name, value, expected)
    if not math.isfinite(seconds) or seconds < 0 or seconds > high:
        raise ArgumentRangeError(name, value, expected)
    if seconds == 0 and not allow_zero:
        raise ArgumentRangeError(name, value, expected)
    return seconds


def _number(value: float) -> str:
    """Write a bound without a useless ``.0`` (``3600``, ``0.05``)."""
    return f"{value:g}" if value < 1e6 else f"{value:.0f}"
