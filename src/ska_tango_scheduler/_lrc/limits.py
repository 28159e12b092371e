"""Sizes, timeouts and intervals of the LRC client.

The public ones are documented on :mod:`ska_tango_scheduler.long_running_commands`.
They are read when used (``limits.NAME``), so a test may change them here.
"""

from __future__ import annotations

LRC_QUEUE_SIZE = 1024
"""Capacity of the scheduler queue of a device's LRC streams, and of an outbox."""

EARLY_EVENT_LIMIT = 1024
"""Events an invocation keeps while it waits for the command's reply."""

REGISTRATION_TIMEOUT = 30.0
"""Seconds the client waits for its subscriptions."""

OUTCOME_LOST_AFTER = 30.0
"""Seconds without a sign of life of the device before a command's outcome is lost."""

CHECK_INTERVAL_MAX = 10.0
"""Longest time an unfinished invocation goes without hearing of its command."""

CHECK_INTERVAL_MIN = 1.0
"""First interval between status checks; it doubles while nothing is heard."""

TROUBLE_INTERVAL = 1.0
"""How often a device in trouble (a stream in error, no answer) is asked again."""

CHECK_THREADS = 4
"""Threads of the lanes service running status checks."""

FAILURE_DETAIL_WAIT = 2.0
"""Seconds invoke_lrc waits for the error event of a stream that failed to subscribe."""

MODULE_SCHEDULER_THREADS = 2
"""Worker threads of the module-level scheduler."""
