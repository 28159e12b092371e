"""Give a stream a bigger queue, and make two streams share one to keep their order.

Usage: python event_queues.py [DEVICE]

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
BURST = 200

# -- begin --
proxy = tango.DeviceProxy(device)
scheduler = CallbackScheduler()
lock = threading.Lock()
seen = []  # (attribute, value) in the order the callback got them


def record(event):
    if not event.err:
        with lock:
            attribute = event.attr_name.rsplit("/", 1)[-1].lower()
            seen.append((attribute, event.attr_value.value))


# myAttr1 gets its own queue of 8192 events instead of the small default.
scheduler.register_event_callback(
    proxy,
    "myAttr1",
    tango.EventType.CHANGE_EVENT,
    record,
    queue_factory=lambda: scheduler.allocate_queue(queue_size=8192),
).result(timeout=30)
# myAttr2 joins that same queue, so events of both are delivered in arrival order.
scheduler.register_event_callback(
    proxy,
    "myAttr2",
    tango.EventType.ARCHIVE_EVENT,
    record,
    queue_factory=lambda: scheduler.get_queue(proxy, "myAttr1", tango.EventType.CHANGE_EVENT),
).result(timeout=30)
# -- end --

start = [int(v) for v in proxy.pushedCounts][:2]
proxy.PushBurst([[BURST, BURST], ["myAttr1", "myAttr2"]])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    snapshot = scheduler.diagnostics()
    if snapshot.totals.queued == 0 and snapshot.totals.received >= 2 * BURST:
        break
    time.sleep(0.1)

snapshot = scheduler.diagnostics()
for queue in snapshot.queues:
    print(f"queue {queue.name}: size {queue.size}, streams {len(queue.streams)}, "
          f"received {queue.received}, dropped {queue.dropped}")
with lock:
    for attribute, first in zip(("myattr1", "myattr2"), start):
        values = [v for name, v in seen if name == attribute and v > first]
        print(f"{attribute}: {len(values)} new values, in order: {values == sorted(values)}")
scheduler.shutdown()
