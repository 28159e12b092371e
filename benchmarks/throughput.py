"""Benchmark 1, throughput: how many events a client takes before it loses some.

The callback only counts (an integer under a lock), so that the client's
capacity is measured, not the callback's. Several ``EventSource`` servers
push change events on ``myAttr1`` of one device each, together, so that the
source is faster than plain PyTango can receive:

* a burst: each server pushes ``count`` events as fast as it can. Each
  round ends with a second plain PyTango client: plain against itself,
  the spread that the ratio targets (issue 17: delivery rate at least
  0.95 and CPU per event at most 1.15 times plain's) must be read against;
* a rate sweep: each server pushes at a fixed rate for ``seconds``, at
  several rates, to find where each side starts to lose events;
* the edge: fresh runs of each side at the highest swept rate where plain
  PyTango lost nothing. That rate is chosen on one run of plain, so it sits
  where plain itself loses events in some runs; the fresh runs show how
  often each side does.

Events lost in ZeroMQ (pushed minus received by the client) are a
first-class figure: plain PyTango and the scheduler both lose events there
when Tango's event thread falls behind. The scheduler gets one queue per
stream big enough for everything (it never discards here), so every event
it misses was lost before it reached the scheduler. Each side runs in its
own client process; sides and rates are interleaved.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import tango

from ._bed import Bed
from ._common import (
    BenchResult,
    Row,
    side_label,
    sides_with_baseline,
    wait_until,
    worker_cpu_seconds,
)

__all__ = ["client", "plot", "run"]

SIDES = ("plain", "scheduler")
# The key of the second plain client's bursts.
_AGAIN = "plain again"
# Issue 17's targets for the scheduler against plain PyTango, in the bursts.
_MIN_RATE_RATIO = 0.95
_MAX_CPU_RATIO = 1.15
_ATTRIBUTE = "myAttr1"


class _Counter:
    """The callback: counts, and notes when it last ran."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.last = 0.0

    def __call__(self, event: Any) -> None:
        with self.lock:
            self.count += 1
        self.last = time.perf_counter()


def client(side: str, params: dict[str, Any]) -> dict[str, Any]:
    """Receive a burst or a fixed-rate flood from several servers (in a client process).

    Args:
        side: ``plain`` or ``scheduler``.
        params: ``trls`` (one device per server), ``mode`` (``burst`` or
            ``rate``), ``count`` (burst, per server) or ``rate`` (events/s
            per server) and ``seconds``.

    Returns:
        Events pushed, received, lost, the delivery rate and CPU per event.
    """
    from ska_tango_scheduler import CallbackScheduler

    trls: list[str] = params["trls"]
    proxies = [tango.DeviceProxy(trl) for trl in trls]
    counter = _Counter()
    change = tango.EventType.CHANGE_EVENT
    scheduler: Any = None
    if side == "plain":
        for proxy in proxies:
            proxy.subscribe_event(_ATTRIBUTE, change, counter)
    else:
        scheduler = CallbackScheduler(1, name="bench")
        for trl in trls:
            scheduler.register_event_callback(
                trl,
                _ATTRIBUTE,
                change,
                counter,
                queue_factory=lambda: scheduler.allocate_queue(1_000_000),
            ).result(15)
    if not wait_until(lambda: counter.count >= len(trls), 15):
        raise RuntimeError("no first events within 15 s")
    time.sleep(0.5)
    floors = [int(p.read_attribute("pushedCounts").value[0]) for p in proxies]
    before = counter.count
    # The workers by name, from the scheduler's own diagnostics (plain: none).
    workers = {w.name for w in scheduler.diagnostics().workers} if scheduler else set()
    cpu0 = time.process_time()
    split0 = worker_cpu_seconds(workers)
    started = time.perf_counter()
    if params["mode"] == "burst":
        for proxy in proxies:
            proxy.command_inout("PushBurst", ([int(params["count"])], [_ATTRIBUTE]))
    else:
        for proxy in proxies:
            proxy.command_inout("StartPushing", ([float(params["rate"])], [_ATTRIBUTE]))
        time.sleep(float(params["seconds"]))
        for proxy in proxies:
            proxy.command_inout("StopPushing", [])
    wait_until(lambda: not any(p.read_attribute("pushingAttributes").value for p in proxies), 120)
    pushed_at = time.perf_counter()
    # Wait until nothing more arrives (and, for the scheduler, nothing is queued).
    seen = -1
    while seen != counter.count:
        seen = counter.count
        time.sleep(1.0)
    cpu1 = time.process_time()
    split1 = worker_cpu_seconds(workers)
    pushed = sum(
        int(p.read_attribute("pushedCounts").value[0]) - f
        for p, f in zip(proxies, floors, strict=True)
    )
    received = counter.count - before
    totals: dict[str, Any] = {}
    if scheduler is not None:
        totals = scheduler.diagnostics().to_dict()["totals"]
        scheduler.shutdown(timeout=5)
    span = counter.last - started

    def per_event(seconds: float) -> float | None:
        return seconds / received * 1e6 if received else None

    return {
        "side": side,
        "mode": params["mode"],
        "pushed": pushed,
        "received": received,
        "lost": pushed - received,
        "lost_percent": 100.0 * (pushed - received) / pushed if pushed else 0.0,
        "push_rate": pushed / (pushed_at - started) if pushed_at > started else None,
        "rate": received / span if span > 0 else None,
        "cpu_us_per_event": per_event(cpu1 - cpu0),
        # The same, split: the scheduler's workers, and every other thread.
        "worker_cpu_us_per_event": per_event(split1[0] - split0[0]),
        "other_cpu_us_per_event": per_event(split1[1] - split0[1]),
        "scheduler_totals": totals,
    }


