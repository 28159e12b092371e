"""Updates about one command, turned into calls of the user's callback (pure).

An update is ``(kind, payload)``: what one LRC stream carried (``"v2"``,
``"status"``, ``"progress"``, ``"result"``), an error event (``"error"``), what a
status check found (``"check"``) or the verdict that the outcome is lost
(``"lost"``). The :class:`Interpreter` keeps what the callback was told and returns,
for each update, a :class:`Step`: the calls to make and what the update means for the
invocation. It makes no Tango call, takes no lock and logs nothing; its owner
serialises the calls and logs the step's warnings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..control_model import TaskStatus, is_terminal, parse_task_status
from .protocol import decode, lookup, progress_value

# An update: the kind of stream or event, and the strings or errors it carried.
Item = tuple[str, tuple[Any, ...]]

# How far on in its life a command is; a status from a check is passed on only if further.
_RANKS = {"STAGING": 0, "QUEUED": 1, "IN_PROGRESS": 2}
_TERMINAL_RANK = 3


def is_final(status: Any) -> bool:
    """Tell whether a status, as decoded (a :class:`TaskStatus` or raw), is terminal."""
    try:
        return is_terminal(status)
    except ValueError:
        return False


def rank(status: Any) -> int:
    """Return how far on a status is: -1 for NOT_FOUND or an unknown status."""
    if isinstance(status, TaskStatus) and is_final(status):
        return _TERMINAL_RANK
    return _RANKS.get(str(getattr(status, "name", "")), -1)


@dataclass
class Step:
    """What one update means.

    Attributes:
        calls: Keyword arguments of the callback calls to make, in order.
        heard: Something about the command arrived (status checks may wait again).
        trouble: An LRC stream reported an error.
        final: The invocation ends: no further update is taken in.
        warnings: ``(message, args)`` to log, once no lock is held.
    """

    calls: list[dict[str, Any]] = field(default_factory=list)
    heard: bool = False
    trouble: bool = False
    final: bool = False
    warnings: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)


class Interpreter:
    """Turns the updates of one command into callback calls; remembers what was told."""

    def __init__(self, protocol_version: int) -> None:
        """Create an interpreter for a command whose id is not known yet.

        Args:
            protocol_version: The LRC protocol version used with the device.
        """
        self.command_id: str | None = None
        self.result_seen = False
        self._version = protocol_version
        self._last_status: str | None = None
        self._last_progress: str | None = None
        self._rank = -1
        self._checked_status: TaskStatus | None = None

    def interpret(self, item: Item) -> Step:
        """Return the calls and the meaning of one update.

        Args:
            item: The update.

        Returns:
            The step.
        """
        kind, payload = item
        step = Step()
        if kind == "error":
            step.calls.append({"error": payload})
            step.trouble = True
        elif kind == "lost":
            step.calls.append({"error": payload})
            step.final = True
        elif kind == "check":
            self._check(payload, step)
        elif kind == "v2":
            self._v2(payload, step)
        elif kind == "status":
            self._v1_status(payload, step)
        elif kind == "progress":
            self._v1_progress(payload, step)
        elif kind == "result" and len(payload) >= 2 and payload[0] == self.command_id:
            step.calls.append({"result": decode(payload[1])})
            step.heard = True
        if any("result" in call for call in step.calls):
            self.result_seen = True
        return step

    def _v2(self, payload: tuple[Any, ...], step: Step) -> None:
        if len(payload) < 2 or payload[0] != self.command_id:
            return
        try:
            update = json.loads(payload[1])
        except ValueError:
            step.warnings.append(
                ("Ignoring LRC update of %s that is not JSON: %r", (self.command_id, payload[1]))
            )
            return
        if not isinstance(update, dict):
            step.warnings.append(
                (
                    "Ignoring LRC update of %s that is not a JSON object: %r",
                    (self.command_id, payload[1]),
                )
            )
            return
        kwargs = {str(key): value for key, value in update.items()}
        if not kwargs:
            return
        step.heard = True
        if "status" in kwargs:
            kwargs["status"] = self._status(kwargs["status"], step)
            if kwargs["status"] == self._checked_status:
                del kwargs["status"]  # a check told it already
                if not kwargs:
                    return
            else:
                self._note_rank(kwargs["status"])
        step.calls.append(kwargs)
        if "status" in kwargs and is_final(kwargs["status"]):
            step.final = True

    def _v1_status(self, payload: tuple[Any, ...], step: Step) -> None:
        found = lookup(payload, self.command_id)
        if found is None or found == self._last_status:
            return
        step.heard = True
        self._last_status = found
        status = self._status(found, step)
        self._note_rank(status)
        step.calls.append({"status": status})
        step.final = is_final(status)

    def _v1_progress(self, payload: tuple[Any, ...], step: Step) -> None:
        found = lookup(payload, self.command_id)
        if found is None or found == self._last_progress:
            return
        step.heard = True
        self._last_progress = found
        step.calls.append({"progress": progress_value(found)})

    def _check(self, payload: tuple[Any, ...], step: Step) -> None:
        """Pass on what a status check found, if it is news."""
        raw, result, has_result = payload
        if raw is None:
            return
        try:
            status = parse_task_status(raw)
        except ValueError:
            return
        if status == TaskStatus.NOT_FOUND:
            step.calls.append({"status": status})
            step.final = True
            return
        found = rank(status)
        if found <= self._rank:
            return
        self._note_rank(status)
        step.heard = True
        if found < _TERMINAL_RANK:
            self._last_status = status.name
            self._checked_status = status
            step.calls.append({"status": status})
            return
        if has_result and not self.result_seen:
            if self._version == 1:  # as the device would: the result first
                step.calls += [{"result": result}, {"status": status}]
            else:
                step.calls.append({"status": status, "result": result})
        else:
            step.calls.append({"status": status})
        step.final = True

    def _note_rank(self, status: Any) -> None:
        self._rank = max(self._rank, rank(status))

    def _status(self, raw: Any, step: Step) -> TaskStatus | Any:
        try:
            return parse_task_status(raw)
        except ValueError:
            step.warnings.append(("Unknown LRC status %r for %s", (raw, self.command_id)))
            return raw
