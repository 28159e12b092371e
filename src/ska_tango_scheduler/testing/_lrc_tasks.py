"""The tasks of the reference LRC device: accepted commands, run by worker threads.

:class:`TaskRunner` queues each accepted command as a :class:`Task`, runs the tasks
on its worker threads in the order they were queued, and reports every stage through
the publish function it was given.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import tango

from ska_tango_scheduler.control_model import ResultCode, TaskStatus

_LOGGER = logging.getLogger("ska_tango_scheduler.testing.lrc_device")

CommandReply = tuple[list[int], list[str]]


# Tells clients about a change of one command: LrcPublisher.publish(command_id, *,
# status=None, progress=None, result=None).
Publish = Callable[..., None]


class Outcome(enum.Enum):
    """How a queued task ended, as returned by a task body."""

    COMPLETED = TaskStatus.COMPLETED
    FAILED = TaskStatus.FAILED
    REJECTED = TaskStatus.REJECTED
    ABORTED = TaskStatus.ABORTED


@dataclasses.dataclass
class Task:
    """One accepted long running command."""

    command_id: str
    name: str
    body: Callable[[Task], tuple[Outcome, Any]]
    report_progress: Callable[[str, Any], None]
    abort_requested: threading.Event = dataclasses.field(default_factory=threading.Event)
    started: bool = False

    def progress(self, value: Any) -> None:
        """Report progress of this task to clients.

        Args:
            value: The progress value (normally an int).
        """
        self.report_progress(self.command_id, value)


def new_command_id(name: str) -> str:
    """Return a new command identifier, ending with the command's name."""
    return f"{time.time()}_{uuid.uuid4().fields[-1]}_{name}"


def ok_result(name: str) -> list[Any]:
    """Return the result of a command that completed."""
    return [int(ResultCode.OK), f"{name} completed"]


def aborted_result(name: str) -> list[Any]:
    """Return the result of a command that was aborted."""
    return [int(ResultCode.ABORTED), f"{name} aborted"]


class TaskRunner:
    """Runs the tasks of one device on its worker threads."""

    def __init__(self, name: str, publish: Publish, worker_threads: int) -> None:
        """Start the worker threads.

        Args:
            name: The device's name, for thread names.
            publish: Tells clients about each stage of a task.
            worker_threads: How many tasks run at once (at least one).
        """
        self._name = name
        self._publish = publish
        self._active: dict[str, Task] = {}
        self._active_lock = threading.Lock()
        self._tasks: queue.Queue[Task | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        for index in range(max(1, worker_threads)):
            self.start_thread(self._worker_loop, f"lrc-worker-{index}")

    def submit(
        self, name: str, body: Callable[[Task], tuple[Outcome, Any]], *, starts: bool = True
    ) -> CommandReply:
        """Accept a command: publish STAGING and QUEUED, and queue its task.

        Args:
            name: The command's name.
            body: What the task does; returns its outcome and result.
            starts: False for a task that never reports IN_PROGRESS.

        Returns:
            The reply, ``([QUEUED], [command_id])``.
        """
        command_id = new_command_id(name)
        task = Task(
            command_id=command_id,
            name=name,
            body=body,
            report_progress=lambda cid, value: self._publish(cid, progress=value),
            started=not starts,  # a task that never starts skips IN_PROGRESS
        )
        # This runs in the command handler, which holds the device monitor: both pushes
        # therefore reach clients before the reply does.
        self._publish(command_id, status=TaskStatus.STAGING)
        with self._active_lock:
            self._active[command_id] = task
        self._publish(command_id, status=TaskStatus.QUEUED)
        self._tasks.put(task)
        return [int(ResultCode.QUEUED)], [command_id]

    def abort_all(self) -> int:
        """Ask every queued and running task to stop; return how many were asked."""
        with self._active_lock:
            victims = list(self._active.values())
        for task in victims:
            task.abort_requested.set()
        return len(victims)

    def stop(self) -> None:
        """Abort every task and tell the workers to end (see :meth:`join`)."""
        self.abort_all()
        for _ in self._threads:
            self._tasks.put(None)

    def join(self, timeout: float) -> None:
        """Wait for the workers to end, up to ``timeout`` seconds each."""
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def start_thread(self, target: Callable[[], None], name: str, *, keep: bool = True) -> None:
        """Run ``target`` on a new omni thread named after the device.

        Args:
            target: What the thread runs.
            name: The thread's name, after the device's.
            keep: Join it in :meth:`join` (a worker).
        """

        def omni_target() -> None:
            with tango.EnsureOmniThread():
                target()

        thread = threading.Thread(target=omni_target, name=f"{self._name}-{name}")
        thread.daemon = True
        thread.start()
        if keep:
            self._threads.append(thread)

    def _worker_loop(self) -> None:
        while (task := self._tasks.get()) is not None:
            try:
                self._run(task)
            except Exception:
                _LOGGER.exception("LRC task %s crashed", task.command_id)
            finally:
                with self._active_lock:
                    self._active.pop(task.command_id, None)

    def _run(self, task: Task) -> None:
        if task.abort_requested.is_set():
            self._publish(
                task.command_id, status=TaskStatus.ABORTED, result=aborted_result(task.name)
            )
            return
        if not task.started:
            task.started = True
            self._publish(task.command_id, status=TaskStatus.IN_PROGRESS)
        try:
            outcome, result = task.body(task)
        except Exception as exc:  # a body bug still ends the command for the client
            outcome, result = Outcome.FAILED, [int(ResultCode.FAILED), f"{exc!r}"]
        self._publish(task.command_id, status=outcome.value, result=result)
