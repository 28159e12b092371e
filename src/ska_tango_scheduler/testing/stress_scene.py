"""The child process of the stress scene: a client under load, run by its file path.

The supervisor (:func:`ska_tango_scheduler.testing.stress.run_stress_scene`)
starts this file as a script, ``python stress_scene.py --mode MODE --devices
TRL ... [--lrc TRL]``. It imports only the standard library, PyTango and the
package's public API (``CallbackScheduler``, ``invoke_lrc``), so the same
scene runs against any checkout of the package put first on ``PYTHONPATH``
(an older commit, to show what the scene catches).

The hazard it targets: a thread of the process (a user thread calling the
package, or one of the package's own threads) holds a lock of the package
that Tango's event thread may wait for, and a garbage collection inside that
thread runs a ``DeviceProxy`` destructor, which unsubscribes and so waits for
Tango's event thread. The load:

* ``EventSource`` devices flood change events; one stream, the *canary*,
  pushes at a steady rate and must keep delivering;
* user objects (*holders*) hold a real ``DeviceProxy`` with a live
  subscription in reference cycles and are dropped continuously; the
  collector's thresholds are low and the set-up's objects frozen
  (``gc.freeze``), so collections start at arbitrary allocations in every
  thread, including inside calls of the package;
* a holder's finaliser (``__del__``; PEP 442 runs the finalisers of cycle
  members) drops its proxy on the thread that collects, so that the proxy's
  destructor runs there, exactly as when the collector frees a proxy, *except*
  on Tango's own threads (threads Python did not start, seen as
  ``threading._DummyThread``: the event and keep-alive threads on PyTango 9.5
  and 10): there it hands the proxy to a *graveyard*, which an *undertaker*
  thread empties every few milliseconds with no lock held. A subscribed proxy
  destroyed on Tango's own thread is a hazard of PyTango and cppTango (it
  crashes or stalls plain PyTango too), not the one under test;
* callbacks are registered and unregistered continuously, long running
  commands are invoked with their handles dropped, and diagnostics are read
  in a loop.

``--mode plain`` runs the same cycles and load through plain PyTango
subscriptions (the reference). The process prints a ``SCENE`` line (JSON: the
package file, PyTango's version), a ``PROGRESS`` line (JSON) every half
second and a ``SUMMARY`` line at the end; it dumps every thread's stack on
SIGUSR1 and, as a last resort, by itself after ``--last-resort`` seconds.
"""

from __future__ import annotations

import argparse
import collections
import faulthandler
import gc
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import tango

_CHANGE = tango.EventType.CHANGE_EVENT
CANARY_ATTR = "myAttr1"
_FLOOD_ATTR = "myAttr2"
_HOLDER_ATTR = "myAttr3"
_CHURN_ATTR = "myAttr4"
_PACKAGE = "ska_tango_scheduler"

#: Proxies handed over by finalisers that ran on Tango's own threads.
_GRAVEYARD: collections.deque[tango.DeviceProxy] = collections.deque()
#: Proxies a holder's finaliser destroyed, per place: ``undertaker``,
#: ``package call`` (a collection inside a call of the package, on any thread
#: but Tango's) or ``elsewhere``.
_FREED: collections.Counter[str] = collections.Counter()
#: Proxies destroyed inside a call of the package, per innermost function.
_INSIDE: collections.Counter[str] = collections.Counter()


def _on_tango_thread() -> bool:
    """Tell whether the current thread is one of Tango's (not started by Python)."""
    # Python names a thread it did not start "Dummy": the only way to tell.
    return isinstance(threading.current_thread(), threading._DummyThread)  # noqa: SLF001


def _package_frame() -> str:
    """Name the innermost frame of the package on this thread's stack (or ``""``)."""
    frame: FrameType | None = sys._getframe(2)  # noqa: SLF001 - cheaper than traceback
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith(_PACKAGE) and not name.startswith(f"{_PACKAGE}.testing"):
            return f"{name.rpartition('.')[2]}:{frame.f_code.co_name}"
        frame = frame.f_back
    return ""


