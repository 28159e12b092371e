"""Result records, statistics and small helpers shared by the benchmarks."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "BenchResult",
    "EventRecorder",
    "MemorySampler",
    "Row",
    "Sides",
    "percentiles",
    "side_label",
    "sides_with_baseline",
    "rss_mb",
    "worker_cpu_seconds",
    "wait_until",
]


class Sides:
    """Names of the sides a benchmark compares."""

    PLAIN = "plain"
    SCHEDULER = "scheduler"


@dataclass
class Row:
    """One line of the results table: a metric on both sides.

    Attributes:
        benchmark: Short name of the benchmark.
        metric: What is measured.
        unit: Unit of ``plain`` and ``scheduler``.
        plain: The value with plain PyTango.
        scheduler: The value through the scheduler.
        target: The goal, in words (empty: none).
        met: Whether the goal is met (None: no goal or not measurable).
        note: Anything a reader needs to read the row right.
        digits: Decimal places shown in the table.
        why: Why the target is missed, when it is.
    """

    benchmark: str
    metric: str
    unit: str
    plain: float | None
    scheduler: float | None
    target: str = ""
    met: bool | None = None
    note: str = ""
    digits: int = 1
    why: str = ""

    @property
    def ratio(self) -> float | None:
        """``scheduler / plain``, or None when it cannot be formed."""
        if self.plain is None or self.scheduler is None or self.plain == 0:
            return None
        return self.scheduler / self.plain

    def to_dict(self) -> dict[str, Any]:
        """Return the row with its ratio, ready for JSON."""
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


@dataclass
class BenchResult:
    """What one benchmark found.

    Attributes:
        name: Short name (``throughput``, ...).
        title: Heading in the report.
        setup: How it was measured, a paragraph of Markdown.
        rows: Table rows.
        details: Raw figures per side, for the JSON file.
        plots: File names of plots, relative to the plot directory.
        seconds: Wall time the benchmark took.
        skipped: Why it did not run, if it did not.
    """

    name: str
    title: str
    setup: str = ""
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the result, ready for JSON."""
        return {
            "name": self.name,
            "title": self.title,
            "setup": self.setup,
            "rows": [row.to_dict() for row in self.rows],
            "details": self.details,
            "plots": self.plots,
            "seconds": round(self.seconds, 3),
            "skipped": self.skipped,
        }


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """Summarise samples: count, p50, p90, p99, max and mean.

    Percentiles use linear interpolation between the closest ranks.

    Args:
        values: The samples.

    Returns:
        ``count`` and the statistics (None for an empty sample).
    """
    data = sorted(values)
    count = len(data)
    if not count:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}

    def rank(q: float) -> float:
        pos = q * (count - 1)
        low = math.floor(pos)
        high = min(low + 1, count - 1)
        return data[low] + (data[high] - data[low]) * (pos - low)

    return {
        "count": count,
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "max": data[-1],
        "mean": sum(data) / count,
    }


def rss_mb() -> float:
    """Return this process's resident memory (``VmRSS``) in MiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import psutil  # not on Linux: fall back to psutil

    return float(psutil.Process().memory_info().rss) / (1024.0 * 1024.0)


def worker_cpu_seconds(worker_names: Collection[str]) -> tuple[float, float]:
    """Split this process's CPU time between the scheduler's workers and the rest.

    Args:
        worker_names: The names of the worker threads (from
            ``CallbackScheduler.diagnostics().workers``; empty for plain PyTango).

    Returns:
        ``(workers, others)`` in seconds, user and system time of every
        thread alive now: the workers are the Python threads named in
        ``worker_names``; the others are Tango's event thread, ZeroMQ's, the
        main thread and the rest.
    """
    import psutil

    workers = {t.native_id for t in threading.enumerate() if t.name in worker_names}
    split = [0.0, 0.0]
    for thread in psutil.Process().threads():
        split[0 if thread.id in workers else 1] += thread.user_time + thread.system_time
    return split[0], split[1]


class MemorySampler:
    """Samples this process's resident memory on a thread.

    Args:
        interval: Seconds between samples.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._t0 = time.monotonic()
        #: Wall clock time of time 0.
        self.wall0 = time.time()

    def start(self) -> MemorySampler:
        """Start sampling; time 0 is now.

        Returns:
            ``self``.
        """
        self._t0 = time.monotonic()
        self.wall0 = time.time()
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, float]]:
        """Stop sampling.

        Returns:
            ``(seconds since start, MiB)`` pairs.
        """
        self._stop.set()
        self._thread.join()
        return self.samples

    def mark(self) -> float:
        """Return the seconds since the start, for labelling phases."""
        return time.monotonic() - self._t0

    def _run(self) -> None:
        while True:
            self.samples.append((round(time.monotonic() - self._t0, 3), round(rss_mb(), 3)))
            if self._stop.wait(self.interval):
                return


