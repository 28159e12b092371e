"""Unit tests of the LRC client logic, with a fake device proxy and a fake scheduler.

No Tango process runs here: the fakes deliver events synchronously (or from a thread
of the test) so that buffering, replay, ordering and clean-up can be checked exactly.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import tango

from ska_tango_scheduler import long_running_commands as lrc
from ska_tango_scheduler._lrc import client, ports
from ska_tango_scheduler._queues import EventQueue
from ska_tango_scheduler.control_model import ResultCode, TaskStatus
from ska_tango_scheduler.diagnostics import StreamStatus
from ska_tango_scheduler.long_running_commands import (
    EVENTS_DROPPED_REASON,
    INVOKE_FAILED_REASON,
    CommandError,
    LRCSubscriptionsProtocol,
    NoCommonProtocolVersionError,
    ResultCodeError,
    connect_lrc_interface,
    disconnect_lrc_interface,
    invoke_lrc,
    lrc_attribute_names,
    module_callback_scheduler,
    negotiate_lrc_protocol_version,
)
from ska_tango_scheduler.scheduler import (
    CallbackScheduler,
    StreamNotFoundError,
    UnknownCallbackError,
)

V1 = ("longRunningCommandStatus", "longRunningCommandProgress", "longRunningCommandResult")
V2 = "_lrcEvent"

# --------------------------------------------------------------------------- fakes


def change_event(attr: str, value: tuple[str, ...] | None) -> Any:
    """A change event as a callback sees it."""
    return SimpleNamespace(
        err=False,
        errors=(),
        attr_name=f"tango://h:1/x/y/z/{attr.lower()}",
        attr_value=SimpleNamespace(value=value),
    )


def error_event(attr: str, reason: str) -> Any:
    """An error event with one DevError."""
    error = tango.DevError()
    error.reason = reason
    error.desc = f"{reason} happened"
    error.origin = "test"
    error.severity = tango.ErrSeverity.ERR
    return SimpleNamespace(
        err=True, errors=(error,), attr_name=f"tango://h:1/x/y/z/{attr}", attr_value=None
    )


@dataclass
class FakeStream:
    """One stream of the fake scheduler."""

    queue: EventQueue
    callbacks: dict[int, Callable[[Any], None]] = field(default_factory=dict)
    pinned: bool = False
    state: str = "connected"


class FakeScheduler:
    """The scheduler interface the LRC client uses (LrcScheduler); events go out synchronously.

    A plain class: it starts no threads and holds no state of a real scheduler.
    """

    def __init__(self) -> None:
        self.streams: dict[str, FakeStream] = {}
        self.next_id = 1
        self.registered: list[str] = []
        self.unregistered: list[int] = []
        self.on_calling_thread: list[bool] = []
        self.future_factory: Callable[[int], Future[Any]] | None = None

    @property
    def name(self) -> str:
        return "fake"

    @property
    def thread_count(self) -> int:
        return 2

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        return ()

    def __repr__(self) -> str:
        return "<FakeScheduler>"

    def allocate_queue(self, queue_size: int = 32) -> EventQueue:
        return EventQueue(queue_size)

    def get_queue(self, device: Any, attr_name: str, event_type: Any) -> EventQueue:
        stream = self.streams.get(attr_name.lower())
        if stream is None:
            raise StreamNotFoundError(attr_name)
        return stream.queue

    def _stream(self, attr_name: str, queue_factory: Callable[[], EventQueue] | None) -> FakeStream:
        key = attr_name.lower()
        if key not in self.streams:
            queue = queue_factory() if queue_factory is not None else EventQueue(32)
            self.streams[key] = FakeStream(queue)
        return self.streams[key]

    def register_event_callback(
        self,
        device: Any,
        attr_name: str,
        event_type: Any,
        callback: Callable[[Any], None],
        queue_factory: Callable[[], EventQueue] | None = None,
        *,
        on_calling_thread: bool = False,
    ) -> Future[Any]:
        self.on_calling_thread.append(on_calling_thread)
        stream = self._stream(attr_name, queue_factory)
        callback_id = self.next_id
        self.next_id += 1
        stream.callbacks[callback_id] = callback
        self.registered.append(attr_name)
        if self.future_factory is not None:
            return self.future_factory(callback_id)
        future: Future[Any] = Future()
        future.set_result(callback_id)
        return future

    def unregister_callback(self, callback_id: int) -> None:
        for key, stream in list(self.streams.items()):
            if callback_id in stream.callbacks:
                del stream.callbacks[callback_id]
                self.unregistered.append(callback_id)
                if not stream.callbacks and not stream.pinned:
                    del self.streams[key]
                return
        raise UnknownCallbackError(callback_id)

    def connect_event_stream(
        self,
        device: Any,
        attr_name: str,
        event_type: Any,
        queue_factory: Callable[[], EventQueue] | None = None,
        *,
        on_calling_thread: bool = False,
    ) -> Future[None]:
        self.on_calling_thread.append(on_calling_thread)
        self._stream(attr_name, queue_factory).pinned = True
        future: Future[None] = Future()
        future.set_result(None)
        return future

    def disconnect_event_stream(self, device: Any, attr_name: str, event_type: Any) -> None:
        stream = self.streams.get(attr_name.lower())
        if stream is None or not stream.pinned:
            raise StreamNotFoundError(attr_name)
        stream.pinned = False
        if not stream.callbacks:
            del self.streams[attr_name.lower()]

    def stream_status(self, device: Any, attr_name: str, event_type: Any = None) -> Any:
        stream = self.streams.get(attr_name.lower())
        if stream is None:
            return None
        return StreamStatus(
            f"{attr_name.lower()}#CHANGE_EVENT", stream.state, "API_Broken: it broke"
        )

    # test helpers
    def push(self, attr: str, value: tuple[str, ...] | None) -> None:
        self.deliver(attr, change_event(attr, value))

    def deliver(self, attr: str, event: Any) -> None:
        stream = self.streams.get(attr.lower())
        if stream is None:
            return
        for callback in list(stream.callbacks.values()):
            callback(event)

    def callback_count(self) -> int:
        return sum(len(s.callbacks) for s in self.streams.values())


class FakeProxy:
    """A device proxy whose commands run a script before replying."""

    def __init__(
        self,
        scheduler: FakeScheduler,
        versions: tuple[int, ...] | None = (1, 2),
    ) -> None:
        self.scheduler = scheduler
        self.versions = versions
        self.scripts: dict[str, Callable[[Any], Any]] = {}
        self.attribute_list_error: tango.DevFailed | None = None
        self.queried = 0
        self.command_calls: list[tuple[str, tuple[Any, ...]]] = []

    def dev_name(self) -> str:
        return "x/y/z"

    def is_dbase_used(self) -> bool:
        return True

    def get_db_host(self) -> str:
        return "h"

    def get_db_port_num(self) -> int:
        return 1

    def get_attribute_list(self) -> list[str]:
        self.queried += 1
        if self.attribute_list_error is not None:
            raise self.attribute_list_error
        names = ["State", "Status"]
        if self.versions is None:
            return [*names, *V1]
        return [*names, "lrcprotocolVERSIONS", V2, *V1]

    def read_attribute(self, name: str) -> Any:
        assert name == "lrcProtocolVersions"
        return SimpleNamespace(value=self.versions)

    def command_inout(self, command: str, *args: Any) -> Any:
        self.command_calls.append((command, args))
        return self.scripts[command](args[0] if args else None)


def dev_failed(reason: str) -> tango.DevFailed:
    """A DevFailed with one error."""
    error = tango.DevError()
    error.reason = reason
    error.desc = f"{reason} description"
    error.origin = "test"
    error.severity = tango.ErrSeverity.ERR
    return tango.DevFailed(error)


class Recorder:
    """An LRC callback recording its calls."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


