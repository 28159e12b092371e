"""Reading devices for ``ska-tango-scheduler-top``: once, or followed by change events.

Every device is read on a thread of its own, so a host that accepts
connections and never answers delays no other device. A thread still inside
a Tango call when the command ends is left behind, and :data:`left_behind`
is set: the process must then end without finalising the interpreter (see
:func:`.cli.run`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import tango

from ..scheduler import CallbackScheduler
from .reports import DIAGNOSTICS_ATTRIBUTE, DeviceReport, decode, describe_errors

__all__ = ["CLEANUP_BUDGET", "Follower", "left_behind", "read_report", "read_reports"]

#: Seconds to print and clean up after ``--timeout``, or after Ctrl-C.
CLEANUP_BUDGET = 2.0

#: Set when a thread was left inside a Tango call (a host that does not answer).
left_behind = threading.Event()


def read_report(device: str, timeout: float = 3.0) -> DeviceReport:
    """Read a device's diagnostics once.

    Args:
        device: TRL of the device.
        timeout: Seconds the device may take to answer.

    Returns:
        The report; its ``error`` says why when the read failed.
    """
    try:
        proxy = tango.DeviceProxy(device)
        proxy.set_timeout_millis(max(1, int(timeout * 1000)))
        value = proxy.read_attribute(DIAGNOSTICS_ATTRIBUTE).value
    except tango.DevFailed as exc:
        return DeviceReport(device, describe_errors(exc.args))
    return decode(device, value, time.time())


def read_reports(devices: Sequence[str], timeout: float = 3.0) -> list[DeviceReport]:
    """Read every device's diagnostics at once, and give up on the rest after ``timeout``.

    Each device is read on a thread of its own, so a host that accepts
    connections and never answers (whose proxy creation cppTango holds for
    about 9 s whatever the timeout) delays no other device and not the
    answer: after ``timeout`` seconds (and a moment), a device still being
    read is reported as not answering in time, and its thread is left behind.

    Args:
        devices: TRLs of the devices.
        timeout: Seconds the devices may take to answer.

    Returns:
        The reports, in the order given.
    """
    results: list[DeviceReport | None] = [None] * len(devices)

    def read(index: int, device: str) -> None:
        with tango.EnsureOmniThread():
            results[index] = read_report(device, timeout)

    threads = [
        threading.Thread(target=read, args=(i, d), name=f"top-read-{i}", daemon=True)
        for i, d in enumerate(devices)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout + 0.5
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    reports: list[DeviceReport] = []
    for device, thread, result in zip(devices, threads, results, strict=True):
        if result is None or thread.is_alive():
            left_behind.set()
            result = DeviceReport(
                device, f"does not answer within {timeout:g} s (its host hangs?) [timeout]"
            )
        reports.append(result)
    return reports


_WAITING = "waiting for the first value"


class Follower:
    """Follows the diagnostics of devices by change events, on a scheduler of its own."""

    def __init__(self, devices: Sequence[str], timeout: float = 3.0) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._reports = {d: DeviceReport(d, _WAITING) for d in devices}
        quiet = logging.getLogger("ska_tango_scheduler.top.scheduler")
        quiet.propagate = False
        quiet.addHandler(logging.NullHandler())
        self._scheduler = CallbackScheduler(
            thread_count=1,
            name="ska-tango-scheduler-top",
            logger=quiet,
            wait_for_subscription=False,
        )
        try:
            for device in devices:
                try:
                    self._scheduler.register_event_callback(
                        device,
                        DIAGNOSTICS_ATTRIBUTE,
                        tango.EventType.CHANGE_EVENT,
                        functools.partial(self._on_event, device),
                    )
                except (TypeError, ValueError, tango.DevFailed) as exc:
                    self._reports[device] = DeviceReport(device, f"cannot follow it: {exc}")
        except BaseException:
            # Interrupted while registering: leave no thread behind.
            self.close()
            raise
        # Say at once what a direct read says (e.g. "not running"), rather than
        # "waiting" until the scheduler's first attempt reports it.
        self._first_reads = [
            threading.Thread(
                target=self._first_read, args=(device,), name="top-first-read", daemon=True
            )
            for device in devices
        ]
        for thread in self._first_reads:
            thread.start()

    def wait_first_reads(self, timeout: float) -> None:
        """Wait until every device was read once directly, at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for thread in self._first_reads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _first_read(self, device: str) -> None:
        with tango.EnsureOmniThread():
            report = read_report(device, self._timeout)
        with self._lock:
            if self._reports[device].error != _WAITING:
                return  # an event came first: it is newer
            self._reports[device] = report
        self._changed.set()

    def _on_event(self, device: str, event: Any) -> None:
        if event.err:
            report = DeviceReport(device, describe_errors(list(event.errors)))
        else:
            report = decode(device, event.attr_value.value, time.time())
        with self._lock:
            self._reports[device] = report
        self._changed.set()

    def wait(self, timeout: float) -> bool:
        """Wait for a new value or error; True if one came."""
        changed = self._changed.wait(timeout)
        self._changed.clear()
        return changed

    def reports(self) -> list[DeviceReport]:
        """The latest report of every device, in the order given."""
        with self._lock:
            return list(self._reports.values())

    def close(self) -> None:
        """Unsubscribe and stop the scheduler's threads, waiting a bounded time.

        Shutting down waits for connection attempts, which a silent host
        holds for about 9 s inside cppTango; after :data:`CLEANUP_BUDGET`
        seconds the rest is left behind (see :func:`.cli.run`).
        """

        def shut_down() -> None:
            with tango.EnsureOmniThread():
                self._scheduler.shutdown(CLEANUP_BUDGET)

        closer = threading.Thread(target=shut_down, name="top-close", daemon=True)
        closer.start()
        closer.join(CLEANUP_BUDGET)
        others = (*self._scheduler.threads, *getattr(self, "_first_reads", ()))
        if closer.is_alive() or any(
            t.is_alive() for t in others if t is not threading.current_thread()
        ):
            left_behind.set()
