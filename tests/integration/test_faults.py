"""Fault injection against real processes: hung hosts, restarts, late subscribers, bad input.

Every scenario runs real Tango processes on 127.0.0.1: the test database, event
source servers that are killed with SIGKILL and restarted, and a TCP port that
accepts connections but never answers (:class:`SilentHost`).
"""

from __future__ import annotations

import inspect
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import tango

from ska_tango_scheduler import CallbackScheduler, UnknownCallbackError, _compat
from ska_tango_scheduler.control_model import ResultCode
from ska_tango_scheduler.long_running_commands import invoke_lrc, module_callback_scheduler
from ska_tango_scheduler.testing import (
    SilentHost,
    TangoDatabase,
    event_source_process,
    free_port,
    wait_for,
)
from ska_tango_scheduler.testing.lrc_device import LRC_SERVER_NAME
from ska_tango_scheduler.testing.pytest_plugin import DeviceServerFactory

CHANGE = tango.EventType.CHANGE_EVENT
ASYNC = hasattr(tango, "EventSubMode")


# The conftest fixture ``recorder`` makes Recorder objects.
MakeRecorder = Callable[..., Any]


def _ignore(event: Any) -> None:
    """A callback for streams whose events do not matter."""


def _scheduler(**kwargs: Any) -> CallbackScheduler:
    """A scheduler; ``attempt_timeout`` only where the scheduler has it."""
    known = inspect.signature(CallbackScheduler).parameters
    return CallbackScheduler(**{k: v for k, v in kwargs.items() if k in known})


@pytest.fixture
def silent() -> Iterator[SilentHost]:
    with SilentHost() as host:
        yield host


# -- 1. a hung host costs only its own streams ------------------------------------------------


def test_hung_hosts_do_not_delay_a_healthy_registration(
    silent: SilentHost,
    event_source: Any,
    recorder: MakeRecorder,
) -> None:
    # Each attempt on the silent host is bounded far beyond this test, so the
    # healthy stream must connect while all five are still in flight.
    # PyTango < 10.1: register_event_callback would wait for each hung subscription.
    sched = _scheduler(name="hung", attempt_timeout=120.0, wait_for_subscription=False)
    try:
        hung = [
            sched.register_event_callback(silent.trl(f"hung/dev/{i}"), "state", CHANGE, _ignore)
            for i in range(5)
        ]
        wait_for(
            lambda: silent.connections >= 1,
            timeout=30,
            message="the silent host to see a connection attempt",
        )
        rec = recorder()
        healthy = sched.register_event_callback(event_source.trls[0], "myAttr1", CHANGE, rec)
        healthy.result(timeout=60)
        wait_for(lambda: rec.values(), timeout=30, message="no first value")
        assert not any(f.done() for f in hung), "the healthy stream waited for the hung ones"
        states = {s.device: s.state for s in sched.diagnostics().streams}
        assert states[event_source.trls[0].lower()] == "connected"
    finally:
        started = time.monotonic()
        sched.shutdown(timeout=10)
        assert time.monotonic() - started < 30
    assert not any(t.is_alive() for t in sched.threads)


