"""Soak a CallbackScheduler: register/unregister churn, pins, LRCs and diagnostics.

Not part of the test suite. Everything runs on this machine's loopback: a test
Tango database, one EventSource server (four devices pushing two attributes
at 20 Hz each) and one LRC server. Several threads of one scheduler then, for
``--seconds`` seconds:

* register and unregister callbacks on random streams (some waiting for the
  future, some unregistering before it is done),
* pin and unpin streams (``connect_event_stream`` / ``disconnect_event_stream``),
* invoke LRCs (``Echo`` and a short ``Slow``) and wait for their end, while
  another thread connects and disconnects the LRC device's interface,
* call ``diagnostics()`` in a loop.

Every exception raised by an API call is kept with its traceback and printed
grouped by type and place. Once the churn has stopped, the scheduler must be
left with no callback and no pin of the churn, every LRC must have ended with
one terminal call, and the counters must add up. It stops by itself (plus at
most a minute of cleanup) and exits 0 only when nothing unexpected happened.

    .venv/bin/python tools/soak.py --seconds 90
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import random
import sys
import tempfile
import threading
import time
import traceback
from typing import Any

import tango

from ska_tango_scheduler import (
    CallbackScheduler,
    connect_lrc_interface,
    disconnect_lrc_interface,
    invoke_lrc,
)
from ska_tango_scheduler.control_model import TERMINAL_STATUSES, TaskStatus
from ska_tango_scheduler.long_running_commands import OUTCOME_LOST_REASON
from ska_tango_scheduler.testing import (
    DeviceServerProcess,
    TangoDatabase,
    event_source_process,
    wait_for,
)
from ska_tango_scheduler.testing.lrc_device import LRC_SERVER_NAME

CHANGE = tango.EventType.CHANGE_EVENT
ATTRS = ("myAttr1", "myAttr2")


class Failures:
    """Exceptions of API calls, with their tracebacks, grouped by type and place."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_kind: dict[str, list[str]] = collections.defaultdict(list)

    def add(self, what: str, exc: BaseException) -> None:
        """Keep one exception raised by ``what``."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        key = f"{what}: {type(exc).__name__} at {where}"
        with self.lock:
            self.by_kind[key].append(text)

    def report(self) -> int:
        """Print one block per kind (count, first traceback); return the total."""
        total = 0
        with self.lock:
            for key, texts in sorted(self.by_kind.items()):
                total += len(texts)
                print(f"--- {len(texts)} x {key}\n{texts[0]}", flush=True)
        return total


class Lrcs:
    """The outcome of every LRC invocation of the soak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.terminal: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
        self.started = 0

    def callback(self, number: int) -> Any:
        """Return the LRC callback of invocation ``number``."""

        def on_update(**kwargs: Any) -> None:
            error = kwargs.get("error")
            end = kwargs.get("status") in (*TERMINAL_STATUSES, TaskStatus.NOT_FOUND) or (
                error is not None and error[0].reason == OUTCOME_LOST_REASON
            )
            if end:
                with self.lock:
                    self.terminal[number].append(kwargs)

        return on_update


def churn(
    sched: CallbackScheduler,
    trls: list[str],
    stop: threading.Event,
    failures: Failures,
    counts: collections.Counter[str],
    seed: int,
    keep: bool = False,
) -> None:
    """Register and unregister callbacks on random streams until ``stop``.

    With ``keep``, callbacks are never unregistered (they pile up on the streams).
    """
    rng = random.Random(seed)
    held: list[Any] = []
    while not stop.is_set():
        trl, attr = rng.choice(trls), rng.choice(ATTRS)
        try:
            future = sched.register_event_callback(trl, attr, CHANGE, lambda _e: None)
            counts["register"] += 1
            if rng.random() < 0.5:
                held.append(future.result(timeout=30))
            else:
                held.append(future)
        except Exception as exc:  # noqa: BLE001 - kept and reported
            failures.add("register_event_callback", exc)
        if keep:
            held.clear()
        while held and (len(held) > 6 or rng.random() < 0.4):
            item = held.pop(rng.randrange(len(held)))
            try:
                callback_id = (
                    item.result(timeout=30) if isinstance(item, concurrent.futures.Future) else item
                )
                sched.unregister_callback(callback_id)
                counts["unregister"] += 1
            except Exception as exc:  # noqa: BLE001 - kept and reported
                failures.add("unregister_callback", exc)
        time.sleep(rng.uniform(0.0, 0.02))
    for item in held:
        try:
            callback_id = (
                item.result(timeout=30) if isinstance(item, concurrent.futures.Future) else item
            )
            sched.unregister_callback(callback_id)
        except Exception as exc:  # noqa: BLE001 - kept and reported
            failures.add("unregister_callback (final)", exc)


