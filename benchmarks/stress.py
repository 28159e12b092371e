"""Benchmark 6, stress: the garbage collector frees subscribed proxies under load.

The same scene runs through plain PyTango subscriptions and through the
scheduler, one side after the other, in child processes
(:mod:`ska_tango_scheduler.testing.stress`): event floods on every device of
the farm, a canary stream at 20 events/s, user objects that hold a
``DeviceProxy`` with a live subscription in a reference cycle and are dropped
continuously (their finalisers destroy the proxy on the collecting thread,
never on Tango's own threads), the collector's thresholds lowered,
subscription churn, long running commands invoked with their handles dropped
(plain: a proxy subscribed to ``_lrcEvent`` in a cycle, and the command), and
a diagnostics loop (plain: a report built from the counts). A side *stalls* when its canary delivers
nothing for 10 s; its stacks are then dumped into its log and it is killed.
Plain PyTango is the reference that should never stall.
"""

from __future__ import annotations

from typing import Any

import tango

from ska_tango_scheduler.testing import DeviceServerProcess
from ska_tango_scheduler.testing.stress import StressResult, run_stress_scene

from ._bed import Bed
from ._common import BenchResult, Row

__all__ = ["run"]

SIDES = ("plain", "scheduler")
DEVICE = "bench/stresslrc/1"
_STALL_AFTER = 10.0


def _outcome(result: StressResult) -> str:
    if result.stall:
        return "stalled"
    if result.returncode is not None and result.returncode < 0:
        return f"crashed (signal {-result.returncode})"
    if result.returncode != 0:
        return f"failed (status {result.returncode})"
    return "ran its course"


def run(bed: Bed, config: dict[str, Any]) -> BenchResult:
    """Run the scene on both sides, ``repeats`` times, interleaved.

    Args:
        bed: The test bed.
        config: ``servers`` (farm servers of 5 devices), ``seconds`` (per
            scene) and ``repeats``.

    Returns:
        The result.
    """
    devices = [trl for server in bed.farm(int(config["servers"])) for trl in server]
    seconds, repeats = float(config["seconds"]), int(config["repeats"])
    lrc = DeviceServerProcess(
        "LrcReference/benchstress",
        [DEVICE],
        database=bed.database,
        device_class="LrcReference",
        module="ska_tango_scheduler.testing.lrc_device",
        log_dir=bed.work_dir,
        stop_grace=3.0,
    )
    lrc.start()
    runs: dict[str, list[StressResult]] = {side: [] for side in SIDES}
    try:
        for attempt in range(repeats):
            for side in SIDES:
                result = run_stress_scene(
                    side,
                    devices,
                    lrc=bed.trl(DEVICE),
                    duration=seconds,
                    log_path=bed.work_dir / f"stress-{side}-{attempt}.log",
                    stall_after=_STALL_AFTER,
                )
                runs[side].append(result)
                print(f"   stress {side} #{attempt}: {_outcome(result)}", flush=True)
                for trl in devices:  # a killed scene leaves its sources pushing
                    try:
                        tango.DeviceProxy(trl).StopPushing([])
                    except tango.DevFailed:
                        pass
    finally:
        lrc.stop(grace=3.0)

    def bad(side: str) -> int:
        return sum(1 for r in runs[side] if _outcome(r) != "ran its course")

    def gap(side: str) -> float:
        return max(r.longest_gap for r in runs[side])

    def delivered(side: str) -> float:
        return sum(r.delivered for r in runs[side]) / len(runs[side])

    rows = [
        Row(
            "stress",
            f"runs that stalled or crashed, of {repeats}",
            "runs",
            bad("plain"),
            bad("scheduler"),
            target="0 (as plain)",
            met=bad("scheduler") == 0,
            why=""
            if bad("scheduler") == 0
            else "A thread holding a lock of the scheduler ran the collector, which freed a "
            "subscribed proxy whose destructor waited for Tango's event thread, itself "
            "waiting for that lock (see the logs named in the details).",
            digits=0,
        ),
        Row(
            "stress",
            "longest canary gap, max of the runs",
            "s",
            gap("plain"),
            gap("scheduler"),
            target=f"< {_STALL_AFTER:g} s",
            met=gap("scheduler") < _STALL_AFTER,
            note="canary at 20 events/s; a gap is seen at 0.5 s resolution",
        ),
        Row(
            "stress",
            f"events delivered (canary and floods), mean of {repeats} runs of {seconds:g} s",
            "events",
            delivered("plain"),
            delivered("scheduler"),
            note="a stalled run delivers only up to its stall",
            digits=0,
        ),
    ]
    setup = (
        f"{len(devices)} EventSource devices in {config['servers']} servers flood change "
        f"events (200/s each, the canary 20/s); the client drops user objects holding "
        "subscribed proxies in reference cycles (their finalisers destroy the proxy on "
        "the collecting thread, never on Tango's own), lowers the collector's "
        "thresholds to (100, 1, 1) and freezes the set-up's objects (gc.freeze), churns "
        "subscriptions, invokes long running commands and reads "
        f"diagnostics in a loop, for {seconds:g} s per run and side. A side stalls when "
        f"its canary delivers nothing for {_STALL_AFTER:g} s."
    )
    details = {
        side: [
            {
                "outcome": _outcome(r),
                "stall": r.stall,
                "returncode": r.returncode,
                "longest_gap": r.longest_gap,
                "summary": r.summary,
                "log": r.log_path.name,  # no machine path in the report
            }
            for r in runs[side]
        ]
        for side in SIDES
    }
    return BenchResult(
        "stress", "6. Stress: collector and subscribed proxies", setup, rows, details
    )
