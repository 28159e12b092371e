"""Invoke a long running command, with its updates handled by your scheduler.

Usage: python long_running_command.py [DEVICE]

DEVICE is a device serving SKA long running commands, such as
ska_tango_scheduler.testing.lrc_device.LrcReference, whose Progress command
this example invokes; default: $EXAMPLE_DEVICE, else demo/lrc/1.
"""

import os
import sys
import threading

import tango

from ska_tango_scheduler import CallbackScheduler
from ska_tango_scheduler.long_running_commands import invoke_lrc

device = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EXAMPLE_DEVICE", "demo/lrc/1")

# -- begin --
done = threading.Event()


def lrc_callback(**kwargs):
    """Gets status, progress, result (and error) updates as keyword arguments."""
    print(kwargs)
    if "result" in kwargs:
        done.set()


proxy = tango.DeviceProxy(device)
scheduler = CallbackScheduler()

subscriptions = invoke_lrc(
    lrc_callback, proxy, "Progress", (3,), callback_scheduler=scheduler
)
print(f"command id: {subscriptions.command_id}")
done.wait(timeout=60)
subscriptions.unsubscribe_lrc_events()
scheduler.shutdown()
# -- end --
print(f"finished: {done.is_set()}")
