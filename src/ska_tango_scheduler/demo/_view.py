"""What the demo prints: the live views and the final side-by-side report."""

from __future__ import annotations

import logging
import threading
from collections import deque

from .. import SchedulerDiagnostics
from .._view import LiveView, queue_table_lines, short_name
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
    lines.append(f"    {'schedulerSlowCallbacks':<26}{values['schedulerSlowCallbacks']:>8}")
    max_latency = f"{values['schedulerMaxLatency']:.1f} ms"
    lines.append(f"    {'schedulerMaxLatency':<26}{max_latency:>8}")
    lines.append(
        "    schedulerQueueNames / schedulerQueueDepths / schedulerQueueLatencies"
        " (ms, worst wait first):"
    )
    lines.extend(queue_table_lines(snapshot, indent="      "))
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
