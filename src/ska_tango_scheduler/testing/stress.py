"""A stress scene for the deadlock between the garbage collector and Tango's event thread.

A ``DeviceProxy`` with live subscriptions that sits in a reference cycle is freed
by Python's cyclic garbage collector, on whatever thread happens to allocate at
that moment. Its C++ destructor unsubscribes, which waits for Tango's event
thread. If that thread is waiting for a lock that the collecting thread holds,
the process stalls for good. This module runs a scene that makes this likely:

* ``EventSource`` devices flood change events; one stream, the *canary*, pushes
  at a steady rate and must keep delivering;
* user objects hold a ``DeviceProxy`` with a live subscription in a reference
  cycle, and are dropped continuously, so the collector frees them;
* the collector runs often (a low threshold, and a thread that collects);
* callbacks are registered and unregistered continuously;
* long running commands are invoked and their handles dropped;
* diagnostics are read in a loop.

The scene runs through a :class:`~ska_tango_scheduler.CallbackScheduler`
(``--mode scheduler``) or through plain PyTango subscriptions
(``--mode plain``), with the same cycles and the same load, in a child
process: ``python -m ska_tango_scheduler.testing.stress --mode MODE --devices
TRL ... [--lrc TRL]``. The child prints a ``PROGRESS`` line (JSON) every half
second and a ``SUMMARY`` line at the end, and dumps every thread's stack on
SIGUSR1. :func:`run_stress_scene` starts it, watches its progress, and on a
stall dumps its stacks and kills it, so that a stall or a crash never stalls
or kills the caller.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tango

from ._process import ManagedProcess

__all__ = [
    "STRESS_MODULE",
    "STRESS_SECONDS_ENV",
    "StressResult",
    "main",
    "run_stress_scene",
    "stress_seconds",
]

#: Module to run with ``python -m`` for the scene.
STRESS_MODULE = "ska_tango_scheduler.testing.stress"
#: Environment variable: seconds each stress scene runs (default 40).
STRESS_SECONDS_ENV = "SKA_TANGO_SCHEDULER_STRESS_SECONDS"

_CHANGE = tango.EventType.CHANGE_EVENT
_CANARY_ATTR = "myAttr1"
_FLOOD_ATTR = "myAttr2"
_HOLDER_ATTR = "myAttr3"
_CHURN_ATTR = "myAttr4"
_DECODER = json.JSONDecoder()


def stress_seconds(default: float = 40.0) -> float:
    """Return the scene duration from :data:`STRESS_SECONDS_ENV`.

    Args:
        default: Seconds when the variable is unset or empty.

    Returns:
        The duration in seconds.
    """
    text = os.environ.get(STRESS_SECONDS_ENV, "").strip()
    return float(text) if text else default


# -- the child process -------------------------------------------------------------------------


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


class _Holder:
    """A user object that holds a subscribed proxy in a reference cycle.

    The proxy's subscription holds the bound method, the method holds the
    object, the object holds the proxy; ``self.me`` adds a second cycle.
    """

    made = 0
    events = 0

    def __init__(self, trl: str, attr: str) -> None:
        self.me = self
        self.proxy = tango.DeviceProxy(trl)
        self.proxy.subscribe_event(attr, _CHANGE, self.on_event)
        _Holder.made += 1

    def on_event(self, event: Any) -> None:
        _Holder.events += 1


@dataclass
class _Stats:
    """What the load threads did."""

    churn: int = 0
    lrc: int = 0
    diagnostics: int = 0
    gc_runs: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    def error(self, where: str, exc: BaseException) -> None:
        self.errors[f"{where}: {type(exc).__name__}"] += 1


class _Scene:
    """The load of one child process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mode: str = args.mode
        self.devices: list[str] = list(args.devices)
        self.stop = threading.Event()
        self.stats = _Stats()
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
                attrs.append(_CANARY_ATTR)
            proxy.StartPushing([rates, attrs])
            self.proxies.append(proxy)

    def stop_sources(self) -> None:
        for proxy in self.proxies:
            try:
                proxy.StopPushing([])
            except tango.DevFailed:
                pass

    def subscribe(self) -> None:
        streams = [(self.devices[0], _CANARY_ATTR)] + [(trl, _FLOOD_ATTR) for trl in self.devices]
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
        with tango.EnsureOmniThread():
            while not self.stop.is_set():
                try:
                    target()
                except Exception as exc:
                    self.stats.error(name, exc)
                    self.stop.wait(0.1)

    def holders(self) -> None:
        kept: collections.deque[_Holder] = collections.deque()
        while not self.stop.is_set():
            kept.append(_Holder(self.rng.choice(self.devices), _HOLDER_ATTR))
            if len(kept) > self.args.holders_kept:
                kept.popleft()  # now garbage, in a cycle, still subscribed
            self.stop.wait(self.args.holder_pause)

    def collector(self) -> None:
        while not self.stop.wait(self.args.collect_every):
            gc.collect()
            self.stats.gc_runs += 1

    def churn(self) -> None:
        trl = self.rng.choice(self.devices)
        attr = self.rng.choice([_CHURN_ATTR, _HOLDER_ATTR])
        counter = _ignore
        if self.mode == "scheduler":
            future = self.scheduler.register_event_callback(trl, attr, _CHANGE, counter)
            callback_id = future.result(timeout=30)
            self.stop.wait(self.rng.uniform(0.0, 0.05))
            self.scheduler.unregister_callback(callback_id)
        else:
            proxy = self.proxies[self.devices.index(trl)]
            event_id = proxy.subscribe_event(attr, _CHANGE, counter)
            self.stop.wait(self.rng.uniform(0.0, 0.05))
            proxy.unsubscribe_event(event_id)
        self.stats.churn += 1
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
            holder.proxy.command_inout("Complete")
            del holder
        self.stats.lrc += 1
        self.stop.wait(self.args.lrc_pause)

    def diagnostics(self) -> None:
        if self.mode == "scheduler":
            self.scheduler.diagnostics()
        else:
            # The plain side's equivalent: build a report from the counts.
            rows = [{"stream": i, "count": c} for i, c in enumerate(self.counts.values)]
            json.dumps(rows)
        self.stats.diagnostics += 1
        self.stop.wait(self.args.diagnostics_pause)

    # -- run -------------------------------------------------------------------------------------

    def progress(self, started: float, kind: str = "PROGRESS") -> None:
        line = {
            "t": round(time.monotonic() - started, 3),
            "canary": self.counts.values[0],
            "streams": self.counts.values[1:],
            "holders": _Holder.made,
            "holder_events": _Holder.events,
            "churn": self.stats.churn,
            "lrc": self.stats.lrc,
            "diagnostics": self.stats.diagnostics,
            "collections": self.stats.gc_runs,
            "errors": dict(self.stats.errors),
        }
        print(f"{kind} {json.dumps(line)}", flush=True)

    def run(self) -> None:
        args = self.args
        self.start_sources()
        self.subscribe()
        if args.gc_threshold:
            gc.set_threshold(*(int(part) for part in args.gc_threshold.split(",")))
        if args.gc_freeze:
            # Everything made so far moves out of the collector's sight: full
            # collections, which free the dropped holders, come far more often.
            gc.freeze()
        started = time.monotonic()
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
    parser = argparse.ArgumentParser(prog=f"python -m {STRESS_MODULE}", description=__doc__)
    add = parser.add_argument
    add("--mode", choices=["scheduler", "plain"], required=True)
    add("--devices", nargs="+", required=True, help="EventSource devices (TRLs)")
    add("--lrc", default="", help="LrcReference device for long running commands")
    add("--duration", type=float, default=30.0)
    add("--workers", type=int, default=2, help="scheduler worker threads")
    add("--canary-hz", type=float, default=20.0)
    add("--flood-hz", type=float, default=50.0)
    add("--holder-hz", type=float, default=5.0)
    add("--holder-threads", type=int, default=3)
    add("--holders-kept", type=int, default=2)
    add("--holder-pause", type=float, default=0.05)
    add(
        "--gc-threshold",
        default="700,1,1",
        help="the collector's thresholds (gc.set_threshold), comma-separated; empty: default",
    )
    add("--gc-freeze", type=int, default=1, help="1: gc.freeze() after the set-up")
    add("--collect-every", type=float, default=0.0, help="seconds; 0: no collector thread")
    add("--churn-threads", type=int, default=2)
    add("--lrc-threads", type=int, default=1)
    add("--lrc-pause", type=float, default=0.1)
    add("--churn-pause", type=float, default=0.05)
    add("--diagnostics-threads", type=int, default=3)
    add("--diagnostics-pause", type=float, default=0.0)
    add("--report-every", type=float, default=0.5)
    add("--seed", type=int, default=1)
    add("--last-resort", type=float, default=0.0, help="seconds until a forced stack dump")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the scene in this process (the child of :func:`run_stress_scene`).

    Args:
        argv: Command line after the program name; ``None``: ``sys.argv[1:]``.
    """
    args = _parser().parse_args(argv)
    faulthandler.enable(all_threads=True)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    last_resort = args.last_resort or args.duration + 120.0
    # Never hang forever, whatever the supervisor does: dump and exit.
    faulthandler.dump_traceback_later(last_resort, exit=True)
    # Every thread of the scene that can run the collector is an omni thread: a
    # proxy destructor on any other thread can crash in cppTango, plain or not.
    with tango.EnsureOmniThread():
        _Scene(args).run()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without finalising the interpreter: the scene is over, and cycles
    # of subscribed proxies still alive are not what it tests.
    os._exit(0)


# -- the supervisor ----------------------------------------------------------------------------


@dataclass
class StressResult:
    """What a supervised scene did.

    Attributes:
        mode: ``scheduler`` or ``plain``.
        duration: Seconds the scene was asked to run.
        returncode: The child's exit status (negative: killed by that
            signal; ``None``: still running when killed).
        stall: What stalled, or ``None``.
        longest_gap: Longest time (s) between two canary advances seen.
        summary: The child's last report (counts per stream and load).
        log_path: The child's log, with the stack dump on a stall.
        stacks: The stack dump, if one was taken.
        log_tail: The end of the log.
    """

    mode: str
    duration: float
    returncode: int | None = None
    stall: str | None = None
    longest_gap: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    log_path: Path = Path()
    stacks: str = ""
    log_tail: str = ""

    @property
    def crashed(self) -> bool:
        """Whether the child died of a signal or exited with a failure of its own."""
        return self.stall is None and self.returncode != 0

    @property
    def ok(self) -> bool:
        """Whether the scene ran its course, kept delivering and exited with 0."""
        return self.stall is None and self.returncode == 0 and not self.problems()

    def problems(self) -> list[str]:
        """Return what went wrong besides a stall or an exit status.

        Returns:
            Descriptions; empty when every stream delivered.
        """
        found = []
        streams = self.summary.get("streams", [])
        silent = [i for i, count in enumerate(streams) if count == 0]
        if silent:
            found.append(f"flood streams without events: {silent}")
        if self.summary and not self.summary.get("canary"):
            found.append("the canary stream delivered nothing")
        if self.summary.get("stuck"):
            found.append(f"load threads did not end: {self.summary['stuck']}")
        return found

    def describe(self) -> str:
        """Return a report for a failure message.

        Returns:
            Text naming what stalled or crashed, the log, and the stacks.
        """
        head = f"{self.mode} scene ({self.duration:g} s): "
        if self.stall:
            head += f"STALLED: {self.stall}"
        elif self.returncode is not None and self.returncode < 0:
            head += f"CRASHED: killed by signal {-self.returncode}"
        elif self.returncode != 0:
            head += f"FAILED: exit status {self.returncode}"
        else:
            head += "; ".join(self.problems()) or "ran its course"
        counts = {k: self.summary.get(k) for k in ("canary", "holders", "churn", "lrc")}
        text = (
            f"{head}\nlongest canary gap {self.longest_gap:.1f} s; last counts {counts}; "
            f"errors {self.summary.get('errors')}\nfull log with every thread's stack: "
            f"{self.log_path}"
        )
        if self.stacks:
            text += f"\nstacks (excerpt):\n{self.stacks[:6000]}"
        elif self.returncode != 0:
            text += f"\nlog tail:\n{self.log_tail}"
        return text


def _stack_dump(text: str) -> str:
    """Return the faulthandler dump in ``text`` (from its first thread header)."""
    for marker in ("Thread 0x", "Current thread 0x", "Fatal Python error"):
        where = text.find(marker)
        if where >= 0:
            start = text.rfind("\n", 0, max(where - 200, 0)) + 1 if where > 200 else 0
            return text[start:]
    return ""


def _source_note(device: str, received: int) -> str:
    """Tell whether the canary's server still pushes (a stalled client or server?)."""
    try:
        proxy = tango.DeviceProxy(device)
        proxy.set_timeout_millis(3000)
        pushed = int(proxy.read_attribute(_CANARY_ATTR).value)
        time.sleep(1.0)
        later = int(proxy.read_attribute(_CANARY_ATTR).value)
    except tango.DevFailed as exc:
        return f"; its server does not answer ({exc.args[0].reason if exc.args else exc})"
    state = "still pushes" if later > pushed else "no longer pushes"
    return f"; its server {state} (pushed {later}, the client received {received})"