#: Handles of the invocations a test started: kept alive until the test ends, since
#: dropping a handle stops its callbacks (as in ska-tango-base).
_kept: list[LRCSubscriptionsProtocol] = []


@pytest.fixture(autouse=True)
def _keep_handles() -> Iterator[None]:
    yield
    _kept.clear()


@pytest.fixture
def sched() -> FakeScheduler:
    """A fake scheduler."""
    return FakeScheduler()


@pytest.fixture
def proxy(sched: FakeScheduler) -> FakeProxy:
    """A fake v1+v2 device."""
    return FakeProxy(sched)


def run(
    recorder: Callable[..., None],
    proxy: FakeProxy,
    sched: FakeScheduler,
    command: str,
    arg: Any = None,
) -> LRCSubscriptionsProtocol:
    """invoke_lrc with the fakes; waits until the updates kept before the reply are out."""
    subs = invoke_lrc(
        recorder,
        cast(tango.DeviceProxy, proxy),
        command,
        None if arg is None else (arg,),
        callback_scheduler=cast(CallbackScheduler, sched),
    )
    _kept.append(subs)
    settle(subs)
    return subs


def settle(subs: LRCSubscriptionsProtocol) -> None:
    """Wait for the invocation's replay job, if it has one."""
    inner = getattr(subs, "_invocation", subs)
    replayed = inner._replayed
    if replayed is not None:
        assert replayed.wait(30), "the replay job did not end"


def v2(cid: str, **update: Any) -> tuple[str, str]:
    """An _lrcEvent value."""
    return (cid, json.dumps(update))


# --------------------------------------------------------------------------- callback checks


