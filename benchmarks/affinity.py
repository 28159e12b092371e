"""Where the scheduler's cost per event comes from: ``python -m benchmarks.affinity``.

A diagnostic, not part of ``make bench``: it runs the throughput benchmark's
burst (each of ``--servers`` servers pushes ``--count`` events as fast as it
can to a counting callback) in rounds, each side in its own client process,
with the client's threads placed on the CPUs in one of three ways:

* ``free``: as the operating system likes (what ``make bench`` measures);
* ``together``: Tango's event thread and the scheduler's workers on one CPU;
* ``apart``: Tango's event thread on one CPU and the workers on another.

Plain PyTango has no workers: in both it is its event thread alone (which
runs the callback) that is placed.

The package itself never sets a thread's CPU affinity. To place Tango's
event thread, this client wraps the dispatcher's intake (plain PyTango: the
counting callback), which that thread calls, so that its first call pins the
calling thread (any other thread that calls it is pinned too; in this client
none carries events); the workers pin themselves as they start. The wrappers
cost a little per event, which counts against the placed sides.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
from collections.abc import Callable
from typing import Any

from . import throughput
from ._bed import Bed

__all__ = ["PLACEMENTS", "client", "main"]

#: How the client's threads may be placed.
PLACEMENTS = ("free", "together", "apart")


def _pin_once(cpu: int) -> Callable[[], None]:
    """Return a function that pins each calling thread to ``cpu``, once per thread."""
    pinned: set[int] = set()

    def pin() -> None:
        ident = threading.get_native_id()
        if ident not in pinned:
            pinned.add(ident)
            os.sched_setaffinity(0, {cpu})  # 0: the calling thread

    return pin


def client(side: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run the throughput client with its threads placed as ``params["placement"]`` says.

    Args:
        side: ``plain`` or ``scheduler``.
        params: The throughput client's parameters, plus ``placement`` (one
            of :data:`PLACEMENTS`).

    Returns:
        The throughput client's result.
    """
    placement = params["placement"]
    if placement != "free":
        cpus = sorted(os.sched_getaffinity(0))
        event_cpu = cpus[-1]
        worker_cpu = event_cpu if placement == "together" else cpus[0]
        pin_event_thread = _pin_once(event_cpu)
        if side == "plain":
            count = throughput._Counter.__call__  # noqa: SLF001

            def counted(self: Any, event: Any) -> None:
                pin_event_thread()
                count(self, event)

            setattr(throughput._Counter, "__call__", counted)  # noqa: B010, SLF001
        else:
            from ska_tango_scheduler import _dispatch

            put = _dispatch.Dispatcher.put
            work = _dispatch.Dispatcher._work  # noqa: SLF001

            def placed_put(self: Any, queue: Any, sink: Any, payload: Any) -> None:
                pin_event_thread()
                put(self, queue, sink, payload)

            def placed_work(self: Any, index: int) -> None:
                os.sched_setaffinity(0, {worker_cpu})
                work(self, index)

            setattr(_dispatch.Dispatcher, "put", placed_put)  # noqa: B010
            setattr(_dispatch.Dispatcher, "_work", placed_work)  # noqa: B010
    return throughput.client(side, params)


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print each run and the medians per side and placement.

    Args:
        argv: Command line arguments (None: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.affinity", description=__doc__)
    parser.add_argument("--rounds", type=int, default=8, help="rounds (one run per variant)")
    parser.add_argument("--count", type=int, default=10_000, help="events per server")
    parser.add_argument("--servers", type=int, default=3, help="source servers")
    parser.add_argument("--placements", nargs="+", choices=PLACEMENTS, default=["free", "together"])
    args = parser.parse_args(argv)
    if len(os.sched_getaffinity(0)) < 2:
        print("needs at least two CPUs", file=sys.stderr)
        return 2
    variants = [(side, p) for p in args.placements for side in ("plain", "scheduler")]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {v: [] for v in variants}
    with Bed() as bed:
        trls = [devices[0] for devices in bed.farm(args.servers)]
        for number in range(args.rounds):
            for side, placement in variants:
                params = {"trls": trls, "mode": "burst", "count": args.count}
                params["placement"] = placement
                result = bed.run("affinity", side, params, timeout=180)
                runs[side, placement].append(result)
                print(f"round {number}: {side} {placement}: {_line(result)}", flush=True)
    print("medians:")
    for side, placement in variants:
        results = runs[side, placement]
        lossy = sum(1 for r in results if r["lost"])
        median = {
            key: statistics.median((r[key] or 0.0) for r in results)
            for key in ("rate", "cpu_us_per_event", "worker_cpu_us_per_event")
        }
        print(
            f"  {side} {placement}: {median['rate']:,.0f} events/s, "
            f"{median['cpu_us_per_event']:.1f} µs CPU per event "
            f"(workers {median['worker_cpu_us_per_event']:.2f}), "
            f"events lost in {lossy} of {len(results)} runs"
        )
    return 0


def _line(result: dict[str, Any]) -> str:
    return (
        f"{result['rate']:,.0f} events/s, lost {result['lost']}, "
        f"{result['cpu_us_per_event']:.1f} µs CPU per event "
        f"(workers {result['worker_cpu_us_per_event'] or 0.0:.2f})"
    )


if __name__ == "__main__":
    sys.exit(main())