class EventRecorder:
    """A Tango event callback that records the value and timing of each good event.

    Events whose value is ``<= floor`` (the value before the benchmark
    started) and error events are counted but not recorded.

    Args:
        floor: Values up to this one are ignored.
        last: Value that completes the run (sets :attr:`done`); None: never.
        sleep: Seconds each call sleeps (a slow callback), 0 for a no-op.
    """

    def __init__(self, floor: int = 0, last: int | None = None, sleep: float = 0.0) -> None:
        self.floor = floor
        self.last = last
        self.sleep = sleep
        self.values: list[int] = []
        # Wall clock when the callback ran, and when the server pushed.
        self.received: list[float] = []
        self.stamped: list[float] = []
        self.perf: list[float] = []
        self.errors = 0
        self.calls = 0
        self.done = threading.Event()
        self.first_good = threading.Event()

    def __call__(self, event: Any) -> None:
        """Record one event."""
        now = time.time()
        perf = time.perf_counter()
        self.calls += 1
        if event.err or event.attr_value is None:
            self.errors += 1
            return
        value = int(event.attr_value.value)
        self.first_good.set()
        if value > self.floor:
            self.values.append(value)
            self.received.append(now)
            self.perf.append(perf)
            self.stamped.append(event.attr_value.time.totime())
            if self.last is not None and value >= self.last:
                self.done.set()
        if self.sleep:
            time.sleep(self.sleep)

    def latencies_ms(self) -> list[float]:
        """Return callback time minus server time stamp, per event, in ms."""
        return [(r - s) * 1000.0 for r, s in zip(self.received, self.stamped, strict=True)]


def wait_until(condition: Any, timeout: float, interval: float = 0.01) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` seconds pass.

    Args:
        condition: A callable returning a truth value.
        timeout: Seconds to wait at most.
        interval: Seconds between polls.

    Returns:
        Whether the condition became true.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def environment_summary() -> dict[str, Any]:
    """Describe the machine and software of this run.

    Returns:
        CPU model, cores, memory, load, Python, PyTango and cppTango versions.
    """
    import platform

    import tango

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gb = None
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            memory_gb = round(int(info.readline().split()[1]) / (1024.0 * 1024.0), 1)
    except (OSError, ValueError, IndexError):
        pass
    cpptango = getattr(getattr(tango, "constants", None), "TgLibVers", None)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pytango": tango.__version__,
        "cpptango": str(cpptango) if cpptango is not None else None,
    }


def sides_with_baseline(sides: Sequence[str], bed: Any) -> list[str]:
    """Add a ``<side>@base`` after every scheduler side (not ``plain...``) given a baseline.

    Args:
        sides: The benchmark's sides.
        bed: The test bed (its ``baseline`` attribute).

    Returns:
        The sides to run, in order.
    """
    out: list[str] = []
    for side in sides:
        out.append(side)
        if getattr(bed, "baseline", None) is not None and not side.startswith("plain"):
            out.append(f"{side}@base")
    return out


def side_label(side: str) -> str:
    """Return the label that tells a baseline side apart in a row (empty otherwise).

    Args:
        side: A side name.

    Returns:
        ``" [baseline]"`` for a ``...@base`` side, else ``""``.
    """
    return " [baseline]" if side.endswith("@base") else ""