def _holder_event(event: Any) -> None:
    """The holders' callback (it keeps no holder alive: PyTango 9.5 holds it in C++)."""
    _Holder.events += 1


class _Holder:
    """A user object holding a subscribed proxy in a reference cycle.

    The cycle is ``self.me``; the subscription's callback does not refer to
    the holder (PyTango 9.5 keeps callbacks alive from C++, where the
    collector cannot see a cycle through them).
    """

    made = 0
    events = 0
    buried = 0

    def __init__(self, trl: str, attr: str) -> None:
        self.me: _Holder | None = self
        self.proxy: tango.DeviceProxy | None = tango.DeviceProxy(trl)
        self.proxy.subscribe_event(attr, _CHANGE, _holder_event)
        _Holder.made += 1

    def __del__(self) -> None:
        proxy, self.proxy = self.proxy, None
        if proxy is None:
            return
        if _on_tango_thread():
            _GRAVEYARD.append(proxy)
            _Holder.buried += 1
            return
        where = _package_frame()
        # The last reference: ~DeviceProxy -> unsubscribe -> waits for Tango's
        # event thread, here, on this thread, whatever it holds.
        del proxy
        _FREED["package call" if where else "elsewhere"] += 1
        if where:
            _INSIDE[where] += 1


class _Counts:
    """Event counts per stream, written by one thread per stream at a time."""

    def __init__(self, streams: int) -> None:
        self.values = [0] * streams

    def callback(self, index: int) -> Callable[[Any], None]:
        values = self.values

        def count(event: Any) -> None:
            if not event.err:
                values[index] += 1

        return count


def _ignore(event: Any) -> None:
    """A callback for streams whose events do not matter."""


