"""Long running commands against the reference LRC device in a real device server.

The server runs ``ska_tango_scheduler.testing.lrc_device`` on the PyTango under test,
registered in the test bed's real Tango database. Its devices differ by properties:

* ``v2``: protocol versions (1, 2), so clients speak version 2;
* ``v1``: version 1 only (no ``lrcProtocolVersions``, no ``_lrcEvent``);
* ``v34``: advertises versions (3, 4), which no client here speaks;
* ``silent``: versions (1, 2) but its LRC attributes have no change events.

Every wait has a generous deadline; nothing asserts on speed.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import tango

from ska_tango_scheduler import CallbackScheduler, StreamNotFoundError, _compat, _streams
from ska_tango_scheduler import long_running_commands as lrc
from ska_tango_scheduler.control_model import TERMINAL_STATUSES, ResultCode, TaskStatus
from ska_tango_scheduler.long_running_commands import (
    EVENTS_DROPPED_REASON,
    INVOKE_FAILED_REASON,
    CommandError,
    NoCommonProtocolVersionError,
    ResultCodeError,
    connect_lrc_interface,
    disconnect_lrc_interface,
    invoke_lrc,
    lrc_attribute_names,
    module_callback_scheduler,
)
from ska_tango_scheduler.testing import SubscriptionCallCounter, TangoDatabase, wait_for
from ska_tango_scheduler.testing.lrc_device import LRC_SERVER_NAME
from ska_tango_scheduler.testing.pytest_plugin import DeviceServerFactory, EventSourceServer

pytestmark = pytest.mark.integration

LRC_MODULE = "ska_tango_scheduler.testing.lrc_device"
CHANGE = tango.EventType.CHANGE_EVENT
DEADLINE = 60.0


# --------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class LrcServer:
    """The module's LRC device server and the TRLs of its devices."""

    v2: str
    v1: str
    v34: str
    silent: str


def _start_lrc_server(
    factory: DeviceServerFactory,
    database: TangoDatabase,
    properties: dict[str, dict[str, list[str]]],
) -> dict[str, str]:
    family = factory.unique_name("lrc")
    names = {key: f"test/{family}/{key}" for key in properties}
    process = factory(
        f"{LRC_SERVER_NAME}/{factory.unique_name('lrc')}",
        list(names.values()),
        device_class=LRC_SERVER_NAME,
        module=LRC_MODULE,
        start=False,
    )
    process.register()
    for key, props in properties.items():
        if props:
            database.put_device_properties(names[key], props)
    process.start()
    return {key: database.trl(name) for key, name in names.items()}


@pytest.fixture(scope="module")
def lrc_server(
    tango_database: TangoDatabase, module_server_factory: DeviceServerFactory
) -> LrcServer:
    """One LRC server with four differently configured devices, for the whole module."""
    trls = _start_lrc_server(
        module_server_factory,
        tango_database,
        {
            "v2": {},
            "v1": {"LrcProtocolVersions": ["1", "1"]},
            "v34": {"LrcProtocolVersions": ["3", "4"]},
            "silent": {"LrcEventsEnabled": ["false"]},
        },
    )
    return LrcServer(**trls)


@pytest.fixture(scope="module")
def kept_connection(lrc_server: LrcServer) -> Iterator[None]:
    """Keep this process's event connection to the LRC server open.

    A subscription that opens the connection anew can miss the events pushed in its
    first milliseconds (a Tango behaviour: tools/fresh_subscription_misses.py). The
    invocation then still ends (its status checks catch up), but tests that assert
    every early status ask for this fixture.
    """
    proxy = tango.DeviceProxy(lrc_server.v2)
    connected = threading.Event()
    subscription = _compat.subscribe(
        proxy, "longRunningCommandStatus", CHANGE, lambda event: connected.set()
    )
    assert connected.wait(DEADLINE)
    yield
    proxy.unsubscribe_event(subscription)


@pytest.fixture(params=["v2", "v1"])
def device(request: pytest.FixtureRequest, lrc_server: LrcServer) -> str:
    """TRL of the version 2 device, then of the version 1 device."""
    trl: str = getattr(lrc_server, request.param)
    return trl


# --------------------------------------------------------------------------- helpers