def test_callback_without_kwargs_is_refused(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """A callback that cannot take **kwargs is a ValueError, before anything happens."""

    def narrow(status: Any = None, progress: Any = None, result: Any = None) -> None:
        pass

    with pytest.raises(ValueError, match="kwargs"):
        run(narrow, proxy, sched, "Do")
    assert sched.registered == []


def test_uncallable_callback_is_refused(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """Something that cannot be called is a TypeError."""
    with pytest.raises(TypeError):
        run(cast(Any, 42), proxy, sched, "Do")


def test_named_parameters_with_kwargs_are_accepted(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """The documented signature shape works."""
    seen: list[Any] = []

    def callback(
        status: Any = None, progress: Any = None, result: Any = None, error: Any = None, **kw: Any
    ) -> None:
        seen.append((status, result))

    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["id-1"])
    run(callback, proxy, sched, "Do")
    sched.push(V2, v2("id-1", status=5, result=[0, "ok"]))
    assert seen == [(TaskStatus.COMPLETED, [0, "ok"])]


# --------------------------------------------------------------------------- version 2


def test_v2_events_before_the_reply_are_replayed_in_order(
    proxy: FakeProxy, sched: FakeScheduler
) -> None:
    """STAGING and QUEUED pushed before the reply reach the callback, in order."""

    def script(_: Any) -> Any:
        sched.push(V2, ())  # the empty value of a fresh subscription
        sched.push(V2, v2("id-1", status=0))
        sched.push(V2, v2("other", status=0))
        sched.push(V2, v2("id-1", status=1))
        return ([ResultCode.QUEUED], ["id-1"])

    proxy.scripts["Do"] = script
    recorder = Recorder()
    subs = run(recorder, proxy, sched, "Do")
    assert subs.command_id == "id-1"
    assert subs.protocol_version == 2
    assert sched.registered == [V2]
    assert recorder.calls == [{"status": TaskStatus.STAGING}, {"status": TaskStatus.QUEUED}]

    sched.push(V2, v2("other", status=2))
    sched.push(V2, v2("id-1", status=2, progress="half", started_time=12.5))
    sched.push(V2, v2("id-1", status="COMPLETED", result=[0, "done"]))
    assert recorder.calls[2:] == [
        {"status": TaskStatus.IN_PROGRESS, "progress": "half", "started_time": 12.5},
        {"status": TaskStatus.COMPLETED, "result": [0, "done"]},
    ]
    # The terminal status removed the callbacks; nothing more is delivered.
    assert sched.callback_count() == 0
    sched.push(V2, v2("id-1", status=7))
    assert len(recorder.calls) == 4


def test_terminal_status_in_the_early_buffer_unregisters(
    proxy: FakeProxy, sched: FakeScheduler
) -> None:
    """A command that finished before its reply arrived is reported and cleaned up."""

    def script(_: Any) -> Any:
        for status in (0, 1, 2):
            sched.push(V2, v2("fast", status=status))
        sched.push(V2, v2("fast", status=5, result=[0, "quick"]))
        return ([ResultCode.STARTED], ["fast"])

    proxy.scripts["Do"] = script
    recorder = Recorder()
    run(recorder, proxy, sched, "Do")
    assert [c["status"] for c in recorder.calls] == [0, 1, 2, 5]
    assert recorder.calls[-1]["result"] == [0, "quick"]
    assert sched.callback_count() == 0


def test_bad_v2_payloads_are_skipped(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """Non-JSON, non-object and unknown-status updates do not break the invocation."""
    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["id"])
    recorder = Recorder()
    run(recorder, proxy, sched, "Do")
    sched.push(V2, ("id", "{not json"))
    sched.push(V2, ("id", "[1, 2]"))
    sched.push(V2, ("id",))
    sched.push(V2, ("id", "{}"))
    sched.push(V2, v2("id", status=99))
    sched.push(V2, v2("id", status=5))
    assert recorder.calls == [{"status": 99}, {"status": TaskStatus.COMPLETED}]
    assert sched.callback_count() == 0


def test_callback_never_runs_on_the_calling_thread(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """A caller holding a lock its callback takes does not deadlock itself."""
    lock = threading.Lock()
    threads: list[threading.Thread] = []
    done = threading.Event()

    def callback(**kwargs: Any) -> None:
        with lock:
            threads.append(threading.current_thread())
        if kwargs.get("status") == TaskStatus.COMPLETED:
            done.set()

    def script(_: Any) -> Any:
        sched.push(V2, v2("id", status=0))
        sched.push(V2, v2("id", status=5))
        return ([ResultCode.QUEUED], ["id"])

    proxy.scripts["Do"] = script
    with lock:
        subs = invoke_lrc(
            callback,
            cast(tango.DeviceProxy, proxy),
            "Do",
            callback_scheduler=cast(CallbackScheduler, sched),
        )
        assert threads == []
    assert done.wait(30)
    settle(subs)
    assert len(threads) == 2
    assert threading.current_thread() not in threads


# --------------------------------------------------------------------------- version 1


def test_v1_status_progress_and_result(sched: FakeScheduler) -> None:
    """Version 1 lists are decoded for our command only, without repeats."""
    proxy = FakeProxy(sched, versions=None)

    def script(_: Any) -> Any:
        sched.push(V1[0], ())
        sched.push(V1[1], ())
        sched.push(V1[2], ("", ""))
        sched.push(V1[0], ("old", "COMPLETED", "c1", "STAGING"))
        return ([ResultCode.QUEUED], ["c1"])

    proxy.scripts["Do"] = script
    recorder = Recorder()
    subs = run(recorder, proxy, sched, "Do")
    assert subs.protocol_version == 1
    assert sorted(sched.registered) == sorted(V1)
    sched.push(V1[0], ("old", "COMPLETED", "c1", "QUEUED"))
    sched.push(V1[0], ("old", "COMPLETED", "c1", "QUEUED", "c2", "STAGING"))  # no change for c1
    sched.push(V1[0], ("c1", "IN_PROGRESS", "c2", "QUEUED"))
    sched.push(V1[1], ("c1", "10"))
    sched.push(V1[1], ("c1", "10", "c2", "3"))  # no change for c1
    sched.push(V1[1], ("c1", "almost"))
    sched.push(V1[2], ("c2", json.dumps([0, "not ours"])))
    sched.push(V1[2], ("c1", json.dumps([0, "ours"])))
    sched.push(V1[0], ("c1", "COMPLETED", "c2", "QUEUED"))
    assert recorder.calls == [
        {"status": TaskStatus.STAGING},
        {"status": TaskStatus.QUEUED},
        {"status": TaskStatus.IN_PROGRESS},
        {"progress": 10},
        {"progress": "almost"},
        {"result": [0, "ours"]},
        {"status": TaskStatus.COMPLETED},
    ]
    assert sched.callback_count() == 0


def test_v1_result_that_is_not_json_is_passed_as_text(sched: FakeScheduler) -> None:
    """A result the device could not encode arrives as its text."""
    proxy = FakeProxy(sched, versions=None)
    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["c1"])
    recorder = Recorder()
    run(recorder, proxy, sched, "Do")
    sched.push(V1[2], ("c1", "<object at 0x1>"))
    sched.push(V1[0], ("c1", "FAILED"))
    assert recorder.calls == [{"result": "<object at 0x1>"}, {"status": TaskStatus.FAILED}]


def test_v1_queues_are_shared(sched: FakeScheduler) -> None:
    """The three version 1 streams share one big queue, so their order is kept."""
    proxy = FakeProxy(sched, versions=None)
    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["c1"])
    run(Recorder(), proxy, sched, "Do")
    queues = {id(sched.streams[name.lower()].queue) for name in V1}
    assert len(queues) == 1
    assert sched.streams[V1[0].lower()].queue.maxsize == lrc.LRC_QUEUE_SIZE


# --------------------------------------------------------------------------- negotiation


@pytest.mark.parametrize(
    ("versions", "expected"),
    [(None, 1), ((1, 1), 1), ((1, 2), 2), ((2, 2), 2), ((1, 5), 2), ((0, 1), 1)],
)
def test_negotiation(sched: FakeScheduler, versions: tuple[int, int] | None, expected: int) -> None:
    """The highest common version wins; no attribute means version 1."""
    proxy = FakeProxy(sched, versions=versions)
    assert negotiate_lrc_protocol_version(cast(tango.DeviceProxy, proxy)) == expected


@pytest.mark.parametrize("versions", [(3, 4), (), (2, 1)])
def test_no_common_version(sched: FakeScheduler, versions: tuple[int, ...]) -> None:
    """Disjoint or unusable ranges raise an error naming both sides."""
    proxy = FakeProxy(sched, versions=versions)
    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["c1"])
    with pytest.raises(NoCommonProtocolVersionError) as info:
        run(Recorder(), proxy, sched, "Do")
    assert info.value.client_versions == (1, 2)
    assert info.value.server_versions == versions
    assert "1 to 2" in str(info.value)
    if versions == (3, 4):
        assert "3 to 4" in str(info.value)
    assert sched.registered == []


