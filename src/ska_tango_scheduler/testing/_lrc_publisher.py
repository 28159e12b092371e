"""What the reference LRC device tells clients about its commands, in each wire version.

:class:`LrcPublisher` pushes the change events of protocol versions 1 and 2, keeps the
version 1 lists (status and progress per command, the last result) and remembers what
``CheckLongRunningCommandStatus`` and ``lrcFinished`` tell about each command.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import tango

from ska_tango_scheduler.control_model import TERMINAL_STATUSES, TaskStatus

_LOGGER = logging.getLogger("ska_tango_scheduler.testing.lrc_device")

# Wire names of the protocol attributes.
V2_EVENT = "_lrcEvent"
VERSIONS = "lrcProtocolVersions"
V1_STATUS = "longRunningCommandStatus"
V1_PROGRESS = "longRunningCommandProgress"
V1_RESULT = "longRunningCommandResult"
V1_LIST_LENGTH = 1000
FINISHED_KEPT = 100


def to_json(value: Any) -> str:
    """Return ``value`` as JSON, or its text as a JSON string if it is not serialisable."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return json.dumps(str(value))


@dataclasses.dataclass
class _V1Entry:
    """What protocol version 1 publishes about one command."""

    status: TaskStatus
    progress: Any = None
    finished_at: float | None = None


class LrcPublisher:
    """Publishes the changes of a device's commands, in every version it serves."""

    def __init__(
        self,
        device: tango.server.Device,
        *,
        serves_v1: bool,
        serves_v2: bool,
        retention: float,
        events_enabled: bool,
    ) -> None:
        """Create the publisher of a device.

        Args:
            device: The device whose attributes carry the events.
            serves_v1: Push version 1 events.
            serves_v2: Push version 2 events.
            retention: Seconds a finished command stays in ``longRunningCommandStatus``.
            events_enabled: False pushes nothing (the attributes have no change events).
        """
        self._device = device
        self._serves_v1 = serves_v1
        self._serves_v2 = serves_v2
        self._retention = retention
        self._events_enabled = events_enabled
        self._v1_entries: OrderedDict[str, _V1Entry] = OrderedDict()
        self._v1_last_result: list[str] = ["", ""]
        self._known: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._known_lock = threading.Lock()

    # -- what readers and CheckLongRunningCommandStatus tell ----------------------------

    def status_name(self, command_id: str) -> str:
        """Return the name of a command's status, ``NOT_FOUND`` if it is not known."""
        with self._known_lock:
            entry = self._known.get(command_id)
            return str(entry["status"]) if entry is not None else TaskStatus.NOT_FOUND.name

    def finished(self) -> list[str]:
        """Return the last finished commands as JSON objects (``lrcFinished``)."""
        with self._known_lock:
            return [
                to_json(entry)
                for entry in self._known.values()
                if TaskStatus[entry["status"]] in TERMINAL_STATUSES
            ]

    def v1_last_result(self) -> list[str]:
        """Return the last result as ``[command_id, JSON]`` (version 1)."""
        return list(self._v1_last_result)

    def v1_status_list(self) -> list[str]:
        """Return the flat ``[command_id, status, ...]`` list (version 1)."""
        flat: list[str] = []
        for cid, entry in self._v1_entries.items():
            flat.extend((cid, entry.status.name))
        return flat

    def v1_progress_list(self) -> list[str]:
        """Return the flat ``[command_id, progress, ...]`` list of running commands (version 1)."""
        flat: list[str] = []
        for cid, entry in self._v1_entries.items():
            if entry.finished_at is None and entry.progress is not None:
                flat.extend((cid, str(entry.progress)))
        return flat

    # -- publishing ---------------------------------------------------------------------

    def publish(
        self,
        command_id: str,
        *,
        status: TaskStatus | None = None,
        progress: Any = None,
        result: Any = None,
    ) -> None:
        """Tell clients about a change of one command, in every version served.

        Updates are built and pushed while holding the device monitor, so pushes from
        different threads can neither interleave nor reach clients out of order. The
        monitor is re-entrant: command handlers, which already hold it, call this too.
        """
        self._remember(command_id, status, result)
        if not self._events_enabled:
            return
        try:
            with tango.AutoTangoMonitor(self._device):
                if self._serves_v2:
                    self._push_v2(command_id, status, progress, result)
                if self._serves_v1:
                    self._push_v1(command_id, status, progress, result)
        except tango.DevFailed:
            _LOGGER.exception("Could not push LRC update for %s", command_id)

    def _remember(self, command_id: str, status: TaskStatus | None, result: Any) -> None:
        """Keep what CheckLongRunningCommandStatus and lrcFinished tell about a command."""
        name = command_id.rsplit("_", 1)[-1]
        with self._known_lock:
            entry = self._known.setdefault(command_id, {"uid": command_id, "name": name})
            if status is not None:
                entry["status"] = status.name
            entry.setdefault("status", TaskStatus.STAGING.name)
            if result is not None:
                entry["result"] = result
            finished = [
                cid
                for cid, known in self._known.items()
                if TaskStatus[known["status"]] in TERMINAL_STATUSES
            ]
            for cid in finished[: max(0, len(finished) - FINISHED_KEPT)]:
                del self._known[cid]

    def _push_v2(
        self, command_id: str, status: TaskStatus | None, progress: Any, result: Any
    ) -> None:
        update: dict[str, Any] = {}
        if status is not None:
            update["status"] = int(status)
        if progress is not None:
            update["progress"] = progress
        if result is not None:
            update["result"] = result
        self._device.push_change_event(V2_EVENT, [command_id, to_json(update)])

    def _push_v1(
        self, command_id: str, status: TaskStatus | None, progress: Any, result: Any
    ) -> None:
        push = self._device.push_change_event
        entry = self._v1_entries.setdefault(
            command_id, _V1Entry(status=status if status is not None else TaskStatus.STAGING)
        )
        if result is not None:
            # Version 1 publishes the result before the terminal status.
            self._v1_last_result = [command_id, to_json(result)]
            push(V1_RESULT, list(self._v1_last_result))
        if progress is not None:
            entry.progress = progress
            push(V1_PROGRESS, self.v1_progress_list())
        if status is not None:
            entry.status = status
            if status in TERMINAL_STATUSES:
                entry.finished_at = time.monotonic()
            self._forget_old_v1_entries()
            push(V1_STATUS, self.v1_status_list())
            if entry.finished_at is not None and entry.progress is not None:
                entry.progress = None  # finished commands leave the progress list
                push(V1_PROGRESS, self.v1_progress_list())

    def _forget_old_v1_entries(self) -> None:
        now = time.monotonic()
        expired = [
            cid
            for cid, entry in self._v1_entries.items()
            if entry.finished_at is not None and now - entry.finished_at > self._retention
        ]
        for cid in expired:
            del self._v1_entries[cid]
        # Keep the list within the attribute's size whatever the retention.
        while len(self._v1_entries) * 2 > V1_LIST_LENGTH:
            self._v1_entries.popitem(last=False)
