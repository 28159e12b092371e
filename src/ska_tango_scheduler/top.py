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

# The names below were importable from this module before it became a face;
# they stay importable from here.
from ._checks import ArgumentRangeError as ArgumentRangeError
from ._checks import ArgumentTypeError as ArgumentTypeError
from ._checks import check_seconds as check_seconds
from ._top.cli import build_parser, main
from ._top.cli import run as run
from ._top.reading import read_report, read_reports
from ._top.reports import (
    DIAGNOSTICS_ATTRIBUTE,
    DeviceReport,
    describe_errors,
    report_json,
    report_lines,
)
from ._view import LiveView as LiveView
from ._view import queue_rows as queue_rows
from ._view import queue_table_lines as queue_table_lines
from ._view import summary_line as summary_line
from .diagnostics import BackoffDiagnostics as BackoffDiagnostics
from .diagnostics import LatencyStats as LatencyStats
from .diagnostics import QueueDiagnostics as QueueDiagnostics
from .diagnostics import SchedulerDiagnostics as SchedulerDiagnostics
from .diagnostics import StreamDiagnostics as StreamDiagnostics
from .diagnostics import Totals as Totals
from .diagnostics import WorkerDiagnostics as WorkerDiagnostics
from .diagnostics import snapshot_from_dict
from .mixin import CONFIGURATION_ERROR_REASON as CONFIGURATION_ERROR_REASON
from .scheduler import CallbackScheduler as CallbackScheduler

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


if __name__ == "__main__":
    run()
