"""Benchmark 4, start-up: from a device becoming reachable to the first event.

A device is defined in the database but its server is not running. Two
client processes subscribe to one of its attributes at the same time: plain
PyTango with Tango's own retry (``sub_mode=AsyncRead`` on PyTango >= 10.1,
``stateless=True`` before), and the scheduler. After ``down_s`` seconds the
server is started and the orchestrator pings the device every 5 ms; the
first successful ping marks the device reachable. Each client notes the
wall-clock time of its first good event. Repeated ``repeats`` times.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import tango

from ska_tango_scheduler import CallbackScheduler

from ._bed import Bed, ClientHandle
from ._common import BenchResult, EventRecorder, Row, wait_until

__all__ = ["client", "plot", "run"]

SIDES = ("plain", "scheduler")
DEVICE = "bench/startup/1"
_ATTRIBUTE = "myAttr1"
# Seconds a client waits for its first event (Tango retries every 10 s).
_FIRST_EVENT_TIMEOUT = 30.0


def client(side: str, params: dict[str, Any]) -> dict[str, Any]:
    """Subscribe to a device that is down and wait for its first event (client process).

    Args:
        side: ``plain`` or ``scheduler``.
        params: ``trl`` and ``ready`` (a file to create once subscribed).

    Returns:
        Wall-clock time of the first good event and the error events before it.
    """
    trl = params["trl"]
    recorder = EventRecorder(floor=-1)
    change = tango.EventType.CHANGE_EVENT
    scheduler: CallbackScheduler | None = None
    if side == "plain":
        proxy = tango.DeviceProxy(trl)
        if hasattr(tango, "EventSubMode"):
            mode = "AsyncRead"
            proxy.subscribe_event(
                _ATTRIBUTE, change, recorder, sub_mode=tango.EventSubMode.AsyncRead
            )
        else:
            mode = "stateless"
            proxy.subscribe_event(_ATTRIBUTE, change, recorder, stateless=True)
    else:
        mode = "scheduler"
        scheduler = CallbackScheduler(1, name="bench")
        scheduler.register_event_callback(trl, _ATTRIBUTE, change, recorder).result(15)
    Path(params["ready"]).write_text(str(time.time()), encoding="utf-8")
    got = recorder.first_good.wait(_FIRST_EVENT_TIMEOUT)
    first = recorder.received[0] if got and recorder.received else None
    if scheduler is not None:
        scheduler.shutdown(timeout=5)
    return {"side": side, "mode": mode, "first_event": first, "errors_before": recorder.errors}


def _reachable(trl: str, timeout: float) -> float:
    """Ping the device every 5 ms; return the wall-clock time of the first answer.

    Each try uses a new proxy: a proxy whose connection failed waits about a
    second before it tries to connect again, which would make the device look
    reachable later than it is.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            tango.DeviceProxy(trl).ping()
        except tango.DevFailed:
            time.sleep(0.005)
        else:
            return time.time()
    raise RuntimeError(f"{trl} did not answer within {timeout:g} s")


def run(bed: Bed, config: dict[str, Any]) -> BenchResult:
    """Stop, subscribe, start, measure; ``repeats`` times.

    Args:
        bed: The test bed.
        config: ``repeats`` and ``down_s`` (seconds the device stays down
            after both clients subscribed).

    Returns:
        The result.
    """
    server = bed.server("startup", [DEVICE])
    server.register()
    trl = bed.trl(DEVICE)
    repeats, down = int(config["repeats"]), float(config["down_s"])
    runs: list[dict[str, Any]] = []
    for attempt in range(repeats):
        ready = {side: bed.work_dir / f"startup-{attempt}-{side}.ready" for side in SIDES}
        handles: dict[str, ClientHandle] = {}
        try:
            for side in SIDES:
                ready[side].unlink(missing_ok=True)
                handles[side] = bed.spawn("startup", side, {"trl": trl, "ready": str(ready[side])})
            if not wait_until(lambda r=ready: all(p.exists() for p in r.values()), 60, 0.02):
                raise RuntimeError("start-up clients did not subscribe within 60 s")
            time.sleep(down)
            server.start(wait=False)
            reachable = _reachable(trl, 60)
            results = {side: h.wait(_FIRST_EVENT_TIMEOUT + 30) for side, h in handles.items()}
        finally:
            for handle in handles.values():
                handle.kill()
            server.stop(grace=3.0)
        entry: dict[str, Any] = {"reachable": reachable}
        for side, result in results.items():
            first = result["first_event"]
            entry[side] = {
                **result,
                "latency_s": None if first is None else first - reachable,
            }
        runs.append(entry)

    def latencies(side: str) -> list[float]:
        # A client that got no event at all counts as the whole wait.
        return [
            _FIRST_EVENT_TIMEOUT if r[side]["latency_s"] is None else r[side]["latency_s"]
            for r in runs
        ]

    plain, sched = latencies("plain"), latencies("scheduler")
    mode = runs[0]["plain"]["mode"] if runs else "?"
    rows = [
        Row(
            "startup",
            f"reachable to first event, median of {repeats}",
            "s",
            statistics.median(plain),
            statistics.median(sched),
            target="scheduler < 1 s",
            met=statistics.median(sched) < 1.0,
            why="See the max row." if statistics.median(sched) >= 1.0 else "",
            note=f"plain PyTango subscribes with {mode}",
            digits=3,
        ),
        Row(
            "startup",
            f"reachable to first event, max of {repeats}",
            "s",
            max(plain),
            max(sched),
            target="scheduler < 1 s",
            met=max(sched) < 1.0,
            why=f"Over by {max(sched) - 1.0:.2f} s. The back-off is capped at 1 s (+10 % "
            "jitter), and cppTango does not reconnect a proxy that failed for about 1 s "
            "(Profile finding 4). Proposals 3 and 4 measured 0.23 to 0.45 s."
            if max(sched) >= 1.0
            else "",
            digits=3,
        ),
    ]
    setup = (
        f"The device is defined but its server is down; both clients subscribe, the "
        f"device stays down {down:g} s more (so the scheduler's back-off has grown), then "
        "its server starts. Reachable = first successful `ping()` (polled every 5 ms by the "
        "orchestrator); latency = wall-clock time of the client's first good event minus "
        "that. Both clients run at the same time against the same server start. "
        f"{repeats} repeats."
    )
    return BenchResult(
        "startup",
        "4. Start-up (device becomes reachable)",
        setup,
        rows,
        details={"config": config, "runs": runs},
    )


def plot(result: BenchResult, directory: Path, plt: Any) -> list[str]:
    """Draw the start-up latency of each repeat, both sides.

    Args:
        result: This benchmark's result.
        directory: Where to write the PNG.
        plt: ``matplotlib.pyplot``.

    Returns:
        The file names written.
    """
    runs = result.details["runs"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for offset, side in ((-0.2, "plain"), (0.2, "scheduler")):
        values = [r[side]["latency_s"] or _FIRST_EVENT_TIMEOUT for r in runs]
        ax.bar(
            [i + offset for i in range(len(runs))],
            values,
            width=0.4,
            label="plain PyTango" if side == "plain" else "scheduler",
        )
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("repeat")
    ax.set_ylabel("seconds from reachable to first event")
    ax.set_title("Start-up: first event after the device becomes reachable")
    ax.set_xticks(range(len(runs)))
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    name = "startup.png"
    fig.savefig(directory / name, dpi=110)
    plt.close(fig)
    return [name]