def run(bed: Bed, config: dict[str, Any]) -> BenchResult:
    """Run the bursts and the rate sweep, sides interleaved.

    Args:
        bed: The test bed.
        config: ``servers``, ``count`` (per server), ``repeats`` (bursts),
            ``rates`` (events/s per server), ``seconds`` (per rate),
            ``edge_repeats`` (fresh runs per side at the edge, default 0).

    Returns:
        The result.
    """
    servers = int(config["servers"])
    trls = [devices[0] for devices in bed.farm(servers)]
    sides = sides_with_baseline(SIDES, bed)
    bursts: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    # Plain PyTango against itself: a second plain client closes each round,
    # so that each ratio can be read against the spread no code can beat.
    bursts[_AGAIN] = []
    params = {"trls": trls, "mode": "burst", "count": int(config["count"])}
    for _ in range(int(config["repeats"])):
        for side in sides:
            bursts[side].append(bed.run("throughput", side, params, timeout=180))
        bursts[_AGAIN].append(bed.run("throughput", "plain", params, timeout=180))
    sweep: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for rate in config["rates"]:
        for side in sides:
            sweep[side].append(_at_rate(bed, side, trls, rate, config))
    # The edge: the highest swept rate at which plain PyTango lost nothing,
    # chosen on plain's one run there. Fresh runs of both sides at that rate
    # tell whether a loss there is the scheduler's or the edge's luck.
    clean = [i for i, r in enumerate(sweep["plain"]) if r["lost"] == 0]
    edge: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    if clean:
        rate = config["rates"][clean[-1]]
        for _ in range(int(config.get("edge_repeats", 0))):
            for side in sides:
                edge[side].append(_at_rate(bed, side, trls, rate, config))

    def median(side: str, key: str) -> float | None:
        values = [r[key] for r in bursts[side] if r[key] is not None]
        return statistics.median(values) if values else None

    rows: list[Row] = []
    for side in sides:
        if side == "plain":
            continue
        label = side_label(side)
        # The targets are the scheduler's; a baseline side is only a reference.
        judged = not label
        plain_rate, rate = median("plain", "rate"), median(side, "rate")
        rows.append(
            Row(
                "throughput",
                f"burst of {servers} × {config['count']} events, delivery rate (median of "
                f"{config['repeats']}){label}",
                "events/s",
                plain_rate,
                rate,
                note="lost in ZeroMQ per run (pushed - received): plain "
                f"{[r['lost'] for r in bursts['plain']]}, scheduler{label} "
                f"{[r['lost'] for r in bursts[side]]}",
                digits=0,
                **_ratio_goal(judged, plain_rate, rate, median(_AGAIN, "rate"), low=True),
            )
        )
        rows.append(
            Row(
                "throughput",
                f"burst: events lost in ZeroMQ, % of pushed (median){label}",
                "%",
                median("plain", "lost_percent"),
                median(side, "lost_percent"),
                digits=2,
            )
        )
        plain_cpu, cpu = median("plain", "cpu_us_per_event"), median(side, "cpu_us_per_event")
        rows.append(
            Row(
                "throughput",
                f"burst: client CPU time per received event (median){label}",
                "µs",
                plain_cpu,
                cpu,
                note="all threads of the client process",
                **_ratio_goal(
                    judged, plain_cpu, cpu, median(_AGAIN, "cpu_us_per_event"), low=False
                ),
            )
        )
        rows.append(
            Row(
                "throughput",
                f"burst: of which on threads other than the scheduler's workers (Tango's "
                f"event thread, ZeroMQ, main; median){label}",
                "µs",
                median("plain", "other_cpu_us_per_event"),
                median(side, "other_cpu_us_per_event"),
                note="the scheduler's workers: "
                f"{median(side, 'worker_cpu_us_per_event') or 0.0:.1f} µs per event; "
                "threads that ended during the burst are in neither share",
            )
        )
        if judged:
            rows.append(
                Row(
                    "throughput",
                    "burst, plain PyTango against itself: delivery rate (median of "
                    f"{config['repeats']}); the scheduler's column is a second plain client, "
                    "run last in each round",
                    "events/s",
                    plain_rate,
                    median(_AGAIN, "rate"),
                    note="CPU per event: "
                    f"{plain_cpu or 0.0:.1f} vs {median(_AGAIN, 'cpu_us_per_event') or 0.0:.1f} "
                    "µs; lost per run: "
                    f"{[r['lost'] for r in bursts[_AGAIN]]}; no code can beat this spread, "
                    "so the ratio targets above are read against it",
                    digits=0,
                )
            )
        # The sweep: the highest rate at which plain PyTango lost nothing.
        if clean:
            i = clean[-1]
            p, s = sweep["plain"][i], sweep[side][i]
            share = 100.0 * s["received"] / s["pushed"] if s["pushed"] else None
            met = share is not None and share >= 90.0 and s["lost"] == 0
            rows.append(
                Row(
                    "throughput",
                    f"events received, % of pushed, at the highest swept rate where plain "
                    f"PyTango loses nothing ({servers} × {p['rate_per_server']:g}/s asked; "
                    f"pushed: plain {p['push_rate']:,.0f}/s, scheduler "
                    f"{s['push_rate']:,.0f}/s){label}",
                    "%",
                    100.0,
                    share,
                    target="ratio >= 0.9 and the scheduler loses nothing",
                    met=met,
                    why=""
                    if met
                    else f"the scheduler lost {s['lost']} of {s['pushed']} events there",
                    note="each side's own run pushes its own events: compared as shares",
                    digits=2,
                )
            )
            if edge["plain"]:
                rows.append(_edge_row(edge, side, label, p["rate_per_server"], servers))
        else:
            rows.append(
                Row(
                    "throughput",
                    f"rate sweep{label}: plain PyTango lost events at every rate swept",
                    "events",
                    None,
                    None,
                    target="ratio >= 0.9 and the scheduler loses nothing",
                    met=None,
                    note="sweep lower rates to find where plain PyTango loses nothing",
                )
            )
        rows.append(
            Row(
                "throughput",
                f"rate sweep: events lost in ZeroMQ, % per rate{label}",
                "%",
                None,
                None,
                note="; ".join(
                    f"{servers} × {p['rate_per_server']:g}/s ({p['push_rate']:,.0f}/s pushed): "
                    f"plain {p['lost_percent']:.2f}, scheduler{label} {s['lost_percent']:.2f}"
                    for p, s in zip(sweep["plain"], sweep[side], strict=True)
                ),
            )
        )
    setup = (
        f"{servers} `EventSource` servers push change events on one attribute each; the "
        "client subscribes to all of them with a callback that only counts. Bursts: each "
        f"server pushes {config['count']} events as fast as it can, {config['repeats']} "
        "times per side; each round ends with a second plain client (plain against "
        "itself). Sweep: each server pushes at a fixed rate for "
        f"{config['seconds']} s, rates {config['rates']} per server, then "
        f"{config.get('edge_repeats', 0)} more runs per side at the highest rate where plain "
        "lost nothing. Rate = events received / "
        "(time of the last callback - time of the push command). Lost = pushed - received: "
        "events that never reached the client's code (ZeroMQ discards them when Tango's "
        "event thread falls behind); the scheduler's queues are big enough to never "
        "discard here. Each side runs in its own client process, sides interleaved."
    )
    return BenchResult(
        "throughput",
        "1. Throughput (counting callback, several sources)",
        setup,
        rows,
        details={"config": config, "bursts": bursts, "sweep": sweep, "edge": edge},
    )


