"""Start a private Tango database with an EventSource device, for the other examples.

Usage: python testbed.py

It prints the TRL of the device, then keeps everything running until Ctrl-C
(or SIGTERM), when it stops the device server and the database.
"""

import signal
import threading

from ska_tango_scheduler.testing import TangoDatabase, event_source_process

# -- begin --
stop = threading.Event()
signal.signal(signal.SIGINT, lambda *_: stop.set())
signal.signal(signal.SIGTERM, lambda *_: stop.set())

with TangoDatabase() as database:
    server = event_source_process(database, "tutorial", ["tutorial/eventsource/1"])
    with server:  # starts the server and waits until its device answers
        print(f"TANGO_HOST={database.tango_host}")
        print(f"device ready: {server.trls[0]}", flush=True)
        stop.wait()
print("stopped")
# -- end --
