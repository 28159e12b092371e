"""Keep a device's long running command streams connected between invocations.

Usage: python lrc_interface.py [DEVICE]

DEVICE is a device serving SKA long running commands, such as
ska_tango_scheduler.testing.lrc_device.LrcReference, whose Complete command
this example invokes twice; default: $EXAMPLE_DEVICE, else demo/lrc/1.
"""

import os
import sys
import threading

import tango

from ska_tango_scheduler import CallbackScheduler
from ska_tango_scheduler.long_running_commands import (
    connect_lrc_interface,
    disconnect_lrc_interface,
    invoke_lrc,
)

device = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EXAMPLE_DEVICE", "demo/lrc/1")

# -- begin --
done = threading.Event()


def lrc_callback(**kwargs):
    print(kwargs)
    if "result" in kwargs:
        done.set()


proxy = tango.DeviceProxy(device)
scheduler = CallbackScheduler()

connect_lrc_interface(proxy, scheduler)  # subscribes to the LRC attributes once

for _ in range(2):
    done.clear()
    subscriptions = invoke_lrc(lrc_callback, proxy, "Complete", callback_scheduler=scheduler)
    done.wait(timeout=60)
    subscriptions.unsubscribe_lrc_events()  # unregisters callbacks; stays subscribed

calls = scheduler.diagnostics().totals.subscribe_calls
disconnect_lrc_interface(proxy, scheduler)  # now the streams are unsubscribed
scheduler.shutdown()
# -- end --
print(f"subscribe calls for two invocations: {calls}")