def _ratio_goal(
    judged: bool, plain: float | None, ours: float | None, again: float | None, *, low: bool
) -> dict[str, Any]:
    """The target of a burst row judged by its ratio to plain (none for a baseline).

    Args:
        judged: Whether the row has a target.
        plain: Plain PyTango's figure.
        ours: The scheduler's figure.
        again: The second plain client's figure (named when the target is missed).
        low: True for a lower bound on the ratio (a rate), False for an upper
            bound (a cost).

    Returns:
        ``target``, ``met`` and ``why`` for :class:`Row`, or nothing.
    """
    if not judged:
        return {}
    bound = _MIN_RATE_RATIO if low else _MAX_CPU_RATIO
    ratio = ours / plain if plain and ours is not None else None
    met = ratio is not None and (ratio >= bound if low else ratio <= bound)
    why = ""
    if not met:
        why = "not measured" if ratio is None else f"{ratio:.3f} ×"
        if plain and again is not None:
            why += f" (plain against itself: {again / plain:.3f} ×)"
    return {"target": f"ratio {'>=' if low else '<='} {bound:g}", "met": met, "why": why}


def _at_rate(
    bed: Bed, side: str, trls: list[str], rate: float, config: dict[str, Any]
) -> dict[str, Any]:
    """Run one side's client while every server pushes ``rate`` events/s."""
    params = {"trls": trls, "mode": "rate", "rate": rate, "seconds": config["seconds"]}
    result = bed.run("throughput", side, params, timeout=180)
    result["rate_per_server"] = rate
    return result


