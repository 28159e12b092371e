"""Benchmark 5, LRC thrash: many sequential long running commands beside a quiet stream.

One client process per side invokes ``commands`` long running commands
(``Complete`` on the ``LrcReference`` test device), one after the other,
each waiting for its terminal status, while a quiet stream (``myAttr4`` of
the ``EventSource``, ``quiet_hz`` events per second) runs on the same
scheduler and records its latency. Without :func:`connect_lrc_interface`
every :func:`invoke_lrc` subscribes to the device's LRC attributes and
unsubscribes afterwards, the same Tango calls a plain PyTango client makes
per command, and each of them pauses every event callback of the process.
With :func:`connect_lrc_interface` the subscriptions are made once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import tango

from ska_tango_scheduler import CallbackScheduler

from ._bed import Bed
from ._common import BenchResult, EventRecorder, Row, percentiles

__all__ = ["client", "run"]

SIDES = ("invoke", "connected")
DEVICE = "bench/lrc/1"
_QUIET = "myAttr4"
_TIMEOUT = 15.0


def client(side: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run the commands while recording the quiet stream (in a client process).

    Args:
        side: ``invoke`` (plain ``invoke_lrc``) or ``connected`` (after
            ``connect_lrc_interface``).
        params: ``lrc_trl``, ``source_trl``, ``commands``, ``quiet_hz``.

    Returns:
        Loop time, quiet stream latencies, subscription calls.
    """
    from ska_tango_scheduler.control_model import TERMINAL_STATUSES
    from ska_tango_scheduler.long_running_commands import (
        connect_lrc_interface,
        disconnect_lrc_interface,
        invoke_lrc,
    )

    scheduler = CallbackScheduler(2, name="bench")
    source = tango.DeviceProxy(params["source_trl"])
    lrc = tango.DeviceProxy(params["lrc_trl"])
    quiet = EventRecorder()
    change = tango.EventType.CHANGE_EVENT
    scheduler.register_event_callback(params["source_trl"], _QUIET, change, quiet).result(15)
    if side == "connected":
        connect_lrc_interface(lrc, scheduler)
    timeouts = 0

    def one() -> float:
        nonlocal timeouts
        done = threading.Event()

        def on_update(**kwargs: Any) -> None:
            if kwargs.get("status") in TERMINAL_STATUSES:
                done.set()

        started = time.perf_counter()
        # Keep the handle until the end: dropping it would stop the callbacks.
        handle = invoke_lrc(on_update, lrc, "Complete", callback_scheduler=scheduler)
        if not done.wait(_TIMEOUT):
            timeouts += 1
        handle.unsubscribe_lrc_events()
        return time.perf_counter() - started

    one()  # warm up: protocol version, proxies
    source.command_inout("StartPushing", ([float(params["quiet_hz"])], [_QUIET]))
    time.sleep(1.0)
    calls0 = scheduler.diagnostics().totals
    loop_start = time.time()
    durations = [one() for _ in range(int(params["commands"]))]
    loop_end = time.time()
    calls1 = scheduler.diagnostics().totals
    time.sleep(0.3)
    source.command_inout("StopPushing", [_QUIET])
    if side == "connected":
        disconnect_lrc_interface(lrc, scheduler)
    scheduler.shutdown(timeout=5)
    during = [
        lat
        for lat, stamp in zip(quiet.latencies_ms(), quiet.stamped, strict=True)
        if loop_start <= stamp <= loop_end
    ]
    before = [
        lat
        for lat, stamp in zip(quiet.latencies_ms(), quiet.stamped, strict=True)
        if stamp < loop_start
    ]
    return {
        "side": side,
        "total_s": loop_end - loop_start,
        "command_s": percentiles(durations),
        "timeouts": timeouts,
        "quiet_during_ms": percentiles(during),
        "quiet_before_ms": percentiles(before),
        "subscribe_calls": calls1.subscribe_calls - calls0.subscribe_calls,
        "unsubscribe_calls": calls1.unsubscribe_calls - calls0.unsubscribe_calls,
    }


def run(bed: Bed, config: dict[str, Any]) -> BenchResult:
    """Start the LRC device server and run both sides, one after the other.

    Args:
        bed: The test bed.
        config: ``commands`` and ``quiet_hz``.

    Returns:
        The result; skipped when the LRC modules cannot be imported.
    """
    try:
        import ska_tango_scheduler.long_running_commands  # noqa: F401
        import ska_tango_scheduler.testing.lrc_device  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import problem means: not ready
        return BenchResult(
            "lrc", "5. LRC thrash", skipped=f"the LRC modules do not import: {exc!r}"
        )
    from ska_tango_scheduler.testing import DeviceServerProcess

    server = DeviceServerProcess(
        "LrcReference/bench",
        [DEVICE],
        database=bed.database,
        device_class="LrcReference",
        module="ska_tango_scheduler.testing.lrc_device",
        log_dir=bed.work_dir,
        stop_grace=3.0,
    )
    tango.DeviceProxy(bed.trl()).command_inout("ResetCounts")
    params = {
        "lrc_trl": bed.trl(DEVICE),
        "source_trl": bed.trl(),
        "commands": int(config["commands"]),
        "quiet_hz": float(config["quiet_hz"]),
    }
    server.start()
    try:
        runs = {side: bed.run("lrc", side, params, timeout=300) for side in SIDES}
    finally:
        server.stop(grace=3.0)
    plain, conn = runs["invoke"], runs["connected"]
    count = params["commands"]
    rows = [
        Row(
            "lrc",
            f"{count} sequential invoke_lrc, total time",
            "s",
            plain["total_s"],
            conn["total_s"],
            note=f"per command p50/max: without connect "
            f"{plain['command_s']['p50'] * 1000:.1f}/{plain['command_s']['max'] * 1000:.1f} ms, "
            f"with connect {conn['command_s']['p50'] * 1000:.1f}/"
            f"{conn['command_s']['max'] * 1000:.1f} ms; timeouts "
            f"{plain['timeouts']}/{conn['timeouts']}",
            digits=2,
        ),
        Row(
            "lrc",
            "worst delay of the quiet stream during the commands",
            "ms",
            plain["quiet_during_ms"]["max"],
            conn["quiet_during_ms"]["max"],
            note=f"quiet stream before the commands, max: without connect "
            f"{_ms(plain['quiet_before_ms']['max'])}, with connect "
            f"{_ms(conn['quiet_before_ms']['max'])}; p99 during: "
            f"{_ms(plain['quiet_during_ms']['p99'])} / {_ms(conn['quiet_during_ms']['p99'])}",
            digits=2,
        ),
        Row(
            "lrc",
            "Tango subscribe + unsubscribe calls during the commands",
            "calls",
            plain["subscribe_calls"] + plain["unsubscribe_calls"],
            conn["subscribe_calls"] + conn["unsubscribe_calls"],
            digits=0,
        ),
    ]
    setup = (
        f"{count} `Complete` commands on the `LrcReference` device, one after the other, "
        "each waited for until its terminal status; meanwhile `myAttr4` is pushed at "
        f"{config['quiet_hz']:g} Hz and its callback (same scheduler, 2 threads) records its "
        "latency. The **plain** column is `invoke_lrc` alone, which subscribes and "
        "unsubscribes the LRC attributes for every command (the Tango calls a plain PyTango "
        "client makes per command); the **scheduler** column adds `connect_lrc_interface`."
    )
    return BenchResult("lrc", "5. LRC thrash", setup, rows, details={"runs": runs})


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} ms"
