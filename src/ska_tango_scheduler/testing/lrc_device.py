"""A reference Tango device that serves SKA long running commands.

:class:`LrcReference` speaks the two wire versions of the SKA long running command
(LRC) protocol, so that clients such as
:func:`ska_tango_scheduler.long_running_commands.invoke_lrc` can be tested against a
real device server without depending on ska-tango-base:

* version 2: the ``_lrcEvent`` attribute, a string pair ``[command_id, json_update]``
  pushed as change events, and ``lrcProtocolVersions`` advertising the versions served;
* version 1: ``longRunningCommandStatus``, ``longRunningCommandProgress`` and
  ``longRunningCommandResult``, with the result pushed before the terminal status.

The ``LrcProtocolVersions`` device property chooses what the device serves. The default
``[1, 2]`` serves both. ``[1, 1]`` makes a legacy device that has neither
``lrcProtocolVersions`` nor ``_lrcEvent``. A range without 1 or 2, for example ``[3, 4]``,
advertises versions no client here knows, to exercise version negotiation failures.

Every long running command replies with a ``DevVarLongStringArray``
``([result_code], [command_id or reason])``. Before replying it pushes the STAGING status
(and QUEUED for queued tasks), as real SKA devices may; the task itself runs later on a
worker thread, which pushes IN_PROGRESS, progress, the result and the final status.

Like ska-tango-base devices, it also answers ``CheckLongRunningCommandStatus(command_id)``
with the name of a command's status (``NOT_FOUND`` for an identifier it does not know, for
example after a restart) and lists its last finished commands in ``lrcFinished`` (JSON
objects with ``uid``, ``name``, ``status`` and ``result``); clients use them to catch up on
updates they missed.

``InvokeOnItself`` calls :func:`~ska_tango_scheduler.long_running_commands.invoke_lrc` on
the device itself, from inside the command, as a device that delegates to itself would;
``selfInvocationCalls`` tells what its callback received.

Run a server with ``python -m ska_tango_scheduler.testing.lrc_device INSTANCE`` (server
name ``LrcReference``); further arguments are passed to Tango.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import queue
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import tango
from tango.server import Device, attribute, command, device_property, run

from ska_tango_scheduler.control_model import TERMINAL_STATUSES, ResultCode, TaskStatus
from ska_tango_scheduler.long_running_commands import (
    LRCSubscriptionsProtocol,
    connect_lrc_interface,
    invoke_lrc,
)
from ska_tango_scheduler.scheduler import CallbackScheduler

__all__ = [
    "LRC_SERVER_NAME",
    "LrcReference",
    "main",
]

LRC_SERVER_NAME = "LrcReference"
"""Server (executable) name used by :func:`main`."""

_LOGGER = logging.getLogger(__name__)

# Wire names of the protocol attributes.
_V2_EVENT = "_lrcEvent"
_VERSIONS = "lrcProtocolVersions"
_V1_STATUS = "longRunningCommandStatus"
_V1_PROGRESS = "longRunningCommandProgress"
_V1_RESULT = "longRunningCommandResult"
_V1_LIST_LENGTH = 1000

_JOIN_TIMEOUT = 5.0
_SLOW_SLICE = 0.05
_FINISHED_KEPT = 100

CommandReply = tuple[list[int], list[str]]
_F = TypeVar("_F", bound=Callable[..., Any])


def _lrc_command(**kwargs: Any) -> Callable[[_F], _F]:
    """Give ``tango.server.command`` a type so decorated methods keep theirs."""
    return cast(Callable[[_F], _F], command(**kwargs))


class _Outcome(enum.Enum):
    """How a queued task ended, as returned by a task body."""

    COMPLETED = TaskStatus.COMPLETED
    FAILED = TaskStatus.FAILED
    REJECTED = TaskStatus.REJECTED
    ABORTED = TaskStatus.ABORTED


@dataclasses.dataclass
class _Task:
    """One accepted long running command."""

    command_id: str
    name: str
    body: Callable[[_Task], tuple[_Outcome, Any]]
    report_progress: Callable[[str, Any], None]
    abort_requested: threading.Event = dataclasses.field(default_factory=threading.Event)
    started: bool = False

    def progress(self, value: Any) -> None:
        """Report progress of this task to clients.

        Args:
            value: The progress value (normally an int).
        """
        self.report_progress(self.command_id, value)


@dataclasses.dataclass
class _V1Entry:
    """What protocol version 1 publishes about one command."""

    status: TaskStatus
    progress: Any = None
    finished_at: float | None = None


def _new_command_id(name: str) -> str:
    return f"{time.time()}_{uuid.uuid4().fields[-1]}_{name}"


class LrcReference(Device):
    """Reference device serving SKA long running commands (protocol versions 1 and 2).

    Device properties:
        LrcProtocolVersions: ``[min, max]`` protocol versions served (default ``[1, 2]``).
        WorkerThreads: Number of threads running queued tasks (default 1, as on SKA
            devices, so tasks run one after the other in the order they were queued).
        FinishedRetention: Seconds a finished command stays listed in
            ``longRunningCommandStatus`` (default 10).
        LrcEventsEnabled: False declares the LRC attributes without change events, so
            that clients fail to subscribe to them (default True).
    """

    LrcProtocolVersions = device_property(
        dtype=(int,),
        default_value=[1, 2],
        doc="Lowest and highest LRC protocol versions served, e.g. [1, 2] or [1, 1].",
    )
    WorkerThreads = device_property(
        dtype=int, default_value=1, doc="Number of threads that run queued tasks."
    )
    FinishedRetention = device_property(
        dtype=float,
        default_value=10.0,
        doc="Seconds a finished command stays in longRunningCommandStatus.",
    )
    LrcEventsEnabled = device_property(
        dtype=bool,
        default_value=True,
        doc="False leaves the LRC attributes without change events (subscribing fails).",
    )

    # ------------------------------------------------------------------ life cycle

    def init_device(self) -> None:
        """Read the properties, reset the command bookkeeping and start the workers."""
        super().init_device()
        versions = [int(v) for v in self.LrcProtocolVersions]
        if len(versions) != 2 or versions[0] > versions[1] or versions[0] < 1:
            raise ValueError(f"LrcProtocolVersions must be [min, max], got {versions}")
        self._versions: tuple[int, int] = (versions[0], versions[1])
        self._serves_v1 = versions[0] <= 1 <= versions[1]
        self._serves_v2 = versions[0] <= 2 <= versions[1]
        self._advertises_versions = versions[1] >= 2
        self._retention = float(self.FinishedRetention)
        self._events_enabled = bool(self.LrcEventsEnabled)
        self._v1_entries: OrderedDict[str, _V1Entry] = OrderedDict()
        self._known: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._known_lock = threading.Lock()
        self._self_scheduler: CallbackScheduler | None = None
        self._self_handle: LRCSubscriptionsProtocol | None = None
        self._self_calls: list[dict[str, Any]] = []
        self._v1_last_result: list[str] = ["", ""]
        self._active: dict[str, _Task] = {}
        self._active_lock = threading.Lock()
        self._tasks: queue.Queue[_Task | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        for index in range(max(1, int(self.WorkerThreads))):
            self._start_thread(self._worker_loop, f"lrc-worker-{index}")
        self.set_state(tango.DevState.ON)

    def initialize_dynamic_attributes(self) -> None:
        """Create the protocol attributes that the configured versions need."""
        if self._advertises_versions:
            self.add_attribute(
                attribute(
                    name=_VERSIONS,
                    dtype=(tango.CmdArgType.DevLong64,),
                    max_dim_x=2,
                    fget=self._read_versions,
                    doc="Lowest and highest LRC protocol versions this device serves.",
                )
            )
        if self._serves_v2:
            self.add_attribute(
                attribute(
                    name=_V2_EVENT,
                    dtype=(str,),
                    max_dim_x=2,
                    fget=self._read_empty,
                    doc="LRC updates as [command_id, JSON]; only useful as change events.",
                )
            )
            self._enable_change_events(_V2_EVENT, detect=True)
        if self._serves_v1:
            for name in (_V1_STATUS, _V1_PROGRESS):
                self.add_attribute(
                    attribute(
                        name=name,
                        dtype=(str,),
                        max_dim_x=_V1_LIST_LENGTH,
                        fget=self._read_v1_lists,
                        doc="Flat [command_id, value, ...] list (LRC protocol version 1).",
                    )
                )
                self._enable_change_events(name, detect=False)
            self.add_attribute(
                attribute(
                    name=_V1_RESULT,
                    dtype=(str,),
                    max_dim_x=2,
                    fget=self._read_v1_result,
                    doc="Last result as [command_id, JSON] (LRC protocol version 1).",
                )
            )
            self._enable_change_events(_V1_RESULT, detect=False)

        self.add_attribute(
            attribute(
                name="lrcFinished",
                dtype=(str,),
                max_dim_x=_FINISHED_KEPT,
                fget=self._read_finished,
                doc="The last finished commands, as JSON objects (uid, name, status, result).",
            )
        )
        self.add_attribute(
            attribute(
                name="selfInvocationCalls",
                dtype=str,
                fget=self._read_self_calls,
                doc="JSON list of the calls InvokeOnItself's callback received.",
            )
        )

    def _enable_change_events(self, name: str, *, detect: bool) -> None:
        if self._events_enabled:
            self.set_change_event(name, True, detect)

    def delete_device(self) -> None:
        """Abort every task and stop the worker threads."""
        with self._active_lock:
            for task in self._active.values():
                task.abort_requested.set()
        for _ in self._threads:
            self._tasks.put(None)
        # The workers need the device monitor to push their last events; let them have it.
        with tango.AutoTangoAllowThreads(self):
            for thread in self._threads:
                thread.join(_JOIN_TIMEOUT)
        self._threads = []
        scheduler, self._self_scheduler = self._self_scheduler, None
        if scheduler is not None:
            with tango.AutoTangoAllowThreads(self):
                scheduler.shutdown(timeout=_JOIN_TIMEOUT)
        super().delete_device()

    # ------------------------------------------------------------------ attribute readers

    def _read_versions(self, *_: Any) -> list[int]:
        return list(self._versions)

    def _read_empty(self, *_: Any) -> list[str]:
        return []

    def _read_v1_lists(self, attr: tango.Attribute) -> list[str]:
        if attr.get_name().lower() == _V1_STATUS.lower():
            return self._v1_status_list()
        return self._v1_progress_list()

    def _read_v1_result(self, *_: Any) -> list[str]:
        return list(self._v1_last_result)

    def _read_finished(self, *_: Any) -> list[str]:
        with self._known_lock:
            return [
                _to_json(entry)
                for entry in self._known.values()
                if TaskStatus[entry["status"]] in TERMINAL_STATUSES
            ]

    def _read_self_calls(self, *_: Any) -> str:
        with self._known_lock:
            return _to_json(self._self_calls)

    # ------------------------------------------------------------------ commands

    @_lrc_command(dtype_out="DevVarLongStringArray")
    def Complete(self) -> CommandReply:  # noqa: N802
        """Queue a task that completes with an OK result.

        Returns:
            ``([QUEUED], [command_id])``.
        """
        return self._submit("Complete", lambda _task: (_Outcome.COMPLETED, self._ok("Complete")))

    @_lrc_command(dtype_in=str, dtype_out="DevVarLongStringArray")
    def Echo(self, text: str) -> CommandReply:  # noqa: N802
        """Queue a task whose result is ``[OK, text]``.

        Args:
            text: The message to send back as the result.

        Returns:
            ``([QUEUED], [command_id])``.
        """
        return self._submit("Echo", lambda _task: (_Outcome.COMPLETED, [int(ResultCode.OK), text]))

    @_lrc_command(dtype_in=int, dtype_out="DevVarLongStringArray")
    def Progress(self, steps: int) -> CommandReply:  # noqa: N802
        """Queue a task that reports progress ``1 .. steps`` and then completes.

        Args:
            steps: How many progress updates to push (as fast as the device can).

        Returns:
            ``([QUEUED], [command_id])``.
        """

        def body(task: _Task) -> tuple[_Outcome, Any]:
            for step in range(1, steps + 1):
                if task.abort_requested.is_set():
                    return _Outcome.ABORTED, self._aborted("Progress")
                task.progress(step)
            return _Outcome.COMPLETED, self._ok(f"Progress reported {steps} steps")

        return self._submit("Progress", body)

    @_lrc_command(dtype_out="DevVarLongStringArray")
    def Fail(self) -> CommandReply:  # noqa: N802
        """Queue a task that starts and then fails.

        Returns:
            ``([QUEUED], [command_id])``.
        """
        return self._submit(
            "Fail",
            lambda _task: (
                _Outcome.FAILED,
                [int(ResultCode.FAILED), "Fail: the task failed on purpose"],
            ),
        )

    @_lrc_command(dtype_out="DevVarLongStringArray")
    def RejectNow(self) -> CommandReply:  # noqa: N802
        """Refuse the command in its reply.

        The device still creates (and finishes) a command identifier, as SKA devices do,
        so clients see events for an identifier they are never told.

        Returns:
            ``([REJECTED], [reason])``.
        """
        command_id = _new_command_id("RejectNow")
        reason = "RejectNow: the device refuses this command"
        self._publish(command_id, status=TaskStatus.STAGING)
        self._publish(
            command_id,
            status=TaskStatus.REJECTED,
            result=[int(ResultCode.REJECTED), reason],
        )
        return [int(ResultCode.REJECTED)], [reason]

    @_lrc_command(dtype_out="DevVarLongStringArray")
    def RejectLater(self) -> CommandReply:  # noqa: N802
        """Accept the command as QUEUED, then reject it when its turn comes.

        Returns:
            ``([QUEUED], [command_id])``.
        """
        return self._submit(
            "RejectLater",
            lambda _task: (
                _Outcome.REJECTED,
                [int(ResultCode.NOT_ALLOWED), "RejectLater: command is not allowed"],
            ),
            starts=False,
        )

    @_lrc_command(dtype_in=float, dtype_out="DevVarLongStringArray")
    def Slow(self, duration: float) -> CommandReply:  # noqa: N802
        """Queue a task that runs for ``duration`` seconds unless aborted.

        Args:
            duration: Seconds the task runs.

        Returns:
            ``([QUEUED], [command_id])``.
        """

        def body(task: _Task) -> tuple[_Outcome, Any]:
            deadline = time.monotonic() + max(0.0, duration)
            while (left := deadline - time.monotonic()) > 0:
                if task.abort_requested.wait(min(left, _SLOW_SLICE)):
                    return _Outcome.ABORTED, self._aborted("Slow")
            return _Outcome.COMPLETED, self._ok(f"Slow ran for {duration} s")

        return self._submit("Slow", body)

    @_lrc_command(dtype_in=int, dtype_out="DevVarLongStringArray")
    def ReplyWithCode(self, code: int) -> CommandReply:  # noqa: N802
        """Reply with any result code and no task (for testing client error paths).

        Args:
            code: The result code to put in the reply.

        Returns:
            ``([code], ["ReplyWithCode <code>"])``.
        """
        return [int(code)], [f"ReplyWithCode {code}"]

    @_lrc_command(dtype_out="DevVarLongStringArray")
    def AbortCommands(self) -> CommandReply:  # noqa: N802
        """Abort every queued and running task; itself a long running command.

        Queued tasks end ABORTED when a worker reaches them; running ones stop at their
        next check. This command runs on its own thread and completes once it has asked.

        Returns:
            ``([STARTED], [command_id])``.
        """
        command_id = _new_command_id("AbortCommands")
        self._publish(command_id, status=TaskStatus.STAGING)

        def abort_all() -> None:
            self._publish(command_id, status=TaskStatus.IN_PROGRESS)
            with self._active_lock:
                victims = list(self._active.values())
            for task in victims:
                task.abort_requested.set()
            self._publish(
                command_id,
                status=TaskStatus.COMPLETED,
                result=self._ok(f"AbortCommands asked {len(victims)} tasks to stop"),
            )

        self._start_thread(abort_all, "lrc-abort", keep=False)
        return [int(ResultCode.STARTED)], [command_id]

    @_lrc_command(dtype_in=str, dtype_out=str)
    def CheckLongRunningCommandStatus(self, command_id: str) -> str:  # noqa: N802
        """Tell the status of a command, as ska-tango-base devices do.

        Args:
            command_id: The command's identifier.

        Returns:
            The name of its :class:`TaskStatus`, ``NOT_FOUND`` if the device does not know it.
        """
        with self._known_lock:
            entry = self._known.get(command_id)
            return str(entry["status"]) if entry is not None else TaskStatus.NOT_FOUND.name

    @_lrc_command(dtype_in=(str,), dtype_out=str)
    def InvokeOnItself(self, argin: Sequence[str]) -> str:  # noqa: N802
        """Call ``invoke_lrc`` on this device from inside this command.

        Args:
            argin: ``[command]`` or ``[command, "connect"]``; with ``"connect"``,
                ``connect_lrc_interface`` is called on the device first (also from here).

        Returns:
            The identifier of the command invoked.
        """
        name = str(argin[0])
        if self._self_scheduler is None:
            self._self_scheduler = CallbackScheduler(name=f"{self.get_name()}-self")
        proxy = tango.DeviceProxy(self.get_name())
        if len(argin) > 1 and argin[1] == "connect":
            connect_lrc_interface(proxy, self._self_scheduler)
        with self._known_lock:
            self._self_calls = []
        self._self_handle = invoke_lrc(
            self._record_self_call, proxy, name, callback_scheduler=self._self_scheduler
        )
        return self._self_handle.command_id

    def _record_self_call(self, **kwargs: Any) -> None:
        with self._known_lock:
            self._self_calls.append(kwargs)

    # ------------------------------------------------------------------ task machinery

    @staticmethod
    def _ok(name: str) -> list[Any]:
        return [int(ResultCode.OK), f"{name} completed"]

    @staticmethod
    def _aborted(name: str) -> list[Any]:
        return [int(ResultCode.ABORTED), f"{name} aborted"]

    def _submit(
        self,
        name: str,
        body: Callable[[_Task], tuple[_Outcome, Any]],
        *,
        starts: bool = True,
    ) -> CommandReply:
        command_id = _new_command_id(name)
        task = _Task(
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

    def _start_thread(self, target: Callable[[], None], name: str, *, keep: bool = True) -> None:
        def omni_target() -> None:
            with tango.EnsureOmniThread():
                target()

        thread = threading.Thread(target=omni_target, name=f"{self.get_name()}-{name}")
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

    def _run(self, task: _Task) -> None:
        if task.abort_requested.is_set():
            self._publish(
                task.command_id, status=TaskStatus.ABORTED, result=self._aborted(task.name)
            )
            return
        if not task.started:
            task.started = True
            self._publish(task.command_id, status=TaskStatus.IN_PROGRESS)
        try:
            outcome, result = task.body(task)
        except Exception as exc:  # a body bug still ends the command for the client
            outcome, result = _Outcome.FAILED, [int(ResultCode.FAILED), f"{exc!r}"]
        self._publish(task.command_id, status=outcome.value, result=result)

    # ------------------------------------------------------------------ publishing

    def _publish(
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
            with tango.AutoTangoMonitor(self):
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
            for cid in finished[: max(0, len(finished) - _FINISHED_KEPT)]:
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
        self.push_change_event(_V2_EVENT, [command_id, _to_json(update)])

    def _push_v1(
        self, command_id: str, status: TaskStatus | None, progress: Any, result: Any
    ) -> None:
        entry = self._v1_entries.setdefault(
            command_id, _V1Entry(status=status if status is not None else TaskStatus.STAGING)
        )
        if result is not None:
            # Version 1 publishes the result before the terminal status.
            self._v1_last_result = [command_id, _to_json(result)]
            self.push_change_event(_V1_RESULT, list(self._v1_last_result))
        if progress is not None:
            entry.progress = progress
            self.push_change_event(_V1_PROGRESS, self._v1_progress_list())
        if status is not None:
            entry.status = status
            if status in TERMINAL_STATUSES:
                entry.finished_at = time.monotonic()
            self._forget_old_v1_entries()
            self.push_change_event(_V1_STATUS, self._v1_status_list())
            if entry.finished_at is not None and entry.progress is not None:
                entry.progress = None  # finished commands leave the progress list
                self.push_change_event(_V1_PROGRESS, self._v1_progress_list())

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
        while len(self._v1_entries) * 2 > _V1_LIST_LENGTH:
            self._v1_entries.popitem(last=False)

    def _v1_status_list(self) -> list[str]:
        flat: list[str] = []
        for cid, entry in self._v1_entries.items():
            flat.extend((cid, entry.status.name))
        return flat

    def _v1_progress_list(self) -> list[str]:
        flat: list[str] = []
        for cid, entry in self._v1_entries.items():
            if entry.finished_at is None and entry.progress is not None:
                flat.extend((cid, str(entry.progress)))
        return flat


def _to_json(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return json.dumps(str(value))


def main(args: Sequence[str] | None = None) -> None:
    """Run an ``LrcReference`` device server.

    Args:
        args: Command line arguments after the program name: the instance name first,
            then any Tango/omniORB options. Defaults to ``sys.argv[1:]``.
    """
    arguments = list(sys.argv[1:] if args is None else args)
    run((LrcReference,), args=[LRC_SERVER_NAME, *arguments])


if __name__ == "__main__":
    main()
