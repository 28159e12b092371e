"""Register a callback on a device that is not defined in the database yet.

Usage: python undefined_device.py [DEVICE]

DEVICE is the TRL of an EventSource device that may not exist yet; default:
$EXAMPLE_DEVICE, else demo/late/1. The example waits (up to 120 s) until its
first value arrives, printing why the scheduler cannot connect meanwhile.
"""

import os
import sys
import threading

import tango

from ska_tango_scheduler import CallbackScheduler

device = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EXAMPLE_DEVICE", "demo/late/1")

# -- begin --
connected = threading.Event()
reasons = []


def callback(event):
    if event.err:
        reason = event.errors[0].reason  # e.g. DB_DeviceNotDefined
        if not reasons or reasons[-1] != reason:
            # PyTango >= 10.1 also marks the event as a failed subscription (SubFail).
            kind = getattr(event, "event_reason", "an error event")
            print(f"not connected yet: {reason} ({kind})", flush=True)
        reasons.append(reason)
    else:
        print(f"connected: {event.attr_name} = {event.attr_value.value}", flush=True)
        connected.set()


scheduler = CallbackScheduler()
# A TRL, not a DeviceProxy: the proxy cannot be made before the device is defined.
scheduler.register_event_callback(device, "myAttr1", tango.EventType.CHANGE_EVENT, callback)
connected.wait(timeout=120)
scheduler.shutdown()
# -- end --
print(f"connected after {len(reasons)} error event(s): {connected.is_set()}")
