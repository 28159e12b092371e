"""What the demo prints: the live views and the final side-by-side report."""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TextIO

from .. import SchedulerDiagnostics
from ..mixin import diagnostic_values
from ._runs import Recorder, RunResult, RunSettings, StreamResult, percentile

__all__ = [
    "LiveView",
    "LogTail",
    "plain_progress_lines",
    "render_report",
    "scheduler_lines",
    "short_name",
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
            if self._drawn:
                # Back to the block's first line, then clear to the end of the screen.
                self._out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._out.write("".join(f"{line}\n" for line in lines))
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


class LogTail(logging.Handler):
    """Keeps the last few log messages, for the live view to show.

    Args:
        keep: How many messages to keep.
    """

    def __init__(self, keep: int = 3) -> None:
        super().__init__(logging.INFO)
        self._lock = threading.Lock()
        self._messages: deque[str] = deque(maxlen=keep)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Keep one message.

        Args:
            record: The log record.
        """
        text = " ".join(record.getMessage().split())
        with self._lock:
            self._messages.append(f"{record.levelname.lower()}: {short_name(text)}")
            self.count += 1

    def lines(self, width: int = 100) -> list[str]:
        """Return the kept messages, each cut to ``width`` characters."""
        with self._lock:
            messages = list(self._messages)
        return [m if len(m) <= width else m[: width - 3] + "..." for m in messages]


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1.0:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def plain_progress_lines(
    elapsed: float, settings: RunSettings, flood: Recorder, quiet: Recorder
) -> list[str]:
    """Describe the plain PyTango run so far.

    Args:
        elapsed: Seconds since pushing started.
        settings: The run's settings.
        flood: The flooding stream's recorder.
        quiet: The quiet stream's recorder.

    Returns:
        The lines to show.
    """
    flood_count, _ = flood.snapshot()
    quiet_count, latencies = quiet.snapshot()
    latest = latencies[-1] if latencies else None
    return [
        f"  plain PyTango: {min(elapsed, settings.seconds):4.1f} s of {settings.seconds:g} s;"
        f" callbacks so far: {settings.flood_attribute} {flood_count},"
        f" {settings.quiet_attribute} {quiet_count}"
        f" (latest quiet latency {_seconds(latest)})",
    ]


def scheduler_lines(
    elapsed: float,
    settings: RunSettings,
    snapshot: SchedulerDiagnostics,
    log: LogTail | None = None,
) -> list[str]:
    """Describe the scheduler's state as its diagnostic attributes would.

    Args:
        elapsed: Seconds since pushing started.
        settings: The run's settings.
        snapshot: The scheduler's diagnostics.
        log: The scheduler's latest log messages, shown below the table.

    Returns:
        The lines to show.
    """
    values = diagnostic_values(snapshot)
    lines = [
        f"  CallbackScheduler {snapshot.name!r}: {min(elapsed, settings.seconds):4.1f} s"
        f" of {settings.seconds:g} s (diagnostic attribute values)",
    ]
    for name in (
        "schedulerThreadCount",
        "schedulerReceivedEvents",
        "schedulerDeliveredEvents",
        "schedulerDroppedEvents",
        "schedulerCallbackErrors",
    ):
        lines.append(f"    {name:<26}{values[name]:>8}")
    lines.append("    schedulerQueueNames / schedulerQueueDepths, with each queue's counts:")
    width = max([len("queue")] + [len(short_name(q.name)) for q in snapshot.queues])
    lines.append(
        f"      {'queue':<{width}}  {'depth':>9}  {'received':>8}  {'delivered':>9}  {'dropped':>7}"
    )
    for queue in snapshot.queues:
        depth = f"{queue.depth}/{queue.size}"
        lines.append(
            f"      {short_name(queue.name):<{width}}  {depth:>9}  {queue.received:>8}"
            f"  {queue.delivered:>9}  {queue.dropped:>7}"
        )
    lines.append("    schedulerBackoffState:")
    if not snapshot.backoff:
        lines.append("      {} (no stream is being retried)")
    for row in snapshot.backoff:
        retry = (
            "left to Tango"
            if row.next_attempt_in is None
            else f"next try in {_seconds(row.next_attempt_in)}"
        )
        error = " ".join(row.last_error.split())
        if len(error) > 60:
            error = error[:57] + "..."
        lines.append(f"      {short_name(row.stream)}: attempt {row.attempts}, {retry}")
        lines.append(f"        last error: {error}")
    if log is not None and log.count:
        lines.append(f"    scheduler log ({log.count} message(s), the latest last):")
        lines.extend(f"      {line}" for line in log.lines())
    return lines


def _cell(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def _stream_rows(plain: StreamResult, scheduled: StreamResult) -> list[tuple[str, str, str]]:
    rows = [
        ("pushed by the server", str(plain.pushed), str(scheduled.pushed)),
        ("received from Tango", _cell(plain.received), _cell(scheduled.received)),
        ("delivered to the callback", str(plain.delivered), str(scheduled.delivered)),
        ("dropped (oldest first)", _cell(plain.dropped), _cell(scheduled.dropped)),
        ("still queued at the end", _cell(plain.queued), _cell(scheduled.queued)),
        ("pushed but not delivered", str(plain.undelivered), str(scheduled.undelivered)),
    ]
    return rows


def _latency_rows(plain: StreamResult, scheduled: StreamResult) -> list[tuple[str, str, str]]:
    return [
        (
            f"latency {label}",
            _seconds(percentile(plain.latencies, fraction)),
            _seconds(percentile(scheduled.latencies, fraction)),
        )
        for label, fraction in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
    ]


def render_report(settings: RunSettings, plain: RunResult, scheduled: RunResult) -> list[str]:
    """Put both runs side by side.

    Args:
        settings: What the runs did.
        plain: The plain PyTango run.
        scheduled: The scheduler run.

    Returns:
        The report's lines.
    """
    sections: list[tuple[str, list[tuple[str, str, str]]]] = [
        (
            f"flooding stream {settings.flood_attribute}: {settings.flood_rate:g} Hz,"
            f" callback takes {settings.callback_delay * 1000:g} ms",
            _stream_rows(plain.flood, scheduled.flood),
        ),
        (
            f"quiet stream {settings.quiet_attribute}: {settings.quiet_rate:g} Hz, quick callback",
            _stream_rows(plain.quiet, scheduled.quiet)
            + _latency_rows(plain.quiet, scheduled.quiet),
        ),
    ]
    label_width = max(len(label) for _, rows in sections for label, _, _ in rows) + 2
    column = max(17, *(len(v) for _, rows in sections for _, a, b in rows for v in (a, b)))
    lines = [
        f"Results: {settings.seconds:g} s of pushing per run, then {settings.drain:g} s to"
        " catch up",
        f"  the scheduler has {settings.threads} worker thread(s) and queues of"
        f" {settings.queue_size} events",
        "",
        f"  {'':<{label_width}}{plain.title:>{column}}  {scheduled.title:>{column}}",
    ]
    for title, rows in sections:
        lines.append(f"  {title}")
        for label, left, right in rows:
            lines.append(f"    {label:<{label_width - 2}}{left:>{column}}  {right:>{column}}")
    late = scheduled.late
    if late is not None:
        lines.append(
            f"  late device {short_name(late.trl)} (not defined when its callback was registered)"
        )
        if late.started_at is None:
            lines.append("    its server was not started during the run")
        elif late.first_value_at is None:
            lines.append(
                f"    server started {late.started_at:.1f} s into the run; no value arrived"
                f" ({late.error_events} error events)"
            )
        else:
            lines.append(
                f"    server started {late.started_at:.1f} s into the run; first value"
                f" {late.first_value_at - late.started_at:.2f} s later"
            )
            lines.append(
                f"    before that, {late.error_events} error event(s) told the callback why it"
                " could not connect yet"
            )
    lines += [
        "",
        "  latency: from the server's timestamp of an event to the start of its callback.",
        "  n/a: plain PyTango does not say what it received or dropped. Events it could",
        "  not deliver were lost by ZMQ or were still waiting behind the slow callback",
        "  on its single event thread. With the scheduler, received = delivered +",
        "  dropped + queued (received also counts the value sent when subscribing).",
    ]
    return lines