def _edge_row(
    edge: dict[str, list[dict[str, Any]]], side: str, label: str, rate: float, servers: int
) -> Row:
    """The fresh runs at the edge: in how many each side lost events (no target)."""

    def lossy(runs: list[dict[str, Any]]) -> int:
        return sum(1 for r in runs if r["lost"])

    runs = len(edge["plain"])
    return Row(
        "throughput",
        f"fresh runs at that rate ({servers} × {rate:g}/s asked), {runs} per side: runs in "
        f"which events were lost{label}",
        "runs",
        lossy(edge["plain"]),
        lossy(edge[side]),
        note="events lost per run: plain "
        f"{[r['lost'] for r in edge['plain']]}, scheduler{label} "
        f"{[r['lost'] for r in edge[side]]}; the rate was chosen on plain's single sweep "
        "run, so the row above can miss by chance at the edge: these runs show how often",
        digits=0,
    )


def plot(result: BenchResult, directory: Any, plt: Any) -> list[str]:
    """Draw events lost against the push rate, per side.

    Args:
        result: This benchmark's result.
        directory: Where to write the PNG.
        plt: ``matplotlib.pyplot``.

    Returns:
        The file names written.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    for side, runs in result.details["sweep"].items():
        xs = [r["push_rate"] or 0.0 for r in runs]
        ys = [r["lost_percent"] for r in runs]
        ax.plot(xs, ys, marker="o", label="plain PyTango" if side == "plain" else side)
    ax.set_xlabel("events pushed per second (all servers)")
    ax.set_ylabel("events lost in ZeroMQ (% of pushed)")
    ax.set_title("Throughput: where each side starts to lose events")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    name = "throughput-loss.png"
    fig.savefig(directory / name, dpi=110)
    plt.close(fig)
    return [name]
