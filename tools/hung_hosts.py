"""Time healthy Tango work beside hosts that do not answer, ours and plain PyTango.

Not part of the test suite. Starts a test database and one ``EventSource``
server with two devices (``dev1`` pushes ``myAttr1`` at 50 Hz throughout),
then, for each scene and side, runs a fresh child process that:

1. subscribes to ``dev1/myAttr1`` (the already-connected healthy stream);
2. starts the scene:

   * ``silent30``: 30 TRLs on 30 hosts that accept TCP and never answer
     (:class:`SilentHost`), one stream each;
   * ``ping-then-hang``: a host that answers a GIOP ``LocateRequest`` at
     once and never a request (:class:`HalfAnsweringHost`);
   * ``late-ping``: the same, answering the ``LocateRequest`` after 2.9 s;
   * ``check-then-hang``: a host that answers the scheduler's own host check
     (a ``command_inout`` request) and hangs on what Tango sends next: the
     limit of checking inside one process (for plain PyTango it is the
     same host as ``ping-then-hang``);

3. once the bad hosts are being tried, registers ``dev2/myAttr1`` (a device
   never touched before, so a proxy is created) and times it to its first
   value;
4. keeps going for ``--window`` seconds after the scene started and reports
   the longest gap between two events of the connected stream in that time.

``ours`` registers through a :class:`CallbackScheduler` (its retries on its
own schedule). ``plain`` uses PyTango directly as a user would: a thread per
bad TRL that creates a ``DeviceProxy`` and subscribes, retrying every second
on failure; the healthy registration is a ``DeviceProxy`` and
``subscribe_event`` on another thread, given up after ``--cap`` seconds
(``registration_s`` is then null).

    .venv/bin/python tools/hung_hosts.py [--runs 3] [--window 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import tango

from ska_tango_scheduler import CallbackScheduler
from ska_tango_scheduler.testing import (
    HalfAnsweringHost,
    SilentHost,
    TangoDatabase,
    event_source_process,
)

CHANGE = tango.EventType.CHANGE_EVENT
SCENES = ("silent30", "ping-then-hang", "late-ping", "check-then-hang")


class _Arrivals:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: list[float] = []

    def __call__(self, event: Any) -> None:
        if not event.err:
            with self.lock:
                self.times.append(time.monotonic())

    def snapshot(self) -> list[float]:
        with self.lock:
            return list(self.times)


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.005)


def _plain_retry(trl: str, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            proxy = tango.DeviceProxy(trl)
            proxy.subscribe_event("state", CHANGE, lambda _e: None)
            return
        except tango.DevFailed:
            stop.wait(1.0)


def child(scene: str, side: str, trls: list[str], window: float, cap: float) -> dict[str, Any]:
    """Run one scene on one side in this process; return the figures."""
    connected, fresh = _Arrivals(), _Arrivals()
    sched = CallbackScheduler(name="hung", wait_for_subscription=False) if side == "ours" else None
    keep: list[Any] = []
    if sched is not None:
        sched.register_event_callback(trls[0], "myAttr1", CHANGE, connected).result(timeout=60)
    else:
        proxy = tango.DeviceProxy(trls[0])
        proxy.subscribe_event("myAttr1", CHANGE, connected)
        keep.append(proxy)
    _wait(lambda: len(connected.snapshot()) > 10, 30, "no 50 Hz events")
    hosts: list[Any] = []
    stop = threading.Event()
    if scene == "silent30":
        hosts = [SilentHost() for _ in range(30)]
        bad = [h.trl(f"silent/dev/{i}") for i, h in enumerate(hosts)]
    else:
        answered = {"command_inout"} if scene == "check-then-hang" else set()
        delay = 2.9 if scene == "late-ping" else 0.0
        hosts = [HalfAnsweringHost(locate_delay=delay, answered_operations=answered)]
        bad = [hosts[0].trl("bad/dev/1")]
    started = time.monotonic()
    for trl in bad:
        if sched is not None:
            sched.register_event_callback(trl, "state", CHANGE, lambda _e: None)
        else:
            threading.Thread(target=_plain_retry, args=(trl, stop), daemon=True).start()
    if scene == "silent30":
        time.sleep(0.5)  # the silent hosts are being tried
    else:
        host = hosts[0]
        _wait(lambda: host.requests or host.locate_requests, 30, "the bad host was not asked")
    t0 = time.monotonic()
    if sched is not None:
        sched.register_event_callback(trls[1], "myAttr1", CHANGE, fresh)
    else:

        def plain_register() -> None:
            proxy = tango.DeviceProxy(trls[1])
            proxy.subscribe_event("myAttr1", CHANGE, fresh)
            keep.append(proxy)

        threading.Thread(target=plain_register, daemon=True).start()
    deadline = t0 + cap
    while not fresh.snapshot() and time.monotonic() < deadline:
        time.sleep(0.005)
    got = fresh.snapshot()
    registration: float | None = got[0] - t0 if got else None
    _wait(lambda: time.monotonic() > started + window, window + 10, "window")
    arrivals = [t for t in connected.snapshot() if started <= t <= started + window]
    edges = [started, *arrivals, started + window]
    gap = max(b - a for a, b in zip(edges, edges[1:], strict=False))
    figures = {
        "scene": scene,
        "side": side,
        "registration_s": None if registration is None else round(registration, 3),
        "longest_gap_s": round(gap, 3),
        "events_in_window": len(arrivals),
    }
    if scene != "silent30":
        figures["bad_host_locates"] = len(hosts[0].locate_requests)
        figures["bad_host_requests"] = len(hosts[0].requests)
    stop.set()
    if sched is not None:
        sched.shutdown(timeout=10)
    for host in hosts:
        host.close()
    return figures


def main() -> None:
    """Run every scene on both sides ``--runs`` times; print one JSON line per run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--scenes", default=",".join(SCENES))
    parser.add_argument("--sides", default="ours,plain")
    parser.add_argument(
        "--cap", type=float, default=60.0, help="give up on the healthy registration after this"
    )
    parser.add_argument("--child", nargs=2, metavar=("SCENE", "SIDE"), help=argparse.SUPPRESS)
    parser.add_argument("--trls", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = child(args.child[0], args.child[1], args.trls.split(","), args.window, args.cap)
        print(json.dumps(figures), flush=True)
        os._exit(0)  # plain PyTango threads may still be inside Tango
    log_dir = tempfile.mkdtemp(prefix="hung-hosts-")
    with TangoDatabase(log_dir=log_dir) as database:
        env = {**os.environ, "TANGO_HOST": database.tango_host}
        server = event_source_process(
            database, "hung", ["test/hung/1", "test/hung/2"], log_dir=log_dir
        )
        server.start()
        try:
            pusher = tango.DeviceProxy(server.trls[0])
            pusher.StartPushing([[50.0], ["myAttr1"]])
            for _ in range(args.runs):
                for scene in args.scenes.split(","):
                    for side in args.sides.split(","):
                        if side == "plain" and scene == "check-then-hang":
                            continue  # for plain PyTango, the same host as ping-then-hang
                        command = [sys.executable, __file__, "--child", scene, side]
                        command += ["--trls", ",".join(server.trls), "--window", str(args.window)]
                        command += ["--cap", str(args.cap)]
                        done = subprocess.run(
                            command,
                            env=env,
                            capture_output=True,
                            text=True,
                            timeout=600,
                            check=False,
                        )
                        lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
                        print(
                            lines[-1] if lines else f"{scene} {side}: failed {done.stderr[-500:]}",
                            flush=True,
                        )
            pusher.StopPushing([])
        finally:
            server.stop()
            server.unregister()


if __name__ == "__main__":
    main()
