"""``ska-tango-scheduler-top``: a live terminal view of the schedulers of running devices.

Usage::

    ska-tango-scheduler-top TRL [TRL ...]          # live, until Ctrl-C
    ska-tango-scheduler-top --once TRL [TRL ...]   # one snapshot
    ska-tango-scheduler-top --once --json TRL ...  # one snapshot as JSON
    python -m ska_tango_scheduler.top ...          # the same

Each TRL names a device whose class uses
:class:`~ska_tango_scheduler.mixin.SchedulerMixin` (``domain/family/member``
through ``TANGO_HOST``, or ``tango://host:port/domain/family/member``). The
view reads the device's ``schedulerDiagnostics`` attribute, which carries
everything the other diagnostic attributes show, and lists the device's
queues one per line, the worst queue wait first, with their drops and slow
callbacks.

Live, it follows the attribute by change events (the device pushes them at
most once per second, when something changed), through a
:class:`~ska_tango_scheduler.CallbackScheduler` of its own: a device that is
not running, not defined, or not a scheduler device gets a line saying so,
and is shown as soon as it answers. Ctrl-C (or SIGTERM) unsubscribes, stops
the scheduler's threads and exits with status 0.

``--once`` reads every device at once and exits within ``--timeout`` seconds
(plus a moment to print), even when a device's host accepts connections and
never answers: status 0 when every device answered, 1 otherwise (130 when
interrupted). Live, every device is first read directly (for at most
``--timeout`` seconds), so the first view already says which devices are not
running, before any event comes. Ctrl-C acts at once in both modes; a Tango
call still hanging then (a silent host) is left behind, and the process ends
without waiting for it.

When the reader of the output goes away (``top --json | head -1``), the
command stops quietly with status 141 (128 + SIGPIPE), what a shell reports
for any Unix tool ended by a closed pipe; no traceback. ``--timeout`` and
``--interval`` take seconds above 0 and at most 3,600; anything else
(``nan``, ``inf``, ``-1``) is a usage error (status 2).

``--json`` prints JSON instead of text: with
``--once`` one object, ``{"devices": [...]}``; live, one such object per
line whenever a device reports a change. Each device entry holds
``device``, ``ok``, ``error`` (text, or null), ``updated`` (Unix time of the
value) and ``diagnostics``: the device's snapshot as its
``schedulerDiagnostics`` attribute gives it, with ``queues`` ordered worst
wait first.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, TextIO

import tango

from . import __version__
from ._checks import ArgumentRangeError, ArgumentTypeError, check_seconds
from ._view import LiveView, queue_rows, queue_table_lines, summary_line
from .diagnostics import (  # noqa: F401 - importable from here before they moved
    BackoffDiagnostics,
    LatencyStats,
    QueueDiagnostics,
    SchedulerDiagnostics,
    StreamDiagnostics,
    Totals,
    WorkerDiagnostics,
    snapshot_from_dict,
)
from .mixin import CONFIGURATION_ERROR_REASON
from .scheduler import CallbackScheduler

__all__ = [
    "DIAGNOSTICS_ATTRIBUTE",
    "DeviceReport",
    "build_parser",
    "describe_errors",
    "main",
    "read_report",
    "read_reports",
    "report_json",
    "report_lines",
    "snapshot_from_dict",
]

#: The attribute the view reads and follows.
DIAGNOSTICS_ATTRIBUTE = "schedulerDiagnostics"

_EXIT_OK = 0
_EXIT_UNANSWERED = 1
_EXIT_INTERRUPTED = 130  # like a shell: 128 + SIGINT
_EXIT_PIPE_CLOSED = 141  # like a shell: 128 + SIGPIPE

# Longest --timeout and --interval, in seconds.
_MAX_SECONDS = 3600.0
# Seconds to print and clean up after --timeout, or after Ctrl-C.
_CLEANUP_BUDGET = 2.0

# Set when a thread was left inside a Tango call (a host that does not answer):
# the process must then end without finalising the interpreter, which a
# thread coming back from Tango would abort (see run()).
_left_behind = threading.Event()

# -- the data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceReport:
    """What the view knows about one device.

    Attributes:
        device: The TRL as given.
        error: Why there is no snapshot (empty when there is one).
        data: The device's snapshot as decoded JSON, or None.
        updated: Unix time the value was read or received, or None.
    """

    device: str
    error: str = ""
    data: Mapping[str, Any] | None = None
    updated: float | None = None

    @property
    def ok(self) -> bool:
        """True when the device gave a snapshot."""
        return self.data is not None and not self.error

    @property
    def snapshot(self) -> SchedulerDiagnostics | None:
        """The snapshot, or None."""
        return None if self.data is None else snapshot_from_dict(self.data)


_NOT_DEFINED = {"DB_DeviceNotDefined", "API_DeviceNotDefined"}
_NOT_RUNNING = {
    "API_DeviceNotExported",
    "API_CantConnectToDevice",
    "API_ServerNotRunning",
    "API_ConnectionFailed",
    "API_EventTimeout",
}
_NO_DATABASE = {"API_CantConnectToDatabase", "DB_CantConnectToDatabase", "API_TangoHostNotSet"}


def describe_errors(errors: Sequence[Any]) -> str:
    """Say in plain words why a device gives no snapshot.

    Args:
        errors: The ``DevError`` items of a ``DevFailed`` or an error event.

    Returns:
        A sentence ending with the first error's reason, in brackets.
    """
    if not errors:
        return "no value and no error"
    reasons = [str(getattr(e, "reason", "")) for e in errors]
    texts = " ".join(str(getattr(e, "desc", "")) for e in errors)
    first = reasons[0]
    desc = " ".join(str(getattr(errors[0], "desc", "")).split())
    if any(r in _NOT_DEFINED for r in reasons) or "not defined in the database" in texts:
        why = "not defined in the Tango database"
    elif any(r in _NO_DATABASE for r in reasons):
        why = "the Tango database does not answer"
    elif CONFIGURATION_ERROR_REASON in reasons:
        why = desc
    elif "API_AttrNotFound" in reasons or "API_AttributeNotFound" in reasons:
        why = "has no scheduler attributes (not a SchedulerMixin device?)"
    elif any(r in _NOT_RUNNING for r in reasons) or "TRANSIENT" in texts:
        why = "not running (or not reachable)"
    elif "API_DeviceTimedOut" in reasons or "TIMEOUT" in texts:
        why = "does not answer in time"
    else:
        why = desc or "failed"
    return f"{why} [{first}]"


def _decode(device: str, text: Any, updated: float) -> DeviceReport:
    try:
        data = json.loads(str(text))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        return DeviceReport(device, f"{DIAGNOSTICS_ATTRIBUTE} is not diagnostics JSON: {exc}")
    return DeviceReport(device, "", data, updated)


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
    return _decode(device, value, time.time())


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
            _left_behind.set()
            result = DeviceReport(
                device, f"does not answer within {timeout:g} s (its host hangs?) [timeout]"
            )
        reports.append(result)
    return reports


# -- rendering --------------------------------------------------------------------------------


def report_lines(reports: Sequence[DeviceReport], now: float | None = None) -> list[str]:
    """Describe each device: a summary line and its queues, or why it has none.

    Args:
        reports: The devices.
        now: Unix time to measure the age of the values from; None: no ages.

    Returns:
        The lines.
    """
    lines: list[str] = []
    for report in reports:
        snapshot = report.snapshot if report.ok else None
        if snapshot is None:
            lines.append(f"{report.device}: {report.error}")
            continue
        age = ""
        if now is not None and report.updated is not None:
            age = f" (value from {max(0.0, now - report.updated):.1f} s ago)"
        state = "" if snapshot.running else " [shut down]"
        lines.append(f"{report.device}: scheduler {snapshot.name!r}{state}{age}")
        lines.append(f"  {summary_line(snapshot)}")
        lines.extend(queue_table_lines(snapshot, indent="  "))
    return lines


def _sorted_data(report: DeviceReport) -> dict[str, Any] | None:
    if report.data is None:
        return None
    data = dict(report.data)
    snapshot = report.snapshot
    if snapshot is not None and isinstance(data.get("queues"), list):
        order = {row.queue.name: i for i, row in enumerate(queue_rows(snapshot))}
        data["queues"] = sorted(data["queues"], key=lambda q: order.get(q.get("name"), 0))
    return data


def report_json(reports: Sequence[DeviceReport]) -> dict[str, Any]:
    """Put the reports in the JSON form ``--json`` prints.

    Args:
        reports: The devices.

    Returns:
        ``{"devices": [...]}``, each entry with ``device``, ``ok``, ``error``,
        ``updated`` and ``diagnostics`` (queues worst wait first).
    """
    return {
        "devices": [
            {
                "device": r.device,
                "ok": r.ok,
                "error": r.error or None,
                "updated": r.updated,
                "diagnostics": _sorted_data(r),
            }
            for r in reports
        ]
    }


# -- following by events ----------------------------------------------------------------------


_WAITING = "waiting for the first value"


class _Follower:
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
            report = _decode(device, event.attr_value.value, time.time())
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
        holds for about 9 s inside cppTango; after :data:`_CLEANUP_BUDGET`
        seconds the rest is left behind (see :func:`run`).
        """

        def shut_down() -> None:
            with tango.EnsureOmniThread():
                self._scheduler.shutdown(_CLEANUP_BUDGET)

        closer = threading.Thread(target=shut_down, name="top-close", daemon=True)
        closer.start()
        closer.join(_CLEANUP_BUDGET)
        others = (*self._scheduler.threads, *getattr(self, "_first_reads", ()))
        if closer.is_alive() or any(
            t.is_alive() for t in others if t is not threading.current_thread()
        ):
            _left_behind.set()


