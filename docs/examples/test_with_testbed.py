"""Test a client against real Tango processes with the package's pytest fixtures.

Run: pytest -p ska_tango_scheduler.testing.pytest_plugin test_with_testbed.py

In a project, put ``pytest_plugins = ["ska_tango_scheduler.testing.pytest_plugin"]``
in the top-level ``conftest.py`` instead of passing ``-p``.
"""

import threading

import tango

from ska_tango_scheduler import CallbackScheduler
from ska_tango_scheduler.testing import wait_for


class Values:
    """A callback that keeps the values it receives."""

    def __init__(self):
        self.lock = threading.Lock()
        self.values = []

    def __call__(self, event):
        if not event.err:
            with self.lock:
                self.values.append(event.attr_value.value)

    def __contains__(self, value):
        with self.lock:
            return value in self.values


# -- begin --
def test_pushed_value_reaches_the_callback(event_source):
    """event_source: an EventSource server with three devices, shared by the module."""
    device = event_source.trls[0]
    values = Values()
    with CallbackScheduler() as scheduler:
        scheduler.register_event_callback(
            device, "myAttr3", tango.EventType.CHANGE_EVENT, values
        ).result(timeout=30)
        # The current value comes first; wait for it before pushing (as in the tutorial).
        wait_for(lambda: values.values, timeout=30, message="the current value")
        pushed = tango.DeviceProxy(device).Push("myAttr3")
        wait_for(lambda: pushed in values, timeout=30, message="the pushed value")


def test_device_that_starts_later(device_server_factory, tango_database):
    """device_server_factory: servers that this test starts and stops."""
    server = device_server_factory.event_source(1, start=False)
    trl = tango_database.trl(server.devices[0])
    values = Values()
    with CallbackScheduler() as scheduler:
        scheduler.register_event_callback(trl, "myAttr1", tango.EventType.CHANGE_EVENT, values)
        server.start()  # defines the device and starts its server
        wait_for(lambda: 0 in values, timeout=60, message="the first value")
# -- end --
