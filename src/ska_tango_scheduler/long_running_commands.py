"""Client side of SKA long running commands (LRC), on a :class:`CallbackScheduler`.

A long running command replies at once with a command identifier; what happens to
the command afterwards reaches clients as change events. :func:`invoke_lrc` hides that
protocol: it subscribes to the device's LRC event streams, invokes the command, and
calls ``lrc_callback`` with keyword arguments (``status``, ``progress``, ``result``,
``error`` and any further keys the device sends) about this one command, until the
command ends. Its signature and meaning are ska-tango-base's: ``command_args`` is a
tuple unpacked into the command call, and dropping the returned handle stops the
callbacks. Unlike ska-tango-base's client it always ends: a command whose device dies
or forgets it ends with ``status=TaskStatus.NOT_FOUND`` or an ``error=`` saying the
outcome is lost.

Both wire versions are spoken. Version 2 uses one attribute, ``_lrcEvent``; version 1
uses ``longRunningCommandStatus``, ``longRunningCommandProgress`` and
``longRunningCommandResult``. The version is agreed with the device through its
``lrcProtocolVersions`` attribute (a device without it speaks version 1).

Callbacks run on the scheduler's worker threads, never on Tango's event thread. Pass
your own scheduler with ``callback_scheduler=``; otherwise a module-level one is
created on first use and shut down when the interpreter exits. To stop every
invocation from subscribing and unsubscribing (which pauses all event callbacks of the
process), keep the device's LRC streams connected with :func:`connect_lrc_interface`.

The package root exports :func:`invoke_lrc`, :func:`connect_lrc_interface`,
:func:`disconnect_lrc_interface`, ``LRCSubscriptionsProtocol`` and the errors
(``CommandError``, ``NoCommonProtocolVersionError``, ``ResultCodeError``). Second
tier, importable from this module only: ``CHECK_INTERVAL_MAX``,
``EARLY_EVENT_LIMIT``, ``EVENTS_DROPPED_REASON``, ``INVOKE_FAILED_REASON``,
``LRC_QUEUE_SIZE``, ``LrcCallback``, ``OUTCOME_LOST_AFTER``, ``OUTCOME_LOST_REASON``,
``REGISTRATION_TIMEOUT``, ``SUPPORTED_PROTOCOL_VERSIONS``, ``lrc_attribute_names``,
``module_callback_scheduler`` and ``negotiate_lrc_protocol_version``.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING as TYPE_CHECKING
from typing import Any

from ._lanes import LaneService as LaneService
from ._lrc import client as _client
from ._lrc import errors as _errors
from ._lrc import limits as _limits
from ._lrc import protocol as _protocol
from ._lrc.client import (
    connect_lrc_interface,
    disconnect_lrc_interface,
    invoke_lrc,
)
from ._lrc.errors import CommandError, NoCommonProtocolVersionError, ResultCodeError
from ._lrc.handle import LRCSubscriptionsProtocol
from ._lrc.ports import module_callback_scheduler
from ._lrc.protocol import lrc_attribute_names, negotiate_lrc_protocol_version
from ._queues import EventQueue as EventQueue
from .control_model import ACCEPTED_RESULT_CODES as ACCEPTED_RESULT_CODES
from .control_model import TERMINAL_STATUSES as TERMINAL_STATUSES
from .control_model import ResultCode as ResultCode
from .control_model import TaskStatus as TaskStatus
from .control_model import parse_task_status as parse_task_status
from .scheduler import CallbackID as CallbackID
from .scheduler import CallbackScheduler as CallbackScheduler
from .scheduler import SchedulerShutdownError as SchedulerShutdownError
from .scheduler import StreamNotFoundError as StreamNotFoundError
from .scheduler import UnknownCallbackError as UnknownCallbackError

__all__ = [
    "CHECK_INTERVAL_MAX",
    "EARLY_EVENT_LIMIT",
    "EVENTS_DROPPED_REASON",
    "INVOKE_FAILED_REASON",
    "LRC_QUEUE_SIZE",
    "OUTCOME_LOST_AFTER",
    "OUTCOME_LOST_REASON",
    "REGISTRATION_TIMEOUT",
    "SUPPORTED_PROTOCOL_VERSIONS",
    "CommandError",
    "LRCSubscriptionsProtocol",
    "LrcCallback",
    "NoCommonProtocolVersionError",
    "ResultCodeError",
    "connect_lrc_interface",
    "disconnect_lrc_interface",
    "invoke_lrc",
    "lrc_attribute_names",
    "module_callback_scheduler",
    "negotiate_lrc_protocol_version",
]

# The code lives in the private package ska_tango_scheduler._lrc, one concept per
# module; this module is its face: the user documentation, __all__ and re-exports.
# The names imported "as" themselves are not in __all__ but were importable from
# here before the split, so they stay. The constants below are copies, for reading
# and for the documentation: the client reads the values in ska_tango_scheduler._lrc,
# and setting one of the tunable ones here sets the client's too (see _Face).

LrcCallback = _client.LrcCallback
"""A callback taking ``status``, ``progress``, ``result``, ``error`` and ``**kwargs``."""

SUPPORTED_PROTOCOL_VERSIONS: tuple[int, int] = _protocol.SUPPORTED_PROTOCOL_VERSIONS
"""Lowest and highest LRC protocol versions this client speaks."""

LRC_QUEUE_SIZE: int = _limits.LRC_QUEUE_SIZE
"""Capacity of the scheduler queue that feeds a device's LRC event streams.

