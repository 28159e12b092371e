"""Supervise the stress scene: the collector frees subscribed proxies under load.

A ``DeviceProxy`` with live subscriptions, freed by Python's garbage collector,
waits in its C++ destructor for Tango's event thread. If the thread that runs
the destructor holds a lock that Tango's event thread is waiting for, the
process stalls for good. The scene (:mod:`ska_tango_scheduler.testing.stress_scene`)
makes this likely: user objects holding subscribed proxies in reference
cycles, with finalisers that destroy the proxy on whichever thread collects
(but never on Tango's own threads), a low collector threshold, event floods,
registration churn, long running commands with dropped handles and
diagnostics read in a loop.

:func:`run_stress_scene` runs the scene in a child process, by the scene's
file path (the scene imports only the package's public API, so the child can
run against another checkout of the package, see
:data:`STRESS_PACKAGE_PATH_ENV`). It watches the child's progress lines; on a
stall (the canary stream silent for ``stall_after`` seconds) it has the child
dump every thread's stack into its log (SIGUSR1) and kills it by its pid, so
that a stall or a crash never stalls or kills the caller.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tango

from ._process import ManagedProcess
from .stress_scene import CANARY_ATTR

__all__ = [
    "SCENE_SCRIPT",
    "STRESS_ARGS_ENV",
    "STRESS_PACKAGE_PATH_ENV",
    "STRESS_SECONDS_ENV",
    "StressResult",
    "run_stress_scene",
    "scene_arguments",
    "scene_environment",
    "stress_seconds",
]

#: The scene's script, run by its path as the child process.
SCENE_SCRIPT = Path(__file__).with_name("stress_scene.py")
#: Environment variable: seconds each stress scene runs (default 25).
STRESS_SECONDS_ENV = "SKA_TANGO_SCHEDULER_STRESS_SECONDS"
#: Environment variable: a directory put first on the scene child's
#: ``PYTHONPATH`` (such as the ``src`` directory of an older checkout), so
#: that the scene runs against that code of the package.
STRESS_PACKAGE_PATH_ENV = "SKA_TANGO_SCHEDULER_STRESS_PACKAGE_PATH"
#: Environment variable: further options of the scene (``--flood-hz 400
#: --gc-threshold 50,1,1``; see ``stress_scene.py --help``), split as a shell
#: would.
STRESS_ARGS_ENV = "SKA_TANGO_SCHEDULER_STRESS_ARGS"

_DECODER = json.JSONDecoder()


def stress_seconds(default: float = 25.0) -> float:
    """Return the scene duration from :data:`STRESS_SECONDS_ENV`.

    Args:
        default: Seconds when the variable is unset or empty.

    Returns:
        The duration in seconds.
    """
    text = os.environ.get(STRESS_SECONDS_ENV, "").strip()
    return float(text) if text else default


def scene_arguments() -> list[str]:
    """Return the further options of the scene from :data:`STRESS_ARGS_ENV`.

    Returns:
        The options, split as a shell would; empty when the variable is unset.
    """
    return shlex.split(os.environ.get(STRESS_ARGS_ENV, ""))


def scene_environment() -> dict[str, str]:
    """Return the environment for the scene's child process.

    This process's environment, with the directory named by
    :data:`STRESS_PACKAGE_PATH_ENV`, when set, first on ``PYTHONPATH``.

    Returns:
        The environment.
    """
    env = dict(os.environ)
    first = env.get(STRESS_PACKAGE_PATH_ENV, "").strip()
    if first:
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (first, env.get("PYTHONPATH", "")) if part
        )
    return env


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
        code: The code the child ran against (PyTango's version, the
            package's file).
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
    code: dict[str, str] = field(default_factory=dict)
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

    @property
    def delivered(self) -> int:
        """Events the canary and flood streams delivered, as last reported."""
        streams: list[int] = self.summary.get("streams", [])
        return int(self.summary.get("canary", 0)) + sum(streams)

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
        keys = ("canary", "holders", "buried", "freed", "collections", "churn", "lrc")
        counts = {k: self.summary.get(k) for k in keys}
        text = (
            f"{head}\ncode {self.code}\nlongest canary gap {self.longest_gap:.1f} s; "
            f"events delivered {self.delivered}; last counts {counts}; errors "
            f"{self.summary.get('errors')}\nfull log with every thread's stack: {self.log_path}"
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
        pushed = int(proxy.read_attribute(CANARY_ATTR).value)
        time.sleep(1.0)
        later = int(proxy.read_attribute(CANARY_ATTR).value)
    except tango.DevFailed as exc:
        return f"; its server does not answer ({exc.args[0].reason if exc.args else exc})"
    state = "still pushes" if later > pushed else "no longer pushes"
    return f"; its server {state} (pushed {later}, the client received {received})"


def run_stress_scene(
    mode: str,
    devices: Sequence[str],
    *,
    lrc: str = "",
    duration: float = 25.0,
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
        env: The child's environment; ``None``: :func:`scene_environment`.

    Returns:
        What happened.
    """
    argv = [python or sys.executable, str(SCENE_SCRIPT), "--mode", mode, "--duration"]
    argv += [str(duration), "--devices", *devices, *extra_args]
    if lrc:
        argv += ["--lrc", lrc]
    result = StressResult(mode=mode, duration=duration, log_path=Path(log_path))
    process = ManagedProcess(argv, log_path, env=scene_environment() if env is None else env)
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
                elif kind == "SCENE":
                    with contextlib.suppress(ValueError):
                        result.code = _DECODER.raw_decode(payload)[0]
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