def test_attribute_names() -> None:
    """Each version has its attributes; others are refused."""
    assert lrc_attribute_names(2) == (V2,)
    assert lrc_attribute_names(1) == V1
    with pytest.raises(ValueError, match="3"):
        lrc_attribute_names(3)


# --------------------------------------------------------------------------- error cases


def test_rejected_command(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """A REJECTED reply raises CommandError and leaves nothing registered."""

    def script(_: Any) -> Any:
        sched.push(V2, v2("never-told", status=0))
        sched.push(V2, v2("never-told", status=6, result=[5, "busy"]))
        return ([ResultCode.REJECTED], ["the queue is full"])

    proxy.scripts["Do"] = script
    recorder = Recorder()
    with pytest.raises(CommandError, match="the queue is full"):
        run(recorder, proxy, sched, "Do")
    assert recorder.calls == []
    assert sched.callback_count() == 0


@pytest.mark.parametrize("code", [ResultCode.OK, ResultCode.FAILED, ResultCode.NOT_ALLOWED, 42])
def test_unexpected_result_code(proxy: FakeProxy, sched: FakeScheduler, code: int) -> None:
    """Any code but QUEUED, STARTED and REJECTED raises ResultCodeError."""
    proxy.scripts["Do"] = lambda _: ([code], ["whatever"])
    with pytest.raises(ResultCodeError, match="unexpected result code"):
        run(Recorder(), proxy, sched, "Do")
    assert sched.callback_count() == 0


@pytest.mark.parametrize("reply", [None, "text", ([], []), ([2],), (["x"], ["y"])])
def test_malformed_reply(proxy: FakeProxy, sched: FakeScheduler, reply: Any) -> None:
    """A reply that is not ([code], [text]) raises ResultCodeError."""
    proxy.scripts["Do"] = lambda _: reply
    with pytest.raises(ResultCodeError):
        run(Recorder(), proxy, sched, "Do")
    assert sched.callback_count() == 0


def test_command_failure_is_rethrown_with_reason_last(
    proxy: FakeProxy, sched: FakeScheduler
) -> None:
    """A DevFailed from the command keeps its errors and gains SKA_InvokeLrcFailed last."""

    def script(_: Any) -> Any:
        raise dev_failed("API_CommandNotFound")

    proxy.scripts["Do"] = script
    with pytest.raises(tango.DevFailed) as info:
        run(Recorder(), proxy, sched, "Do")
    reasons = [e.reason for e in info.value.args]
    assert reasons == ["API_CommandNotFound", INVOKE_FAILED_REASON]
    assert sched.callback_count() == 0


def test_negotiation_failure_is_rethrown(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """A device that cannot be asked gives a DevFailed with SKA_InvokeLrcFailed last."""
    proxy.attribute_list_error = dev_failed("API_CantConnectToDevice")
    with pytest.raises(tango.DevFailed) as info:
        run(Recorder(), proxy, sched, "Do")
    assert [e.reason for e in info.value.args] == ["API_CantConnectToDevice", INVOKE_FAILED_REASON]


def test_other_exceptions_from_the_command_clean_up(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """A non-Tango exception propagates unchanged, and nothing stays registered."""

    def script(_: Any) -> Any:
        raise KeyboardInterrupt

    proxy.scripts["Do"] = script
    with pytest.raises(KeyboardInterrupt):
        run(Recorder(), proxy, sched, "Do")
    assert sched.callback_count() == 0


def test_failed_subscription_is_rethrown_with_its_errors(
    proxy: FakeProxy, sched: FakeScheduler
) -> None:
    """A stream that failed to subscribe makes invoke_lrc raise its errors, then ours."""
    real_register = sched.register_event_callback

    def failing_register(*args: Any, **kwargs: Any) -> Future[Any]:
        future = real_register(*args, **kwargs)
        stream = sched.streams[V2.lower()]
        stream.state = "failing"
        sched.deliver(V2, error_event(V2, "API_AttributePollingNotStarted"))
        return future

    sched.register_event_callback = failing_register  # type: ignore[method-assign]
    proxy.scripts["Do"] = lambda _: pytest.fail("the command must not be invoked")
    with pytest.raises(tango.DevFailed) as info:
        run(Recorder(), proxy, sched, "Do")
    reasons = [e.reason for e in info.value.args]
    assert reasons == ["API_AttributePollingNotStarted", INVOKE_FAILED_REASON]
    assert sched.callback_count() == 0


def test_registration_future_exception_propagates(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """An exception set on a registration future is raised and nothing stays registered."""

    def broken(callback_id: int) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_exception(RuntimeError("scheduler broke"))
        return future

    sched.future_factory = broken
    with pytest.raises(RuntimeError, match="scheduler broke"):
        run(Recorder(), proxy, sched, "Do")


def test_registration_timeout(
    proxy: FakeProxy, sched: FakeScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscription without outcome in time is a DevFailed; late ones are released."""
    pending: list[tuple[Future[Any], int]] = []

    def slow(callback_id: int) -> Future[Any]:
        future: Future[Any] = Future()
        pending.append((future, callback_id))
        return future

    sched.future_factory = slow
    monkeypatch.setattr(lrc, "REGISTRATION_TIMEOUT", 0.05)
    with pytest.raises(tango.DevFailed) as info:
        run(Recorder(), proxy, sched, "Do")
    assert info.value.args[-1].reason == INVOKE_FAILED_REASON
    assert sched.callback_count() == 1
    for future, callback_id in pending:
        future.set_result(callback_id)
    assert sched.callback_count() == 0


# --------------------------------------------------------------------------- errors and drops


def test_error_events_reach_the_callback(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """Error events become error=errors, and the invocation goes on."""
    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["id"])
    recorder = Recorder()
    run(recorder, proxy, sched, "Do")
    event = error_event(V2, "API_EventTimeout")
    sched.deliver(V2, event)
    sched.push(V2, v2("id", status=5))
    assert recorder.calls == [{"error": event.errors}, {"status": TaskStatus.COMPLETED}]


def test_early_buffer_overflow_is_reported(
    proxy: FakeProxy, sched: FakeScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the early buffer overflows the callback is told, then gets what was kept."""
    monkeypatch.setattr(lrc, "EARLY_EVENT_LIMIT", 3)

    def script(_: Any) -> Any:
        for n in range(5):
            sched.push(V2, v2("id", progress=n))
        return ([ResultCode.QUEUED], ["id"])

    proxy.scripts["Do"] = script
    recorder = Recorder()
    run(recorder, proxy, sched, "Do")
    assert recorder.calls[0]["error"][0].reason == EVENTS_DROPPED_REASON
    assert "2 LRC events" in recorder.calls[0]["error"][0].desc
    assert recorder.calls[1:] == [{"progress": 2}, {"progress": 3}, {"progress": 4}]


def test_queue_drops_are_reported(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """Events discarded by the stream's queue are reported once, before the next update."""
    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["id"])
    recorder = Recorder()
    run(recorder, proxy, sched, "Do")
    queue = sched.streams[V2.lower()].queue
    sched.push(V2, v2("id", progress=1))
    queue.counters.dropped += 7  # what a full queue does
    sched.push(V2, v2("id", progress=2))
    sched.push(V2, v2("id", progress=3))
    assert recorder.calls[0] == {"progress": 1}
    assert recorder.calls[1]["error"][0].reason == EVENTS_DROPPED_REASON
    assert "7 LRC events" in recorder.calls[1]["error"][0].desc
    assert recorder.calls[2:] == [{"progress": 2}, {"progress": 3}]


def test_slow_callback_backlog_is_bounded_and_reported(
    proxy: FakeProxy, sched: FakeScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls piling up behind a slow callback are bounded; the loss is reported."""
    monkeypatch.setattr(lrc, "LRC_QUEUE_SIZE", 10)
    release = threading.Event()
    entered = threading.Event()
    recorder = Recorder()

    def blocking(**kwargs: Any) -> None:
        recorder(**kwargs)
        entered.set()
        assert release.wait(30)

    def script(_: Any) -> Any:
        sched.push(V2, v2("id", status=0))
        return ([ResultCode.QUEUED], ["id"])

    proxy.scripts["Do"] = script
    subs = invoke_lrc(
        blocking,
        cast(tango.DeviceProxy, proxy),
        "Do",
        callback_scheduler=cast(CallbackScheduler, sched),
    )
    assert entered.wait(30)  # the replay thread is now stuck in the callback
    for n in range(1, 26):
        sched.push(V2, v2("id", progress=n))  # returns at once: nothing waits
    sched.push(V2, v2("id", status=5))
    release.set()
    settle(subs)
    assert recorder.calls[0] == {"status": TaskStatus.STAGING}
    error = recorder.calls[1]["error"][0]
    assert error.reason == EVENTS_DROPPED_REASON
    assert "16 updates" in error.desc
    assert recorder.calls[2:] == [{"progress": n} for n in range(17, 26)] + [
        {"status": TaskStatus.COMPLETED}
    ]


def test_callback_exceptions_do_not_stop_delivery(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """A raising callback is logged; later updates still arrive and clean-up happens."""
    seen: list[dict[str, Any]] = []

    def flaky(**kwargs: Any) -> None:
        seen.append(kwargs)
        raise RuntimeError("user bug")

    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["id"])
    run(flaky, proxy, sched, "Do")
    sched.push(V2, v2("id", status=2))
    sched.push(V2, v2("id", status=5))
    assert len(seen) == 2
    assert sched.callback_count() == 0


# --------------------------------------------------------------------------- unsubscribe


def test_unsubscribe_is_idempotent_and_final(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """unsubscribe_lrc_events unregisters once; later calls and events do nothing."""
    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["id"])
    recorder = Recorder()
    subs = run(recorder, proxy, sched, "Do")
    assert sched.callback_count() == 1
    subs.unsubscribe_lrc_events()
    assert sched.callback_count() == 0
    assert len(sched.unregistered) == 1
    subs.unsubscribe_lrc_events()
    assert len(sched.unregistered) == 1
    sched.push(V2, v2("id", status=5))
    assert recorder.calls == []
    assert isinstance(subs, LRCSubscriptionsProtocol)


def test_unsubscribe_after_terminal_does_nothing(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """After a terminal status the callbacks are gone already."""
    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["id"])
    subs = run(Recorder(), proxy, sched, "Do")
    sched.push(V2, v2("id", status=3))
    assert len(sched.unregistered) == 1
    subs.unsubscribe_lrc_events()
    assert len(sched.unregistered) == 1


# --------------------------------------------------------------------------- concurrency


def test_replay_and_live_events_keep_order_and_never_overlap(
    proxy: FakeProxy, sched: FakeScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events racing with the replay are delivered once each, in order, one at a time."""
    total = 3000
    monkeypatch.setattr(lrc, "EARLY_EVENT_LIMIT", total + 10)  # no overflow here
    monkeypatch.setattr(lrc, "LRC_QUEUE_SIZE", total + 10)
    started = threading.Event()
    active = threading.Lock()
    overlaps: list[int] = []
    progress: list[int] = []
    done = threading.Event()

    def callback(**kwargs: Any) -> None:
        if not active.acquire(blocking=False):
            overlaps.append(1)
            return
        try:
            if "progress" in kwargs:
                progress.append(kwargs["progress"])
            if kwargs.get("status") == TaskStatus.COMPLETED:
                done.set()
        finally:
            active.release()

    pushed = [0]

    def pusher() -> None:
        started.wait(10)
        for n in range(1, total + 1):
            sched.push(V2, v2("id", progress=n))
            pushed[0] = n
        sched.push(V2, v2("id", status=5))

    thread = threading.Thread(target=pusher)
    thread.start()

    def script(_: Any) -> Any:
        # Reply while the pusher is busy, so that the replay races with live events.
        started.set()
        deadline = time.monotonic() + 30
        while pushed[0] < total // 5 and time.monotonic() < deadline:
            time.sleep(0.0005)
        return ([ResultCode.QUEUED], ["id"])

    proxy.scripts["Do"] = script
    run(callback, proxy, sched, "Do")
    thread.join(60)
    assert done.wait(60)
    assert overlaps == []
    assert progress == list(range(progress[0], total + 1))
    assert progress[0] == 1


# --------------------------------------------------------------------------- interface pinning


def test_connect_and_disconnect_lrc_interface(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """Connecting pins the negotiated streams; invocations then reuse them."""
    connect_lrc_interface(cast(tango.DeviceProxy, proxy), cast(CallbackScheduler, sched))
    assert set(sched.streams) == {V2.lower()}
    assert sched.streams[V2.lower()].pinned
    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["id"])
    run(Recorder(), proxy, sched, "Do")
    sched.push(V2, v2("id", status=5))
    assert set(sched.streams) == {V2.lower()}  # still pinned after the invocation ended
    disconnect_lrc_interface(cast(tango.DeviceProxy, proxy), cast(CallbackScheduler, sched))
    assert sched.streams == {}
    with pytest.raises(StreamNotFoundError):
        disconnect_lrc_interface(cast(tango.DeviceProxy, proxy), cast(CallbackScheduler, sched))


@pytest.mark.parametrize("served_here", [False, True])
def test_streams_of_a_device_served_here_connect_on_the_calling_thread(
    proxy: FakeProxy,
    sched: FakeScheduler,
    monkeypatch: pytest.MonkeyPatch,
    served_here: bool,
) -> None:
    """invoke_lrc and connect_lrc_interface ask for the calling thread only for a device of ours.

    The scheduler's ``on_calling_thread`` keyword is how the client asks for it (its
    integration test is in tests/integration/test_lrc.py, a device invoking on itself).
    """
    monkeypatch.setattr(client, "served_here", lambda _proxy: served_here)
    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["id"])
    run(Recorder(), proxy, sched, "Do")
    connect_lrc_interface(cast(tango.DeviceProxy, proxy), cast(CallbackScheduler, sched))
    assert sched.on_calling_thread == [served_here, served_here]
    disconnect_lrc_interface(cast(tango.DeviceProxy, proxy), cast(CallbackScheduler, sched))


def test_the_fake_scheduler_has_the_interface_the_client_uses(sched: FakeScheduler) -> None:
    """The fake and the real scheduler both satisfy the client's scheduler Protocol."""
    assert isinstance(sched, ports.LrcScheduler)
    with CallbackScheduler(thread_count=1, name="protocol-check") as real:
        assert isinstance(real, ports.LrcScheduler)


def test_connect_v1_interface_shares_one_queue(sched: FakeScheduler) -> None:
    """The three version 1 streams are pinned with one shared queue."""
    proxy = FakeProxy(sched, versions=None)
    connect_lrc_interface(cast(tango.DeviceProxy, proxy), cast(CallbackScheduler, sched))
    assert set(sched.streams) == {name.lower() for name in V1}
    assert len({id(s.queue) for s in sched.streams.values()}) == 1
    disconnect_lrc_interface(cast(tango.DeviceProxy, proxy), cast(CallbackScheduler, sched))
    assert sched.streams == {}


# --------------------------------------------------------------------------- module scheduler


@pytest.fixture
def fresh_module_scheduler(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Isolate the module-level scheduler of long_running_commands."""
    monkeypatch.setattr(ports, "_module_scheduler", None)
    yield
    scheduler = ports._module_scheduler  # noqa: SLF001 - test isolation
    if scheduler is not None:
        scheduler.shutdown(timeout=10)


@pytest.mark.usefixtures("fresh_module_scheduler")
def test_module_scheduler_is_a_lazy_singleton() -> None:
    """One scheduler is made on first use, from any number of threads."""
    made: list[CallbackScheduler] = []
    threads = [
        threading.Thread(target=lambda: made.append(module_callback_scheduler())) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(made) == 8
    assert len({id(s) for s in made}) == 1
    first = made[0]
    assert not first.is_shutdown
    first.shutdown(timeout=10)
    second = module_callback_scheduler()
    assert second is not first
    assert not second.is_shutdown


# --------------------------------------------------------------------------- ska-tango-base


def test_command_args_tuple_is_unpacked(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """command_args is a tuple unpacked into the call, as in ska-tango-base."""
    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["id"])
    subs = invoke_lrc(
        Recorder(),
        cast(tango.DeviceProxy, proxy),
        "Do",
        (1.5,),
        callback_scheduler=cast(CallbackScheduler, sched),
    )
    assert proxy.command_calls == [("Do", (1.5,))]
    invoke_lrc(
        Recorder(),
        cast(tango.DeviceProxy, proxy),
        "Do",
        ([1, 2],),
        callback_scheduler=cast(CallbackScheduler, sched),
    )
    invoke_lrc(Recorder(), cast(tango.DeviceProxy, proxy), "Do", (), callback_scheduler=sched)
    assert proxy.command_calls[1:] == [("Do", ([1, 2],)), ("Do", ())]
    subs.unsubscribe_lrc_events()


@pytest.mark.parametrize("bad", [1.5, "text", [1, 2], {"a": 1}])
def test_command_args_that_is_not_a_tuple_is_refused(
    proxy: FakeProxy, sched: FakeScheduler, bad: Any
) -> None:
    """A bare value is a TypeError that shows the tuple form, before anything happens."""
    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["id"])
    with pytest.raises(TypeError, match=r"command_args=\(") as info:
        invoke_lrc(Recorder(), cast(tango.DeviceProxy, proxy), "Do", bad, callback_scheduler=sched)
    assert repr(bad) in str(info.value)
    assert proxy.queried == 0
    assert proxy.command_calls == []
    assert sched.registered == []


def test_command_args_with_two_values_is_refused(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """A Tango command takes one argument: two values are a TypeError."""
    with pytest.raises(TypeError, match="one argument"):
        invoke_lrc(
            Recorder(), cast(tango.DeviceProxy, proxy), "Do", (1, 2), callback_scheduler=sched
        )
    assert proxy.command_calls == []


@pytest.mark.parametrize("bad", ["sched", 3, object()])
def test_callback_scheduler_of_the_wrong_type_is_refused_first(
    proxy: FakeProxy, sched: FakeScheduler, bad: Any
) -> None:
    """A callback_scheduler that is not a CallbackScheduler: TypeError, device not asked."""
    with pytest.raises(TypeError, match="callback_scheduler"):
        invoke_lrc(Recorder(), cast(tango.DeviceProxy, proxy), "Do", callback_scheduler=bad)
    assert proxy.queried == 0
    with pytest.raises(TypeError, match="scheduler"):
        connect_lrc_interface(cast(tango.DeviceProxy, proxy), bad)
    assert proxy.queried == 0


def test_proxy_of_the_wrong_type_is_refused(sched: FakeScheduler) -> None:
    """Neither a DeviceProxy nor a TRL: TypeError."""
    with pytest.raises(TypeError, match="proxy"):
        invoke_lrc(Recorder(), cast(Any, 42), "Do", callback_scheduler=sched)


def test_dropped_handle_stops_callbacks_and_releases(
    proxy: FakeProxy, sched: FakeScheduler
) -> None:
    """Once the handle is garbage, no call is made and the callbacks are unregistered."""
    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["id"])
    recorder = Recorder()
    subs = invoke_lrc(recorder, cast(tango.DeviceProxy, proxy), "Do", callback_scheduler=sched)
    settle(subs)
    sched.push(V2, v2("id", status=1))
    assert recorder.calls == [{"status": TaskStatus.QUEUED}]
    assert sched.callback_count() == 1
    del subs
    gc.collect()
    sched.push(V2, v2("id", status=2))
    assert recorder.calls == [{"status": TaskStatus.QUEUED}]
    wait_until(lambda: sched.callback_count() == 0, "the released handle's callback unregistered")


def test_handle_in_a_cycle_is_released_by_the_collector(
    proxy: FakeProxy, sched: FakeScheduler
) -> None:
    """A handle kept only by a reference cycle of the user's is released by gc.collect()."""
    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["id"])
    recorder = Recorder()
    holder: dict[str, Any] = {}
    holder["self"] = holder
    holder["subs"] = invoke_lrc(
        recorder, cast(tango.DeviceProxy, proxy), "Do", callback_scheduler=sched
    )
    settle(holder["subs"])
    assert sched.callback_count() == 1
    del holder
    gc.collect()
    sched.push(V2, v2("id", status=2))
    assert recorder.calls == []
    wait_until(lambda: sched.callback_count() == 0, "the released handle's callback unregistered")


def test_unsubscribe_then_drop_is_harmless(proxy: FakeProxy, sched: FakeScheduler) -> None:
    """unsubscribe_lrc_events() then dropping the handle unregisters exactly once."""
    proxy.scripts["Do"] = lambda _: ([ResultCode.QUEUED], ["id"])
    subs = invoke_lrc(Recorder(), cast(tango.DeviceProxy, proxy), "Do", callback_scheduler=sched)
    subs.unsubscribe_lrc_events()
    subs.unsubscribe_lrc_events()
    del subs
    gc.collect()
    time.sleep(0.2)
    assert len(sched.unregistered) == 1


def test_exceptions_without_ska_tango_base() -> None:
    """Without ska-tango-base the classes are plain RuntimeError and ValueError subclasses."""
    try:
        import ska_tango_base  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - the interop suite covers this case
        pytest.skip("ska_tango_base is importable here")
    assert CommandError.__mro__[1:] == (RuntimeError, Exception, BaseException, object)
    assert ResultCodeError.__mro__[1:] == (ValueError, Exception, BaseException, object)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.01)


def test_exceptions_are_ska_tango_base_ones_when_it_is_importable(tmp_path: Path) -> None:
    """With a (stand-in) ska_tango_base importable, its except clauses catch ours."""
    package = tmp_path / "ska_tango_base"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "faults.py").write_text(
        "class CommandError(RuntimeError):\n    pass\n\n\n"
        "class ResultCodeError(ValueError):\n    pass\n"
    )
    probe = (
        "from ska_tango_base import faults\n"
        "from ska_tango_scheduler import long_running_commands as lrc\n"
        "try:\n"
        "    raise lrc.CommandError('rejected')\n"
        "except faults.CommandError:\n"
        "    pass\n"
        "try:\n"
        "    raise lrc.ResultCodeError('odd code')\n"
        "except faults.ResultCodeError:\n"
        "    pass\n"
        "assert issubclass(lrc.CommandError, RuntimeError)\n"
        "assert issubclass(lrc.ResultCodeError, ValueError)\n"
        "print('caught')\n"
    )
    env = dict(os.environ)
    package_root = str(Path(lrc.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path), package_root, *filter(None, [env.get("PYTHONPATH")])]
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "caught"
