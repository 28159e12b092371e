"""Loop process exits with live Tango subscriptions; count crashes.

Not part of the test suite. Looks for two rare crashes: a client process that
aborts at exit ("terminate called without an active exception", SIGABRT) and
a SchedulerMixin device server that dies of SIGSEGV on SIGTERM.

``clients``: starts a database, an EventSource server pushing at 50 Hz on two
attributes, an LrcReference server and a host that never answers, then runs
``--runs`` child interpreters; each subscribes through a CallbackScheduler
and/or ``invoke_lrc``, and exits (variant by run number: with or without
shutdown, with an attempt stuck on the silent host, with a long-running
command in progress). ``servers``: starts SchedulerReference servers that
subscribe to the EventSource, waits for callbacks, and stops them with SIGTERM.
Each run's exit status and any abort text are counted.

    .venv/bin/python tools/exit_loops.py clients --runs 200
    .venv/bin/python tools/exit_loops.py servers --runs 50
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

import tango

if TYPE_CHECKING:
    from ska_tango_scheduler.testing import TangoDatabase

CHANGE = tango.EventType.CHANGE_EVENT
VARIANTS = ("noshutdown", "shutdown", "stuck", "lrc", "immediate")


def child(variant: str, source: str, lrc: str, silent: str) -> None:
    """Subscribe as ``variant`` says, then return (the interpreter exits)."""
    import ska_tango_scheduler  # noqa: PLC0415
    from ska_tango_scheduler import CallbackScheduler, invoke_lrc  # noqa: PLC0415

    print("imported", ska_tango_scheduler.__file__, file=sys.stderr)
    seen: list[Any] = []
    sched = CallbackScheduler(name="exitloop")
    for attr in ("myAttr1", "myAttr2"):
        sched.register_event_callback(source, attr, CHANGE, seen.append)
    if variant == "immediate":
        return
    if variant == "stuck":
        sched.register_event_callback(silent, "state", CHANGE, seen.append)
    if variant == "lrc":
        handle = invoke_lrc(lambda **_: None, lrc, "Slow", (5.0,))
        globals()["_keep"] = handle
    deadline = time.monotonic() + 10
    while len(seen) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    if variant == "shutdown":
        sched.shutdown(timeout=5)


def run_clients(args: argparse.Namespace, database: TangoDatabase, log_dir: str) -> int:
    """Start the servers, run the child processes, count exit statuses."""
    from ska_tango_scheduler.testing import (  # noqa: PLC0415
        DeviceServerProcess,
        SilentHost,
        event_source_process,
    )

    pid = os.getpid()
    source = event_source_process(database, f"exitl{pid}", [f"test/exitl{pid}/1"], log_dir=log_dir)
    source.start()
    lrc = DeviceServerProcess(
        f"LrcReference/exitl{pid}",
        [f"test/exitlrc{pid}/1"],
        database=database,
        device_class="LrcReference",
        module="ska_tango_scheduler.testing.lrc_device",
        log_dir=log_dir,
    )
    lrc.start()
    silent = SilentHost()
    tango.DeviceProxy(source.trls[0]).command_inout(
        "StartPushing", ([50.0, 50.0], ["myAttr1", "myAttr2"])
    )
    counts: collections.Counter[tuple[str, int, bool]] = collections.Counter()
    try:
        for number in range(args.runs):
            variant = VARIANTS[number % len(VARIANTS)]
            cmd = [
                sys.executable,
                __file__,
                "child",
                variant,
                source.trls[0],
                lrc.trls[0],
                silent.trl("test/silent/1"),
            ]
            env = dict(os.environ, TANGO_HOST=database.tango_host)
            if args.lib:
                env["PYTHONPATH"] = args.lib
            try:
                done = subprocess.run(cmd, env=env, capture_output=True, timeout=120, check=False)
                code, err = done.returncode, done.stderr.decode(errors="replace")
            except subprocess.TimeoutExpired as exc:
                code, err = 999, str(exc)
            bad = "terminate called" in err or code != 0
            counts[(variant, code, "terminate called" in err)] += 1
            print(f"run {number} {variant}: exit {code}", flush=True)
            if bad:
                print(err[-2000:], flush=True)
            if number == 0:
                print(err.splitlines()[0] if err else "(no stderr)", flush=True)
    finally:
        silent.close()
        source.stop()
        lrc.stop()
    for key, value in sorted(counts.items()):
        print(f"variant={key[0]} exit={key[1]} abort_text={key[2]}: {value}")
    return 0


def run_servers(args: argparse.Namespace, database: TangoDatabase, log_dir: str) -> int:
    """Start, feed and SIGTERM SchedulerReference servers; count exit statuses."""
    from ska_tango_scheduler.testing import (  # noqa: PLC0415
        DeviceServerProcess,
        event_source_process,
        wait_for,
    )

    pid = os.getpid()
    source = event_source_process(database, f"exits{pid}", [f"test/exits{pid}/1"], log_dir=log_dir)
    source.start()
    tango.DeviceProxy(source.trls[0]).command_inout(
        "StartPushing", ([50.0, 50.0], ["myAttr1", "myAttr2"])
    )
    counts: collections.Counter[int | None] = collections.Counter()
    try:
        for number in range(args.runs):
            name = f"test/exitref{pid}/{number}"
            server = DeviceServerProcess(
                f"SchedulerReference/exitr{pid}x{number}",
                [name],
                database=database,
                device_class="SchedulerReference",
                module="ska_tango_scheduler.testing.mixin_devices",
                log_dir=log_dir,
                env={"PYTHONPATH": args.lib} if args.lib else None,
                register=True,
                stop_grace=30.0,
            )
            server.register()
            database.put_device_properties(
                name,
                {
                    "SourceDevice": [source.trls[0]],
                    "QuickAttribute": ["myAttr2"],
                    "CallbackDelay": [str(args.delay)],
                },
            )
            server.start()
            device = tango.DeviceProxy(server.trls[0])
            wait_for(lambda d=device: d.callbackCount >= 5, timeout=60)  # type: ignore[misc]
            if number == 0:
                new = "quickCallbackCount" in device.get_attribute_list()
                print(f"server runs the {'reworked' if new else 'old'} mixin_devices", flush=True)
            for _ in range(args.inits):
                device.Init()
            time.sleep(args.settle * (number % 3) / 2)
            code = server.stop()
            counts[code] += 1
            print(f"run {number}: exit {code}", flush=True)
            if code != 0:
                print(f"run {number}: exit {code}\n{server.log_tail(3000)}", flush=True)
            server.unregister()
    finally:
        source.stop()
    for key, value in counts.items():
        print(f"exit={key}: {value}")
    return 0


def main() -> int:
    """Parse the arguments and run the loop."""
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(*sys.argv[2:6])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("clients", "servers"))
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.01, help="callback delay (servers)")
    parser.add_argument("--inits", type=int, default=0, help="Init calls before SIGTERM")
    parser.add_argument("--settle", type=float, default=0.5)
    parser.add_argument("--lib", default="", help="PYTHONPATH of the code under test")
    args = parser.parse_args()
    from ska_tango_scheduler.testing import TangoDatabase  # noqa: PLC0415

    log_dir = tempfile.mkdtemp(prefix="exit-loops-")
    print(f"logs in {log_dir}", flush=True)
    with TangoDatabase() as database:
        os.environ["TANGO_HOST"] = database.tango_host
        if args.mode == "clients":
            return run_clients(args, database, log_dir)
        return run_servers(args, database, log_dir)


if __name__ == "__main__":
    sys.exit(main())
