"""``SchedulerMixin``: a :class:`CallbackScheduler` owned by a Tango device.

Use it as the first base of a device class, before ``tango.server.Device`` or
any device class derived from it (an ska-tango-base class, for instance)::

    class MyDevice(SchedulerMixin, tango.server.Device):
        def init_device(self) -> None:
            super().init_device()  # the scheduler exists from here on
            self.scheduler.register_event_callback(
                "sys/tg_test/1", "double_scalar", tango.EventType.CHANGE_EVENT, self._on_change
            )

What the mixin adds:

* ``self.scheduler``: a new :class:`CallbackScheduler` on every ``init_device``
  (device start-up and every ``Init`` command), shut down by ``delete_device``
  inside :meth:`SchedulerMixin.allow_internal_threads`, so callbacks that take
  the device monitor (``tango.AutoTangoMonitor(self)``) or push events cannot
  deadlock the shutdown. (Where the monitor cannot be released safely, see
  :data:`SAFE_MONITOR_RELEASE`, ``delete_device`` does not wait for them.)
* :meth:`SchedulerMixin.allow_internal_threads`: a context manager that lets the
  device's own threads take the device monitor while the calling thread holds
  it, and keeps client requests waiting until the block ends.
* Twelve read-only diagnostic attributes (``schedulerThreadCount`` ...
  ``schedulerDiagnostics``, see :data:`DIAGNOSTIC_ATTRIBUTES`) whose change
  events are pushed by a background thread at most once per
  :attr:`SchedulerMixin.scheduler_diagnostics_period` seconds, and only for
  values that changed, so Taranta (through TangoGQL) follows them without
  polling.

Configuration, per class (class attributes) or per device (device
properties, which win when set):

====================  ====================================  =================================
what                  class attribute                       device property
====================  ====================================  =================================
worker threads        ``scheduler_thread_count``            ``SchedulerThreadCount``
scheduler name        ``scheduler_name``                    ``SchedulerName``
slow callbacks (s)    ``scheduler_slow_callback_duration``  ``SchedulerSlowCallbackDuration``
====================  ====================================  =================================

Valid values: a thread count from 1 to 128, a name of printable characters
(not blank), a threshold from 0 to 3,600 s (0 turns the check off), and for
the class attributes ``scheduler_diagnostics_period`` 0.05-3,600 s and
``scheduler_shutdown_timeout`` None or 0-3,600 s (the reasons for these
bounds are in the reference page "Limits"). A bad value (a thread count of 0
or 20,000 or not a number, a blank name, a negative threshold) puts the
device in FAULT, with a status naming the
setting and its value, instead of stopping the server; ``Init`` then fails
with a ``DevFailed`` (reason :data:`CONFIGURATION_ERROR_REASON`) saying why.
Correct the property and send ``Init`` again.

The default name is the device name, so the worker threads are called
``<device name>.worker-<i>``. Override :meth:`SchedulerMixin.create_scheduler`
for anything else (queue size, back-off policy, logger).

How PyTango finds the mixin's attributes and properties: ``DeviceMeta``
collects Tango attributes, commands and properties from the class being
defined and from the ``__dict__`` of its *direct* bases only. A device class
that lists ``SchedulerMixin`` among its bases gets them; so does any class
derived from such a device class. A plain mixin derived from
``SchedulerMixin`` gets copies of them in its own ``__dict__`` when it is
defined (see :meth:`SchedulerMixin.__init_subclass__`), so listing that mixin
directly works too.

Only synchronous (default green mode) device servers are supported.

The package root exports :class:`SchedulerMixin`, :data:`DIAGNOSTIC_ATTRIBUTES`,
:data:`SAFE_MONITOR_RELEASE` and ``MonitorNotReleasableWarning``. Second tier,
importable from this module only: ``CONFIGURATION_ERROR_REASON``,
``MAX_REPORTED_QUEUES``, ``SCHEDULER_PROPERTIES``, ``SchedulerConfigurationError``,
``changed_values``, ``diagnostic_values`` and the validators ``check_thread_count``,
``check_scheduler_name``, ``check_slow_callback_duration``,
``check_diagnostics_period``, ``check_shutdown_timeout`` and ``check_property_texts``.
"""

from __future__ import annotations

from ._checks import MAX_DIAGNOSTICS_PERIOD as MAX_DIAGNOSTICS_PERIOD
from ._checks import MAX_SHUTDOWN_TIMEOUT as MAX_SHUTDOWN_TIMEOUT
from ._checks import MAX_SLOW_CALLBACK_DURATION as MAX_SLOW_CALLBACK_DURATION
from ._checks import MAX_THREAD_COUNT as MAX_THREAD_COUNT
from ._checks import MIN_DIAGNOSTICS_PERIOD as MIN_DIAGNOSTICS_PERIOD
from ._checks import ArgumentRangeError as ArgumentRangeError
from ._checks import ArgumentTypeError as ArgumentTypeError
from ._checks import check_seconds as check_seconds
from ._checks import check_whole_number as check_whole_number
from ._device.attributes import (
    DIAGNOSTIC_ATTRIBUTES,
    MAX_REPORTED_QUEUES,
    changed_values,
    diagnostic_values,
)
from ._device.config import (
    CONFIGURATION_ERROR_REASON,
    SCHEDULER_PROPERTIES,
    SchedulerConfigurationError,
    check_diagnostics_period,
    check_property_texts,
    check_scheduler_name,
    check_shutdown_timeout,
    check_slow_callback_duration,
    check_thread_count,
)
from ._device.device import SchedulerMixin
from ._device.gate import SAFE_MONITOR_RELEASE, MonitorNotReleasableWarning
from ._threads import start_thread as start_thread
from .diagnostics import LATENCY_WINDOW as LATENCY_WINDOW
from .diagnostics import SchedulerDiagnostics as SchedulerDiagnostics
from .scheduler import CallbackScheduler as CallbackScheduler

__all__ = [
    "CONFIGURATION_ERROR_REASON",
    "DIAGNOSTIC_ATTRIBUTES",
    "MAX_REPORTED_QUEUES",
    "SAFE_MONITOR_RELEASE",
    "SCHEDULER_PROPERTIES",
    "MonitorNotReleasableWarning",
    "SchedulerConfigurationError",
    "SchedulerMixin",
    "changed_values",
    "check_diagnostics_period",
    "check_property_texts",
    "check_scheduler_name",
    "check_shutdown_timeout",
    "check_slow_callback_duration",
    "check_thread_count",
    "diagnostic_values",
]
