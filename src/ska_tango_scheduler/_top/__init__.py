"""``ska-tango-scheduler-top`` behind its face :mod:`ska_tango_scheduler.top`.

One concept per module:

* :mod:`.reports`: what the command knows about a device
  (:class:`~.reports.DeviceReport`), errors in plain words, text and JSON
  renderings (the table itself is drawn by the shared renderer :mod:`.._view`).
* :mod:`.reading`: reading devices once, each on a thread of its own, and
  following them by change events on a scheduler of the command's own.
* :mod:`.cli`: arguments and their checks, the live loop, exit statuses and
  the console entry point.
"""
