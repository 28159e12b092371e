"""Robust Tango event handling: callbacks off Tango's event thread.

The package face. Everything public is importable from here; the modules
whose names start with an underscore are private.
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
    "DEFAULT_QUEUE_SIZE",
    "DIAGNOSTIC_ATTRIBUTES",
    "LATENCY_WINDOW",
    "MAX_ATTEMPT_TIMEOUT",
    "MAX_QUEUE_SIZE",
    "MAX_SLOW_CALLBACK_DURATION",
    "MAX_THREAD_COUNT",
    "SAFE_MONITOR_RELEASE",
    "BackoffDiagnostics",
    "BackoffPolicy",
    "CallbackID",
    "CallbackScheduler",
    "EventQueue",
    "LatencyStats",
    "MonitorNotReleasableWarning",
    "QueueDiagnostics",
    "SchedulerDiagnostics",
    "SchedulerMixin",
    "SchedulerShutdownError",
    "StreamDiagnostics",
    "StreamNotFoundError",
    "StreamStatus",
    "Totals",
    "UnknownCallbackError",
    "WorkerDiagnostics",
    "CommandError",
    "LRCSubscriptionsProtocol",
    "NoCommonProtocolVersionError",
    "ResultCode",
    "ResultCodeError",
    "TaskStatus",
    "__version__",
    "connect_lrc_interface",
    "control_model",
    "disconnect_lrc_interface",
    "invoke_lrc",
    "long_running_commands",
    "type_hints",
]