def run_stress_scene(
    mode: str,
    devices: Sequence[str],
    *,
    lrc: str = "",
    duration: float = 30.0,
    log_path: str | os.PathLike[str],
    stall_after: float = 10.0,
    startup_timeout: float = 90.0,
    extra_args: Sequence[str] = (),
    python: str | None = None,
    env: dict[str, str] | None = None,
) -> StressResult:
    """Run the scene in a child process and watch it.

    A stall is a canary stream that does not advance for ``stall_after``
    seconds once it has started, or no progress report for that long. On a
    stall the child's stacks are dumped into its log (SIGUSR1) and the child
    is killed. The child is always ended by its pid before this returns.

    Args:
        mode: ``scheduler`` or ``plain``.
        devices: ``EventSource`` devices; the first carries the canary.
        lrc: An ``LrcReference`` device, or empty for no LRC load.
        duration: Seconds of load.
        log_path: The child's log file.
        stall_after: Seconds without progress that count as a stall.
        startup_timeout: Seconds the child may take to deliver its first
            canary event.
        extra_args: Further options of the scene (``--gc-threshold 1``, ...).
        python: Interpreter of the child; ``None``: this one.
        env: The child's environment; ``None``: this process's.

    Returns:
        What happened.
    """
    argv = [python or sys.executable, "-m", STRESS_MODULE, "--mode", mode, "--duration"]
    argv += [str(duration), "--devices", *devices, *extra_args]
    if lrc:
        argv += ["--lrc", lrc]
    result = StressResult(mode=mode, duration=duration, log_path=Path(log_path))
    process = ManagedProcess(argv, log_path, env=env)
    process.spawn()
    started = last_report = time.monotonic()
    canary = 0
    canary_at: float | None = None
    offset = 0
    partial = ""
    done = False
    try:
        while process.running:
            time.sleep(0.25)
            now = time.monotonic()
            with Path(log_path).open("rb") as log:
                log.seek(offset)
                chunk = log.read().decode(errors="replace")
                offset += len(chunk.encode(errors="replace"))
            lines = (partial + chunk).split("\n")
            partial = lines.pop()
            for line in lines:
                kind, _, payload = line.partition(" ")
                if kind in ("PROGRESS", "SUMMARY"):
                    try:  # cppTango may write into the middle of a line
                        report = _DECODER.raw_decode(payload)[0]
                    except ValueError:
                        continue
                    result.summary.update(report)
                    last_report = now
                    if report["canary"] > canary:
                        if canary_at is not None:
                            result.longest_gap = max(result.longest_gap, now - canary_at)
                        canary, canary_at = report["canary"], now
                    if kind == "SUMMARY":
                        done = True
                elif kind == "STUCK":
                    with contextlib.suppress(ValueError):
                        result.summary["stuck"] = _DECODER.raw_decode(payload)[0]
            if done:
                continue  # the child is ending: only its exit is awaited now
            if canary_at is None:
                if now - started > startup_timeout:
                    result.stall = f"no canary event within {startup_timeout:g} s of the start"
            elif now - canary_at > stall_after:
                result.longest_gap = max(result.longest_gap, now - canary_at)
                result.stall = (
                    f"the canary stream delivered no event for {now - canary_at:.1f} s "
                    f"(after {canary} events, {canary_at - started:.1f} s into the run)"
                )
            elif now - last_report > stall_after:
                result.stall = f"no progress report for {now - last_report:.1f} s"
            if now - started > duration + startup_timeout + 60:
                result.stall = "the scene did not finish in time"
            if result.stall:
                result.stall += _source_note(devices[0], canary)
                break
        if done and process.running:
            deadline = time.monotonic() + 45
            while process.running and time.monotonic() < deadline:
                time.sleep(0.1)
            if process.running:
                result.stall = "the scene's threads or shutdown hung after the load"
        if result.stall and process.running and process.pid is not None:
            try:
                os.kill(process.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
            time.sleep(3.0)
    finally:
        result.returncode = process.kill() if process.running else process.returncode
        if process.running:
            process.kill()
    text = Path(log_path).read_text(errors="replace")
    result.stacks = _stack_dump(text)
    result.log_tail = text[-4000:]
    return result


if __name__ == "__main__":
    main()
