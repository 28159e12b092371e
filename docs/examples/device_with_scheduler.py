"""Device classes that own a CallbackScheduler: by hand, and with SchedulerMixin.

Usage: python device_with_scheduler.py INSTANCE [Tango options]

Runs the server ``SchedulerExample`` with two classes. Each device follows the
``myAttr1`` change events of the EventSource device named by its
``SourceDevice`` property and serves the last value as ``lastValue``.
"""

import sys

import tango
from tango.server import Device, attribute, device_property, run

from ska_tango_scheduler import CallbackScheduler
from ska_tango_scheduler.mixin import SchedulerMixin

CHANGE = tango.EventType.CHANGE_EVENT


# -- begin plain --
class FollowerDevice(Device):
    """Creates its scheduler in init_device and shuts it down in delete_device."""

    SourceDevice = device_property(dtype=str, default_value="demo/eventsource/1")

    def init_device(self):
        super().init_device()
        self._last = 0
        self.scheduler = CallbackScheduler(name=self.get_name())
        # A name or TRL: the source need not be running yet, or even defined.
        self.scheduler.register_event_callback(
            self.SourceDevice, "myAttr1", CHANGE, self._on_change
        )
        self.set_state(tango.DevState.ON)

    def _on_change(self, event):
        if not event.err:
            self._last = event.attr_value.value  # takes no lock the monitor holder waits on

    def delete_device(self):
        # Joins the worker threads. Safe here because no callback takes the device
        # monitor, which the thread running delete_device holds.
        self.scheduler.shutdown()
        super().delete_device()

    @attribute(dtype=tango.DevLong64)
    def lastValue(self):
        return self._last
# -- end plain --


# -- begin mixin --
class MixinFollowerDevice(SchedulerMixin, Device):
    """Its callback takes the device monitor, to push a change event."""

    SourceDevice = device_property(dtype=str, default_value="demo/eventsource/1")

    def init_device(self):
        super().init_device()  # SchedulerMixin makes self.scheduler first
        self._last = 0
        self.set_change_event("lastValue", True, False)
        self.scheduler.register_event_callback(
            self.SourceDevice, "myAttr1", CHANGE, self._on_change
        )
        self.set_state(tango.DevState.ON)

    def _on_change(self, event):
        if event.err:
            return
        with tango.AutoTangoMonitor(self):  # needs the monitor that delete_device holds
            self._last = event.attr_value.value
            self.push_change_event("lastValue", self._last)

    # No delete_device: the mixin's shuts the scheduler down inside
    # allow_internal_threads(), which lets this callback finish first.

    @attribute(dtype=tango.DevLong64)
    def lastValue(self):
        return self._last
# -- end mixin --


def main(args=None):
    """Run the server; the instance name comes first in ``args``."""
    argv = list(sys.argv[1:] if args is None else args)
    run((FollowerDevice, MixinFollowerDevice), args=["SchedulerExample", *argv])


if __name__ == "__main__":
    main()