def pins(
    sched: CallbackScheduler,
    trls: list[str],
    stop: threading.Event,
    failures: Failures,
    counts: collections.Counter[str],
    seed: int,
) -> None:
    """Pin and unpin random streams until ``stop``; unpin all at the end."""
    rng = random.Random(seed)
    pinned: set[tuple[str, str]] = set()
    while not stop.is_set():
        key = (rng.choice(trls), rng.choice(ATTRS))
        try:
            if key in pinned:
                sched.disconnect_event_stream(key[0], key[1], CHANGE)
                pinned.discard(key)
                counts["unpin"] += 1
            else:
                sched.connect_event_stream(key[0], key[1], CHANGE).result(timeout=30)
                pinned.add(key)
                counts["pin"] += 1
        except Exception as exc:  # noqa: BLE001 - kept and reported
            failures.add("connect/disconnect_event_stream", exc)
        time.sleep(rng.uniform(0.0, 0.1))
    for key in pinned:
        try:
            sched.disconnect_event_stream(key[0], key[1], CHANGE)
        except Exception as exc:  # noqa: BLE001 - kept and reported
            failures.add("disconnect_event_stream (final)", exc)


def lrc_loop(
    sched: CallbackScheduler,
    trl: str,
    stop: threading.Event,
    failures: Failures,
    lrcs: Lrcs,
    seed: int,
) -> None:
    """Invoke LRCs one after the other until ``stop``, each waited for."""
    rng = random.Random(seed)
    proxy = tango.DeviceProxy(trl)
    while not stop.is_set():
        with lrcs.lock:
            number = lrcs.started
            lrcs.started += 1
        command, args = rng.choice([("Echo", (f"soak {number}",)), ("Slow", (0.2,))])
        try:
            handle = invoke_lrc(
                lrcs.callback(number), proxy, command, args, callback_scheduler=sched
            )
        except Exception as exc:  # noqa: BLE001 - kept and reported
            failures.add(f"invoke_lrc({command})", exc)
            with lrcs.lock:
                lrcs.terminal[number].append({"raised": repr(exc)})
            continue
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lrcs.lock:
                if lrcs.terminal.get(number):
                    break
            time.sleep(0.01)
        del handle


def lrc_interface_loop(
    sched: CallbackScheduler, trl: str, stop: threading.Event, failures: Failures, seed: int
) -> None:
    """Connect and disconnect the LRC device's interface until ``stop``."""
    rng = random.Random(seed)
    connected = False
    while not stop.is_set():
        try:
            if connected:
                disconnect_lrc_interface(trl, sched)
            else:
                connect_lrc_interface(trl, sched)
            connected = not connected
        except Exception as exc:  # noqa: BLE001 - kept and reported
            failures.add("connect/disconnect_lrc_interface", exc)
        time.sleep(rng.uniform(0.0, 0.3))
    if connected:
        try:
            disconnect_lrc_interface(trl, sched)
        except Exception as exc:  # noqa: BLE001 - kept and reported
            failures.add("disconnect_lrc_interface (final)", exc)


def diagnostics_loop(
    sched: CallbackScheduler, stop: threading.Event, failures: Failures, counts: Any
) -> None:
    """Call ``diagnostics()`` at about 20 Hz until ``stop``."""
    while not stop.is_set():
        try:
            sched.diagnostics()
            counts["diagnostics"] += 1
        except Exception as exc:  # noqa: BLE001 - kept and reported
            failures.add("diagnostics", exc)
        time.sleep(0.05)


