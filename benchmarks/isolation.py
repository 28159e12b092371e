"""Benchmark 3, isolation: a quiet stream beside a flooded stream with a slow callback.

``myAttr1`` gets a burst of ``burst`` events; its callback takes
``callback_s`` (50 ms) per event, either sleeping (it lets go of the GIL) or
computing (it holds the GIL, as pure-Python work does). Meanwhile
``myAttr2`` is pushed at ``quiet_hz`` for ``quiet_s``; its callback records
its latency: the time it runs minus the time stamp the server gave the
event. The scheduler has 2 worker threads and default queues.

Scenarios: plain PyTango with the quiet stream alone (no burst: the floor
of the machine's latency), plain PyTango with the sleeping callback (both
callbacks on Tango's one event thread), the scheduler with the sleeping
callback, with
the computing callback, and with the computing callback and the documented
opt-in setting ``sys.setswitchinterval(0.0005)`` in the client process
(docs: "Latency beside callbacks that hold the GIL").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import tango

from ._bed import Bed
from ._common import (
    BenchResult,
    EventRecorder,
    Row,
    percentiles,
    side_label,
    sides_with_baseline,
)

__all__ = ["SWITCH_INTERVAL", "client", "plot", "run"]

SIDES = ("plain-alone", "plain-sleep", "scheduler-sleep", "scheduler-cpu", "scheduler-cpu-switch")
_FLOOD = "myAttr1"
_QUIET = "myAttr2"
# Seconds after the quiet pushing stops that late quiet events are still waited for.
_DRAIN = 1.0
#: The opt-in switch interval measured (seconds).
SWITCH_INTERVAL = 0.0005


class _Busy:
    """A flooded callback that computes (holding the GIL) for ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def __call__(self, event: Any) -> None:
        self.calls += 1
        until = time.perf_counter() + self.seconds
        while time.perf_counter() < until:
            pass