def test_invoke_lrc_unaffected_by_hung_hosts(
    silent: SilentHost, device_server_factory: Any
) -> None:
    server = device_server_factory(
        f"{LRC_SERVER_NAME}/{device_server_factory.unique_name('lrchung')}",
        [f"test/{device_server_factory.unique_name('lrchung')}/1"],
        device_class=LRC_SERVER_NAME,
        module="ska_tango_scheduler.testing.lrc_device",
    )
    proxy = tango.DeviceProxy(server.trls[0])
    shared = module_callback_scheduler()
    own = _scheduler(name="lrc-hung", attempt_timeout=120.0, wait_for_subscription=False)
    shared_hung: Any = None
    try:
        shared_hung = shared.register_event_callback(
            silent.trl("hung/lrc/0"), "state", CHANGE, _ignore
        )
        for i in (1, 2):
            own.register_event_callback(silent.trl(f"hung/lrc/{i}"), "state", CHANGE, _ignore)
        wait_for(
            lambda: silent.connections >= 1,
            timeout=30,
            message="the silent host to see a connection attempt",
        )
        for scheduler in (own, None):
            done = threading.Event()
            results: list[Any] = []

            def callback(
                results: list[Any] = results, done: threading.Event = done, **kwargs: Any
            ) -> None:
                if "result" in kwargs:
                    results.append(kwargs["result"])
                    done.set()

            if scheduler is None:
                subs = invoke_lrc(callback, proxy, "Complete")
            else:
                subs = invoke_lrc(callback, proxy, "Complete", callback_scheduler=scheduler)
            assert done.wait(60), "no result with hung hosts in the scheduler"
            subs.unsubscribe_lrc_events()
            assert results and results[0][0] == ResultCode.OK
    finally:
        own.shutdown(timeout=10)
        # Leave the shared module scheduler as it was.
        if shared_hung is not None:
            shared_hung.add_done_callback(lambda f: shared.unregister_callback(f.result()))


# Registered by a child process before it imports the package: atexit runs its hooks
# last in, first out, so this one runs after the package's exit sequence, every time,
# and reports what that sequence left behind (a deterministic check, where an abort
# at finalisation is a race).
_CHECK_AT_EXIT = textwrap.dedent(
    """
    import atexit, gc


    def check_everything_ended():
        import tango
        from ska_tango_scheduler import CallbackScheduler

        objects = gc.get_objects()
        running = sorted(
            o.name for o in objects if isinstance(o, CallbackScheduler) and not o.is_shutdown
        )
        subscribed = sum(
            len(o.__dict__.get("_subscribed_events", {}))
            for o in objects
            if isinstance(o, tango.DeviceProxy)
        )
        print(f"at exit: running {running}, subscriptions {subscribed}", flush=True)


    atexit.register(check_everything_ended)
    """
)
_ALL_ENDED = "at exit: running [], subscriptions 0"

_EXIT_SCRIPT = _CHECK_AT_EXIT + textwrap.dedent(
    """
    import sys, time
    import tango
    from ska_tango_scheduler import CallbackScheduler


    class SlowToFinalise:
        # Keeps the interpreter finalising for 10 s: a thread that comes back
        # from Tango meanwhile aborts the process ("terminate called ...").
        def __del__(self, sleep=time.sleep):
            sleep(10.0)


    sched = CallbackScheduler(name="exiting")
    for trl in sys.argv[2:]:
        sched.register_event_callback(trl, "state", tango.EventType.CHANGE_EVENT, lambda e: None)
    time.sleep(1.0)
    if sys.argv[1] == "shutdown":
        sched.shutdown(timeout=2)
    if sys.argv[1] == "slow-exit":
        slow = SlowToFinalise()
    print("leaving", flush=True)
    """
)


@pytest.mark.parametrize("ending", ["exit", "shutdown", "slow-exit"])
def test_process_exits_cleanly_with_attempts_stuck(silent: SilentHost, ending: str) -> None:
    trls = [silent.trl(f"hung/dev/{i}") for i in range(3)]
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, ending, *trls],
        capture_output=True,
        text=True,
        timeout=90,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "leaving" in done.stdout
    assert _ALL_ENDED in done.stdout, done.stdout[-2000:]


_EVENTS_AT_EXIT_SCRIPT = (
    textwrap.dedent(
        """
    import atexit, gc, sys, time


    def hold_the_gil():
        # The last exit hook: holds the GIL in C code for a while, so that
        # Tango's event thread, which is delivering an event, waits for it
        # past the start of finalisation (then Python ends that thread with
        # a forced unwind, and Tango's catch-all aborts the process).
        sum(range(30_000_000))


    class SlowToFinalise:
        # Lets go of the GIL once finalisation has begun.
        def __del__(self, sleep=time.sleep):
            sleep(2.0)


    atexit.register(hold_the_gil)  # before any other exit hook: it runs last
    """
    )
    + _CHECK_AT_EXIT
    + textwrap.dedent(
        """
    import tango
    from ska_tango_scheduler import CallbackScheduler


    seen = []
    sched = CallbackScheduler(name="events-at-exit")
    for attr in ("myAttr1", "myAttr2"):
        sched.register_event_callback(
            sys.argv[1], attr, tango.EventType.CHANGE_EVENT, seen.append
        ).result(timeout=30)
    del sched  # the caller drops the scheduler: it still runs
    gc.collect()
    deadline = time.monotonic() + 30
    while len(seen) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    slow = SlowToFinalise()
    print("leaving", len(seen), flush=True)
    """
    )
)