class LrcRecorder:
    """An LRC callback that keeps every call, and flags the result and the end."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []
        self.threads: list[str] = []
        self.has_result = threading.Event()
        self.finished = threading.Event()
        # The invocation's handle: dropping it would stop the callbacks.
        self.handle: Any = None

    def __call__(self, **kwargs: Any) -> None:
        with self.lock:
            self.calls.append(kwargs)
            self.threads.append(threading.current_thread().name)
        if "result" in kwargs:
            self.has_result.set()
        if kwargs.get("status") in TERMINAL_STATUSES:
            self.finished.set()

    def statuses(self) -> list[Any]:
        with self.lock:
            return [c["status"] for c in self.calls if "status" in c]

    def results(self) -> list[Any]:
        with self.lock:
            return [c["result"] for c in self.calls if "result" in c]

    def errors(self) -> list[Any]:
        with self.lock:
            return [c["error"] for c in self.calls if "error" in c]

    def wait_finished(self, scheduler: CallbackScheduler | None = None) -> None:
        if self.finished.wait(DEADLINE):
            return
        state = scheduler.diagnostics().streams if scheduler is not None else "?"
        raise AssertionError(f"no terminal status; calls: {self.calls}; streams: {state}")


def device_streams(scheduler: CallbackScheduler, trl: str) -> list[Any]:
    """The scheduler's streams of one device."""
    name = trl.rsplit("/", 3)[-3:]
    suffix = "/".join(name).lower()
    return [s for s in scheduler.diagnostics().streams if s.device.lower().endswith(suffix)]


def registered_callbacks(scheduler: CallbackScheduler, trl: str) -> int:
    """How many callbacks the scheduler holds on a device's streams."""
    return sum(s.callbacks for s in device_streams(scheduler, trl))


#: Statuses of a command that is queued, runs and completes.
NORMAL_RUN = [TaskStatus.STAGING, TaskStatus.QUEUED, TaskStatus.IN_PROGRESS, TaskStatus.COMPLETED]


# --------------------------------------------------------------------------- the spec's examples


@pytest.mark.usefixtures("kept_connection")
def test_spec_invoke_with_callback_scheduler(device: str, sched: CallbackScheduler) -> None:
    """The spec's "Invoking a long running command" example, with a scheduler."""
    done = threading.Event()
    calls: list[dict[str, Any]] = []

    def lrc_callback(**kwargs: Any) -> None:
        calls.append(kwargs)
        if "result" in kwargs:
            done.set()

    dp = tango.DeviceProxy(device)
    subs = invoke_lrc(lrc_callback, dp, "Complete", callback_scheduler=sched)
    assert done.wait(DEADLINE), calls
    subs.unsubscribe_lrc_events()

    assert subs.command_id.endswith("_Complete")
    assert subs.protocol_version == (2 if device.endswith("/v2") else 1)
    results = [c["result"] for c in calls if "result" in c]
    assert results == [[ResultCode.OK, "Complete completed"]]
    statuses = [c["status"] for c in calls if "status" in c]
    # STAGING and QUEUED were pushed before the command replied: they were kept.
    assert statuses[:3] == [TaskStatus.STAGING, TaskStatus.QUEUED, TaskStatus.IN_PROGRESS]
    wait_for(lambda: registered_callbacks(sched, device) == 0, DEADLINE, message="callbacks left")


@pytest.mark.usefixtures("kept_connection")
def test_spec_invoke_without_scheduler(device: str) -> None:
    """Without callback_scheduler the module-level scheduler carries the events."""
    module_scheduler = module_callback_scheduler()
    received_before = module_scheduler.diagnostics().totals.received
    recorder = LrcRecorder()
    dp = tango.DeviceProxy(device)
    subs = invoke_lrc(recorder, dp, "Echo", ("no scheduler given",))
    recorder.wait_finished(module_scheduler)
    subs.unsubscribe_lrc_events()
    assert recorder.results() == [[ResultCode.OK, "no scheduler given"]]
    assert recorder.statuses() == NORMAL_RUN
    assert module_callback_scheduler() is module_scheduler
    assert module_scheduler.diagnostics().totals.received > received_before
    assert threading.current_thread().name not in recorder.threads
    wait_for(
        lambda: registered_callbacks(module_scheduler, device) == 0,
        DEADLINE,
        message="callbacks left in the module scheduler",
    )


def test_terminal_status_unregisters_by_itself(device: str, sched: CallbackScheduler) -> None:
    """Without unsubscribe_lrc_events the invocation cleans up after a terminal status."""
    recorder = LrcRecorder()
    recorder.handle = invoke_lrc(
        recorder, tango.DeviceProxy(device), "Complete", callback_scheduler=sched
    )
    recorder.wait_finished(sched)
    wait_for(
        lambda: device_streams(sched, device) == [],
        DEADLINE,
        message=lambda: f"streams left: {device_streams(sched, device)}",
    )
    wait_for(
        lambda: sched.diagnostics().totals.unsubscribe_calls >= 1,
        DEADLINE,
        message="an unsubscribe call",
    )