def phase(text: str) -> None:
    """Print where the soak is, with the time (to place a crash)."""
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def main() -> int:
    """Run the soak and print what went wrong."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--churners", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--keep-callbacks",
        action="store_true",
        help="never unregister: callbacks pile up (tens of thousands per stream)",
    )
    args = parser.parse_args()
    log_dir = tempfile.mkdtemp(prefix="soak-")
    failures = Failures()
    lrcs = Lrcs()
    counts: collections.Counter[str] = collections.Counter()
    with TangoDatabase(log_dir=log_dir) as database:
        os.environ["TANGO_HOST"] = database.tango_host
        names = [f"test/soak{os.getpid()}/{i}" for i in range(1, 5)]
        source = event_source_process(database, f"soak{os.getpid()}", names, log_dir=log_dir)
        lrc_server = DeviceServerProcess(
            f"{LRC_SERVER_NAME}/soak{os.getpid()}",
            [f"test/soaklrc{os.getpid()}/1"],
            database=database,
            device_class=LRC_SERVER_NAME,
            module="ska_tango_scheduler.testing.lrc_device",
            log_dir=log_dir,
        )
        source.start()
        lrc_server.start()
        trls = source.trls
        lrc_trl = lrc_server.trls[0]
        sched = CallbackScheduler(thread_count=4, name="soak")
        phase("churn starting")
        stop = threading.Event()
        try:
            for trl in trls:
                tango.DeviceProxy(trl).command_inout("StartPushing", ([20.0, 20.0], list(ATTRS)))
            threads = [
                threading.Thread(
                    target=churn,
                    args=(sched, trls, stop, failures, counts, args.seed + i, args.keep_callbacks),
                )
                for i in range(args.churners)
            ]
            threads.append(
                threading.Thread(
                    target=pins, args=(sched, trls, stop, failures, counts, args.seed + 100)
                )
            )
            threads.extend(
                threading.Thread(
                    target=lrc_loop,
                    args=(sched, lrc_trl, stop, failures, lrcs, args.seed + 200 + i),
                )
                for i in range(2)
            )
            threads.append(
                threading.Thread(
                    target=lrc_interface_loop,
                    args=(sched, lrc_trl, stop, failures, args.seed + 300),
                )
            )
            threads.append(
                threading.Thread(target=diagnostics_loop, args=(sched, stop, failures, counts))
            )
            for thread in threads:
                thread.start()
            time.sleep(args.seconds)
            phase("churn stopping")
            stop.set()
            for thread in threads:
                thread.join(120)
            phase("churn threads joined")
            stuck = [t.name for t in threads if t.is_alive()]
            for trl in trls:
                tango.DeviceProxy(trl).command_inout("StopPushing", [])

            def settled() -> bool:
                snap = sched.diagnostics()
                return all(s.callbacks == 0 and not s.pinned for s in snap.streams)

            try:
                wait_for(settled, timeout=30, message="streams kept callbacks or pins")
            except Exception:  # noqa: BLE001 - reported below
                pass
            phase("settled (or not)")
            snap = sched.diagnostics()
            left = [
                (s.device, s.attribute, s.callbacks, s.pinned, s.state)
                for s in snap.streams
                if s.callbacks or s.pinned
            ]
            totals = snap.totals
        finally:
            stop.set()
            phase("shutting the scheduler down")
            sched.shutdown(timeout=30)
            phase("stopping the servers")
            source.stop()
            lrc_server.stop()
            phase("servers stopped")
    with lrcs.lock:
        no_end = [n for n in range(lrcs.started) if not lrcs.terminal.get(n)]
        twice = [n for n, calls in lrcs.terminal.items() if len(calls) > 1]
        raised = [n for n, calls in lrcs.terminal.items() if "raised" in calls[0]]
    print(f"counts: {dict(counts)}; LRCs started {lrcs.started}")
    print(
        f"totals: received {totals.received} delivered {totals.delivered} "
        f"dropped {totals.dropped} queued {totals.queued}"
    )
    failed = failures.report()
    if args.keep_callbacks:
        left = [s for s in left if s[3]]  # only pins must be gone
    problems = {
        "exceptions": failed,
        "streams_left_with_callbacks_or_pins": left,
        "lrcs_without_end": no_end,
        "lrcs_ended_twice": twice,
        "lrcs_raised": len(raised),
        "stuck_threads": stuck,
    }
    print(f"SUMMARY {problems}")
    bad = failed or left or no_end or twice or stuck
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
