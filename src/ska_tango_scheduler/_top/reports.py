"""What ``ska-tango-scheduler-top`` knows about a device, and how it shows it.

A :class:`DeviceReport` holds a device's diagnostics as its
``schedulerDiagnostics`` attribute gives them (decoded JSON), or why there
are none (:func:`describe_errors` puts Tango's errors in plain words);
:func:`report_lines` and :func:`report_json` render reports as text (through
the shared renderer :mod:`.._view`) and as the JSON ``--json`` prints.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._view import queue_rows, queue_table_lines, summary_line
from ..diagnostics import SchedulerDiagnostics, snapshot_from_dict
from ..mixin import CONFIGURATION_ERROR_REASON

__all__ = [
    "DIAGNOSTICS_ATTRIBUTE",
    "DeviceReport",
    "decode",
    "describe_errors",
    "report_json",
    "report_lines",
]

#: The attribute the view reads and follows.
DIAGNOSTICS_ATTRIBUTE = "schedulerDiagnostics"


@dataclass(frozen=True)
class DeviceReport:
    """What the view knows about one device.

    Attributes:
        device: The TRL as given.
        error: Why there is no snapshot (empty when there is one).
        data: The device's snapshot as decoded JSON, or None.
        updated: Unix time the value was read or received, or None.
    """

    device: str
    error: str = ""
    data: Mapping[str, Any] | None = None
    updated: float | None = None

    @property
    def ok(self) -> bool:
        """True when the device gave a snapshot."""
        return self.data is not None and not self.error

    @property
    def snapshot(self) -> SchedulerDiagnostics | None:
        """The snapshot, or None."""
        return None if self.data is None else snapshot_from_dict(self.data)


_NOT_DEFINED = {"DB_DeviceNotDefined", "API_DeviceNotDefined"}
_NOT_RUNNING = {
    "API_DeviceNotExported",
    "API_CantConnectToDevice",
    "API_ServerNotRunning",
    "API_ConnectionFailed",
    "API_EventTimeout",
}
_NO_DATABASE = {"API_CantConnectToDatabase", "DB_CantConnectToDatabase", "API_TangoHostNotSet"}


def describe_errors(errors: Sequence[Any]) -> str:
    """Say in plain words why a device gives no snapshot.

    Args:
        errors: The ``DevError`` items of a ``DevFailed`` or an error event.

    Returns:
        A sentence ending with the first error's reason, in brackets.
    """
    if not errors:
        return "no value and no error"
    reasons = [str(getattr(e, "reason", "")) for e in errors]
    texts = " ".join(str(getattr(e, "desc", "")) for e in errors)
    first = reasons[0]
    desc = " ".join(str(getattr(errors[0], "desc", "")).split())
    if any(r in _NOT_DEFINED for r in reasons) or "not defined in the database" in texts:
        why = "not defined in the Tango database"
    elif any(r in _NO_DATABASE for r in reasons):
        why = "the Tango database does not answer"
    elif CONFIGURATION_ERROR_REASON in reasons:
        why = desc
    elif "API_AttrNotFound" in reasons or "API_AttributeNotFound" in reasons:
        why = "has no scheduler attributes (not a SchedulerMixin device?)"
    elif any(r in _NOT_RUNNING for r in reasons) or "TRANSIENT" in texts:
        why = "not running (or not reachable)"
    elif "API_DeviceTimedOut" in reasons or "TIMEOUT" in texts:
        why = "does not answer in time"
    else:
        why = desc or "failed"
    return f"{why} [{first}]"


def decode(device: str, text: Any, updated: float) -> DeviceReport:
    """Make a report from the attribute's value (JSON text)."""
    try:
        data = json.loads(str(text))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        return DeviceReport(device, f"{DIAGNOSTICS_ATTRIBUTE} is not diagnostics JSON: {exc}")
    return DeviceReport(device, "", data, updated)


def report_lines(reports: Sequence[DeviceReport], now: float | None = None) -> list[str]:
    """Describe each device: a summary line and its queues, or why it has none.

    Args:
        reports: The devices.
        now: Unix time to measure the age of the values from; None: no ages.

    Returns:
        The lines.
    """
    lines: list[str] = []
    for report in reports:
        snapshot = report.snapshot if report.ok else None
        if snapshot is None:
            lines.append(f"{report.device}: {report.error}")
            continue
        age = ""
        if now is not None and report.updated is not None:
            age = f" (value from {max(0.0, now - report.updated):.1f} s ago)"
        state = "" if snapshot.running else " [shut down]"
        lines.append(f"{report.device}: scheduler {snapshot.name!r}{state}{age}")
        lines.append(f"  {summary_line(snapshot)}")
        lines.extend(queue_table_lines(snapshot, indent="  "))
    return lines


def _sorted_data(report: DeviceReport) -> dict[str, Any] | None:
    if report.data is None:
        return None
    data = dict(report.data)
    snapshot = report.snapshot
    if snapshot is not None and isinstance(data.get("queues"), list):
        order = {row.queue.name: i for i, row in enumerate(queue_rows(snapshot))}
        data["queues"] = sorted(data["queues"], key=lambda q: order.get(q.get("name"), 0))
    return data


def report_json(reports: Sequence[DeviceReport]) -> dict[str, Any]:
    """Put the reports in the JSON form ``--json`` prints.

    Args:
        reports: The devices.

    Returns:
        ``{"devices": [...]}``, each entry with ``device``, ``ok``, ``error``,
        ``updated`` and ``diagnostics`` (queues worst wait first).
    """
    return {
        "devices": [
            {
                "device": r.device,
                "ok": r.ok,
                "error": r.error or None,
                "updated": r.updated,
                "diagnostics": _sorted_data(r),
            }
            for r in reports
        ]
    }
