"""Time a healthy registration while other streams name hung Tango hosts.

Not part of the test suite. For 0, 2 and 5 hung hosts (SilentHost: accepts
TCP, never answers), registers one stream per hung host, then times the
registration of a healthy EventSource stream until its first value.

    .venv/bin/python tools/hung_hosts.py
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
import time

import tango

from ska_tango_scheduler import CallbackScheduler
from ska_tango_scheduler.testing import SilentHost, TangoDatabase, event_source_process


def _set(flag: threading.Event, _event: object) -> None:
    flag.set()


def main() -> None:
    """Print the healthy registration time for 0, 2 and 5 hung hosts."""
    log_dir = tempfile.mkdtemp(prefix="hung-hosts-")
    with TangoDatabase(log_dir=log_dir) as database:
        os.environ["TANGO_HOST"] = database.tango_host
        server = event_source_process(database, "hung", ["test/hung/1"], log_dir=log_dir)
        server.start()
        try:
            for count in (0, 2, 5):
                hosts = [SilentHost() for _ in range(count)]
                sched = CallbackScheduler(name=f"hung{count}")
                for i, host in enumerate(hosts):
                    trl = host.trl(f"hung/dev/{i}")
                    sched.register_event_callback(trl, "state", tango.EventType.CHANGE_EVENT, print)
                time.sleep(0.5)  # the hung attempts are in flight
                got = threading.Event()
                started = time.monotonic()
                sched.register_event_callback(
                    server.trls[0],
                    "myAttr1",
                    tango.EventType.CHANGE_EVENT,
                    functools.partial(_set, got),
                ).result(timeout=300)
                got.wait(300)
                took = time.monotonic() - started
                stop = time.monotonic()
                sched.shutdown(timeout=10)
                print(
                    f"hung hosts {count}: healthy registration + first value {took:.3f} s; "
                    f"shutdown {time.monotonic() - stop:.2f} s",
                    flush=True,
                )
                for host in hosts:
                    host.close()
        finally:
            server.stop()
            server.unregister()


if __name__ == "__main__":
    main()
