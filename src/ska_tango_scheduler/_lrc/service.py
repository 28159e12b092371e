"""The LRC client's lanes service, started on first use.

It runs the status checks (timers in a lane per invocation, so that a device that
does not answer delays no other invocation), the release of invocations whose handle
was garbage-collected, and the replay of the updates kept until a command's reply.
The package's exit sequence closes it with the other lanes services.
"""

from __future__ import annotations

import threading

import tango

from .._lanes import LaneService
from . import LOGGER, limits

_service: LaneService | None = None
_service_lock = threading.Lock()


def lrc_service() -> LaneService:
    """Return the LRC client's lanes service, started on first use."""
    service = _service
    if service is not None:
        return service
    # Made with no lock held (it starts a thread); the first one in is kept.
    made = LaneService("lrc", LOGGER, tango.EnsureOmniThread, max_threads=limits.CHECK_THREADS)
    with _service_lock:
        kept = _keep(made)
    if kept is not made:
        made.close([], timeout=None)
    return kept


def _keep(made: LaneService) -> LaneService:
    global _service
    if _service is None:
        _service = made
    return _service