def test_process_exits_cleanly_while_events_flow(
    device_server_factory: DeviceServerFactory,
) -> None:
    """A process that exits without shutting its scheduler down, under live events."""
    process = device_server_factory.event_source(1)
    source = tango.DeviceProxy(process.devices[0])
    source.StartPushing([[100.0, 100.0], ["myAttr1", "myAttr2"]])
    try:
        # The race is narrow even with the GIL held: a few exits (about 2 s each).
        for _ in range(3):
            done = subprocess.run(
                [sys.executable, "-c", _EVENTS_AT_EXIT_SCRIPT, process.trls[0]],
                capture_output=True,
                text=True,
                timeout=90,
                env=dict(os.environ),
            )
            assert "leaving" in done.stdout, done.stderr[-2000:]
            # Deterministic: the exit sequence shut the scheduler down and
            # cancelled every subscription while events still flowed.
            assert _ALL_ENDED in done.stdout, done.stdout[-2000:]
            assert "subscriptions" in done.stdout
            assert done.returncode == 0, done.stderr[-2000:]
    finally:
        source.StopPushing([])


# -- 2. late subscribers get the current value ------------------------------------------------


def test_second_callback_gets_the_current_value_without_a_duplicate(
    event_source: Any, recorder: MakeRecorder
) -> None:
    device = event_source.devices[2]
    tango.DeviceProxy(device).Push("myAttr3")
    with CallbackScheduler(name="late") as sched:
        first, second = recorder(), recorder()
        sched.register_event_callback(device, "myAttr3", CHANGE, first).result(timeout=30)
        wait_for(lambda: first.values(), timeout=30, message="no first value")
        current = first.values()[-1]
        sched.register_event_callback(device, "myAttr3", CHANGE, second).result(timeout=30)
        wait_for(lambda: second.values(), timeout=30, message="the late callback got nothing")
        assert second.values() == [current]
        time.sleep(0.5)
        assert first.values() == [current]  # no duplicate to the first callback
        pushed = tango.DeviceProxy(device).Push("myAttr3")
        wait_for(
            lambda: second.values()[-1:] == [pushed],
            timeout=30,
            message="the late callback to get the last pushed value",
        )
        wait_for(
            lambda: first.values()[-1:] == [pushed],
            timeout=30,
            message="the first callback to get the last pushed value",
        )
        assert first.values() == second.values() == [current, pushed]


def test_callback_on_a_pinned_stream_gets_the_current_value(
    event_source: Any, recorder: MakeRecorder
) -> None:
    device = event_source.devices[2]
    with CallbackScheduler(name="late-pinned") as sched:
        sched.connect_event_stream(device, "myAttr2", CHANGE).result(timeout=30)
        wait_for(
            lambda: sched.diagnostics().streams[0].received >= 1,
            timeout=30,
            message="the pinned stream to receive its first event",
        )
        current = int(tango.DeviceProxy(device).read_attribute("myAttr2").value)
        rec = recorder()
        sched.register_event_callback(device, "myAttr2", CHANGE, rec).result(timeout=30)
        wait_for(lambda: rec.values(), timeout=30, message="no value on the pinned stream")
        assert rec.values() == [current]


