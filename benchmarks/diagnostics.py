"""Benchmark 8, diagnostics: what a snapshot costs, and what it costs Tango's event thread.

A client subscribes to 200 quiet streams (25 devices × 4 attributes ×
change and archive events) and to one flooded stream on a device of its
own, whose server pushes change events at a fixed rate (through the
scheduler its callback takes 2 ms, so thousands of events wait in its
queue). Measured:

* the time of one ``diagnostics()`` call with those 201 streams, called in a
  tight loop in a thread of the client while the flood runs;
* the event intake during the flood: events of the flooded stream that
  reached the client (the scheduler's ``received``; for plain PyTango, its
  callback) by the time the server stops pushing, as a share of those
  pushed. With ``diagnostics()`` in a loop and without; plain PyTango (which
  has no snapshot) subscribed to the same streams is the reference.

Each side and mode runs in its own client process; sides are interleaved.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import tango

from ._bed import Bed
from ._common import BenchResult, Row, side_label, sides_with_baseline, wait_until

__all__ = ["client", "run"]

SIDES = ("plain", "scheduler")
_FLOOD = "myAttr1"
_ATTRIBUTES = ("myAttr1", "myAttr2", "myAttr3", "myAttr4")
_TYPES = (tango.EventType.CHANGE_EVENT, tango.EventType.ARCHIVE_EVENT)


class _Counter:
    """A callback that counts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    def __call__(self, event: Any) -> None:
        with self.lock:
            self.count += 1


def client(side: str, params: dict[str, Any]) -> dict[str, Any]:  # noqa: C901
    """Flood one stream among 200 quiet ones, with or without a diagnostics loop.

    Args:
        side: ``plain`` or a scheduler side.
        params: ``flood`` (the flooded device's TRL), ``quiet`` (device TRLs),
            ``rate`` (events/s), ``seconds`` and ``loop`` (run ``diagnostics()``
            in a tight loop; scheduler sides only).

    Returns:
        Pushed and received counts, the intake share and the time per call.
    """
    from ska_tango_scheduler import CallbackScheduler

    flood = tango.DeviceProxy(params["flood"])
    change = tango.EventType.CHANGE_EVENT
    flood_counter, quiet_counter = _Counter(), _Counter()
    scheduler: Any = None
    proxies: list[Any] = []
    if side == "plain":
        for trl in params["quiet"]:
            proxy = tango.DeviceProxy(trl)
            proxies.append(proxy)
            for attr in _ATTRIBUTES:
                for event_type in _TYPES:
                    proxy.subscribe_event(attr, event_type, quiet_counter)
        flood.subscribe_event(_FLOOD, change, flood_counter)
    else:
        scheduler = CallbackScheduler(1, name="bench")
        futures = [
            scheduler.register_event_callback(trl, attr, event_type, quiet_counter)
            for trl in params["quiet"]
            for attr in _ATTRIBUTES
            for event_type in _TYPES
        ]
        for future in futures:
            future.result(60)

        # A slow callback: thousands of events wait in the queue during the flood.
        def slow(event: Any) -> None:
            flood_counter(event)
            time.sleep(0.002)

        scheduler.register_event_callback(
            params["flood"],
            _FLOOD,
            change,
            slow,
            queue_factory=lambda: scheduler.allocate_queue(1_000_000),
        ).result(15)
    if not wait_until(lambda: flood_counter.count >= 1, 15):
        raise RuntimeError("no first flood event within 15 s")
    time.sleep(0.5)

    def intake() -> int:
        if scheduler is None:
            return flood_counter.count
        for row in scheduler.diagnostics().streams:
            if row.attribute == _FLOOD and row.device.lower().endswith(flood_name):
                return int(row.received)
        raise RuntimeError("flood stream missing from diagnostics")

    flood_name = "/" + "/".join(params["flood"].split("/")[-3:]).lower()
    floor_pushed = int(flood.read_attribute("pushedCounts").value[0])
    floor_received = intake()
    stop = threading.Event()
    calls: list[float] = []

    def loop() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            scheduler.diagnostics()
            calls.append(time.perf_counter() - started)

    looper = threading.Thread(target=loop, daemon=True)
    if params["loop"] and scheduler is not None:
        looper.start()
    flood.command_inout("StartPushing", ([float(params["rate"])], [_FLOOD]))
    time.sleep(float(params["seconds"]))
    flood.command_inout("StopPushing", [])
    wait_until(lambda: not flood.read_attribute("pushingAttributes").value, 60)
    # What reached the client while the loop still ran (plus 0.2 s for ZeroMQ).
    time.sleep(0.2)
    pushed = int(flood.read_attribute("pushedCounts").value[0]) - floor_pushed
    during = intake() - floor_received
    stop.set()
    if looper.is_alive():
        looper.join(30)
    seen = -1
    while seen != intake():
        seen = intake()
        time.sleep(1.0)
    final = intake() - floor_received
    if scheduler is not None:
        scheduler.shutdown(timeout=5)
    streams = len(params["quiet"]) * len(_ATTRIBUTES) * len(_TYPES) + 1
    return {
        "side": side,
        "loop": bool(params["loop"]) and scheduler is not None,
        "streams": streams,
        "pushed": pushed,
        "received_during": during,
        "received_final": final,
        "intake_percent": 100.0 * during / pushed if pushed else None,
        "lost": pushed - final,
        "calls": len(calls),
        "ms_per_call": statistics.median(calls) * 1e3 if calls else None,
        "ms_per_call_p99": sorted(calls)[int(0.99 * (len(calls) - 1))] * 1e3 if calls else None,
    }


