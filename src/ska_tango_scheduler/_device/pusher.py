"""The diagnostics pusher: changed diagnostic values become change events, at a bounded rate.

One thread per device, started by the package's one thread starter
(:func:`.._threads.start_thread`) from ``init_device``. Every period it
computes the values of the diagnostic attributes (:mod:`.attributes`) and
pushes, under the device monitor, those with change events that changed
since the last push. ``delete_device`` asks it to stop; at interpreter exit
the exit sequence (:mod:`.._exit`) asks every live pusher to stop in step 1
and joins it in step 3.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import tango

from .. import _exit
from .._tango_errors import describe
from .._threads import start_thread
from ..scheduler import CallbackScheduler
from .attributes import EVENT_ATTRIBUTES, changed_values, diagnostic_values

__all__ = ["DiagnosticsPusher"]


class DiagnosticsPusher:
    """Background omni thread that pushes changed diagnostic values as change events.

    Started by the package's one thread starter; asked to stop by ``delete_device``
    or, at interpreter exit, by the exit sequence (step 1), which joins it in step 3.
    """

    def __init__(
        self,
        device: Any,
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
        changed = {name: changed[name] for name in EVENT_ATTRIBUTES if name in changed}
        if not changed:
            return
        device = self._device
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
            self._logger.debug("Diagnostics not pushed this time: %s", describe(exc))


_live_pushers: weakref.WeakSet[DiagnosticsPusher] = weakref.WeakSet()


def _stop_pushers() -> None:
    for pusher in list(_live_pushers):
        pusher.request_stop()


def _join_pushers() -> None:
    for pusher in list(_live_pushers):
        pusher.join(_exit.THREAD_WAIT)


_exit.at_exit(_exit.REFUSE_NEW_WORK, _stop_pushers)
_exit.at_exit(_exit.CLOSE_SERVICES, _join_pushers)