def test_callback_on_a_failing_stream_gets_the_last_error(
    event_source: Any,
    recorder: MakeRecorder,
) -> None:
    device = event_source.devices[2]
    with CallbackScheduler(name="late-error") as sched:
        first, second = recorder(), recorder()
        sched.register_event_callback(device, "noSuchAttr", CHANGE, first).result(timeout=30)
        wait_for(
            lambda: first.errors(), timeout=30, message="the first callback to get an error event"
        )
        sched.register_event_callback(device, "noSuchAttr", CHANGE, second).result(timeout=30)
        wait_for(lambda: second.errors(), timeout=30, message="no error for the late callback")
        assert second.errors()[0].errors[0].reason == "API_AttrNotFound"
        assert len(first.errors()) == len(second.errors()) or len(first.errors()) >= 2


# -- 3. one outage, one error episode ---------------------------------------------------------


def test_restart_gives_one_error_episode(
    device_server_factory: Any, recorder: MakeRecorder
) -> None:
    server = device_server_factory.event_source(1)
    device = server.devices[0]
    attrs = ["myAttr1", "myAttr2"]
    recs = {a: recorder() for a in attrs}
    with CallbackScheduler(name="restart") as sched:
        for attr in attrs:
            sched.register_event_callback(device, attr, CHANGE, recs[attr]).result(timeout=30)
        tango.DeviceProxy(device).command_inout("StartPushing", ([20.0, 20.0], attrs))
        wait_for(
            lambda: all(len(r.values()) >= 10 for r in recs.values()),
            timeout=30,
            message="ten values on each stream before the kill",
        )
        server.kill()
        killed = time.monotonic()
        time.sleep(10.0)
        server.start()
        restarted = time.monotonic()
        tango.DeviceProxy(device).command_inout("StartPushing", ([20.0, 20.0], attrs))

        def first_good(rec: Any) -> float | None:
            return next((t for t, e in rec.snapshot() if t > restarted and not e.err), None)

        wait_for(
            lambda: all(first_good(r) for r in recs.values()),
            timeout=60,
            message="a value on each stream after the restart",
        )
        time.sleep(12.0)  # the spurious error came 3 to 8 s after data resumed
        tango.DeviceProxy(device).command_inout("StopPushing", [])
        wait_for(
            lambda: sched.diagnostics().totals.queued == 0,
            timeout=30,
            message="the queues to drain after StopPushing",
        )
        streams = {s.attribute: s for s in sched.diagnostics().streams}
        for attr, rec in recs.items():
            events = rec.snapshot()
            resumed = first_good(rec)
            assert resumed is not None
            down = [e for t, e in events if killed < t < resumed and e.err]
            late = [e.errors[0].reason for t, e in events if t > resumed and e.err]
            assert down, f"{attr}: no error event while the server was down"
            assert late == [], f"{attr}: error events after data resumed"
            before = [int(e.attr_value.value) for t, e in events if t <= killed and not e.err]
            after = [int(e.attr_value.value) for t, e in events if t > killed and not e.err]
            assert len(before) == len(set(before)), f"{attr}: a value delivered twice"
            # Tango's keep-alive re-subscribes and reads the current value for the
            # callbacks; a push of that same value may have come through the new
            # subscription just before (seen under load on 9.5.1). So the first value
            # after the restart may come twice, back to back; no other may. (Our own
            # re-subscription racing the keep-alive also gave a second error episode,
            # which ``late`` above catches.)
            if len(after) > 1 and after[0] == after[1]:
                after = after[1:]
            assert len(after) == len(set(after)), f"{attr}: a value delivered twice: {after}"
            row = streams[attr]
            assert row.received == row.delivered + row.dropped + row.queued
            assert row.delivered == len(events)


# -- the database killed and restarted ---------------------------------------------------------


