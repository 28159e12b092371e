"""Keep a stream connected while short-lived callbacks come and go.

Usage: python persistent_stream.py [DEVICE]

DEVICE is an EventSource device, by name or TRL; default: $EXAMPLE_DEVICE,
else demo/eventsource/1.
"""

import os
import sys

import tango

from ska_tango_scheduler import CallbackScheduler

device = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EXAMPLE_DEVICE", "demo/eventsource/1")
CHANGE = tango.EventType.CHANGE_EVENT

# -- begin --
proxy = tango.DeviceProxy(device)
scheduler = CallbackScheduler()

# Subscribe once, and stay subscribed until disconnect_event_stream.
scheduler.connect_event_stream(proxy, "myAttr1", CHANGE).result(timeout=30)

for _ in range(3):
    # The stream is connected: registering and unregistering make no Tango call,
    # so they never pause the event delivery of the rest of the process.
    callback_id = scheduler.register_event_callback(
        proxy, "myAttr1", CHANGE, tango.utils.EventCallback()
    ).result()
    # ... use the callback for a while ...
    scheduler.unregister_callback(callback_id)

totals = scheduler.diagnostics().totals
print(f"subscribe calls: {totals.subscribe_calls}, unsubscribe calls: {totals.unsubscribe_calls}")

# No callback is left, so this also unsubscribes (in the background).
scheduler.disconnect_event_stream(proxy, "myAttr1", CHANGE)
print(f"streams left: {len(scheduler.diagnostics().streams)}")
scheduler.shutdown()
# -- end --
