"""Measure how often a fresh Tango subscription misses the events pushed right after it.

Usage: python tools/fresh_subscription_misses.py [ITERATIONS] [fresh]

Plain PyTango, no scheduler: subscribe to ``_lrcEvent`` of the reference LRC device
(``ska_tango_scheduler.testing.lrc_device``), wait until the subscription reports success
(PyTango >= 10.1: ``SubSuccess`` of an ``AsyncRead`` subscription; older: the synchronous
call returned), invoke ``Complete`` (which pushes STAGING and QUEUED before replying, then
IN_PROGRESS and COMPLETED within milliseconds), wait up to 3 s for its four events, and
unsubscribe; repeat. With ``fresh`` every iteration uses a new DeviceProxy.

This is the cause of issue 14's "unpinned LRC that never hears anything": seen here on
PyTango 10.3.1 in 3 to 9 of 300 iterations (same proxy or new proxies) and on 9.5.1 in 1
of 300, the new subscription delivered none of the command's events, although every one
was pushed after the subscription had reported success. invoke_lrc therefore asks the
device about a command it hears nothing of (see docs/how-to/long-running-commands.rst).
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import tango

from ska_tango_scheduler import _compat
from ska_tango_scheduler.testing import TangoDatabase
from ska_tango_scheduler.testing.lrc_device import LRC_SERVER_NAME
from ska_tango_scheduler.testing.pytest_plugin import DeviceServerFactory


def main() -> None:
    """Run the measurement and print the iterations that missed events."""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    fresh = len(sys.argv) > 2 and sys.argv[2] == "fresh"
    with TangoDatabase() as db:
        factory = DeviceServerFactory(db, Path(tempfile.mkdtemp(prefix="fresh-sub-")))
        try:
            factory(
                f"{LRC_SERVER_NAME}/fresh",
                ["test/fresh/1"],
                device_class=LRC_SERVER_NAME,
                module="ska_tango_scheduler.testing.lrc_device",
            )
            trl = db.trl("test/fresh/1")
            proxy = tango.DeviceProxy(trl)
            incomplete = deaf = 0
            for index in range(count):
                if fresh:
                    proxy = tango.DeviceProxy(trl)
                seen: list[tuple[str, ...]] = []
                outcome = threading.Event()

                def on_event(
                    event: Any,
                    seen: list[tuple[str, ...]] = seen,
                    outcome: threading.Event = outcome,
                ) -> None:
                    if _compat.is_subscription_outcome(event):
                        outcome.set()
                    if not event.err and event.attr_value is not None and event.attr_value.value:
                        seen.append(tuple(event.attr_value.value))

                subscription = _compat.subscribe(
                    proxy, "_lrcEvent", tango.EventType.CHANGE_EVENT, on_event
                )
                if _compat.ASYNC_SUBSCRIPTION and not outcome.wait(10):
                    raise RuntimeError("no subscription outcome")
                command_id = proxy.command_inout("Complete")[1][0]
                deadline = time.monotonic() + 3
                statuses: list[int] = []
                while time.monotonic() < deadline and 5 not in statuses:
                    time.sleep(0.005)
                    statuses = [json.loads(v[1]).get("status") for v in seen if v[0] == command_id]
                if statuses != [0, 1, 2, 5]:
                    incomplete += 1
                    deaf += not statuses
                    print(f"iteration {index}: statuses heard {statuses}", flush=True)
                proxy.unsubscribe_event(subscription)
            print(
                f"pytango {tango.__version__}, new proxy each time: {fresh}: "
                f"{incomplete}/{count} incomplete, {deaf} heard nothing"
            )
        finally:
            factory.close()


if __name__ == "__main__":
    main()
