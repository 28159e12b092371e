"""Benchmark 2, isolation: a quiet stream beside a flooded one with a slow callback.

The ``EventSource`` pushes ``flood_hz`` events per second on ``myAttr1``,
whose callback sleeps ``callback_s`` (50 ms: it can take 20 events a
second), and ``quiet_hz`` events per second on ``myAttr2``, whose callback
records its latency: the time it runs minus the time stamp the server gave
the event (``attr_value.time``). Plain PyTango runs both callbacks on its one
event thread; the scheduler runs them on 1 or 2 worker threads.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import tango

from ska_tango_scheduler import CallbackScheduler

from ._bed import Bed
from ._common import BenchResult, EventRecorder, Row, percentiles

__all__ = ["client", "plot", "run"]

SIDES = ("plain", "scheduler-1", "scheduler-2")
_FLOOD = "myAttr1"
_QUIET = "myAttr2"
# Seconds after the pushing stops that late quiet events are still waited for.
_DRAIN = 2.0


def client(side: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run the flood and record the quiet stream (in a client process).

    Args:
        side: ``plain``, ``scheduler-1`` or ``scheduler-2`` (threads).
        params: ``trl``, ``flood_hz``, ``quiet_hz``, ``callback_s``, ``seconds``.

    Returns:
        The quiet stream's latencies and the event counts.
    """
    trl = params["trl"]
    proxy = tango.DeviceProxy(trl)
    proxy.command_inout("ResetCounts")
    flood = EventRecorder(sleep=float(params["callback_s"]))
    quiet = EventRecorder()
    change = tango.EventType.CHANGE_EVENT
    scheduler: CallbackScheduler | None = None
    if side == "plain":
        proxy.subscribe_event(_FLOOD, change, flood)
        proxy.subscribe_event(_QUIET, change, quiet)
    else:
        scheduler = CallbackScheduler(int(side.rsplit("-", 1)[1]), name="bench")
        scheduler.register_event_callback(trl, _FLOOD, change, flood).result(15)
        scheduler.register_event_callback(trl, _QUIET, change, quiet).result(15)
    if not (flood.first_good.wait(15) and quiet.first_good.wait(15)):
        raise RuntimeError("no first events within 15 s")
    time.sleep(0.3)
    started = time.time()
    proxy.command_inout(
        "StartPushing", ([float(params["flood_hz"]), float(params["quiet_hz"])], [_FLOOD, _QUIET])
    )
    time.sleep(float(params["seconds"]))
    proxy.command_inout("StopPushing", [])
    stopped = time.time()
    pushed_flood, pushed_quiet = (int(v) for v in proxy.read_attribute("pushedCounts").value[:2])
    deadline = time.monotonic() + _DRAIN
    while time.monotonic() < deadline and (not quiet.values or quiet.values[-1] < pushed_quiet):
        time.sleep(0.05)
    latencies = quiet.latencies_ms()
    totals: dict[str, Any] = {}
    if scheduler is not None:
        totals = scheduler.diagnostics().to_dict()["totals"]
        scheduler.shutdown(timeout=5)
    return {
        "side": side,
        "seconds": stopped - started,
        "pushed_flood": pushed_flood,
        "pushed_quiet": pushed_quiet,
        "delivered_flood": len(flood.values),
        "delivered_quiet": len(latencies),
        "quiet_latency_ms": percentiles(latencies),
        "quiet_latencies_ms": [round(x, 3) for x in latencies],
        "scheduler_totals": totals,
    }


def run(bed: Bed, config: dict[str, Any]) -> BenchResult:
    """Run each side once, one after the other, on the same device.

    Args:
        bed: The test bed.
        config: ``flood_hz``, ``quiet_hz``, ``callback_s``, ``seconds``.

    Returns:
        The result.
    """
    params = {"trl": bed.trl(), **config}
    timeout = float(config["seconds"]) + 60
    runs = {side: bed.run("isolation", side, params, timeout=timeout) for side in SIDES}
    plain = runs["plain"]["quiet_latency_ms"]
    rows: list[Row] = []
    for side, threads in (("scheduler-2", 2), ("scheduler-1", 1)):
        stats = runs[side]["quiet_latency_ms"]
        for key in ("p50", "p99", "max"):
            target, met, why = "", None, ""
            if threads == 2 and key == "p99" and stats["p99"] is not None:
                target = "< 5 ms and ratio <= 0.1"
                ok_abs = stats["p99"] < 5.0
                ok_rel = plain["p99"] is None or stats["p99"] <= 0.1 * plain["p99"]
                met = ok_abs and ok_rel
                if not met:
                    why = (
                        "The quiet stream has a worker of its own that is idle between its "
                        "events; delays of this size point at CPU contention on the shared "
                        "machine (see the load average): re-run on a quiet machine."
                    )
            note = ""
            if key == "p50" and threads == 1:
                note = (
                    "one worker gives each queue one event per turn, so beside a 50 ms "
                    "callback a 20 Hz stream gets slightly fewer than 20 turns a second and "
                    "its latency drifts up over the run (Profile finding 3); "
                )
            if key == "p50":
                note += (
                    f"quiet events delivered/pushed: plain {_got(runs['plain'])}, "
                    f"scheduler {_got(runs[side])}"
                )
            rows.append(
                Row(
                    "isolation",
                    f"quiet stream latency {key}, scheduler with {threads} thread"
                    + ("s" if threads > 1 else ""),
                    "ms",
                    plain[key],
                    stats[key],
                    target=target,
                    met=met,
                    note=note,
                    digits=2,
                    why=why,
                )
            )
    setup = (
        f"`myAttr1` is pushed at {config['flood_hz']:g} Hz and its callback sleeps "
        f"{float(config['callback_s']) * 1000:g} ms; `myAttr2` is pushed at "
        f"{config['quiet_hz']:g} Hz and its callback records latency = callback time - "
        f"server time stamp (`attr_value.time`), for {config['seconds']:g} s. Latencies of "
        "quiet events that plain PyTango had not delivered "
        f"{_DRAIN:g} s after the pushing stopped are missing from its figures (which only "
        "flatters plain PyTango). Each side runs in its own client process."
    )
    return BenchResult(
        "isolation",
        "2. Isolation (slow callback on a flooded attribute)",
        setup,
        rows,
        details={"config": config, "runs": runs},
    )


def _got(result: dict[str, Any]) -> str:
    return f"{result['delivered_quiet']}/{result['pushed_quiet']}"


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
    for side in SIDES:
        values = sorted(result.details["runs"][side]["quiet_latencies_ms"])
        if not values:
            continue
        fractions = [(i + 1) / len(values) for i in range(len(values))]
        label = "plain PyTango" if side == "plain" else f"scheduler, {side[-1]} thread(s)"
        ax.step(values, fractions, where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("quiet stream latency (ms, callback time - server time stamp)")
    ax.set_ylabel("fraction of events")
    ax.set_title("Isolation: quiet stream beside a flood with a 50 ms callback")
    ax.axvline(5.0, color="grey", linestyle=":", linewidth=1)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    name = "isolation-latency.png"
    fig.savefig(directory / name, dpi=110)
    plt.close(fig)
    return [name]
