"""The diagnostic attributes of a scheduler device, from one table.

Each row of :data:`ATTRIBUTES` says everything about one attribute: its
name, Tango type (a one-element tuple for a spectrum), unit, label and doc,
how its value is computed from a
:class:`~ska_tango_scheduler.diagnostics.SchedulerDiagnostics` snapshot,
what decides whether the value changed, and whether it gets change events.
The names (:data:`DIAGNOSTIC_ATTRIBUTES`), the values
(:func:`diagnostic_values`), the change test (:func:`changed_values`), the
Tango attributes of :class:`~ska_tango_scheduler.mixin.SchedulerMixin`
(:func:`install`) and the change events all come from it: adding an
attribute is adding a row.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import tango
from tango.server import attribute

from ..diagnostics import LATENCY_WINDOW, QueueDiagnostics, SchedulerDiagnostics
from .config import configuration_error

__all__ = [
    "ATTRIBUTES",
    "DIAGNOSTIC_ATTRIBUTES",
    "EVENT_ATTRIBUTES",
    "MAX_REPORTED_QUEUES",
    "DiagnosticAttribute",
    "changed_values",
    "current_values",
    "diagnostic_values",
    "install",
]

#: At most this many queues are listed by ``schedulerQueueNames`` and
#: ``schedulerQueueDepths`` (the full list is in ``schedulerDiagnostics``).
MAX_REPORTED_QUEUES: Final = 10_000

# How long a snapshot taken for one read request may serve later reads when
# a subclass's read_attr_hardware does not call super() to invalidate it.
_SNAPSHOT_MAX_AGE = 0.5


@dataclass(frozen=True)
class DiagnosticAttribute:
    """One diagnostic attribute: a row of :data:`ATTRIBUTES`.

    Attributes:
        name: The Tango attribute name.
        dtype: The Tango type; a one-element tuple for a spectrum (at most
            :data:`MAX_REPORTED_QUEUES` items).
        label: The label a GUI shows.
        doc: What the value means.
        value: Computes the value from a snapshot.
        unit: The unit, if any.
        compared: What decides whether a value changed (the value itself when None).
        change_events: Whether the pusher pushes its changes as change events.
    """

    name: str
    dtype: Any
    label: str
    doc: str
    value: Callable[[SchedulerDiagnostics], Any]
    unit: str = ""
    compared: Callable[[Any], Any] | None = None
    change_events: bool = True

    def tango_attribute(self) -> attribute:
        """Make the read-only Tango attribute, read through the device's shared snapshot.

        Returns:
            The attribute; its read method returns the value of this row in
            the device's :func:`current_values`.
        """
        name = self.name

        def read(device: Any) -> Any:
            return current_values(device)[name]

        read.__name__ = read.__qualname__ = name
        read.__doc__ = self.doc
        kwargs: dict[str, Any] = {
            "dtype": self.dtype,
            "access": tango.AttrWriteType.READ,
            "label": self.label,
            "doc": self.doc,
        }
        if self.unit:
            kwargs["unit"] = self.unit
        if isinstance(self.dtype, tuple):
            kwargs["max_dim_x"] = MAX_REPORTED_QUEUES
        return attribute(fget=read, **kwargs)


def _queues(snapshot: SchedulerDiagnostics) -> Sequence[QueueDiagnostics]:
    return snapshot.queues[:MAX_REPORTED_QUEUES]


def _without_timestamp(value: str) -> Any:
    """A new snapshot of an idle scheduler is not a change: its timestamp is left out."""
    data = json.loads(value)
    data.pop("timestamp", None)
    return data


#: The diagnostic attributes, in the order they are documented.
ATTRIBUTES: Final[tuple[DiagnosticAttribute, ...]] = (
    DiagnosticAttribute(
        "schedulerThreadCount",
        tango.DevLong,
        "Scheduler threads",
        "Number of worker threads of the device's callback scheduler.",
        lambda s: s.thread_count,
    ),
    DiagnosticAttribute(
        "schedulerQueueNames",
        (tango.DevString,),
        "Scheduler queues",
        "Names of the scheduler's event queues, in the order of schedulerQueueDepths.",
        lambda s: [q.name for q in _queues(s)],
    ),
    DiagnosticAttribute(
        "schedulerQueueDepths",
        (tango.DevLong,),
        "Scheduler queue depths",
        "Events waiting in each queue, in the order of schedulerQueueNames.",
        lambda s: [q.depth for q in _queues(s)],
    ),
    DiagnosticAttribute(
        "schedulerReceivedEvents",
        tango.DevLong64,
        "Events received",
        "Events the scheduler received since it was created (at the last Init).",
        lambda s: s.totals.received,
    ),
    DiagnosticAttribute(
        "schedulerDeliveredEvents",
        tango.DevLong64,
        "Events delivered",
        "Events taken off the queues for delivery to callbacks. "
        "received = delivered + dropped + events still queued.",
        lambda s: s.totals.delivered,
    ),
    DiagnosticAttribute(
        "schedulerDroppedEvents",
        tango.DevLong64,
        "Events dropped",
        "Events discarded (oldest first) by full queues.",
        lambda s: s.totals.dropped,
    ),
    DiagnosticAttribute(
        "schedulerCallbackErrors",
        tango.DevLong64,
        "Callback errors",
        "Exceptions raised by callbacks (caught, counted and logged).",
        lambda s: s.totals.callback_errors,
    ),
    DiagnosticAttribute(
        "schedulerMaxLatency",
        tango.DevDouble,
        "Worst queue wait",
        "Longest time an event waited in any queue before its callbacks started, over "
        f"the last {LATENCY_WINDOW:g} s (milliseconds; 0 when nothing was delivered then).",
        lambda s: float(s.totals.max_latency_ms),
        unit="ms",
    ),
    DiagnosticAttribute(
        "schedulerQueueLatencies",
        (tango.DevDouble,),
        "Queue waits (p99)",
        f"99th percentile of each queue's waits over the last {LATENCY_WINDOW:g} s "
        "(milliseconds), in the order of schedulerQueueNames.",
        lambda s: [float(q.latency.p99_ms) for q in _queues(s)],
        unit="ms",
    ),
    DiagnosticAttribute(
        "schedulerSlowCallbacks",
        tango.DevLong64,
        "Slow callbacks",
        "Callbacks that ran longer than the slow-callback threshold "
        "(SchedulerSlowCallbackDuration), since the scheduler was created.",
        lambda s: s.totals.slow_callbacks,
    ),
    DiagnosticAttribute(
        "schedulerBackoffState",
        tango.DevString,
        "Scheduler back-off",
        "JSON object: for each event stream being retried, its attempts, the delay "
        "before the next attempt, seconds until it, the last error and since when it fails.",
        lambda s: json.dumps(s.backoff_dict(), sort_keys=True),
    ),
    DiagnosticAttribute(
        "schedulerDiagnostics",
        tango.DevString,
        "Scheduler diagnostics",
        "JSON object: the scheduler's full snapshot (totals, every queue, every "
        "stream, every retry).",
        lambda s: json.dumps(s.to_dict(), sort_keys=True),
        compared=_without_timestamp,
    ),
)

#: Names of the diagnostic attributes, in the order they are documented.
DIAGNOSTIC_ATTRIBUTES: Final[tuple[str, ...]] = tuple(row.name for row in ATTRIBUTES)

#: Names of the diagnostic attributes whose changes are pushed as change events.
EVENT_ATTRIBUTES: Final[tuple[str, ...]] = tuple(
    row.name for row in ATTRIBUTES if row.change_events
)

_COMPARED: Final[dict[str, Callable[[Any], Any]]] = {
    row.name: row.compared for row in ATTRIBUTES if row.compared is not None
}


def diagnostic_values(snapshot: SchedulerDiagnostics) -> dict[str, Any]:
    """Compute the values of the diagnostic attributes from a snapshot.

    Args:
        snapshot: A scheduler's diagnostics.

    Returns:
        Attribute name to value, for every name of
        :data:`DIAGNOSTIC_ATTRIBUTES`. Spectra are lists; the two JSON
        attributes are strings.
    """
    return {row.name: row.value(snapshot) for row in ATTRIBUTES}


def _comparable(name: str, value: Any) -> Any:
    compared = _COMPARED.get(name)
    return value if compared is None else compared(value)


def changed_values(previous: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """Select the attribute values that differ from those pushed last.

    The snapshot's own timestamp is left out of ``schedulerDiagnostics``: a
    new snapshot of an idle scheduler is not a change.

    Args:
        previous: Values pushed last (empty before the first push).
        current: Values just computed.

    Returns:
        The entries of ``current`` worth a change event.
    """
    return {
        name: value
        for name, value in current.items()
        if name not in previous or _comparable(name, previous[name]) != _comparable(name, value)
    }


def current_values(device: Any) -> dict[str, Any]:
    """Return the values of a device's diagnostic attributes for the read request being served.

    The attributes read by one request share one snapshot: the device's
    ``read_attr_hardware`` forgets it (``_scheduler_snapshot``) when a request
    starts, and a snapshot older than half a second is never used.

    Args:
        device: A device of a ``SchedulerMixin`` class.

    Returns:
        The values (see :func:`diagnostic_values`).

    Raises:
        tango.DevFailed: The device has no scheduler (a bad configuration,
            or ``init_device`` has not run).
    """
    fault = device.__dict__.get("_scheduler_fault")
    if fault is not None or device.__dict__.get("_scheduler_obj") is None:
        raise configuration_error(
            fault or "The device has no callback scheduler (init_device has not run).",
            f"{type(device).__name__}.read_attribute",
        )
    now = time.monotonic()
    cached = device.__dict__.get("_scheduler_snapshot")
    if cached is None or now - cached[0] > _SNAPSHOT_MAX_AGE:
        cached = (now, diagnostic_values(device.scheduler.diagnostics()))
        device.__dict__["_scheduler_snapshot"] = cached
    return cast(dict[str, Any], cached[1])


def install(cls: type) -> None:
    """Put the Tango attribute of every row into the class's own ``__dict__``.

    PyTango's ``DeviceMeta`` collects Tango attributes from the ``__dict__``
    of a device class and of its direct bases only, so the attributes must
    be members of the mixin class itself (and are copied into plain
    sub-mixins by its ``__init_subclass__``). Called once, right after the
    mixin class is defined, before any device class uses it.

    Args:
        cls: The mixin class.
    """
    for row in ATTRIBUTES:
        setattr(cls, row.name, row.tango_attribute())
