"""The device server layer behind :mod:`ska_tango_scheduler.mixin`, one concept per module.

* :mod:`.config`: the scheduler settings of a device (device properties and
  class attributes), their checks (built on the shared validators of
  :mod:`.._checks`) and the configuration error a bad one raises.
* :mod:`.attributes`: the one table of diagnostic attributes (name, Tango
  type, unit, doc, how the value is computed from a snapshot, whether it
  gets change events) and the Tango attributes made from it.
* :mod:`.gate`: the monitor gate behind ``allow_internal_threads`` (which
  threads hold a block open, which requests wait, when the monitor is
  released).
* :mod:`.pusher`: the thread that pushes changed diagnostic values as change
  events, at most once per period.
* :mod:`.device`: the :class:`SchedulerMixin` class itself (life cycle).

:mod:`ska_tango_scheduler.mixin` is the public face: it re-exports the names
users import. The mixin's messages are logged by :data:`LOGGER`, named after
that face, as they always were; :func:`device_name` names a device in them.
"""

from __future__ import annotations

import logging
from typing import Any

#: The logger of the mixin's own messages.
LOGGER = logging.getLogger("ska_tango_scheduler.mixin")


def device_name(device: Any) -> str:
    """Return a device's name for messages (its class name when Tango cannot tell).

    Args:
        device: A Tango device.

    Returns:
        The name.
    """
    try:
        return str(device.get_name())
    except Exception:  # noqa: BLE001 - only for names in messages
        return type(device).__name__