class _Quit(BaseException):
    """SIGTERM arrived."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Quit()


def _live(args: argparse.Namespace, out: TextIO) -> int:
    interactive = out.isatty() and not args.json
    view = LiveView(out, interactive=interactive, interval=args.interval)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        signal.signal(signal.SIGTERM, _on_sigterm)
    follower: _Follower | None = None
    status = _EXIT_OK
    try:
        follower = _Follower(args.devices, args.timeout)
        follower.wait_first_reads(args.timeout)
        changed = first = True
        while True:
            reports = follower.reports()
            if args.json:
                if changed:
                    out.write(json.dumps(report_json(reports), sort_keys=True) + "\n")
                    out.flush()
            else:
                now = time.time()
                header = (
                    f"ska-tango-scheduler-top {__version__}: {len(reports)} device(s),"
                    f" {time.strftime('%H:%M:%S', time.localtime(now))}; change events;"
                    " Ctrl-C quits"
                )
                view.show([header, *report_lines(reports, now)], force=first)
                first = False
            changed = follower.wait(1.0)
    except (KeyboardInterrupt, _Quit):
        pass
    except BrokenPipeError:
        status = _EXIT_PIPE_CLOSED
    finally:
        if in_main_thread:
            # Clean up without being cut short by a second Ctrl-C.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if follower is not None:
            follower.close()
        if status != _EXIT_PIPE_CLOSED:
            try:
                view.finish()
            except BrokenPipeError:
                status = _EXIT_PIPE_CLOSED
    return status


def _seconds(text: str) -> float:
    """Parse ``--timeout`` and ``--interval``: seconds above 0, at most an hour."""
    try:
        return check_seconds("", text, _MAX_SECONDS, allow_zero=False, from_text=True)
    except (ArgumentTypeError, ArgumentRangeError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: give {exc.expected}") from None


def build_parser() -> argparse.ArgumentParser:
    """Return the command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="ska-tango-scheduler-top",
        description=(
            "Show the callback schedulers of running SchedulerMixin devices: one line per "
            "queue, the worst queue wait first, with drops and slow callbacks. Live by "
            "change events until Ctrl-C, or once with --once."
        ),
        epilog="Devices are found through TANGO_HOST, or name their database in the TRL.",
    )
    parser.add_argument("devices", nargs="+", metavar="TRL", help="device names or TRLs")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=3.0,
        metavar="SECONDS",
        help="how long the devices may take to answer: with --once, the whole read; live, "
        "the first read before the first view; above 0, at most 3600 (default 3)",
    )
    parser.add_argument(
        "--interval",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="live, when the output is not a terminal: seconds between two printed views "
        "(default 2)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command.

    Args:
        argv: Arguments after the program name; None: ``sys.argv[1:]``.

    Returns:
        The exit status: 0, 1 (``--once``: a device gave no snapshot), 2
        (usage), 130 (interrupted) or 141 (the output was closed).
    """
    args = build_parser().parse_args(argv)
    out = sys.stdout
    if not args.once:
        return _live(args, out)
    try:
        reports = read_reports(args.devices, args.timeout)
    except KeyboardInterrupt:
        _left_behind.set()
        return _EXIT_INTERRUPTED
    try:
        if args.json:
            out.write(json.dumps(report_json(reports), indent=2, sort_keys=True) + "\n")
        else:
            out.write("".join(f"{line}\n" for line in report_lines(reports)))
        out.flush()
    except BrokenPipeError:
        return _EXIT_PIPE_CLOSED
    return _EXIT_OK if all(r.ok for r in reports) else _EXIT_UNANSWERED


def run() -> None:
    """Entry point of the console script: run and exit with its status.

    A closed output ends the command quietly (status 141). When a thread
    was left inside a Tango call that does not return (a silent host), the
    process ends at once after flushing its output: a thread coming back
    from Tango while the interpreter finalises would abort it.
    """
    try:
        status = main()
    except KeyboardInterrupt:
        status = _EXIT_INTERRUPTED
    except BrokenPipeError:
        status = _EXIT_PIPE_CLOSED
    if status == _EXIT_PIPE_CLOSED:
        # Nothing more can be written; keep the flush at exit quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    if _left_behind.is_set():
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        logging.shutdown()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
