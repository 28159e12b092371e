"""Measure what callbacks see when a device server is killed and restarted.

Not part of the test suite (one such run is: tests/faults). Each run starts an
EventSource server with one device, connects two CHANGE streams through a
CallbackScheduler, pushes at 20 Hz on both, kills the server with SIGKILL,
restarts it 10 to 20 s later, pushes again and watches for 12 s after the data
resumed. Per run and stream it reports the error events while down, the
spurious error events once data flowed again, values delivered twice, and
whether the counters add up.

    .venv/bin/python tools/restart_runs.py --runs 10
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from typing import Any

import tango

from ska_tango_scheduler import CallbackScheduler
from ska_tango_scheduler.testing import TangoDatabase, event_source_process, wait_for

CHANGE = tango.EventType.CHANGE_EVENT
ATTRS = ("myAttr1", "myAttr2")


class Recorder:
    """Every event with its arrival time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[float, Any]] = []

    def __call__(self, event: Any) -> None:
        """Keep the event with its arrival time."""
        with self.lock:
            self.events.append((time.monotonic(), event))

    def snapshot(self) -> list[tuple[float, Any]]:
        """Return a copy of the events so far."""
        with self.lock:
            return list(self.events)


def one_run(database: TangoDatabase, number: int, log_dir: str, down: float) -> dict[str, Any]:
    """Kill and restart one server under two streams; count what the callbacks saw."""
    server = event_source_process(
        database, f"restart{os.getpid()}x{number}", [f"test/restart{number}/1"], log_dir=log_dir
    )
    server.start()
    device = server.trls[0]
    recs = {a: Recorder() for a in ATTRS}
    sched = CallbackScheduler(name=f"restart{number}")
    try:
        for attr in ATTRS:
            sched.register_event_callback(device, attr, CHANGE, recs[attr]).result(timeout=30)
        tango.DeviceProxy(device).command_inout("StartPushing", ([20.0, 20.0], list(ATTRS)))
        wait_for(lambda: all(len(r.snapshot()) >= 20 for r in recs.values()), timeout=30)
        server.kill()
        killed = time.monotonic()
        time.sleep(down)
        server.start()
        restarted = time.monotonic()
        tango.DeviceProxy(device).command_inout("StartPushing", ([20.0, 20.0], list(ATTRS)))

        def resumed() -> bool:
            return all(
                any(t > restarted and not e.err for t, e in r.snapshot()) for r in recs.values()
            )

        wait_for(resumed, timeout=60, message="data did not resume")
        time.sleep(12.0)
        tango.DeviceProxy(device).command_inout("StopPushing", [])
        time.sleep(0.5)
        wait_for(lambda: sched.diagnostics().totals.queued == 0, timeout=30)
        result: dict[str, Any] = {"down": round(down, 1)}
        snap = {s.attribute: s for s in sched.diagnostics().streams}
        for attr, rec in recs.items():
            events = rec.snapshot()
            after = [(t, e) for t, e in events if t > killed]
            first_good = next((t for t, e in after if t > restarted and not e.err), None)
            errors_down = sum(
                1 for t, e in after if e.err and (first_good is None or t < first_good)
            )
            spurious = [
                e.errors[0].reason for t, e in after if e.err and first_good and t > first_good
            ]
            before_vals = [int(e.attr_value.value) for t, e in events if t <= killed and not e.err]
            after_vals = [int(e.attr_value.value) for t, e in after if not e.err]
            duplicates = (len(before_vals) - len(set(before_vals))) + (
                len(after_vals) - len(set(after_vals))
            )
            s = snap[attr.lower()] if attr.lower() in snap else snap[attr]
            adds_up = s.received == s.delivered + s.dropped + s.queued and s.delivered == len(
                events
            )
            result[attr] = {
                "errors_while_down": errors_down,
                "spurious": spurious,
                "duplicates": duplicates,
                "resume_s": round(first_good - restarted, 2) if first_good else None,
                "counts_add_up": adds_up,
            }
        return result
    finally:
        sched.shutdown(timeout=10)
        server.stop()
        server.unregister()


def main() -> int:
    """Run the restart runs and print one line per run and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    log_dir = tempfile.mkdtemp(prefix="restart-runs-")
    total_dup = total_spurious = 0
    with TangoDatabase(log_dir=log_dir) as database:
        os.environ["TANGO_HOST"] = database.tango_host
        for number in range(1, args.runs + 1):
            result = one_run(database, number, log_dir, rng.uniform(10.0, 20.0))
            print(f"run {number}: {result}", flush=True)
            for attr in ATTRS:
                total_dup += result[attr]["duplicates"]
                total_spurious += len(result[attr]["spurious"])
    print(f"TOTAL runs={args.runs} duplicates={total_dup} spurious_errors={total_spurious}")
    return 0 if total_dup == 0 and total_spurious == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
