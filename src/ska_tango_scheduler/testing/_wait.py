"""Polling helper for tests that wait on a condition with a deadline."""

from __future__ import annotations

import inspect
import io
import time
import tokenize
from collections.abc import Callable
from pathlib import Path
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
    message: str | Callable[[], str] | None = None,
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
            on failure, so it can describe the state at the deadline. Without
            one, the error quotes the predicate's source (a lambda's text
            or a function's name, with file and line), so that it still
            says what was awaited; a message of your own says it better.

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
            if message is None:
                text = f"waiting for {_describe_predicate(predicate)}"
            else:
                text = message() if callable(message) else message
            raise WaitTimeoutError(f"{text} (gave up after {timeout:g} s; last result: {result!r})")
        time.sleep(min(interval, remaining))


_MAX_SOURCE = 200


def _describe_predicate(predicate: Callable[[], object]) -> str:
    """Describe a polled predicate by its source, for a wait that has no message.

    A lambda is quoted from its source line(s), a named function by its name;
    both with the file and line where they were written. Anything else (a
    callable object, a function whose source is not available) is described
    by its ``repr``.

    Args:
        predicate: The callable that :func:`wait_for` polled.

    Returns:
        One line, such as ``lambda: len(seen) >= 3 (test_x.py:42)``.
    """
    code = getattr(predicate, "__code__", None)
    if code is None:
        return repr(predicate)
    where = f"{Path(code.co_filename).name}:{code.co_firstlineno}"
    name = getattr(predicate, "__name__", "")
    if name != "<lambda>":
        return f"{name}() ({where})"
    try:
        lines, _ = inspect.getsourcelines(predicate)
    except (OSError, TypeError):
        return f"a lambda ({where})"
    text = _lambda_text("".join(lines))
    if len(text) > _MAX_SOURCE:
        text = text[: _MAX_SOURCE - 3] + "..."
    return f"{text} ({where})"


def _lambda_text(source: str) -> str:
    """Cut the first lambda expression out of its source lines, on one line.

    The lambda ends at the first comma or closing bracket outside its own
    brackets; strings and comments are read by the tokenizer, comments left
    out. Source that does not tokenize is returned from the word ``lambda`` on.
    """
    start = source.find("lambda")
    text = source[start:] if start >= 0 else source
    lines = text.splitlines(keepends=True)
    comments: list[tokenize.TokenInfo] = []
    depth = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.COMMENT:
                comments.append(token)
            elif token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]},":
                if depth == 0:
                    row, col = token.start
                    lines = lines[:row]
                    lines[-1] = lines[-1][:col]
                    break
                if token.string != ",":
                    depth -= 1
    except (tokenize.TokenError, SyntaxError):
        pass
    for comment in reversed(comments):
        row, col = comment.start
        if row <= len(lines):
            lines[row - 1] = lines[row - 1][:col] + lines[row - 1][comment.end[1] :]
    return " ".join("".join(lines).split())
