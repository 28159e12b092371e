"""Result codes and task statuses of SKA long running commands.

When the ``ska_control_model`` package is importable, :class:`ResultCode` and
:class:`TaskStatus` are its own classes, so values compare and pass between this
package and SKA code without conversion. Otherwise the classes defined here stand
in for them: they have the same member names and the same integer values.

The module also offers small helpers used by the long running command client and
the reference device: the set of terminal statuses, and lenient parsers that turn
the integers or names found on the wire into enum members.

The package root exports :class:`ResultCode` and :class:`TaskStatus`. Second tier,
importable from this module only: ``ACCEPTED_RESULT_CODES``, ``TERMINAL_STATUSES``,
``USING_SKA_CONTROL_MODEL``, ``is_terminal``, ``parse_result_code`` and
``parse_task_status``.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, TypeVar

__all__ = [
    "ACCEPTED_RESULT_CODES",
    "TERMINAL_STATUSES",
    "USING_SKA_CONTROL_MODEL",
    "ResultCode",
    "TaskStatus",
    "is_terminal",
    "parse_result_code",
    "parse_task_status",
]


class ResultCode(enum.IntEnum):
    """Outcome that a Tango command reports in its reply, or with its final result.

    Attributes:
        OK: The command did what was asked.
        STARTED: The command has started; completion is reported later.
        QUEUED: The command waits in a queue; completion is reported later.
        FAILED: The command did not succeed.
        UNKNOWN: The outcome cannot be told.
        REJECTED: The command was refused and will not run.
        NOT_ALLOWED: The command may not run in the device's current state.
        ABORTED: The command was stopped before it finished.
    """

    OK = 0
    STARTED = 1
    QUEUED = 2
    FAILED = 3
    UNKNOWN = 4
    REJECTED = 5
    NOT_ALLOWED = 6
    ABORTED = 7


class TaskStatus(enum.IntEnum):
    """Life-cycle stage of the task behind a long running command.

    Attributes:
        STAGING: The device has accepted the request and is preparing the task.
        QUEUED: The task waits for a worker.
        IN_PROGRESS: The task is running.
        ABORTED: The task was stopped before it finished (terminal).
        NOT_FOUND: The device knows no task with this identifier.
        COMPLETED: The task finished (terminal).
        REJECTED: The task was refused and never ran (terminal).
        FAILED: The task ran and failed (terminal).
    """

    STAGING = 0
    QUEUED = 1
    IN_PROGRESS = 2
    ABORTED = 3
    NOT_FOUND = 4
    COMPLETED = 5
    REJECTED = 6
    FAILED = 7


if not TYPE_CHECKING:
    try:
        from ska_control_model import ResultCode, TaskStatus  # noqa: F811
    except ImportError:
        USING_SKA_CONTROL_MODEL = False
    else:
        USING_SKA_CONTROL_MODEL = True
else:
    USING_SKA_CONTROL_MODEL: bool
"""True when the enums are the ones of the ``ska_control_model`` package."""

TERMINAL_STATUSES: frozenset[TaskStatus] = frozenset(
    {TaskStatus.ABORTED, TaskStatus.COMPLETED, TaskStatus.REJECTED, TaskStatus.FAILED}
)
"""Statuses after which a task never changes again."""

ACCEPTED_RESULT_CODES: frozenset[ResultCode] = frozenset({ResultCode.QUEUED, ResultCode.STARTED})
"""Reply codes meaning that a long running command was accepted and has an identifier."""


def is_terminal(status: TaskStatus | int | str) -> bool:
    """Tell whether a task status is final.

    Args:
        status: A :class:`TaskStatus`, its integer value or its name.

    Returns:
        True for ABORTED, COMPLETED, REJECTED and FAILED; False for any other status.

    Raises:
        ValueError: If ``status`` names no task status.
    """
    return parse_task_status(status) in TERMINAL_STATUSES


def parse_task_status(value: TaskStatus | int | str) -> TaskStatus:
    """Turn a status as found on the wire into a :class:`TaskStatus`.

    Version 2 of the protocol sends integers, version 1 sends names; both are accepted,
    as is a string holding a decimal integer.

    Args:
        value: A :class:`TaskStatus`, an integer value, a member name (any case) or a
            decimal string.

    Returns:
        The matching member.

    Raises:
        ValueError: If ``value`` matches no member.
    """
    return _parse(TaskStatus, value)


def parse_result_code(value: ResultCode | int | str) -> ResultCode:
    """Turn a result code as found on the wire into a :class:`ResultCode`.

    Args:
        value: A :class:`ResultCode`, an integer value, a member name (any case) or a
            decimal string.

    Returns:
        The matching member.

    Raises:
        ValueError: If ``value`` matches no member.
    """
    return _parse(ResultCode, value)


_E = TypeVar("_E", bound=enum.IntEnum)


def _parse(enum_type: type[_E], value: _E | int | str) -> _E:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a valid {enum_type.__name__}")
    if isinstance(value, str):
        text = value.strip()
        try:
            return enum_type[text.upper()]
        except KeyError:
            pass
        try:
            number = int(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a valid {enum_type.__name__}") from None
        return enum_type(number)
    try:
        return enum_type(int(value))
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a valid {enum_type.__name__}") from None
