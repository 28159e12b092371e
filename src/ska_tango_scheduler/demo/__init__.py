"""The ``make demo`` command: a flooding stream next to a quiet one, with and without the scheduler.

Run it with ``python -m ska_tango_scheduler.demo`` (``--help`` lists the
options). By default it starts its own Tango database and ``EventSource``
device servers on 127.0.0.1, so nothing but this package is needed. It then
subscribes twice to the same two attributes, a flooding one handled by a slow
callback and a quiet one handled by a quick callback:

1. with plain ``DeviceProxy.subscribe_event``, where every callback runs on
   Tango's single event thread, and
2. through a :class:`~ska_tango_scheduler.CallbackScheduler`,

and prints, side by side, what each stream received and delivered and how
late the quiet stream's events reached their callback. While the scheduler
runs, a live table shows the values that the ``SchedulerMixin`` diagnostic
attributes publish.

Every process the demo starts is ended when it finishes, fails, or is
interrupted with Ctrl-C.
"""

from ._cli import main

__all__ = ["main"]
