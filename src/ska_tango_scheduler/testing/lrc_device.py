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

import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import tango
from tango.server import Device, attribute, command, device_property, run

from ska_tango_scheduler.control_model import ResultCode, TaskStatus
from ska_tango_scheduler.long_running_commands import (
    LRCSubscriptionsProtocol,
    connect_lrc_interface,
    invoke_lrc,
)
from ska_tango_scheduler.scheduler import CallbackScheduler

from ._lrc_publisher import (
    FINISHED_KEPT,
    V1_LIST_LENGTH,
    V1_PROGRESS,
    V1_RESULT,
    V1_STATUS,
    V2_EVENT,
    VERSIONS,
    LrcPublisher,
    to_json,
)
from ._lrc_tasks import (
    CommandReply,
    Outcome,
    Task,
    TaskRunner,
    aborted_result,
    new_command_id,
    ok_result,
)

__all__ = [
    "LRC_SERVER_NAME",
    "LrcReference",
    "main",
]

LRC_SERVER_NAME = "LrcReference"
"""Server (executable) name used by :func:`main`."""

_JOIN_TIMEOUT = 5.0
_SLOW_SLICE = 0.05

_F = TypeVar("_F", bound=Callable[..., Any])


def _lrc_command(**kwargs: Any) -> Callable[[_F], _F]:
    """Give ``tango.server.command`` a type so decorated methods keep theirs."""
    return cast(Callable[[_F], _F], command(**kwargs))


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
        self._events_enabled = bool(self.LrcEventsEnabled)
        self._publisher = LrcPublisher(
            self,
            serves_v1=self._serves_v1,
            serves_v2=self._serves_v2,
            retention=float(self.FinishedRetention),
            events_enabled=self._events_enabled,
        )
        self._self_lock = threading.Lock()
        self._self_scheduler: CallbackScheduler | None = None
        self._self_handle: LRCSubscriptionsProtocol | None = None
        self._self_calls: list[dict[str, Any]] = []
        self._runner = TaskRunner(self.get_name(), self._publisher.publish, int(self.WorkerThreads))
        self.set_state(tango.DevState.ON)

    def initialize_dynamic_attributes(self) -> None:
        """Create the protocol attributes that the configured versions need."""
        if self._advertises_versions:
            self.add_attribute(
                attribute(
                    name=VERSIONS,
                    dtype=(tango.CmdArgType.DevLong64,),
                    max_dim_x=2,
                    fget=self._read_versions,
                    doc="Lowest and highest LRC protocol versions this device serves.",
                )
            )
        if self._serves_v2:
            self.add_attribute(
                attribute(
                    name=V2_EVENT,
                    dtype=(str,),
                    max_dim_x=2,
                    fget=self._read_empty,
                    doc="LRC updates as [command_id, JSON]; only useful as change events.",
                )
            )
            self._enable_change_events(V2_EVENT, detect=True)
        if self._serves_v1:
            for name in (V1_STATUS, V1_PROGRESS):
                self.add_attribute(
                    attribute(
                        name=name,
                        dtype=(str,),
                        max_dim_x=V1_LIST_LENGTH,
                        fget=self._read_v1_lists,
                        doc="Flat [command_id, value, ...] list (LRC protocol version 1).",
                    )
                )
                self._enable_change_events(name, detect=False)
            self.add_attribute(
                attribute(
                    name=V1_RESULT,
                    dtype=(str,),
                    max_dim_x=2,
                    fget=self._read_v1_result,
                    doc="Last result as [command_id, JSON] (LRC protocol version 1).",
                )
            )
            self._enable_change_events(V1_RESULT, detect=False)

        self.add_attribute(
            attribute(
                name="lrcFinished",
                dtype=(str,),
                max_dim_x=FINISHED_KEPT,
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
        self._runner.stop()
        # The workers need the device monitor to push their last events; let them have it.
        with tango.AutoTangoAllowThreads(self):
            self._runner.join(_JOIN_TIMEOUT)
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
        if attr.get_name().lower() == V1_STATUS.lower():
            return self._publisher.v1_status_list()
        return self._publisher.v1_progress_list()

    def _read_v1_result(self, *_: Any) -> list[str]:
        return self._publisher.v1_last_result()

    def _read_finished(self, *_: Any) -> list[str]:
        return self._publisher.finished()

    def _read_self_calls(self, *_: Any) -> str:
        with self._self_lock:
            return to_json(self._self_calls)

    # ------------------------------------------------------------------ commands

    @_lrc_command(dtype_out="DevVarLongStringArray")
    def Complete(self) -> CommandReply:  # noqa: N802
        """Queue a task that completes with an OK result.

        Returns:
            ``([QUEUED], [command_id])``.
        """
        return self._submit("Complete", lambda _task: (Outcome.COMPLETED, ok_result("Complete")))

    @_lrc_command(dtype_in=str, dtype_out="DevVarLongStringArray")
    def Echo(self, text: str) -> CommandReply:  # noqa: N802
        """Queue a task whose result is ``[OK, text]``.

        Args:
            text: The message to send back as the result.

        Returns:
            ``([QUEUED], [command_id])``.
        """
        return self._submit("Echo", lambda _task: (Outcome.COMPLETED, [int(ResultCode.OK), text]))

    @_lrc_command(dtype_in=int, dtype_out="DevVarLongStringArray")
    def Progress(self, steps: int) -> CommandReply:  # noqa: N802
        """Queue a task that reports progress ``1 .. steps`` and then completes.

        Args:
            steps: How many progress updates to push (as fast as the device can).

        Returns:
            ``([QUEUED], [command_id])``.
        """

        def body(task: Task) -> tuple[Outcome, Any]:
            for step in range(1, steps + 1):
                if task.abort_requested.is_set():
                    return Outcome.ABORTED, aborted_result("Progress")
                task.progress(step)
            return Outcome.COMPLETED, ok_result(f"Progress reported {steps} steps")

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
                Outcome.FAILED,
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
        command_id = new_command_id("RejectNow")
        reason = "RejectNow: the device refuses this command"
        self._publisher.publish(command_id, status=TaskStatus.STAGING)
        self._publisher.publish(
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
                Outcome.REJECTED,
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

        def body(task: Task) -> tuple[Outcome, Any]:
            deadline = time.monotonic() + max(0.0, duration)
            while (left := deadline - time.monotonic()) > 0:
                if task.abort_requested.wait(min(left, _SLOW_SLICE)):
                    return Outcome.ABORTED, aborted_result("Slow")
            return Outcome.COMPLETED, ok_result(f"Slow ran for {duration} s")

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
        command_id = new_command_id("AbortCommands")
        self._publisher.publish(command_id, status=TaskStatus.STAGING)

        def abort_all() -> None:
            self._publisher.publish(command_id, status=TaskStatus.IN_PROGRESS)
            asked = self._runner.abort_all()
            self._publisher.publish(
                command_id,
                status=TaskStatus.COMPLETED,
                result=ok_result(f"AbortCommands asked {asked} tasks to stop"),
            )

        self._runner.start_thread(abort_all, "lrc-abort", keep=False)
        return [int(ResultCode.STARTED)], [command_id]

    @_lrc_command(dtype_in=str, dtype_out=str)
    def CheckLongRunningCommandStatus(self, command_id: str) -> str:  # noqa: N802
        """Tell the status of a command, as ska-tango-base devices do.

        Args:
            command_id: The command's identifier.

        Returns:
            The name of its :class:`TaskStatus`, ``NOT_FOUND`` if the device does not know it.
        """
        return self._publisher.status_name(command_id)

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
        with self._self_lock:
            self._self_calls = []
        self._self_handle = invoke_lrc(
            self._record_self_call, proxy, name, callback_scheduler=self._self_scheduler
        )
        return self._self_handle.command_id

    def _record_self_call(self, **kwargs: Any) -> None:
        with self._self_lock:
            self._self_calls.append(kwargs)

    # ------------------------------------------------------------------ helpers

    def _submit(
        self, name: str, body: Callable[[Task], tuple[Outcome, Any]], *, starts: bool = True
    ) -> CommandReply:
        return self._runner.submit(name, body, starts=starts)


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
