"""Tutorial: follow an attribute through a CallbackScheduler.

Usage: python tutorial.py [DEVICE]

DEVICE is an EventSource device, by name or TRL; default: $EXAMPLE_DEVICE,
else demo/eventsource/1.
"""

import os
import sys
import threading

import tango

from ska_tango_scheduler import CallbackScheduler

device = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EXAMPLE_DEVICE", "demo/eventsource/1")

# -- begin --
values = []
first_value = threading.Event()
five_values = threading.Event()


def on_change(event):
    """Runs on a worker thread of the scheduler, never on Tango's event thread."""
    if event.err:
        print(f"error event: {event.errors[0].reason}")
        return
    print(f"{event.attr_name} = {event.attr_value.value}")
    values.append(event.attr_value.value)
    first_value.set()
    if len(values) == 5:
        five_values.set()


with CallbackScheduler(name="tutorial") as scheduler:
    future = scheduler.register_event_callback(
        device, "myAttr1", tango.EventType.CHANGE_EVENT, on_change
    )
    callback_id = future.result(timeout=30)  # subscribed: the current value is on its way
    # Wait for it before making changes: Tango's event connection to a server this
    # process has not heard from before can miss changes pushed in its first moments.
    first_value.wait(timeout=30)

    source = tango.DeviceProxy(device)
    for _ in range(4):
        source.Push("myAttr1")  # the device pushes the next number as a change event

    five_values.wait(timeout=30)
    for stream in scheduler.diagnostics().streams:
        print(
            f"{stream.attribute}: received {stream.received}, "
            f"delivered {stream.delivered}, dropped {stream.dropped}"
        )
    scheduler.unregister_callback(callback_id)
# Leaving the block shut the scheduler down: its threads have ended.
print(f"values seen: {values}")
# -- end --