@pytest.mark.usefixtures("kept_connection")
def test_progress_updates_arrive_in_order(device: str, sched: CallbackScheduler) -> None:
    """Progress reported by the device reaches the callback in order, before the end."""
    recorder = LrcRecorder()
    recorder.handle = invoke_lrc(
        recorder, tango.DeviceProxy(device), "Progress", (5,), callback_scheduler=sched
    )
    recorder.wait_finished(sched)
    progress = [c["progress"] for c in recorder.calls if "progress" in c]
    assert progress == [1, 2, 3, 4, 5]
    assert recorder.calls[-1]["status"] == TaskStatus.COMPLETED


def test_v1_result_comes_before_the_terminal_status(
    lrc_server: LrcServer, sched: CallbackScheduler
) -> None:
    """Version 1 pushes the result first; the client keeps that order, every time."""
    dp = tango.DeviceProxy(lrc_server.v1)
    for _ in range(10):
        recorder = LrcRecorder()
        recorder.handle = invoke_lrc(recorder, dp, "Complete", callback_scheduler=sched)
        recorder.wait_finished(sched)
        keys = [next(iter(c)) for c in recorder.calls]
        assert keys[-2:] == ["result", "status"], recorder.calls


# --------------------------------------------------------------------------- connect_lrc_interface


def test_spec_connect_lrc_interface(device: str, sched: CallbackScheduler) -> None:
    """After connect_lrc_interface, 20 invocations make no subscribe/unsubscribe call."""
    dp = tango.DeviceProxy(device)
    counter = SubscriptionCallCounter(dp)
    connect_lrc_interface(dp, sched)
    version = 2 if device.endswith("/v2") else 1
    attributes = lrc_attribute_names(version)
    assert counter.subscribe == len(attributes)
    streams = device_streams(sched, device)
    assert sorted(s.attribute.lower() for s in streams) == sorted(a.lower() for a in attributes)
    assert all(s.pinned for s in streams)
    before = sched.diagnostics().totals

    for n in range(20):
        recorder = LrcRecorder()
        subs = invoke_lrc(recorder, dp, "Echo", (f"call {n}",), callback_scheduler=sched)
        assert recorder.has_result.wait(DEADLINE), recorder.calls
        subs.unsubscribe_lrc_events()
        assert recorder.results() == [[ResultCode.OK, f"call {n}"]]

    after = sched.diagnostics().totals
    assert (counter.subscribe, counter.unsubscribe) == (len(attributes), 0)
    assert after.subscribe_calls == before.subscribe_calls
    assert after.unsubscribe_calls == before.unsubscribe_calls
    assert registered_callbacks(sched, device) == 0
    assert len(device_streams(sched, device)) == len(attributes)

    disconnect_lrc_interface(dp, sched)
    wait_for(
        lambda: device_streams(sched, device) == [],
        DEADLINE,
        message=lambda: f"streams left: {device_streams(sched, device)}",
    )
    wait_for(
        lambda: counter.unsubscribe == len(attributes),
        DEADLINE,
        message=lambda: f"{counter.unsubscribe} unsubscribe calls",
    )
    wait_for(
        lambda: (
            sched.diagnostics().totals.unsubscribe_calls
            == before.unsubscribe_calls + len(attributes)
        ),
        DEADLINE,
        message="unsubscribe calls counted by the scheduler",
    )


def test_disconnect_without_connect_is_an_error(
    lrc_server: LrcServer, sched: CallbackScheduler
) -> None:
    """Releasing an interface that was never connected raises StreamNotFoundError."""
    with pytest.raises(StreamNotFoundError):
        disconnect_lrc_interface(tango.DeviceProxy(lrc_server.v2), sched)


# --------------------------------------------------------------------------- load


@pytest.mark.timeout(600)
@pytest.mark.parametrize("pinned", [False, True], ids=["unpinned", "pinned"])
def test_fifty_concurrent_invocations(device: str, sched: CallbackScheduler, pinned: bool) -> None:
    """50 LRCs started at once on one device each get their own result, and only it."""
    count = 50
    dp = tango.DeviceProxy(device)
    if pinned:
        connect_lrc_interface(dp, sched)
    recorders = [LrcRecorder() for _ in range(count)]
    barrier = threading.Barrier(count)

    def start(index: int) -> str:
        with tango.EnsureOmniThread():
            barrier.wait(DEADLINE)
            subs = invoke_lrc(
                recorders[index], dp, "Echo", (f"message {index}",), callback_scheduler=sched
            )
            recorders[index].handle = subs
            return subs.command_id

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        ids = list(pool.map(start, range(count)))
    assert len(set(ids)) == count
    for index, recorder in enumerate(recorders):
        recorder.wait_finished(sched)
        assert recorder.results() == [[ResultCode.OK, f"message {index}"]], recorder.calls
        assert recorder.statuses()[-1] == TaskStatus.COMPLETED
        assert recorder.errors() == []
    wait_for(lambda: registered_callbacks(sched, device) == 0, DEADLINE, message="callbacks left")
    if pinned:
        disconnect_lrc_interface(dp, sched)
    assert sched.diagnostics().totals.dropped == 0


