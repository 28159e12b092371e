"""The package's one exit sequence: what ends at interpreter exit, and in what order.

Part of the pure core: no :mod:`tango` import, and no import of the package's
other modules (they hand their actions to :func:`at_exit` when imported). This
is the only module that registers with the interpreter's exit machinery.

The interpreter offers two moments, and the sequence needs both:

- ``threading._register_atexit`` hooks run when the main thread is done,
  *before* the interpreter joins the non-daemon threads. The connector and
  control threads of every :class:`~._lanes.LaneService` are non-daemon (a
  thread that comes back from Tango into a finalising interpreter aborts the
  process), so they must be told to end here, or the join waits forever.
- :mod:`atexit` hooks run *after* those joins, when no other thread of
  Python's is left running user code, and before finalisation. The
  subscriptions are cancelled here: Tango's event thread must deliver nothing
  once finalisation has begun.

The steps, in this order (each runs every action handed to it, in the order
they were handed over; an action that fails is logged and the next runs):

1. :data:`REFUSE_NEW_WORK` (first moment): every lanes service is abandoned
   (no queued job starts, no timer fires, idle threads end, running jobs run
   to their end), diagnostics pushers are asked to stop, host probes in
   progress are interrupted so that the jobs waiting for them end soon.
   The interpreter then joins the non-daemon threads.
2. :data:`SHUT_DOWN_SCHEDULERS` (second moment): every
   :class:`~ska_tango_scheduler.CallbackScheduler` still running, the
   module-level LRC scheduler included, is shut down. It unsubscribes on the
   calling thread (its service was abandoned), so Tango delivers nothing into
   a finalising interpreter.
3. :data:`CLOSE_SERVICES`: every lanes service is closed (its threads joined,
   at most :data:`THREAD_WAIT` seconds each) and the diagnostics pushers'
   threads are joined.
4. :data:`CLOSE_PROBES`: every host probe is closed.

Hooks of other code registered with :mod:`atexit` before the package was
imported run after step 4 (:mod:`atexit` runs its hooks last in, first out).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
from collections.abc import Callable

__all__ = [
    "CLOSE_PROBES",
    "CLOSE_SERVICES",
    "ENDS_THREADS_BEFORE_JOIN",
    "REFUSE_NEW_WORK",
    "SHUT_DOWN_SCHEDULERS",
    "THREAD_WAIT",
    "at_exit",
]

REFUSE_NEW_WORK = "refuse new work"
SHUT_DOWN_SCHEDULERS = "shut down schedulers"
CLOSE_SERVICES = "close services"
CLOSE_PROBES = "close probes"

#: Seconds step 3 waits for each service's threads.
THREAD_WAIT = 5.0

# The steps of each moment, in order.
_BEFORE_THREAD_JOINS = (REFUSE_NEW_WORK,)
_AFTER_THREAD_JOINS = (SHUT_DOWN_SCHEDULERS, CLOSE_SERVICES, CLOSE_PROBES)

_actions: dict[str, list[Callable[[], None]]] = {
    step: [] for step in (*_BEFORE_THREAD_JOINS, *_AFTER_THREAD_JOINS)
}
_LOGGER = logging.getLogger("ska_tango_scheduler")


def at_exit(step: str, action: Callable[[], None]) -> None:
    """Hand ``action`` to a step of the exit sequence (see the module's description).

    Args:
        step: One of :data:`REFUSE_NEW_WORK`, :data:`SHUT_DOWN_SCHEDULERS`,
            :data:`CLOSE_SERVICES`, :data:`CLOSE_PROBES`.
        action: Called once at exit, with no argument.

    Raises:
        KeyError: If ``step`` is not a step.
    """
    _actions[step].append(action)


def _run(steps: tuple[str, ...]) -> None:
    for step in steps:
        for action in list(_actions[step]):
            try:
                action()
            except Exception:  # noqa: BLE001 - the other actions must still run
                _LOGGER.exception("Exit step %r: %r failed", step, action)


def _before_thread_joins() -> None:
    """The first moment: before the interpreter joins its non-daemon threads."""
    _run(_BEFORE_THREAD_JOINS)


def _after_thread_joins() -> None:
    """The second moment: after the joins, before finalisation."""
    if not ENDS_THREADS_BEFORE_JOIN:
        _run(_BEFORE_THREAD_JOINS)  # no first moment on this interpreter
    _run(_AFTER_THREAD_JOINS)


#: True where the interpreter has the first moment (then the package's
#: long-lived threads may be non-daemon threads; otherwise they are daemon
#: threads, so that they never keep the process from exiting).
ENDS_THREADS_BEFORE_JOIN = False
with contextlib.suppress(AttributeError, RuntimeError):  # private, but since Python 3.9
    threading._register_atexit(_before_thread_joins)  # type: ignore[attr-defined]  # noqa: SLF001
    ENDS_THREADS_BEFORE_JOIN = True
atexit.register(_after_thread_joins)
