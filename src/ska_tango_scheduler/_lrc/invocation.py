"""One call of ``invoke_lrc``: its registrations and the life of its command.

An :class:`Invocation` registers one callback per LRC stream before the command is
invoked, keeps the updates that arrive before the reply, learns the command's id
from the reply, and then feeds every update through its :class:`~.interpreter.Interpreter`
into its :class:`~.outbox.Outbox`, until the command ends; its
:class:`~.status.StatusChecks` ask the device when nothing is heard.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import tango

from .._queues import EventQueue
from ..scheduler import (
    CallbackID,
    SchedulerShutdownError,
    StreamNotFoundError,
    UnknownCallbackError,
)
from . import LOGGER, limits
from .errors import (
    SUBSCRIPTION_FAILED_REASON,
    SUBSCRIPTION_TIMEOUT_REASON,
    dropped_update,
    invoke_failed,
    lrc_error,
)
from .interpreter import Interpreter, Item
from .outbox import EarlyUpdates, Outbox
from .ports import LrcScheduler, queue_factories
from .protocol import lrc_attribute_names, stream_kinds
from .proxies import device_key
from .status import StatusChecks

_Warnings = list[tuple[str, tuple[Any, ...]]]


class Invocation:
    """One call of ``invoke_lrc``: its callbacks, buffers and state.

    Everything mutable is guarded by ``_lock``, which is only ever held for short,
    non-blocking work: never while calling the user's callback, the scheduler, Tango
    or a logger.
    """

    def __init__(
        self,
        lrc_callback: Callable[..., None],
        proxy: tango.DeviceProxy,
        device: str,
        command: str,
        version: int,
        scheduler: LrcScheduler,
        logger: logging.Logger,
    ) -> None:
        """Create the invocation; nothing is registered yet (see :meth:`register`)."""
        self._proxy = proxy
        self._device = device
        self._command = command
        self._version = version
        self._scheduler = scheduler
        self._logger = logger
        self._attributes = lrc_attribute_names(version)
        self._lock = threading.Lock()
        self._interpreter = Interpreter(version)
        self._early = EarlyUpdates()
        self._outbox = Outbox(self._lock, lrc_callback, command, logger)
        self._checks = StatusChecks(self._lock, self, proxy, device, logger)
        self._closed = False  # no further update is taken in
        self._callback_ids: list[CallbackID] = []
        self._queues: dict[EventQueue, int] = {}
        self._replayed: threading.Event | None = None  # set once the replay has run

    # -- the handle's side ------------------------------------------------------------

    @property
    def command_id(self) -> str:
        """Identifier the device gave the command."""
        return self._interpreter.command_id or ""

    @property
    def protocol_version(self) -> int:
        """LRC protocol version used with the device."""
        return self._version

    @property
    def closed(self) -> bool:
        """No further update is taken in."""
        return self._closed

    @property
    def started_id(self) -> str | None:
        """The command's id, once the device replied."""
        return self._interpreter.command_id

    def unsubscribe_lrc_events(self) -> None:
        """Unregister the callbacks from the scheduler; later calls do nothing."""
        with self._lock:
            self._closed = True
            self._outbox.cancelled = True
            self._outbox.clear()
            self._early.clear()
        self._unregister()

    def release_dropped(self) -> None:
        """Unregister the callbacks of an invocation whose handle was dropped."""
        try:
            self.unsubscribe_lrc_events()
        except Exception:  # noqa: BLE001 - a bug here must not go unseen
            LOGGER.exception("Releasing %r failed", self)

    def stop_calls(self) -> None:
        """Make no further call, without taking any lock (safe in a finalizer)."""
        self._outbox.cancelled = True
        self._closed = True

    def __repr__(self) -> str:
        """Return a short description."""
        return (
            f"<LRC invocation {self._command} on {self._device}, "
            f"id {self._interpreter.command_id!r}, protocol {self._version}>"
        )

    # -- set-up and tear-down (calling thread) ----------------------------------------

    def register(self, here: bool = False) -> None:
        """Register one callback per LRC stream and wait until they are connected.

        Args:
            here: Connect new streams on the calling thread (a device of this process).
        """
        futures: list[concurrent.futures.Future[CallbackID]] = []
        factories = queue_factories(self._scheduler, self._proxy, self._attributes)
        kinds = stream_kinds(self._version)
        try:
            for kind, name, factory in zip(kinds, self._attributes, factories, strict=True):
                futures.append(
                    self._scheduler.register_event_callback(
                        self._proxy,
                        name,
                        tango.EventType.CHANGE_EVENT,
                        self._listener(kind),
                        queue_factory=factory,
                        on_calling_thread=here,
                    )
                )
        except BaseException:
            self._abandon_futures(futures)
            raise
        done, pending = concurrent.futures.wait(futures, timeout=limits.REGISTRATION_TIMEOUT)
        failure: BaseException | None = None
        for future in futures:
            if future in done and future.exception() is None:
                with self._lock:
                    self._callback_ids.append(future.result())
            elif future in done and failure is None:
                failure = future.exception()
        if failure is not None or pending:
            self.abandon()
            self._abandon_futures(list(pending))
            if failure is not None:
                raise failure
            timeout = lrc_error(
                SUBSCRIPTION_TIMEOUT_REASON,
                f"The LRC event streams of {self._device} did not connect within "
                f"{limits.REGISTRATION_TIMEOUT} s",
            )
            raise invoke_failed(
                tango.DevFailed(timeout), f"Subscribing to the LRC events of {self._device} failed"
            )
        self._watch_queues()
        self._raise_if_subscription_failed()

    def abandon(self) -> None:
        """Forget the invocation without calling the callback (the command did not start)."""
        self.unsubscribe_lrc_events()

    def start(self, command_id: str) -> None:
        """Learn the command id and pass on the updates that were waiting for it."""
        warnings: _Warnings = []
        with self._lock:
            self._interpreter.command_id = self._outbox.command_id = command_id
            self._checks.replied()
            early, dropped = self._early.take()
            if dropped:
                self._outbox.put(
                    dropped_update(
                        f"{dropped} LRC events of {self._device} that arrived "
                        f"before {self._command} replied were discarded (buffer full); "
                        f"updates of {command_id} may be missing"
                    )
                )
            self._note_queue_drops()
            for item in early:
                if self._closed:
                    break
                warnings += self._interpret(item)
            drain = self._outbox.claim()
        self._log(warnings)
        if drain:
            self._replayed = self._outbox.drain_elsewhere()
        self._unregister_if_closed()
        self._checks.schedule(self._checks.interval)

    # -- scheduler worker threads -------------------------------------------------------

    def _listener(self, kind: str) -> Callable[[Any], None]:
        def on_event(event: Any) -> None:
            if event.err:
                self.accept(("error", tuple(event.errors)))
                return
            self._checks.stream_ok()
            attr_value = getattr(event, "attr_value", None)
            value = getattr(attr_value, "value", None) if attr_value is not None else None
            strings = tuple(str(v) for v in value) if value is not None else ()
            if not strings or not strings[0]:
                return  # the empty value delivered when subscribing
            self.accept((kind, strings))

        return on_event

    def accept(self, item: Item) -> None:
        """Take in one update: keep it until the reply, or pass it on (no lock held)."""
        with self._lock:
            if self._closed:
                return
            if self._interpreter.command_id is None:
                self._early.keep(item)
                return
            self._note_queue_drops()
            warnings = self._interpret(item)
            drain = self._outbox.claim()
        self._log(warnings)
        if drain:
            self._outbox.drain()
        self._unregister_if_closed()

    def _interpret(self, item: Item) -> _Warnings:
        """Interpret one update into the outbox (lock held); return what to log."""
        step = self._interpreter.interpret(item)
        for kwargs in step.calls:
            self._outbox.put(kwargs)
        if step.trouble:
            self._checks.trouble()
        if step.heard:
            self._checks.heard()
        if step.final:
            self._closed = True
        return step.warnings

    def _log(self, warnings: _Warnings) -> None:
        for message, args in warnings:
            self._logger.warning(message, *args)

    # -- the scheduler's queues ---------------------------------------------------------

    def _watch_queues(self) -> None:
        """Note the drop counters of the streams' queues, to tell of later drops."""
        for name in self._attributes:
            try:
                queue_ = self._scheduler.get_queue(self._proxy, name, tango.EventType.CHANGE_EVENT)
            except StreamNotFoundError:
                continue
            with self._lock:
                self._queues.setdefault(queue_, queue_.counters.dropped)

    def _note_queue_drops(self) -> None:
        """Tell the callback of events its queues discarded since last time (lock held)."""
        lost = 0
        for queue_, seen in self._queues.items():
            now = queue_.counters.dropped
            if now > seen:
                lost += now - seen
                self._queues[queue_] = now
        if lost:
            self._outbox.put(
                dropped_update(
                    f"{lost} LRC events of {self._device} were discarded because their "
                    f"queue was full; updates of {self._interpreter.command_id} may be missing"
                )
            )

    # -- registrations ------------------------------------------------------------------

    def _unregister_if_closed(self) -> None:
        with self._lock:
            closed = self._closed and bool(self._callback_ids)
        if closed:
            self._unregister()

    def _unregister(self) -> None:
        with self._lock:
            ids, self._callback_ids = self._callback_ids, []
        for callback_id in ids:
            try:
                self._scheduler.unregister_callback(callback_id)
            except (UnknownCallbackError, SchedulerShutdownError):
                pass

    def _abandon_futures(self, futures: Sequence[concurrent.futures.Future[CallbackID]]) -> None:
        """Unregister callbacks whose registration completes only later."""

        def release(future: concurrent.futures.Future[CallbackID]) -> None:
            if future.cancelled() or future.exception() is not None:
                return
            try:
                self._scheduler.unregister_callback(future.result())
            except (UnknownCallbackError, SchedulerShutdownError):
                pass

        for future in futures:
            future.add_done_callback(release)

    def _raise_if_subscription_failed(self) -> None:
        """Turn a stream that could not be subscribed into a ``DevFailed``."""
        device = device_key(self._proxy)
        failing = []
        for name in self._attributes:
            status = self._scheduler.stream_status(device, name, tango.EventType.CHANGE_EVENT)
            if status is not None and status.failing:
                failing.append(status)
        if not failing:
            return
        # The stream's own error event is on its way to our buffer: prefer its errors.
        errors: tuple[Any, ...] = ()
        if self._early.wait_for_error(limits.FAILURE_DETAIL_WAIT):
            with self._lock:
                errors = self._early.first_error()
        if not errors:
            summary = "; ".join(f"{row.name}: {row.last_error}" for row in failing)
            errors = (lrc_error(SUBSCRIPTION_FAILED_REASON, summary),)
        self.abandon()
        raise invoke_failed(
            tango.DevFailed(*errors), f"Subscribing to the LRC events of {self._device} failed"
        )
