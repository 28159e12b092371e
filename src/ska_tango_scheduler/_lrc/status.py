"""Status checks: asking the device what became of a command, and when to give up.

An invocation that has heard nothing about its command for a while asks the device
(its ``lrcFinished`` attribute, its ``CheckLongRunningCommandStatus`` command or its
``longRunningCommandStatus`` attribute). A device that does not answer, and has given
no sign of life for :data:`~.limits.OUTCOME_LOST_AFTER` seconds, has lost the
command's outcome. The checks run as timers of the LRC lanes service, in a lane per
invocation, so that a device that does not answer delays no other invocation.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Hashable, Sequence
from typing import Any, Protocol

import tango

from .. import _tango_errors
from ..control_model import TaskStatus
from . import LOGGER, limits
from .errors import OUTCOME_LOST_REASON, lrc_error
from .interpreter import Item, is_final
from .protocol import V1_RESULT, V1_STATUS, decode, lookup
from .service import lrc_service


class CheckedCommand(Hashable, Protocol):
    """What the checks need of their invocation (read under the shared lock); its lane key."""

    @property
    def closed(self) -> bool:
        """No further update is taken in."""
        ...

    @property
    def started_id(self) -> str | None:
        """The command's id, once the device replied."""
        ...

    def accept(self, item: Item) -> None:
        """Take in an update (no lock held)."""
        ...


class StatusChecks:
    """The status checks of one invocation, and the clocks they run on.

    Guarded by the invocation's lock, held only for plain field updates: a check asks
    the device with no lock held.
    """

    def __init__(
        self,
        lock: threading.Lock,
        owner: CheckedCommand,
        proxy: tango.DeviceProxy,
        device: str,
        logger: logging.Logger,
    ) -> None:
        """Create the checks of an invocation (none is scheduled yet).

        Args:
            lock: The invocation's lock.
            owner: The invocation.
            proxy: The device.
            device: Its name, for messages.
            logger: Where failed checks are logged (at debug level).
        """
        self._lock = lock
        self._owner = owner
        self._proxy = proxy
        self._device = device
        self._logger = logger
        self.interval = limits.CHECK_INTERVAL_MIN
        self._heard_at = time.monotonic()
        self._stream_trouble = False
        self._unreachable_since: float | None = None
        # Last sign of life of the device: the outcome-lost clock runs from it.
        self._alive_at = time.monotonic()
        self._generation = 0
        self._means: tuple[set[str], set[str]] | None = None

    # -- what the invocation tells (lock held) --------------------------------------

    def replied(self) -> None:
        """The device replied to the command: a sign of life."""
        self._heard_at = self._alive_at = time.monotonic()

    def heard(self) -> None:
        """Something about the command arrived: checks can wait again."""
        self._heard_at = time.monotonic()
        self.interval = limits.CHECK_INTERVAL_MIN

    def trouble(self) -> None:
        """An LRC stream reported an error: check often until data flows again."""
        self._stream_trouble = True
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()

    # -- no lock held -----------------------------------------------------------------

    def stream_ok(self) -> None:
        """A stream delivered data: a sign of life; if it was in error, check soon."""
        with self._lock:
            self._alive_at = time.monotonic()
            recovered = self._stream_trouble and self._owner.started_id is not None
            self._stream_trouble = False
        if recovered:
            self.schedule(0.0)

    def schedule(self, delay: float) -> None:
        """Check in ``delay`` seconds, instead of when a check was due."""
        with self._lock:
            if self._owner.closed or self._owner.started_id is None:
                return
            self._generation += 1
            generation = self._generation
        lrc_service().call_later(delay, self._owner, functools.partial(self._checked, generation))

    def _checked(self, generation: int) -> None:
        try:
            self._check(generation)
        except Exception:  # noqa: BLE001 - a bug here must not go unseen
            LOGGER.exception("LRC status check %r failed", self._owner)

    def _check(self, generation: int) -> None:
        """Ask the device about the command, unless something was heard meanwhile."""
        with self._lock:
            if self._owner.closed or generation != self._generation:
                return
            quiet = time.monotonic() - self._heard_at
            urgent = self._stream_trouble or self._unreachable_since is not None
            wait = self.interval - quiet if not urgent and quiet < self.interval else None
        if wait is not None:
            self.schedule(wait)
            return
        try:
            found = self._query()
        except Exception as exc:  # noqa: BLE001 - the device did not answer, or failed
            try:
                self._proxy.ping()
            except Exception:  # noqa: BLE001 - it does not answer
                self._not_answered(exc)
                return
            # It answers but could not tell (a failing attribute, say): not lost.
            self._logger.debug("Status check of %s failed", self._owner.started_id, exc_info=True)
            found = (None, None, False)
        with self._lock:
            self._unreachable_since = None
            self._alive_at = time.monotonic()
        self._owner.accept(("check", found))
        with self._lock:
            self.interval = min(self.interval * 2, limits.CHECK_INTERVAL_MAX)
            delay = limits.TROUBLE_INTERVAL if self._stream_trouble else self.interval
        self.schedule(delay)

    def _not_answered(self, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            if self._owner.closed:
                return
            if self._unreachable_since is None:
                self._unreachable_since = now
            away = now - self._alive_at
        if away < limits.OUTCOME_LOST_AFTER:
            self.schedule(limits.TROUBLE_INTERVAL)
            return
        errors = _tango_errors.errors_of(exc)
        desc = (
            f"{self._device} gave no sign of life for {away:.0f} s "
            f"({_tango_errors.describe_errors(errors)}); "
            f"the outcome of {self._owner.started_id} is lost"
        )
        self._owner.accept(("lost", (lrc_error(OUTCOME_LOST_REASON, desc),)))

    def _query(self) -> tuple[Any, ...]:
        """Ask the device what became of the command.

        Returns:
            ``(status, result, has_result)``; status is None if the device has no way
            to tell (it answered a ping).
        """
        proxy = self._proxy
        if self._means is None:
            attributes = {str(name).lower() for name in proxy.get_attribute_list()}
            commands = {str(name).lower() for name in proxy.get_command_list()}
            self._means = (attributes, commands)
        attributes, commands = self._means
        command_id = self._owner.started_id
        if "lrcfinished" in attributes:
            for text in proxy.read_attribute("lrcFinished").value or ():
                entry = decode(str(text))
                if isinstance(entry, dict) and entry.get("uid") == command_id:
                    return entry.get("status"), entry.get("result"), "result" in entry
        if "checklongrunningcommandstatus" in commands:
            status: Any = str(proxy.command_inout("CheckLongRunningCommandStatus", command_id))
        elif V1_STATUS.lower() in attributes:
            listed = proxy.read_attribute(V1_STATUS).value or ()
            status = lookup(listed, command_id) or TaskStatus.NOT_FOUND.name
        else:
            proxy.ping()
            return None, None, False
        if V1_RESULT.lower() in attributes and is_final(status):
            value: Sequence[Any] = proxy.read_attribute(V1_RESULT).value or ()
            if len(value) >= 2 and value[0] == command_id:
                return status, decode(str(value[1])), True
        return status, None, False