Large, because the updates of many commands share these streams and arrive in bursts;
a full queue discards its oldest events (callbacks are told, see
:data:`EVENTS_DROPPED_REASON`). It also bounds the calls an invocation holds for an
``lrc_callback`` that falls behind.
"""

EARLY_EVENT_LIMIT: int = _limits.EARLY_EVENT_LIMIT
"""Events an invocation keeps while it waits for the command's reply."""

REGISTRATION_TIMEOUT: float = _limits.REGISTRATION_TIMEOUT
"""Seconds :func:`invoke_lrc` and :func:`connect_lrc_interface` wait for subscriptions."""

INVOKE_FAILED_REASON: str = _errors.INVOKE_FAILED_REASON
"""Reason of the error that :func:`invoke_lrc` adds, last, to a ``DevFailed`` it re-raises."""

EVENTS_DROPPED_REASON: str = _errors.EVENTS_DROPPED_REASON
"""Reason of the error passed as ``error=`` when LRC events may have been lost."""

OUTCOME_LOST_AFTER: float = _limits.OUTCOME_LOST_AFTER
"""Seconds a device may go without a sign of life before its command's outcome is lost.

Counted from the device's last sign of life: its reply to the command, the last event
that arrived on an LRC stream, or the last status check it answered. Once that long
has passed, the first status check the device does not answer ends the invocation:
the callback gets a last call with ``error=`` (reason :data:`OUTCOME_LOST_REASON`).
While the device gives no sign of life it is checked every second, and a check that
is not answered takes about twice the proxy's timeout (the status query, then a
ping), so a device that freezes is given up at most about ``OUTCOME_LOST_AFTER`` + 7 s
after its last sign of life with Tango's default 3 s timeout. (The clock used to start
at the first error event, about 10 s into a hang, which made that 40 s and more.)
"""

OUTCOME_LOST_REASON: str = _errors.OUTCOME_LOST_REASON
"""Reason of the final ``error=`` of an invocation whose device stayed away too long."""

CHECK_INTERVAL_MAX: float = _limits.CHECK_INTERVAL_MAX
"""Longest time, in seconds, an unfinished invocation goes without hearing of its command.

After that the device is asked for the command's status (see :func:`invoke_lrc`); the
interval starts at 1 s and doubles while nothing is heard.
"""


_TUNABLES = frozenset(
    {
        "CHECK_INTERVAL_MAX",
        "EARLY_EVENT_LIMIT",
        "LRC_QUEUE_SIZE",
        "OUTCOME_LOST_AFTER",
        "REGISTRATION_TIMEOUT",
    }
)


class _Face(types.ModuleType):
    """This module, whose sizes and timeouts stay the client's own.

    Before the client moved to ``_lrc`` these constants were read where they are set
    here, so setting one (``long_running_commands.OUTCOME_LOST_AFTER = 60.0``, or a
    test's ``monkeypatch.setattr``) changed the client. It still does: the value is
    passed on to ``_lrc.limits``, which the client reads.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _TUNABLES:
            setattr(_limits, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Face