def client(side: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run the burst and record the quiet stream (in a client process).

    Args:
        side: One of :data:`SIDES`.
        params: ``trl``, ``burst``, ``quiet_hz``, ``quiet_s``, ``callback_s``.

    Returns:
        The quiet stream's latencies and the event counts.
    """
    from ska_tango_scheduler import CallbackScheduler

    if side.endswith("-switch"):
        sys.setswitchinterval(SWITCH_INTERVAL)
    trl = params["trl"]
    proxy = tango.DeviceProxy(trl)
    proxy.command_inout("ResetCounts")
    seconds = float(params["callback_s"])
    flood: Any = _Busy(seconds) if "-cpu" in side else EventRecorder(sleep=seconds)
    quiet = EventRecorder()
    change = tango.EventType.CHANGE_EVENT
    scheduler: Any = None
    if side.startswith("plain"):
        proxy.subscribe_event(_FLOOD, change, flood)
        proxy.subscribe_event(_QUIET, change, quiet)
    else:
        scheduler = CallbackScheduler(2, name="bench")
        scheduler.register_event_callback(trl, _FLOOD, change, flood).result(15)
        scheduler.register_event_callback(trl, _QUIET, change, quiet).result(15)
    if not quiet.first_good.wait(15):
        raise RuntimeError("no first event within 15 s")
    time.sleep(0.5)
    started = time.time()
    if side != "plain-alone":
        proxy.command_inout("PushBurst", ([int(params["burst"])], [_FLOOD]))
    proxy.command_inout("StartPushing", ([float(params["quiet_hz"])], [_QUIET]))
    time.sleep(float(params["quiet_s"]))
    proxy.command_inout("StopPushing", [_QUIET])
    pushed_quiet = int(proxy.read_attribute("pushedCounts").value[1])
    deadline = time.monotonic() + _DRAIN
    while time.monotonic() < deadline and (not quiet.values or quiet.values[-1] < pushed_quiet):
        time.sleep(0.05)
    latencies = quiet.latencies_ms()
    totals: dict[str, Any] = {}
    if scheduler is not None:
        snap = scheduler.diagnostics().to_dict()
        totals = snap["totals"]
    proxy.command_inout("StopPushing", [])
    return {
        "side": side,
        "seconds": time.time() - started,
        "switch_interval": sys.getswitchinterval(),
        "pushed_quiet": pushed_quiet,
        "delivered_quiet": len(latencies),
        "quiet_latency_ms": percentiles(latencies),
        "quiet_latencies_ms": [round(x, 3) for x in latencies],
        "scheduler_totals": totals,
    }


def run(bed: Bed, config: dict[str, Any]) -> BenchResult:
    """Run every scenario ``repeats`` times, interleaved, on the same device.

    Args:
        bed: The test bed.
        config: ``burst``, ``quiet_hz``, ``quiet_s``, ``callback_s``, ``repeats``.

    Returns:
        The result.
    """
    params = {"trl": bed.trl(), **config}
    sides = sides_with_baseline(SIDES, bed)
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for _ in range(int(config["repeats"])):
        for side in sides:
            runs[side].append(bed.run("isolation", side, params, timeout=120))

    def pooled(side: str) -> dict[str, Any]:
        return percentiles([x for r in runs[side] for x in r["quiet_latencies_ms"]])

    plain = pooled("plain-sleep")
    alone = pooled("plain-alone")
    alone_runs = [r["quiet_latency_ms"]["p99"] for r in runs["plain-alone"]]
    rows: list[Row] = [
        Row(
            "isolation",
            "quiet stream alone (no burst), plain PyTango: p50 / p99 worst run / max",
            "ms",
            alone["p50"],
            None,
            note=f"the floor of this machine: p99 per run "
            f"{[None if p is None else round(p, 2) for p in alone_runs]}, max over all runs "
            f"{alone['max'] if alone['max'] is None else round(alone['max'], 2)} ms",
            digits=2,
        )
    ]
    targets = {"scheduler-sleep": 5.0, "scheduler-cpu-switch": 15.0}
    titles = {
        "scheduler-sleep": "beside a sleeping 50 ms callback",
        "scheduler-cpu": "beside a computing 50 ms callback, default settings",
        "scheduler-cpu-switch": "beside a computing 50 ms callback, switch interval 0.5 ms",
    }
    for side in sides:
        if side.startswith("plain"):
            continue
        base = side.split("@")[0]
        label = side_label(side)
        stats = pooled(side)
        per_run = [r["quiet_latency_ms"]["p99"] for r in runs[side]]
        worst = _worst(per_run)
        limit = targets.get(base)
        met = None if limit is None or worst is None else worst < limit
        reference = plain if base == "scheduler-sleep" else {"p50": None, "max": None}
        rows.append(
            Row(
                "isolation",
                f"quiet stream p50, {titles[base]}{label}",
                "ms",
                reference["p50"],
                stats["p50"],
                digits=2,
                note=f"quiet events delivered/pushed per run: "
                f"{[(r['delivered_quiet'], r['pushed_quiet']) for r in runs[side]]}",
            )
        )
        rows.append(
            Row(
                "isolation",
                f"quiet stream p99, worst of {len(per_run)} run(s), {titles[base]}{label}",
                "ms",
                _worst([r["quiet_latency_ms"]["p99"] for r in runs["plain-sleep"]])
                if base == "scheduler-sleep"
                else None,
                worst,
                target="" if limit is None else f"< {limit:g} ms in every run",
                met=met,
                note=f"p99 per run: {[None if p is None else round(p, 2) for p in per_run]}",
                why=""
                if met is not False
                else "see the per-run figures and the load average; Profile findings",
                digits=2,
            )
        )
        rows.append(
            Row(
                "isolation",
                f"quiet stream max, {titles[base]}{label}",
                "ms",
                reference["max"],
                stats["max"],
                digits=2,
            )
        )
    setup = (
        f"`myAttr1` gets a burst of {config['burst']} events; its callback takes "
        f"{float(config['callback_s']) * 1000:g} ms per event, sleeping or computing (holding "
        f"the GIL). `myAttr2` is pushed at {config['quiet_hz']:g} Hz for {config['quiet_s']:g} "
        "s; its callback records latency = callback time - server time stamp. The "
        "scheduler has 2 threads and default queues. The plain column is plain PyTango with "
        "the sleeping callback (its quiet events wait behind the whole burst: those not "
        f"delivered {_DRAIN:g} s after the pushing stopped are missing from its figures, "
        "which only flatters it). p50 and max are over all runs together. "
        f"{config['repeats']} run(s) per scenario, interleaved, each in its own client "
        "process."
    )
    return BenchResult(
        "isolation",
        "3. Isolation (slow callback on a flooded attribute)",
        setup,
        rows,
        details={"config": config, "runs": runs},
    )


def _worst(values: list[float | None]) -> float | None:
    """The largest value, None if there is none."""
    present = [v for v in values if v is not None]
    return max(present) if present else None


def plot(result: BenchResult, directory: Path, plt: Any) -> list[str]:
    """Draw the quiet stream's latency distributions (cumulative, log scale).

    Args:
        result: This benchmark's result.
        directory: Where to write the PNG.
        plt: ``matplotlib.pyplot``.

    Returns:
        The file names written.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    for side, runs in result.details["runs"].items():
        values = sorted(x for r in runs for x in r["quiet_latencies_ms"])
        if not values:
            continue
        fractions = [(i + 1) / len(values) for i in range(len(values))]
        ax.step(values, fractions, where="post", label=side)
    ax.set_xscale("log")
    ax.set_xlabel("quiet stream latency (ms, callback time - server time stamp)")
    ax.set_ylabel("fraction of events")
    ax.set_title("Isolation: quiet stream beside a 50 ms callback on a burst")
    ax.axvline(5.0, color="grey", linestyle=":", linewidth=1)
    ax.axvline(15.0, color="grey", linestyle="--", linewidth=1)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = "isolation-latency.png"
    fig.savefig(directory / name, dpi=110)
    plt.close(fig)
    return [name]
