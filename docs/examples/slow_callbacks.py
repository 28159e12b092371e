"""A slow callback on a busy attribute next to a quick one, with two worker threads.

Usage: python slow_callbacks.py [DEVICE]

DEVICE is an EventSource device, by name or TRL; default: $EXAMPLE_DEVICE,
else demo/eventsource/1.
"""

import os
import sys
import threading
import time

import tango

from ska_tango_scheduler import CallbackScheduler

device = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EXAMPLE_DEVICE", "demo/eventsource/1")
counts = {"slow": 0, "quick": 0}
lock = threading.Lock()

# -- begin --
proxy = tango.DeviceProxy(device)


def my_slow_callback(event):
    time.sleep(0.1)  # much slower than the events arrive
    with lock:
        counts["slow"] += 1


def my_quick_callback(event):
    with lock:
        counts["quick"] += 1


# One thread for the slow callback, one more for everything else.
scheduler = CallbackScheduler(thread_count=2)

scheduler.register_event_callback(
    proxy,
    "myAttr1",
    tango.EventType.CHANGE_EVENT,
    my_slow_callback,
    queue_factory=lambda: scheduler.allocate_queue(queue_size=512),  # room for bursts
).result(timeout=30)
# Still served promptly while the slow callback works through its queue.
scheduler.register_event_callback(
    proxy, "myAttr2", tango.EventType.CHANGE_EVENT, my_quick_callback
).result(timeout=30)
# -- end --

proxy.StartPushing([[50.0, 5.0], ["myAttr1", "myAttr2"]])  # events per second
time.sleep(2.0)
proxy.StopPushing([])
time.sleep(0.5)
snapshot = scheduler.diagnostics()
scheduler.shutdown(timeout=1)
with lock:
    print(f"slow callback calls: {counts['slow']}, quick callback calls: {counts['quick']}")
for stream in snapshot.streams:
    print(f"{stream.attribute}: received {stream.received}, delivered {stream.delivered}, "
          f"queued {stream.queued}, dropped {stream.dropped}")