def run(bed: Bed, config: dict[str, Any]) -> BenchResult:
    """Run plain PyTango and each scheduler side with and without the loop.

    Args:
        bed: The test bed.
        config: ``rate`` (events/s), ``seconds``, ``repeats``.

    Returns:
        The result.
    """
    farm = bed.farm(6)
    quiet = [trl for devices in farm[:5] for trl in devices]
    flood = farm[5][0]
    sides = sides_with_baseline(SIDES, bed)
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(int(config["repeats"])):
        for side in sides:
            for loop in (False, True) if side != "plain" else (False,):
                params = {
                    "flood": flood,
                    "quiet": quiet,
                    "rate": config["rate"],
                    "seconds": config["seconds"],
                    "loop": loop,
                }
                key = f"{side}{'+loop' if loop else ''}"
                runs.setdefault(key, []).append(bed.run("diagnostics", side, params, timeout=300))

    def median(key: str, field: str) -> float | None:
        values = [r[field] for r in runs.get(key, []) if r[field] is not None]
        return statistics.median(values) if values else None

    rows: list[Row] = []
    plain_intake = median("plain", "intake_percent")
    for side in sides:
        if side == "plain":
            continue
        label = side_label(side)
        per_call = median(f"{side}+loop", "ms_per_call")
        rows.append(
            Row(
                "diagnostics",
                f"diagnostics(): time per call at {runs[side + '+loop'][0]['streams']} streams, "
                f"in a tight loop during the flood (median){label}",
                "ms",
                None,
                per_call,
                target="<= 2 ms",
                met=None if per_call is None else per_call <= 2.0,
                note="p99 per run: "
                f"{[round(r['ms_per_call_p99'] or 0, 2) for r in runs[side + '+loop']]}",
                digits=2,
            )
        )
        looped = median(f"{side}+loop", "intake_percent")
        alone = median(side, "intake_percent")
        rows.append(
            Row(
                "diagnostics",
                f"flood intake while the server pushes, % of pushed, with diagnostics() in a "
                f"tight loop (plain: no snapshot){label}",
                "%",
                plain_intake,
                looped,
                target="within 1 % of the intake without the loop",
                met=None if looped is None or alone is None else looped >= alone - 1.0,
                note=f"without the loop: {alone if alone is None else round(alone, 2)} %; "
                "lost in the end (pushed - received) per run: "
                f"plain {[r['lost'] for r in runs['plain']]}, "
                f"without loop {[r['lost'] for r in runs[side]]}, "
                f"with loop {[r['lost'] for r in runs[side + '+loop']]}",
                digits=2,
            )
        )
    setup = (
        "The client subscribes to 200 quiet streams (25 devices × 4 attributes × change "
        "and archive events) and to one stream whose server pushes change events at "
        f"{config['rate']:g}/s for {config['seconds']} s (through the scheduler its callback "
        "takes 2 ms, so thousands of events wait in its queue). Intake: events of that stream that "
        "reached the client (the scheduler's `received`, plain PyTango's callback) by the "
        "time the server stops pushing (+0.2 s), as a share of those pushed. With "
        "`diagnostics()` called in a tight loop by a thread of the client, and without. "
        "Each side and mode runs in its own client process, interleaved."
    )
    return BenchResult(
        "diagnostics",
        "8. Diagnostics snapshots beside a flood",
        setup,
        rows,
        details={"config": config, "runs": runs},
    )
