"""Building and describing Tango errors, in one place.

Every ``DevError`` the package makes (synthetic error events, failed
invocations, bad configuration, hosts that do not answer) is built by
:func:`dev_error`, and every error stack is summarised by
:func:`describe_errors`, so that reasons, origins and texts look the same
wherever a user meets them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tango

__all__ = [
    "ORIGIN",
    "describe",
    "describe_errors",
    "dev_error",
    "dev_failed",
    "errors_of",
    "has_reason",
]

#: Origin of the errors the package makes, unless a caller names another.
ORIGIN = "ska_tango_scheduler"


def dev_error(reason: str, desc: str, origin: str = ORIGIN) -> tango.DevError:
    """Make one ``DevError`` of severity ERR.

    Args:
        reason: The error's reason, e.g. ``"SKA_LrcOutcomeLost"``.
        desc: What went wrong, for a person.
        origin: Where it was found.

    Returns:
        The error.
    """
    error = tango.DevError()
    error.reason = reason
    error.desc = desc
    error.origin = origin
    error.severity = tango.ErrSeverity.ERR
    return error


def dev_failed(reason: str, desc: str, origin: str = ORIGIN) -> tango.DevFailed:
    """Make a ``DevFailed`` holding one error (see :func:`dev_error`).

    Args:
        reason: The error's reason.
        desc: What went wrong.
        origin: Where it was found.

    Returns:
        The exception, ready to raise.
    """
    return tango.DevFailed(dev_error(reason, desc, origin))


def errors_of(exc: BaseException) -> tuple[tango.DevError, ...]:
    """Return the Tango errors of an exception, converting other exceptions.

    Args:
        exc: A ``DevFailed`` or any other exception.

    Returns:
        The ``DevError`` stack, never empty; another exception becomes one
        error with reason ``PyAPI_SchedulerError``.
    """
    if isinstance(exc, tango.DevFailed) and exc.args:
        return tuple(exc.args)
    return (dev_error("PyAPI_SchedulerError", f"{type(exc).__name__}: {exc}"),)


def describe_errors(errors: Sequence[Any]) -> str:
    """Summarise an error stack as ``"REASON: description"`` of its first error.

    Args:
        errors: ``DevError`` objects.

    Returns:
        A one-line text; empty for an empty stack.
    """
    if not errors:
        return ""
    first = errors[0]
    desc = " ".join(str(getattr(first, "desc", "")).split())
    return f"{getattr(first, 'reason', '?')}: {desc}"


def describe(exc: BaseException) -> str:
    """Summarise an exception as ``"REASON: description"`` of its first error.

    Args:
        exc: A ``DevFailed`` or any other exception.

    Returns:
        A one-line text.
    """
    return describe_errors(errors_of(exc))


def has_reason(exc: BaseException, reason: str) -> bool:
    """Tell whether any error of an exception has the given reason.

    Args:
        exc: A ``DevFailed`` or any other exception.
        reason: The reason looked for.

    Returns:
        True if one of its errors has that reason.
    """
    return any(getattr(error, "reason", None) == reason for error in errors_of(exc))