@pytest.mark.timeout(300)
def test_slow_lrc_callback_does_not_hold_up_another_stream(
    lrc_server: LrcServer, event_source: EventSourceServer
) -> None:
    """With two workers, another stream is served while a 0.5 s LRC callback runs."""
    scheduler = CallbackScheduler(thread_count=2, name="lrc-slow")
    try:
        inside = threading.Event()
        lrc_done = threading.Event()

        def slow_lrc_callback(**kwargs: Any) -> None:
            inside.set()
            time.sleep(0.5)
            inside.clear()
            if kwargs.get("status") in TERMINAL_STATUSES:
                lrc_done.set()

        seen: list[tuple[float, bool]] = []

        def other_callback(event: Any) -> None:
            if not event.err and event.attr_value is not None:
                seen.append((time.monotonic(), inside.is_set()))

        source = tango.DeviceProxy(event_source.trls[0])
        scheduler.register_event_callback(source, "myAttr1", CHANGE, other_callback).result(
            DEADLINE
        )
        wait_for(lambda: len(seen) >= 1, DEADLINE, message="first event of myAttr1")
        seen.clear()

        dp = tango.DeviceProxy(lrc_server.v2)
        connect_lrc_interface(dp, scheduler)
        # STAGING, QUEUED, IN_PROGRESS, 8 progress updates and COMPLETED: 12 calls of 0.5 s.
        handles: list[Any] = []
        invoker = threading.Thread(
            target=lambda: handles.append(
                invoke_lrc(slow_lrc_callback, dp, "Progress", (8,), callback_scheduler=scheduler)
            )
        )
        invoker.start()
        pushes: list[float] = []
        for _ in range(8):
            wait_for(inside.is_set, DEADLINE, message="slow LRC callback running")
            pushes.append(time.monotonic())
            source.Push("myAttr1")
            time.sleep(0.2)
        wait_for(lambda: len(seen) >= len(pushes), DEADLINE, message="myAttr1 events")
        still_running = not lrc_done.is_set()
        invoker.join(DEADLINE)
        assert lrc_done.wait(DEADLINE)
        delays = [round(t - p, 3) for (t, _), p in zip(seen, pushes, strict=True)]
        print(f"myAttr1 delivery delays while the LRC callback was busy: {delays}")
        assert still_running, "the other stream waited for the slow LRC callback to finish"
        assert any(during for _, during in seen), "never served during a slow LRC callback"
        disconnect_lrc_interface(dp, scheduler)
    finally:
        scheduler.shutdown(timeout=30)


