"""Register callbacks with a scheduler instead of subscribing with DeviceProxy.

Usage: python register_callbacks.py [DEVICE]

DEVICE is an EventSource device, by name or TRL; default: $EXAMPLE_DEVICE,
else demo/eventsource/1.
"""

import os
import sys
import time

import tango

from ska_tango_scheduler import CallbackScheduler

device = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EXAMPLE_DEVICE", "demo/eventsource/1")

# -- begin --
proxy = tango.DeviceProxy(device)
scheduler = CallbackScheduler()

change_printer = tango.utils.EventCallback()  # prints each event, keeps the last 100
archive_printer = tango.utils.EventCallback()

futures = [
    scheduler.register_event_callback(
        proxy, "myAttr1", tango.EventType.CHANGE_EVENT, change_printer
    ),
    scheduler.register_event_callback(
        proxy, "myAttr2", tango.EventType.ARCHIVE_EVENT, archive_printer
    ),
]
# Waiting is optional: it returns once each subscription has been attempted.
callback_ids = [future.result(timeout=30) for future in futures]

proxy.Push("myAttr1")
proxy.Push("myAttr2")
deadline = time.monotonic() + 30
while time.monotonic() < deadline and (
    len(change_printer.get_events()) < 2 or len(archive_printer.get_events()) < 2
):
    time.sleep(0.05)  # the current value, then the pushed one

for callback_id in callback_ids:
    scheduler.unregister_callback(callback_id)
scheduler.shutdown()
# -- end --
print(f"change events: {len(change_printer.get_events())}")
print(f"archive events: {len(archive_printer.get_events())}")
