"""The one place where the package starts a thread.

Part of the pure core: no :mod:`tango` import. Every thread of the package
(dispatcher workers, the lanes service's control and connector threads,
one-off notification threads, host checks, the mixin's change-event pusher)
is started by :func:`start_thread`, so that the rule below is kept in one
place and the thread map in the design docs stays complete.

The rule: start a thread with no lock of the package held. Starting a thread
allocates, and so does the new thread before :meth:`threading.Thread.start`
returns; an allocation can run the garbage collector, whose finalisers can
free a ``DeviceProxy`` that waits for Tango's event thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

__all__ = ["ThreadContext", "start_thread"]

#: A context entered around a thread's work (the Tango layer passes
#: ``tango.EnsureOmniThread``).
ThreadContext = Callable[[], AbstractContextManager[Any]]


def start_thread(
    name: str,
    target: Callable[[], None],
    *,
    daemon: bool,
    context: ThreadContext = contextlib.nullcontext,
) -> threading.Thread:
    """Start a thread of the package: the only place where one is started.

    Call it with no lock of the package held: starting a thread waits for the
    new thread, whose first allocations can run the garbage collector.

    Args:
        name: The thread's name.
        target: What it runs.
        daemon: Whether it is a daemon thread. Non-daemon threads must be ended
            by the exit order (:mod:`._exit`) before the interpreter joins them.
        context: Entered around ``target`` on the new thread (the scheduler
            passes ``tango.EnsureOmniThread``).

    Returns:
        The started thread.
    """

    def run() -> None:
        with context():
            target()

    thread = threading.Thread(target=run, name=name, daemon=daemon)
    thread.start()
    return thread
