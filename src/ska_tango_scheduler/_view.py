"""Text views of scheduler diagnostics, shared by the demo and ``ska-tango-scheduler-top``.

Pure formatting of :class:`~ska_tango_scheduler.diagnostics.SchedulerDiagnostics`
snapshots, and a block of lines redrawn in place on a terminal. No Tango here.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from .diagnostics import QueueDiagnostics, SchedulerDiagnostics

__all__ = [
    "LiveView",
    "QueueRow",
    "format_ms",
    "queue_rows",
    "queue_table_lines",
    "short_name",
    "summary_line",
]

_TANGO_HOST_PREFIX = re.compile(r"tango://[^/]+/", re.IGNORECASE)


def short_name(name: str) -> str:
    """Drop the ``tango://host:port/`` part of a TRL or stream name.

    Args:
        name: A TRL or a stream name.

    Returns:
        The name without its Tango host.
    """
    return _TANGO_HOST_PREFIX.sub("", name)


def format_ms(value: float) -> str:
    """Format milliseconds with a precision that suits their size.

    Args:
        value: Milliseconds.

    Returns:
        The text, without a unit.
    """
    if value >= 1000:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


@dataclass(frozen=True)
class QueueRow:
    """One queue as a line of the table: the queue and its streams' callback figures.

    Attributes:
        queue: The queue.
        callback_max_ms: Longest delivery of one event to the callbacks of
            its streams, over the window.
        callback_mean_ms: Largest mean delivery time among its streams.
    """

    queue: QueueDiagnostics
    callback_max_ms: float
    callback_mean_ms: float


def queue_rows(snapshot: SchedulerDiagnostics) -> list[QueueRow]:
    """Return one row per queue, the worst queue wait first.

    Queues are ordered by their longest wait over the window, then by their
    99th percentile, then by name.

    Args:
        snapshot: The diagnostics.

    Returns:
        The rows.
    """
    rows = []
    for queue in snapshot.queues:
        streams = [s for s in snapshot.streams if s.queue == queue.name]
        rows.append(
            QueueRow(
                queue,
                max((s.callback_max_ms for s in streams), default=0.0),
                max((s.callback_mean_ms for s in streams), default=0.0),
            )
        )
    rows.sort(key=lambda r: (-r.queue.latency.max_ms, -r.queue.latency.p99_ms, r.queue.name))
    return rows


_COLUMNS = (
    ("depth", 9),
    ("received", 8),
    ("dropped", 7),
    ("slow", 5),
    ("wait p99", 8),
    ("wait max", 8),
    ("cb mean", 7),
    ("cb max", 7),
)


def queue_table_lines(snapshot: SchedulerDiagnostics, indent: str = "  ") -> list[str]:
    """Describe every queue on one line, the worst queue wait first.

    Columns: events waiting / capacity, events received, events dropped,
    slow callbacks, the 99th percentile and the longest queue wait over the
    window, and the mean and longest callback time of its streams (all times
    in milliseconds).

    Args:
        snapshot: The diagnostics.
        indent: Put before each line.

    Returns:
        A header line and one line per queue.
    """
    rows = queue_rows(snapshot)
    width = max([len("queue")] + [len(short_name(r.queue.name)) for r in rows])
    header = "".join(f"  {title:>{size}}" for title, size in _COLUMNS)
    lines = [f"{indent}{'queue':<{width}}{header}"]
    for row in rows:
        queue = row.queue
        cells = (
            f"{queue.depth}/{queue.size}",
            str(queue.received),
            str(queue.dropped),
            str(queue.slow_callbacks),
            format_ms(queue.latency.p99_ms),
            format_ms(queue.latency.max_ms),
            format_ms(row.callback_mean_ms),
            format_ms(row.callback_max_ms),
        )
        text = "".join(f"  {cell:>{size}}" for cell, (_, size) in zip(cells, _COLUMNS, strict=True))
        lines.append(f"{indent}{short_name(queue.name):<{width}}{text}")
    if not rows:
        lines.append(f"{indent}(no queue yet)")
    return lines


def summary_line(snapshot: SchedulerDiagnostics) -> str:
    """Describe the whole scheduler on one line.

    Args:
        snapshot: The diagnostics.

    Returns:
        Threads (with how busy each was over the window), totals, slow
        callbacks and the worst queue wait.
    """
    totals = snapshot.totals
    busy = " ".join(f"{w.busy_fraction:.0%}" for w in snapshot.workers)
    threads = f"{snapshot.thread_count} thread(s)" + (f" busy {busy}" if busy else "")
    return (
        f"{threads}; received {totals.received}, delivered {totals.delivered},"
        f" dropped {totals.dropped}, queued {totals.queued}, errors {totals.callback_errors},"
        f" slow callbacks {totals.slow_callbacks};"
        f" worst wait {format_ms(totals.max_latency_ms)} ms over {snapshot.window:g} s"
    )


class LiveView:
    """A block of lines redrawn in place on a terminal, printed now and then elsewhere.

    Args:
        out: Where to write.
        interactive: Redraw in place (a terminal); otherwise print a block
            every ``interval`` seconds.
        interval: Seconds between two blocks when not interactive.
    """

    def __init__(self, out: TextIO, *, interactive: bool, interval: float = 2.0) -> None:
        self._out = out
        self._interactive = interactive
        self._interval = interval
        self._drawn = 0
        self._last = -float("inf")

    def show(self, lines: Sequence[str], *, force: bool = False) -> None:
        """Show ``lines``, replacing the block shown before.

        Args:
            lines: The block.
            force: Print even if the interval has not passed (non-interactive).
        """
        if self._interactive:
            # A line wider than the terminal would wrap and spoil the redraw.
            width = max(20, shutil.get_terminal_size().columns - 1)
            lines = [line if len(line) <= width else line[: width - 3] + "..." for line in lines]
            # Back to the block's first line, then clear to the end of the screen.
            # One write with the new block: a Ctrl-C between two writes would
            # leave the screen cleared and the block unwritten.
            back = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
            self._out.write(back + "".join(f"{line}\n" for line in lines))
            self._drawn = len(lines)
        else:
            now = time.monotonic()
            if not force and now - self._last < self._interval:
                return
            self._last = now
            self._out.write("".join(f"{line}\n" for line in lines))
        self._out.flush()

    def finish(self) -> None:
        """Keep the last block on screen and start afresh below it."""
        self._drawn = 0
        self._last = -float("inf")