def test_streams_survive_a_database_restart(tmp_path: Any, recorder: MakeRecorder) -> None:
    # A database of its own on a fixed port: the session's one keeps its devices.
    database = TangoDatabase(port=free_port(), log_dir=tmp_path)
    database.start()
    server = event_source_process(
        database, "dbrestart", ["test/dbrestart/1", "test/dbrestart/2"], log_dir=tmp_path
    )
    try:
        server.start()
        old_trl, new_trl = server.trls
        with CallbackScheduler(name="dbdown") as sched:
            rec = recorder()
            sched.register_event_callback(old_trl, "myAttr4", CHANGE, rec).result(timeout=30)
            wait_for(lambda: rec.values(), timeout=30, message="a first value from the device")
            proxy = tango.DeviceProxy(old_trl)
            database._process.kill()  # noqa: SLF001 - kill -9 of the database
            # A connected stream keeps its events; a new one reports errors and retries.
            pushed = proxy.Push("myAttr4")
            wait_for(
                lambda: pushed in rec.values(),
                timeout=30,
                message="the pushed value before the database goes down",
            )
            late = recorder()
            sched.register_event_callback(new_trl, "myAttr4", CHANGE, late).result(timeout=60)
            wait_for(lambda: late.errors(), timeout=30, message="no error with the database down")
            database.start()  # same port, empty: define and start the server again
            server.stop()
            server.start()
            wait_for(lambda: late.values(), timeout=60, message="no value after the restart")
    finally:
        server.stop()
        database.stop()


# -- bad input and small defects (issue 10, item 6) --------------------------------------------


def test_logger_must_be_a_logger() -> None:
    with pytest.raises(TypeError, match="logger"):
        CallbackScheduler(logger="x")  # type: ignore[arg-type]


def test_bad_shutdown_timeout_leaves_the_scheduler_running() -> None:
    sched = CallbackScheduler(name="badtimeout")
    with pytest.raises(TypeError, match="timeout"):
        sched.shutdown(timeout="x")  # type: ignore[arg-type]
    assert not sched.is_shutdown
    sched.shutdown()
    assert sched.is_shutdown
    assert not any(t.is_alive() for t in sched.threads)


def test_unregister_with_an_unhashable_id() -> None:
    with CallbackScheduler(name="unhashable") as sched:
        sched.register_event_callback("no/such/device", "state", CHANGE, _ignore)
        with pytest.raises(UnknownCallbackError):
            sched.unregister_callback([1])  # type: ignore[arg-type]


def test_asyncio_green_mode_proxy_works(event_source: Any, recorder: MakeRecorder) -> None:
    proxy = tango.DeviceProxy(event_source.devices[0])
    proxy.set_green_mode(tango.GreenMode.Asyncio)
    with CallbackScheduler(name="green") as sched:
        rec = recorder()
        sched.register_event_callback(proxy, "myAttr2", CHANGE, rec).result(timeout=30)
        wait_for(
            lambda: rec.values() or rec.errors(),
            timeout=30,
            message="a value or an error through the green-mode proxy",
        )
        assert rec.errors() == []
        assert rec.values()


def test_a_blocking_done_callback_does_not_stall_connects(
    event_source: Any, recorder: MakeRecorder
) -> None:
    gate = threading.Event()
    caller = threading.current_thread()

    def blocking(_: Any) -> None:
        if threading.current_thread() is not caller:  # not when it runs inline
            gate.wait(60)

    with CallbackScheduler(name="donecb", wait_for_subscription=False) as sched:
        try:
            first = sched.register_event_callback(
                event_source.devices[0], "myAttr3", CHANGE, recorder()
            )
            first.add_done_callback(blocking)
            second = sched.register_event_callback(
                event_source.devices[1], "myAttr3", CHANGE, recorder()
            )
            second.result(timeout=30)
        finally:
            gate.set()


def test_one_database_under_three_host_names_is_one_stream(
    tango_database: Any, event_source: Any
) -> None:
    device = event_source.devices[0]
    port = tango_database.port
    names = ["localhost", "127.0.0.1", socket.gethostname()]
    with CallbackScheduler(name="hosts") as sched:
        futures = [
            sched.register_event_callback(
                f"tango://{h}:{port}/{device}", "myAttr1", CHANGE, _ignore
            )
            for h in names
        ]
        for future in futures:
            future.result(timeout=30)
        snap = sched.diagnostics()
        assert len(snap.streams) == 1
        assert snap.totals.subscribe_calls == 1


