"""The pure parts of ska-tango-scheduler-top and of the shared renderer."""

from __future__ import annotations

import json
from types import SimpleNamespace

from ska_tango_scheduler._view import queue_rows, queue_table_lines, summary_line
from ska_tango_scheduler.diagnostics import (
    LatencyStats,
    QueueDiagnostics,
    SchedulerDiagnostics,
    StreamDiagnostics,
    Totals,
    WorkerDiagnostics,
)
from ska_tango_scheduler.top import (
    DeviceReport,
    describe_errors,
    report_json,
    report_lines,
    snapshot_from_dict,
)


def queue(name: str, p99: float, maximum: float, slow: int = 0) -> QueueDiagnostics:
    return QueueDiagnostics(
        name, 32, 1, 10, 8, 1, (name,), LatencyStats(p99, maximum, p99, 5), slow
    )


def stream(name: str, mean: float, maximum: float) -> StreamDiagnostics:
    return StreamDiagnostics(
        name, "d", "a", "CHANGE_EVENT", "connected", False, 1, name, 1, 10, 8, 1, 0,
        callback_mean_ms=mean, callback_max_ms=maximum,
    )  # fmt: skip


SNAPSHOT = SchedulerDiagnostics(
    "dev",
    2,
    True,
    1.0,
    Totals(received=20, delivered=16, dropped=2, queued=2, slow_callbacks=3, max_latency_ms=900.0),
    (
        queue("tango://h:1/a/b/c/quick#CHANGE_EVENT", 0.4, 0.9),
        queue("a/b/c/slow#X", 800.0, 900.0, 3),
    ),
    (
        stream("tango://h:1/a/b/c/quick#CHANGE_EVENT", 0.01, 0.02),
        stream("a/b/c/slow#X", 250.0, 251.0),
    ),
    workers=(WorkerDiagnostics("dev.worker-0", 0.98), WorkerDiagnostics("dev.worker-1", 0.01)),
)


def test_queues_worst_wait_first_with_their_streams_callback_times() -> None:
    rows = queue_rows(SNAPSHOT)
    assert [r.queue.name for r in rows] == ["a/b/c/slow#X", "tango://h:1/a/b/c/quick#CHANGE_EVENT"]
    assert rows[0].callback_mean_ms == 250.0 and rows[0].callback_max_ms == 251.0
    lines = queue_table_lines(SNAPSHOT, indent="")
    assert lines[0].split()[:3] == ["queue", "depth", "received"]
    assert lines[1].split() == [
        "a/b/c/slow#X",
        "1/32",
        "10",
        "1",
        "3",
        "800.0",
        "900.0",
        "250.0",
        "251.0",
    ]
    assert lines[2].startswith("a/b/c/quick#CHANGE_EVENT")  # Tango host dropped
    assert "busy 98% 1%" in summary_line(SNAPSHOT)
    assert "slow callbacks 3" in summary_line(SNAPSHOT)


def test_snapshot_round_trips_through_json_and_tolerates_other_versions() -> None:
    data = json.loads(json.dumps(SNAPSHOT.to_dict()))
    assert snapshot_from_dict(data) == SNAPSHOT
    data["totals"]["from_the_future"] = 1
    del data["queues"][0]["latency"]
    del data["workers"]
    old = snapshot_from_dict(data)
    assert old.queues[0].latency == LatencyStats()
    assert old.workers == ()


def error(reason: str, desc: str = "") -> SimpleNamespace:
    return SimpleNamespace(reason=reason, desc=desc)


def test_errors_are_said_in_plain_words() -> None:
    assert describe_errors([error("DB_DeviceNotDefined", "x")]).startswith(
        "not defined in the Tango database ["
    )
    assert describe_errors([error("API_DeviceNotExported")]).startswith("not running")
    assert describe_errors([error("API_AttrNotFound")]).startswith("has no scheduler attributes")
    assert describe_errors([error("SKA_SchedulerConfiguration", "No scheduler: why")]) == (
        "No scheduler: why [SKA_SchedulerConfiguration]"
    )
    assert describe_errors([error("API_Other", "what  happened")]) == "what happened [API_Other]"
    assert describe_errors([]) == "no value and no error"


def test_reports_as_text_and_json() -> None:
    good = DeviceReport("a/b/c", "", SNAPSHOT.to_dict(), 10.0)
    bad = DeviceReport("x/y/z", "not running (or not reachable) [API_DeviceNotExported]")
    lines = report_lines([good, bad], now=12.5)
    assert lines[0] == "a/b/c: scheduler 'dev' (value from 2.5 s ago)"
    assert lines[-1] == "x/y/z: not running (or not reachable) [API_DeviceNotExported]"
    data = report_json([good, bad])
    first, second = data["devices"]
    assert first["ok"] and first["error"] is None
    assert [q["name"] for q in first["diagnostics"]["queues"]][0] == "a/b/c/slow#X"
    assert second == {
        "device": "x/y/z",
        "ok": False,
        "error": "not running (or not reachable) [API_DeviceNotExported]",
        "updated": None,
        "diagnostics": None,
    }
