"""Robust Tango event handling: callbacks off Tango's event thread.

The package face: ``__all__`` below lists, by concept, everything most code
needs, and every name in it is importable from here. The modules whose names
start with an underscore are private.

Each public submodule's ``__all__`` holds what this package exports from it,
plus, for some, second-tier names: constants, helpers and protocols for more
specialised code (tools, tests, device classes that configure the mixin by
hand), importable from that submodule only and listed in its docstring and in
the API reference:

* :mod:`~ska_tango_scheduler.scheduler` and :mod:`~ska_tango_scheduler.diagnostics`:
  exported here in full, except :func:`~ska_tango_scheduler.diagnostics.snapshot_from_dict`;
* :mod:`~ska_tango_scheduler.long_running_commands`,
  :mod:`~ska_tango_scheduler.mixin`, :mod:`~ska_tango_scheduler.control_model`
  and :mod:`~ska_tango_scheduler.type_hints`: second-tier names listed in
  their docstrings;
* :mod:`ska_tango_scheduler.top`, :mod:`ska_tango_scheduler.testing` and
  :mod:`ska_tango_scheduler.demo` are tools: nothing of theirs is exported here.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import control_model, long_running_commands, type_hints
from ._backoff import BackoffPolicy
from ._checks import (
    MAX_ATTEMPT_TIMEOUT,
    MAX_QUEUE_SIZE,
    MAX_SLOW_CALLBACK_DURATION,
    MAX_THREAD_COUNT,
)
from ._queues import DEFAULT_QUEUE_SIZE, EventQueue
from .control_model import ResultCode, TaskStatus
from .diagnostics import (
    LATENCY_WINDOW,
    BackoffDiagnostics,
    LatencyStats,
    QueueDiagnostics,
    SchedulerDiagnostics,
    StreamDiagnostics,
    StreamStatus,
    Totals,
    WorkerDiagnostics,
)
from .long_running_commands import (
    CommandError,
    LRCSubscriptionsProtocol,
    NoCommonProtocolVersionError,
    ResultCodeError,
    connect_lrc_interface,
    disconnect_lrc_interface,
    invoke_lrc,
)
from .mixin import (
    DIAGNOSTIC_ATTRIBUTES,
    SAFE_MONITOR_RELEASE,
    MonitorNotReleasableWarning,
    SchedulerMixin,
)
from .scheduler import (
    CallbackID,
    CallbackScheduler,
    SchedulerShutdownError,
    StreamNotFoundError,
    UnknownCallbackError,
)

try:
    __version__ = version("ska-tango-scheduler")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    # The scheduler: callbacks off Tango's event thread, its queues and retries.
    "CallbackScheduler",
    "CallbackID",
    "EventQueue",
    "DEFAULT_QUEUE_SIZE",
    "BackoffPolicy",
    "SchedulerShutdownError",
    "StreamNotFoundError",
    "UnknownCallbackError",
    # Upper bounds of the scheduler's arguments (see docs/reference/limits).
    "MAX_THREAD_COUNT",
    "MAX_QUEUE_SIZE",
    "MAX_SLOW_CALLBACK_DURATION",
    "MAX_ATTEMPT_TIMEOUT",
    # Diagnostics: the snapshot of a scheduler, and one stream's status.
    "SchedulerDiagnostics",
    "Totals",
    "QueueDiagnostics",
    "StreamDiagnostics",
    "BackoffDiagnostics",
    "LatencyStats",
    "WorkerDiagnostics",
    "LATENCY_WINDOW",
    "StreamStatus",
    # Long running commands: the client, its errors, and the SKA control model.
    "invoke_lrc",
    "connect_lrc_interface",
    "disconnect_lrc_interface",
    "LRCSubscriptionsProtocol",
    "CommandError",
    "NoCommonProtocolVersionError",
    "ResultCodeError",
    "ResultCode",
    "TaskStatus",
    # Device servers: the mixin and its diagnostic attributes.
    "SchedulerMixin",
    "DIAGNOSTIC_ATTRIBUTES",
    "SAFE_MONITOR_RELEASE",
    "MonitorNotReleasableWarning",
    # Public submodules whose further names are second tier (see the docstring).
    "control_model",
    "long_running_commands",
    "type_hints",
    "__version__",
]