@pytest.mark.timeout(300)
def test_dropped_lrc_events_are_reported(
    lrc_server: LrcServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If updates pile up beyond the LRC bounds, the callback is told, then still finishes."""
    # Small bounds, so that far fewer events than Tango itself can lose in a burst
    # are enough to overflow them.
    queue_size = 64
    monkeypatch.setattr(lrc, "LRC_QUEUE_SIZE", queue_size)
    scheduler = CallbackScheduler(thread_count=1, name="lrc-drops")
    release = threading.Event()
    try:
        recorder = LrcRecorder()

        def blocking_callback(**kwargs: Any) -> None:
            recorder(**kwargs)
            if "progress" in kwargs:
                release.wait(DEADLINE)

        dp = tango.DeviceProxy(lrc_server.v2)
        steps = 1000
        subs = invoke_lrc(blocking_callback, dp, "Progress", (steps,), callback_scheduler=scheduler)

        def finished_on_the_device() -> bool:
            flat = list(dp.read_attribute("longRunningCommandStatus").value or ())
            pairs = dict(zip(flat[::2], flat[1::2], strict=True))
            return bool(pairs.get(subs.command_id) == "COMPLETED")

        wait_for(finished_on_the_device, DEADLINE, message="the device finished pushing")
        # Let the events still in flight reach the scheduler: the client side must see
        # more than the queue and the pending calls can hold before we unblock it. (The
        # stream itself may be gone already: the invocation lets go of it as soon as it
        # has seen the terminal status, with calls still pending.)
        last = [-1]

        def received_settled() -> bool:
            now = scheduler.diagnostics().totals.received
            settled = now == last[0]
            last[0] = now
            return settled

        wait_for(received_settled, DEADLINE, interval=1.0, message="events still arriving")
        assert last[0] > 2 * queue_size + 10, (
            f"only {last[0]} events reached the client; "
            f"streams: {device_streams(scheduler, lrc_server.v2)}; calls: {recorder.calls}"
        )
        release.set()
        recorder.wait_finished(scheduler)
        errors = recorder.errors()
        assert errors, "the callback was not told about the dropped updates"
        assert errors[0][0].reason == EVENTS_DROPPED_REASON
        assert recorder.statuses()[-1] == TaskStatus.COMPLETED
        assert recorder.results() == [[ResultCode.OK, f"Progress reported {steps} steps completed"]]
        progress = [c["progress"] for c in recorder.calls if "progress" in c]
        assert progress == sorted(progress)
        assert len(progress) < steps
        print(
            f"{steps} progress updates pushed, {len(progress)} delivered; "
            f"scheduler dropped {scheduler.diagnostics().totals.dropped}; errors: "
            f"{[e[0].desc for e in errors]}"
        )
    finally:
        release.set()
        scheduler.shutdown(timeout=30)


# --------------------------------------------------------------------------- outcomes and errors


def test_failing_command(device: str, sched: CallbackScheduler) -> None:
    """A task that fails ends FAILED with the device's message."""
    recorder = LrcRecorder()
    recorder.handle = invoke_lrc(
        recorder, tango.DeviceProxy(device), "Fail", callback_scheduler=sched
    )
    recorder.wait_finished(sched)
    assert recorder.statuses()[-1] == TaskStatus.FAILED
    assert recorder.results() == [[ResultCode.FAILED, "Fail: the task failed on purpose"]]


def test_command_rejected_in_the_reply(device: str, sched: CallbackScheduler) -> None:
    """A REJECTED reply raises CommandError; the callback is never called."""
    recorder = LrcRecorder()
    with pytest.raises(CommandError, match="refuses"):
        invoke_lrc(recorder, tango.DeviceProxy(device), "RejectNow", callback_scheduler=sched)
    time.sleep(0.5)  # give stray events a chance to show up
    assert recorder.calls == []
    wait_for(lambda: registered_callbacks(sched, device) == 0, DEADLINE, message="callbacks left")


@pytest.mark.usefixtures("kept_connection")
def test_command_rejected_after_queueing(device: str, sched: CallbackScheduler) -> None:
    """QUEUED, then REJECTED by event: reported to the callback, which is then released."""
    recorder = LrcRecorder()
    recorder.handle = invoke_lrc(
        recorder, tango.DeviceProxy(device), "RejectLater", callback_scheduler=sched
    )
    recorder.wait_finished(sched)
    assert recorder.statuses() == [TaskStatus.STAGING, TaskStatus.QUEUED, TaskStatus.REJECTED]
    assert recorder.results() == [[ResultCode.NOT_ALLOWED, "RejectLater: command is not allowed"]]
    wait_for(lambda: registered_callbacks(sched, device) == 0, DEADLINE, message="callbacks left")


def test_unexpected_result_code(device: str, sched: CallbackScheduler) -> None:
    """A reply code other than QUEUED/STARTED/REJECTED raises ResultCodeError."""
    with pytest.raises(ResultCodeError, match="OK"):
        invoke_lrc(
            LrcRecorder(),
            tango.DeviceProxy(device),
            "ReplyWithCode",
            (0,),
            callback_scheduler=sched,
        )
    wait_for(lambda: registered_callbacks(sched, device) == 0, DEADLINE, message="callbacks left")


def test_unknown_command(device: str, sched: CallbackScheduler) -> None:
    """An invocation failure keeps Tango's errors first and adds SKA_InvokeLrcFailed last."""
    with pytest.raises(tango.DevFailed) as info:
        invoke_lrc(
            LrcRecorder(), tango.DeviceProxy(device), "NoSuchCommand", callback_scheduler=sched
        )
    reasons = [error.reason for error in info.value.args]
    assert reasons[0] == "API_CommandNotFound"
    assert reasons[-1] == INVOKE_FAILED_REASON
    wait_for(lambda: registered_callbacks(sched, device) == 0, DEADLINE, message="callbacks left")


def test_no_common_protocol_version(lrc_server: LrcServer, sched: CallbackScheduler) -> None:
    """A device advertising only versions 3 to 4 is refused, naming both ranges."""
    with pytest.raises(NoCommonProtocolVersionError) as info:
        invoke_lrc(
            LrcRecorder(), tango.DeviceProxy(lrc_server.v34), "Complete", callback_scheduler=sched
        )
    assert info.value.server_versions == (3, 4)
    assert info.value.client_versions == (1, 2)
    assert "3 to 4" in str(info.value)
    assert "1 to 2" in str(info.value)
    assert device_streams(sched, lrc_server.v34) == []


def test_subscription_failure(lrc_server: LrcServer, sched: CallbackScheduler) -> None:
    """LRC attributes without change events: DevFailed with SKA_InvokeLrcFailed last."""
    recorder = LrcRecorder()
    with pytest.raises(tango.DevFailed) as info:
        invoke_lrc(
            recorder, tango.DeviceProxy(lrc_server.silent), "Complete", callback_scheduler=sched
        )
    reasons = [error.reason for error in info.value.args]
    assert reasons[-1] == INVOKE_FAILED_REASON
    assert len(reasons) >= 2
    assert recorder.calls == []
    wait_for(
        lambda: registered_callbacks(sched, lrc_server.silent) == 0,
        DEADLINE,
        message="callbacks left",
    )


def test_device_not_running(
    device_server_factory: DeviceServerFactory,
    sched: CallbackScheduler,
    tango_database: TangoDatabase,
) -> None:
    """A device that is defined but not running: DevFailed with SKA_InvokeLrcFailed last."""
    name = f"test/{device_server_factory.unique_name('lrcdown')}/1"
    process = device_server_factory(
        f"{LRC_SERVER_NAME}/{device_server_factory.unique_name('down')}",
        [name],
        device_class=LRC_SERVER_NAME,
        module=LRC_MODULE,
        start=False,
    )
    process.register()
    with pytest.raises(tango.DevFailed) as info:
        invoke_lrc(
            LrcRecorder(),
            tango.DeviceProxy(tango_database.trl(name)),
            "Complete",
            callback_scheduler=sched,
        )
    assert info.value.args[-1].reason == INVOKE_FAILED_REASON
    assert len(info.value.args) >= 2


def test_callback_without_kwargs(lrc_server: LrcServer, sched: CallbackScheduler) -> None:
    """A callback that cannot take **kwargs is refused before the command runs."""

    def narrow(status: Any = None, result: Any = None) -> None:
        pass

    with pytest.raises(ValueError, match="kwargs"):
        invoke_lrc(narrow, tango.DeviceProxy(lrc_server.v2), "Complete", callback_scheduler=sched)
    assert device_streams(sched, lrc_server.v2) == []


def test_abort_commands(device: str, sched: CallbackScheduler) -> None:
    """A STARTED reply works too: AbortCommands ends a slow task ABORTED."""
    dp = tango.DeviceProxy(device)
    slow = LrcRecorder()
    slow.handle = invoke_lrc(slow, dp, "Slow", (60.0,), callback_scheduler=sched)
    wait_for(
        lambda: TaskStatus.IN_PROGRESS in slow.statuses(), DEADLINE, message="slow task running"
    )
    abort = LrcRecorder()
    subs = invoke_lrc(abort, dp, "AbortCommands", callback_scheduler=sched)
    assert subs.command_id.endswith("_AbortCommands")
    abort.wait_finished(sched)
    slow.wait_finished(sched)
    assert abort.statuses()[-1] == TaskStatus.COMPLETED
    assert slow.statuses()[-1] == TaskStatus.ABORTED
    assert slow.results() == [[ResultCode.ABORTED, "Slow aborted"]]


# --------------------------------------------------------------------------- ska-tango-base


def test_invoke_lrc_accepts_a_trl(device: str, sched: CallbackScheduler) -> None:
    """A TRL string works where a DeviceProxy does, as register_event_callback allows."""
    recorder = LrcRecorder()
    subs = invoke_lrc(recorder, device, "Echo", ("by name",), callback_scheduler=sched)
    recorder.wait_finished(sched)
    assert recorder.results() == [[ResultCode.OK, "by name"]]
    assert subs.command_id.endswith("_Echo")


def test_invoke_lrc_with_an_unknown_trl(sched: CallbackScheduler) -> None:
    """A TRL of a device that is not defined: DevFailed with SKA_InvokeLrcFailed last."""
    with pytest.raises(tango.DevFailed) as info:
        invoke_lrc(LrcRecorder(), "test/no/such-device", "Complete", callback_scheduler=sched)
    assert info.value.args[-1].reason == INVOKE_FAILED_REASON
    assert info.value.args[0].reason != INVOKE_FAILED_REASON


def test_dropped_handle_stops_the_callbacks(device: str, sched: CallbackScheduler) -> None:
    """Dropping the handle at once: the callback hears little or nothing, and is released."""
    recorder = LrcRecorder()
    invoke_lrc(recorder, tango.DeviceProxy(device), "Slow", (1.0,), callback_scheduler=sched)
    wait_for(lambda: registered_callbacks(sched, device) == 0, DEADLINE, message="callbacks left")
    time.sleep(1.5)  # the command ends on the device meanwhile
    assert TaskStatus.COMPLETED not in recorder.statuses(), recorder.calls


@pytest.mark.parametrize("connect", [False, True], ids=["invoke", "connect-and-invoke"])
def test_invoke_lrc_on_itself_from_one_of_its_commands(device: str, connect: bool) -> None:
    """A device's command calls invoke_lrc (and connect_lrc_interface) on the device itself."""
    dp = tango.DeviceProxy(device)
    dp.set_timeout_millis(20_000)
    command_id = dp.InvokeOnItself(["Complete", *(["connect"] if connect else [])])
    assert command_id.endswith("_Complete")

    def finished() -> bool:
        calls = json.loads(dp.selfInvocationCalls)
        return any(call.get("status") == int(TaskStatus.COMPLETED) for call in calls)

    wait_for(finished, DEADLINE, message=lambda: f"calls: {dp.selfInvocationCalls}")
    calls = json.loads(dp.selfInvocationCalls)
    assert [c["result"] for c in calls if "result" in c] == [[0, "Complete completed"]]


def test_invoke_lrc_from_the_only_worker_warns(
    lrc_server: LrcServer, caplog: pytest.LogCaptureFixture
) -> None:
    """invoke_lrc from the one worker of a 1-thread scheduler logs why waiting there hangs."""
    scheduler = CallbackScheduler(thread_count=1, name="lrc-one-worker")
    try:
        source_done = threading.Event()
        handles: list[Any] = []
        recorder = LrcRecorder()

        def on_event(event: Any) -> None:
            if not handles:
                handles.append(
                    invoke_lrc(
                        recorder,
                        tango.DeviceProxy(lrc_server.v2),
                        "Complete",
                        callback_scheduler=scheduler,
                    )
                )
            source_done.set()

        scheduler.register_event_callback(lrc_server.v2, "State", CHANGE, on_event)
        assert source_done.wait(DEADLINE)
        recorder.wait_finished(scheduler)
        assert any("only worker" in r.getMessage() for r in caplog.records), caplog.text
    finally:
        scheduler.shutdown(timeout=30)


# --------------------------------------------------------------------------- missed updates


def _drop_events_of(monkeypatch: pytest.MonkeyPatch, suffix: str) -> list[int]:
    """Fault point: the client never receives events about commands whose id ends in suffix.

    As if they were pushed while the client had no subscription. Returns a list whose
    length counts the events dropped.
    """
    dropped: list[int] = []
    original = _streams.EventStream._tango_callback

    def patched(self: _streams.EventStream, generation: int) -> Any:
        inner = original(self, generation)

        def on_event(event: Any) -> None:
            value = getattr(getattr(event, "attr_value", None), "value", None)
            outcome = _compat.is_subscription_outcome(event)
            if not outcome and value is not None and any(str(v).endswith(suffix) for v in value):
                dropped.append(1)
                return
            inner(event)

        return on_event

    monkeypatch.setattr(_streams.EventStream, "_tango_callback", patched)
    return dropped


def test_an_invocation_that_missed_every_event_catches_up(
    device: str, sched: CallbackScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every event of the command is lost: the state is read from the device instead."""
    dropped = _drop_events_of(monkeypatch, "_Echo")
    recorder = LrcRecorder()
    subs = invoke_lrc(
        recorder, tango.DeviceProxy(device), "Echo", ("caught up",), callback_scheduler=sched
    )
    recorder.wait_finished(sched)
    assert dropped, "the fault point dropped nothing"
    assert recorder.statuses()[-1] == TaskStatus.COMPLETED
    assert recorder.results() == [[ResultCode.OK, "caught up"]]
    wait_for(lambda: registered_callbacks(sched, device) == 0, DEADLINE, message="callbacks left")
    subs.unsubscribe_lrc_events()


# --------------------------------------------------------------------------- device death


def _lrc_process(factory: DeviceServerFactory, database: TangoDatabase, key: str) -> str:
    props = {"v2": {}, "v1": {"LrcProtocolVersions": ["1", "1"]}}[key]
    return _start_lrc_server(factory, database, {key: props})[key]


def _ended(recorder: LrcRecorder) -> bool:
    with recorder.lock:
        for call in recorder.calls:
            if call.get("status") in (*TERMINAL_STATUSES, TaskStatus.NOT_FOUND):
                return True
            if "error" in call and call["error"][0].reason == lrc.OUTCOME_LOST_REASON:
                return True
    return False


@pytest.mark.timeout(300)
def test_lrc_ends_when_its_device_dies(
    device_server_factory: DeviceServerFactory,
    tango_database: TangoDatabase,
    sched: CallbackScheduler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kill -9 mid-command, the device stays away: error events, then a final error=."""
    monkeypatch.setattr(lrc, "OUTCOME_LOST_AFTER", 5.0)
    trl = _lrc_process(device_server_factory, tango_database, "v2")
    recorder = LrcRecorder()
    subs = invoke_lrc(recorder, tango.DeviceProxy(trl), "Slow", (120.0,), callback_scheduler=sched)
    wait_for(
        lambda: TaskStatus.IN_PROGRESS in recorder.statuses(), DEADLINE, message="task running"
    )
    died = time.monotonic()
    device_server_factory.processes[-1].kill()
    wait_for(lambda: _ended(recorder), 120.0, message=lambda: f"no end: {recorder.calls}")
    delay = time.monotonic() - died
    errors = recorder.errors()
    assert all(isinstance(e, tango.DevError) for e in errors[0])
    assert errors[0][0].reason != EVENTS_DROPPED_REASON
    assert errors[-1][0].reason == lrc.OUTCOME_LOST_REASON
    assert "lost" in errors[-1][0].desc
    print(f"from kill -9 to the final error=: {delay:.1f} s")
    wait_for(lambda: registered_callbacks(sched, trl) == 0, DEADLINE, message="callbacks")
    count = len(recorder.calls)
    time.sleep(1.0)
    assert len(recorder.calls) == count
    subs.unsubscribe_lrc_events()


@pytest.mark.timeout(300)
def test_a_frozen_device_is_given_up_counting_from_its_last_sign_of_life(
    device_server_factory: DeviceServerFactory,
    tango_database: TangoDatabase,
    sched: CallbackScheduler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGSTOP mid-command: the final error= comes once OUTCOME_LOST_AFTER has passed.

    The server answers nothing once stopped, so its last sign of life (an event
    or an answered status check) came before ``stopped``. The final call must
    not come before ``OUTCOME_LOST_AFTER`` has passed since then, and it must
    come. The clock used to start at the first error event, about 10 s into
    the hang; the printed delay shows how long it now takes.
    """
    lost_after = 8.0
    monkeypatch.setattr(lrc, "OUTCOME_LOST_AFTER", lost_after)
    trl = _lrc_process(device_server_factory, tango_database, "v2")
    process = device_server_factory.processes[-1]
    recorder = LrcRecorder()
    subs = invoke_lrc(recorder, tango.DeviceProxy(trl), "Slow", (300.0,), callback_scheduler=sched)
    wait_for(
        lambda: TaskStatus.IN_PROGRESS in recorder.statuses(), DEADLINE, message="task running"
    )
    time.sleep(3.0)  # a few answered status checks: signs of life before the freeze
    pid = process.pid
    assert pid is not None
    stopped = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: _ended(recorder), 120.0, message=lambda: f"no end: {recorder.calls}")
        ended = time.monotonic()
    finally:
        os.kill(pid, signal.SIGCONT)
    errors = recorder.errors()
    final = errors[-1][0]
    print(f"from SIGSTOP to the final error=: {ended - stopped:.1f} s ({final.desc})")
    assert final.reason == lrc.OUTCOME_LOST_REASON
    assert ended - stopped >= lost_after, "given up before OUTCOME_LOST_AFTER had passed"
    assert "gave no sign of life for" in final.desc
    silent_for = float(final.desc.split("gave no sign of life for ")[1].split(" s")[0])
    assert silent_for >= lost_after - 0.5  # printed rounded to whole seconds
    # The clock ran from the last sign of life, before the freeze: the silence it
    # reports spans the whole freeze (less rounding, and the delivery of the call).
    # It used to run from the first error, and said 9 s after a 21 s freeze.
    assert silent_for >= (ended - stopped) - 3.0, "the clock did not start at the freeze"
    # Exactly one terminal call, and nothing after it.
    wait_for(lambda: registered_callbacks(sched, trl) == 0, DEADLINE, message="callbacks")
    count = len(recorder.calls)
    time.sleep(1.0)
    assert len(recorder.calls) == count
    assert sum(1 for e in recorder.errors() if e[0].reason == lrc.OUTCOME_LOST_REASON) == 1
    subs.unsubscribe_lrc_events()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("version", ["v2", "v1"])
def test_lrc_ends_not_found_when_its_device_restarts(
    device_server_factory: DeviceServerFactory,
    tango_database: TangoDatabase,
    sched: CallbackScheduler,
    version: str,
) -> None:
    """kill -9 mid-command and restart: the restarted device does not know it: NOT_FOUND."""
    trl = _lrc_process(device_server_factory, tango_database, version)
    recorder = LrcRecorder()
    subs = invoke_lrc(recorder, tango.DeviceProxy(trl), "Slow", (120.0,), callback_scheduler=sched)
    wait_for(
        lambda: TaskStatus.IN_PROGRESS in recorder.statuses(), DEADLINE, message="task running"
    )
    process = device_server_factory.processes[-1]
    died = time.monotonic()
    process.kill()
    process.start()
    wait_for(lambda: _ended(recorder), 120.0, message=lambda: f"no end: {recorder.calls}")
    print(f"from kill -9 and restart to NOT_FOUND: {time.monotonic() - died:.1f} s")
    assert recorder.statuses()[-1] == TaskStatus.NOT_FOUND
    wait_for(lambda: registered_callbacks(sched, trl) == 0, DEADLINE, message="callbacks")
    subs.unsubscribe_lrc_events()
