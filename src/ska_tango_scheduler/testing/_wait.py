"""Polling helper for tests that wait on a condition with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["WaitTimeoutError", "wait_for"]

T = TypeVar("T")


class WaitTimeoutError(AssertionError, TimeoutError):
    """A condition polled by :func:`wait_for` did not hold before the deadline.

    It is both an :class:`AssertionError` (so pytest reports it as a failed
    check) and a :class:`TimeoutError` (so callers can catch it as a timeout).
    """


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Call ``predicate`` until it returns a truthy value or the deadline passes.

    Exceptions raised by ``predicate`` are not caught: a predicate that may
    fail while the system settles should catch what it expects itself.

    Args:
        predicate: Called with no arguments; polling stops at its first truthy
            result.
        timeout: Seconds to keep trying. Choose it generously: it bounds a
            failing test, it is not a speed requirement.
        interval: Seconds to sleep between two calls.
        message: What was awaited, for the error; a callable is evaluated only
            on failure, so it can describe the state at the deadline.

    Returns:
        The first truthy value returned by ``predicate``.

    Raises:
        WaitTimeoutError: ``predicate`` gave no truthy value within ``timeout``
            seconds. The error names the message, the timeout and the last
            value seen.
        ValueError: ``timeout`` is negative or ``interval`` is not positive.
    """
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0, got {timeout}")
    if interval <= 0:
        raise ValueError(f"interval must be > 0, got {interval}")
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            text = message() if callable(message) else message
            raise WaitTimeoutError(f"{text} (gave up after {timeout:g} s; last result: {result!r})")
        time.sleep(min(interval, remaining))