def test_non_ascii_device_name_is_reported_as_given(recorder: MakeRecorder) -> None:
    with CallbackScheduler(name="ascii") as sched:
        rec = recorder()
        try:
            future = sched.register_event_callback("tést/dévice/ü", "state", CHANGE, rec)
        except ValueError as exc:
            assert "tést/dévice/ü" in str(exc)
            return
        future.result(timeout=30)
        wait_for(
            lambda: rec.errors(),
            timeout=30,
            message="an error event for the undefined non-ASCII device",
        )
        assert "tést/dévice/ü" in rec.errors()[0].errors[0].desc


def test_first_attempt_on_the_caller_thread_keeps_the_lane(
    event_source: Any, recorder: MakeRecorder
) -> None:
    proxy = tango.DeviceProxy(event_source.devices[0])
    threads: list[str] = []
    if hasattr(proxy, "unfreeze_dynamic_interface"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proxy.unfreeze_dynamic_interface()
    subscribe = proxy.subscribe_event

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return subscribe(*args, **kwargs)

    proxy.subscribe_event = recording
    with CallbackScheduler(name="here") as sched:
        rec = recorder()
        future = sched.register_event_callback(
            proxy, "myAttr2", CHANGE, rec, on_calling_thread=True
        )
        assert threads == [threading.current_thread().name]
        future.result(timeout=30)
        wait_for(
            lambda: rec.values(),
            timeout=30,
            message="a first value through the caller-thread connection",
        )
        # Another stream of the same device still goes through the connector lane.
        sched.register_event_callback(proxy, "myAttr3", CHANGE, recorder()).result(timeout=30)
        assert len(threads) == 2 and threads[1].startswith("here.connector")
        sched.connect_event_stream(proxy, "myAttr1", CHANGE, on_calling_thread=True).result(
            timeout=30
        )
        assert threads[2] == threading.current_thread().name


def test_a_frozen_server_does_not_delay_other_devices(
    device_server_factory: Any,
    event_source: Any,
    recorder: MakeRecorder,
) -> None:
    frozen = device_server_factory.event_source(1)
    assert frozen.pid is not None
    sched = CallbackScheduler(name="frozen", wait_for_subscription=False)
    os.kill(frozen.pid, signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        stuck = sched.register_event_callback(frozen.trls[0], "myAttr1", CHANGE, _ignore)
        time.sleep(0.5)
        rec = recorder()
        sched.register_event_callback(event_source.trls[1], "myAttr2", CHANGE, rec).result(
            timeout=30
        )
        wait_for(lambda: rec.values(), timeout=30, message="the healthy stream got nothing")
        started = time.monotonic()
        sched.shutdown(timeout=10)
        assert time.monotonic() - started < 30
        assert stuck.done()
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        sched.shutdown()


def test_missed_events_do_not_make_a_connected_stream_failing(event_source: Any) -> None:
    """API_MissedEvents says events were lost; the subscription still works.

    ``invoke_lrc`` used to raise on such a stream, taking it for a failed
    subscription (seen in a soak under a pile-up of callbacks).
    """
    trl = event_source.trls[0]
    change = tango.EventType.CHANGE_EVENT
    with CallbackScheduler(name="missed-events") as sched:
        sched.register_event_callback(trl, "myAttr1", change, lambda _e: None).result(timeout=30)

        def state() -> str:
            return getattr(sched.stream_status(trl, "myAttr1", change), "state", "")

        wait_for(
            lambda: state() == "connected",
            timeout=30,
            message="the stream to connect",
        )
        (stream,) = sched._registry.streams.values()  # noqa: SLF001 - inject Tango's notice
        cases = (("API_MissedEvents", "connected"), ("API_EventTimeout", "failing"))
        for reason, expected in cases:
            error = tango.DevError()
            error.reason = reason
            error.desc = "injected by the test"
            error.origin = "test"
            error.severity = tango.ErrSeverity.ERR
            event = _compat.make_error_event(stream.attribute_trl, change, [error])
            stream._note_event(stream._generation, event)  # noqa: SLF001
            # State changes made on the device's lane have run once this marker has.
            marker = threading.Event()
            stream.submit(marker.set)
            assert marker.wait(30), "the device's lane did not run the marker job"
            status = sched.stream_status(trl, "myAttr1", change)
            assert status is not None and status.state == expected, (reason, status)