class _Scene:
    """The load of one process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mode: str = args.mode
        self.devices: list[str] = list(args.devices)
        self.stop = threading.Event()
        self.counters: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        # Stream 0 is the canary; then one flood stream per device.
        self.counts = _Counts(1 + len(self.devices))
        self.scheduler: Any = None
        self.proxies: list[tango.DeviceProxy] = []
        self.threads: list[threading.Thread] = []
        self.rng = random.Random(args.seed)

    # -- set-up ----------------------------------------------------------------------------------

    def start_sources(self) -> None:
        for index, trl in enumerate(self.devices):
            proxy = tango.DeviceProxy(trl)
            proxy.set_timeout_millis(10_000)
            rates = [self.args.flood_hz, self.args.holder_hz]
            attrs = [_FLOOD_ATTR, _HOLDER_ATTR]
            if index == 0:
                rates.append(self.args.canary_hz)
                attrs.append(CANARY_ATTR)
            proxy.StartPushing([rates, attrs])
            self.proxies.append(proxy)

    def stop_sources(self) -> None:
        for proxy in self.proxies:
            try:
                proxy.StopPushing([])
            except tango.DevFailed:
                pass

    def subscribe(self) -> None:
        streams = [(self.devices[0], CANARY_ATTR)] + [(trl, _FLOOD_ATTR) for trl in self.devices]
        if self.mode == "scheduler":
            from ska_tango_scheduler import CallbackScheduler

            self.scheduler = CallbackScheduler(
                thread_count=self.args.workers, name="stress", wait_for_subscription=False
            )
            for index, (trl, attr) in enumerate(streams):
                self.scheduler.register_event_callback(
                    trl, attr, _CHANGE, self.counts.callback(index)
                )
        else:
            for index, (trl, attr) in enumerate(streams):
                self.proxies[self.devices.index(trl)].subscribe_event(
                    attr, _CHANGE, self.counts.callback(index)
                )

    # -- load threads ----------------------------------------------------------------------------

    def spawn(self, name: str, target: Callable[[], None], count: int) -> None:
        for number in range(count):
            thread = threading.Thread(
                target=self._guard, args=(name, target), name=f"{name}-{number}", daemon=True
            )
            self.threads.append(thread)
            thread.start()

    def _guard(self, name: str, target: Callable[[], None]) -> None:
        # Omni threads: a proxy destructor on a thread cppTango does not know
        # crashes it, plain or not.
        with tango.EnsureOmniThread():
            while not self.stop.is_set():
                try:
                    target()
                except Exception as exc:
                    self.errors[f"{name}: {type(exc).__name__}"] += 1
                    self.stop.wait(0.1)

    def holders(self) -> None:
        kept: collections.deque[_Holder] = collections.deque()
        while not self.stop.is_set():
            kept.append(_Holder(self.rng.choice(self.devices), _HOLDER_ATTR))
            if len(kept) > self.args.holders_kept:
                kept.popleft()  # now garbage, in cycles, still subscribed
            self.stop.wait(self.args.holder_pause)

    def undertaker(self) -> None:
        while not self.stop.wait(self.args.undertaker_every):
            while _GRAVEYARD:
                proxy = _GRAVEYARD.popleft()
                del proxy  # ~DeviceProxy here, no lock of anyone's held
                _FREED["undertaker"] += 1

    def collector(self) -> None:
        while not self.stop.wait(self.args.collect_every):
            gc.collect()
            self.counters["explicit collections"] += 1

    def churn(self) -> None:
        trl = self.rng.choice(self.devices)
        attr = self.rng.choice([_CHURN_ATTR, _HOLDER_ATTR])
        if self.mode == "scheduler":
            future = self.scheduler.register_event_callback(trl, attr, _CHANGE, _ignore)
            callback_id = future.result(timeout=30)
            self.stop.wait(self.rng.uniform(0.0, self.args.churn_hold))
            self.scheduler.unregister_callback(callback_id)
        else:
            proxy = self.proxies[self.devices.index(trl)]
            event_id = proxy.subscribe_event(attr, _CHANGE, _ignore)
            self.stop.wait(self.rng.uniform(0.0, self.args.churn_hold))
            proxy.unsubscribe_event(event_id)
        self.counters["churn"] += 1
        self.stop.wait(self.args.churn_pause)

    def lrc(self) -> None:
        if self.mode == "scheduler":
            from ska_tango_scheduler.long_running_commands import invoke_lrc

            invoke_lrc(
                lambda **kwargs: None,
                self.args.lrc,
                "Complete",
                callback_scheduler=self.scheduler,
            )  # the handle is dropped at once
        else:
            holder = _Holder(self.args.lrc, "_lrcEvent")
            assert holder.proxy is not None
            holder.proxy.command_inout("Complete")
            del holder
        self.counters["lrc"] += 1
        self.stop.wait(self.args.lrc_pause)

    def diagnostics(self) -> None:
        if self.mode == "scheduler":
            self.scheduler.diagnostics()
        else:
            # The plain side's equivalent: build a report from the counts.
            rows = [{"stream": i, "count": c} for i, c in enumerate(self.counts.values)]
            json.dumps(rows)
        self.counters["diagnostics"] += 1
        self.stop.wait(self.args.diagnostics_pause)

    # -- run -------------------------------------------------------------------------------------

    def progress(self, started: float, kind: str = "PROGRESS") -> None:
        line = {
            "t": round(time.monotonic() - started, 3),
            "canary": self.counts.values[0],
            "streams": self.counts.values[1:],
            "holders": _Holder.made,
            "holder_events": _Holder.events,
            "buried": _Holder.buried,
            "freed": dict(_FREED),
            "collections": sum(stat["collections"] for stat in gc.get_stats()),
            "churn": self.counters["churn"],
            "lrc": self.counters["lrc"],
            "diagnostics": self.counters["diagnostics"],
            "errors": dict(self.errors),
        }
        if kind == "SUMMARY":
            line["inside"] = dict(_INSIDE.most_common(12))
        print(f"{kind} {json.dumps(line)}", flush=True)

    def run(self) -> None:
        args = self.args
        self.start_sources()
        self.subscribe()
        if args.gc_threshold:
            gc.set_threshold(*(int(part) for part in args.gc_threshold.split(",")))
        if args.gc_freeze:
            # The set-up's objects move out of the collector's sight: full
            # collections, which free the dropped holders, come far more often.
            gc.freeze()
        started = time.monotonic()
        self.spawn("undertaker", self.undertaker, 1)
        self.spawn("holders", self.holders, args.holder_threads)
        self.spawn("collector", self.collector, 1 if args.collect_every > 0 else 0)
        self.spawn("churn", self.churn, args.churn_threads)
        self.spawn("lrc", self.lrc, args.lrc_threads if args.lrc else 0)
        self.spawn("diagnostics", self.diagnostics, args.diagnostics_threads)
        while time.monotonic() - started < args.duration:
            time.sleep(args.report_every)
            self.progress(started)
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.progress(started, "SUMMARY")
        stuck = [t.name for t in self.threads if t.is_alive()]
        if stuck:
            print(f"STUCK {json.dumps(stuck)}", flush=True)
        self.stop_sources()
        if self.scheduler is not None:
            self.scheduler.shutdown(timeout=10)
        print("DONE", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stress_scene.py", description=__doc__)
    add = parser.add_argument
    add("--mode", choices=["scheduler", "plain"], required=True)
    add("--devices", nargs="+", required=True, help="EventSource devices (TRLs)")
    add("--lrc", default="", help="LrcReference device for long running commands")
    add("--duration", type=float, default=25.0)
    add("--workers", type=int, default=2, help="scheduler worker threads")
    add("--canary-hz", type=float, default=20.0)
    add("--flood-hz", type=float, default=200.0)
    add("--holder-hz", type=float, default=5.0)
    add("--holder-threads", type=int, default=3)
    add("--holders-kept", type=int, default=2)
    add("--holder-pause", type=float, default=0.02)
    add(
        "--gc-threshold",
        default="100,1,1",
        help="the collector's thresholds (gc.set_threshold), comma-separated; empty: default",
    )
    add("--gc-freeze", type=int, default=1, help="1: gc.freeze() after the set-up")
    add("--undertaker-every", type=float, default=0.005, help="seconds between graveyard rounds")
    add("--collect-every", type=float, default=0.0, help="seconds; 0: no collector thread")
    add("--churn-threads", type=int, default=3)
    add("--churn-hold", type=float, default=0.02, help="longest registration (s)")
    add("--churn-pause", type=float, default=0.02)
    add("--lrc-threads", type=int, default=1)
    add("--lrc-pause", type=float, default=0.05)
    add("--diagnostics-threads", type=int, default=3)
    add("--diagnostics-pause", type=float, default=0.002)
    add("--report-every", type=float, default=0.5)
    add("--seed", type=int, default=1)
    add("--last-resort", type=float, default=0.0, help="seconds until a forced stack dump")
    return parser


def _describe_code(mode: str) -> dict[str, str]:
    """Name the code the scene runs against."""
    found = {"tango": tango.__version__, "python": sys.version.split()[0]}
    if mode == "scheduler":
        import ska_tango_scheduler

        found["package"] = str(ska_tango_scheduler.__file__)
    return found


def main(argv: Sequence[str] | None = None) -> None:
    """Run the scene in this process.

    Args:
        argv: Command line after the program name; ``None``: ``sys.argv[1:]``.
    """
    args = _parser().parse_args(argv)
    faulthandler.enable(all_threads=True)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    last_resort = args.last_resort or args.duration + 120.0
    # Never hang forever, whatever the supervisor does: dump and exit.
    faulthandler.dump_traceback_later(last_resort, exit=True)
    print(f"SCENE {json.dumps(_describe_code(args.mode))}", flush=True)
    with tango.EnsureOmniThread():
        _Scene(args).run()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without finalising the interpreter: the scene is over, and cycles
    # of subscribed proxies still alive are not what it tests.
    os._exit(0)


if __name__ == "__main__":
    main()
