"""What the LRC client needs of a scheduler, and the scheduler it uses by default.

The client uses a scheduler only through :class:`LrcScheduler`, a ``Protocol`` of the
public methods of :class:`~ska_tango_scheduler.scheduler.CallbackScheduler` it calls,
so that it depends on the scheduler's public face and can be tested with a plain fake.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import tango

from .. import _exit
from .._queues import EventQueue
from ..diagnostics import StreamStatus
from ..scheduler import CallbackID, CallbackScheduler, StreamNotFoundError
from ..type_hints import DeviceType, EventCallbackType, QueueFactory
from . import limits


@runtime_checkable
class LrcScheduler(Protocol):
    """The part of :class:`~ska_tango_scheduler.scheduler.CallbackScheduler` the client uses."""

    @property
    def name(self) -> str:
        """The scheduler's name."""
        ...

    @property
    def thread_count(self) -> int:
        """Number of worker threads."""
        ...

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """The worker threads."""
        ...

    def allocate_queue(self, queue_size: int = ...) -> EventQueue:
        """Make a queue for streams to share."""
        ...

    def get_queue(
        self, device: DeviceType, attr_name: str, event_type: tango.EventType
    ) -> EventQueue:
        """Return the queue of a stream."""
        ...

    def register_event_callback(
        self,
        device: DeviceType,
        attr_name: str,
        event_type: tango.EventType,
        callback: EventCallbackType,
        queue_factory: QueueFactory | None = None,
        *,
        on_calling_thread: bool = False,
    ) -> concurrent.futures.Future[CallbackID]:
        """Register a callback on a stream."""
        ...

    def unregister_callback(self, callback_id: CallbackID) -> None:
        """Stop calling a callback."""
        ...

    def connect_event_stream(
        self,
        device: DeviceType,
        attr_name: str,
        event_type: tango.EventType,
        queue_factory: QueueFactory | None = None,
        *,
        on_calling_thread: bool = False,
    ) -> concurrent.futures.Future[None]:
        """Connect a stream and keep it connected."""
        ...

    def disconnect_event_stream(
        self, device: DeviceType, attr_name: str, event_type: tango.EventType
    ) -> None:
        """Release a stream kept by :meth:`connect_event_stream`."""
        ...

    def stream_status(
        self, device: DeviceType, attr_name: str, event_type: tango.EventType
    ) -> StreamStatus | None:
        """Return a stream's state, or None if there is no such stream."""
        ...


_module_scheduler: CallbackScheduler | None = None
_module_scheduler_lock = threading.Lock()


def module_callback_scheduler() -> CallbackScheduler:
    """Return the scheduler used when no ``callback_scheduler`` is given.

    It is created on first use (thread-safe) and shut down when the interpreter exits.
    If it was shut down by someone else, a new one is created.

    Returns:
        The module-level scheduler.
    """
    global _module_scheduler
    with _module_scheduler_lock:
        if _module_scheduler is None or _module_scheduler.is_shutdown:
            _module_scheduler = CallbackScheduler(
                thread_count=limits.MODULE_SCHEDULER_THREADS, name="lrc-module-scheduler"
            )
        return _module_scheduler


def _shutdown_module_scheduler() -> None:
    global _module_scheduler
    with _module_scheduler_lock:
        scheduler, _module_scheduler = _module_scheduler, None
    if scheduler is not None:
        scheduler.shutdown(timeout=5.0)


# Step 2 of the exit sequence (see _exit); the service is closed in step 3.
_exit.at_exit(_exit.SHUT_DOWN_SCHEDULERS, _shutdown_module_scheduler)


def check_scheduler(scheduler: Any, name: str) -> LrcScheduler:
    """Return the scheduler to use: the one given, or the module-level one for None.

    Args:
        scheduler: What the caller passed.
        name: The argument's name, for the message.

    Returns:
        The scheduler.

    Raises:
        TypeError: If ``scheduler`` has not the methods of a :class:`CallbackScheduler`.
    """
    if scheduler is None:
        return module_callback_scheduler()
    if not isinstance(scheduler, LrcScheduler):
        raise TypeError(f"{name} must be a CallbackScheduler or None, got {scheduler!r}")
    return scheduler


def queue_factories(
    scheduler: LrcScheduler, proxy: tango.DeviceProxy, attributes: Sequence[str]
) -> list[Callable[[], EventQueue]]:
    """Queue factories for a device's LRC streams: one big queue shared by all of them.

    Sharing keeps the order of the updates across the version 1 attributes (the result
    is pushed before the terminal status, and must be delivered before it too).

    Args:
        scheduler: The scheduler.
        proxy: The device.
        attributes: Its LRC attributes.

    Returns:
        One factory per attribute.
    """
    first = attributes[0]

    def new_queue() -> EventQueue:
        return scheduler.allocate_queue(queue_size=limits.LRC_QUEUE_SIZE)

    def shared_queue() -> EventQueue:
        try:
            return scheduler.get_queue(proxy, first, tango.EventType.CHANGE_EVENT)
        except StreamNotFoundError:
            return new_queue()

    return [new_queue, *(shared_queue for _ in attributes[1:])]


def warn_if_only_worker(
    scheduler: LrcScheduler, logger: logging.Logger, device: str, command: str
) -> None:
    """Say why waiting here for the command's outcome would never end."""
    if scheduler.thread_count == 1 and threading.current_thread() in scheduler.threads:
        logger.warning(
            "invoke_lrc(%s on %s) was called from the only worker of %s: the command's "
            "updates are delivered by that worker, so they wait until this callback "
            "returns; do not wait for them here (use more threads, or another scheduler)",
            command,
            device,
            scheduler.name,
        )
