"""The real-Tango test bed works: database, server processes, event source."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import tango

from ska_tango_scheduler.testing import (
    DeviceServerProcess,
    TangoDatabase,
    WaitTimeoutError,
    wait_for,
)
from ska_tango_scheduler.testing.pytest_plugin import DeviceServerFactory, EventSourceServer


def pings(name: str) -> bool:
    try:
        tango.DeviceProxy(name).ping()
    except tango.DevFailed:
        return False
    return True


def reason_of(call: Any) -> str:
    with pytest.raises(tango.DevFailed) as info:
        call()
    return str(info.value.args[0].reason)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- database ----------------------------------------------------------------------------------


def test_database_answers_on_tango_host(tango_database: TangoDatabase) -> None:
    assert os.environ["TANGO_HOST"] == tango_database.tango_host
    assert tango_database.host == "127.0.0.1"
    assert tango.Database().get_info()
    assert tango.DeviceProxy("sys/database/2").ping() >= 0


def test_devices_can_be_defined_and_deleted(tango_database: TangoDatabase) -> None:
    name = f"test/{DeviceServerFactory.unique_name('def')}/1"
    assert reason_of(lambda: tango.DeviceProxy(name)) == "DB_DeviceNotDefined"
    tango_database.add_device(name, "EventSource", "EventSource/defined")
    assert tango_database.is_defined(name)
    assert reason_of(tango.DeviceProxy(name).ping) == "API_DeviceNotExported"
    tango_database.delete_device(name)
    assert not tango_database.is_defined(name)
    tango_database.delete_server("EventSource/defined")


def test_database_start_failure_is_reported(tmp_path: Path) -> None:
    database = TangoDatabase(python="/bin/false", log_dir=tmp_path, start_timeout=10)
    with pytest.raises(RuntimeError, match="exited with status 1 before answering"):
        database.start()
    assert not database.running


# -- the shared event source -------------------------------------------------------------------


def test_event_source_devices_answer(event_source: EventSourceServer) -> None:
    assert len(event_source.devices) == 3
    for name, trl in zip(event_source.devices, event_source.trls, strict=True):
        assert trl.endswith("/" + name) and trl.startswith("tango://127.0.0.1:")
        proxy = tango.DeviceProxy(trl)
        assert proxy.state() == tango.DevState.ON
        assert list(proxy.pushedCounts) == [
            proxy.myAttr1,
            proxy.myAttr2,
            proxy.myAttr3,
            proxy.myAttr4,
        ]


@pytest.mark.parametrize(
    "event_type", [tango.EventType.CHANGE_EVENT, tango.EventType.ARCHIVE_EVENT]
)
def test_pushed_events_arrive_with_server_time(
    event_source: EventSourceServer, event_type: tango.EventType, recorder: Callable[..., Any]
) -> None:
    proxy = tango.DeviceProxy(event_source.devices[0])
    collector = recorder()
    start = proxy.myAttr1
    event_id = proxy.subscribe_event("myAttr1", event_type, collector)
    try:
        wait_for(lambda: collector.values(), message="first event (current value)")
        before = time.time()
        pushed = [proxy.Push("myAttr1") for _ in range(3)]
        after = time.time()
        assert pushed == [start + 1, start + 2, start + 3]
        wait_for(lambda: collector.values()[-1:] == [start + 3], message="3 pushed events")
    finally:
        proxy.unsubscribe_event(event_id)
    assert collector.values() == [start, start + 1, start + 2, start + 3]
    assert not collector.errors()
    stamps = [e.attr_value.time.totime() for _, e in collector.snapshot()[1:]]
    assert stamps == sorted(stamps)
    assert before - 1.0 <= stamps[0] and stamps[-1] <= after + 1.0


def test_burst_is_counted_and_delivered(
    event_source: EventSourceServer, recorder: Callable[..., Any]
) -> None:
    proxy = tango.DeviceProxy(event_source.devices[1])
    collector = recorder()
    start = int(proxy.pushedCounts[1])
    event_id = proxy.subscribe_event("myAttr2", tango.EventType.CHANGE_EVENT, collector)
    try:
        proxy.PushBurst([[200], ["myAttr2"]])
        wait_for(lambda: proxy.pushedCounts[1] == start + 200, message="200 events pushed")
        wait_for(lambda: "myAttr2" not in (proxy.pushingAttributes or ()), message="burst ended")
        wait_for(lambda: collector.values()[-1:] == [start + 200], message="last burst event")
    finally:
        proxy.unsubscribe_event(event_id)
    # The first event is the current value at subscription; no event is lost.
    assert collector.values() == list(range(start, start + 201))


def test_rate_pushing_starts_and_stops(event_source: EventSourceServer) -> None:
    proxy = tango.DeviceProxy(event_source.devices[2])
    start = int(proxy.pushedCounts[2])
    proxy.StartPushing([[50.0], ["myAttr3"]])
    try:
        assert "myAttr3" in proxy.pushingAttributes
        wait_for(lambda: proxy.pushedCounts[2] >= start + 5, message="rate pushing")
    finally:
        proxy.StopPushing(["myAttr3"])
    assert "myAttr3" not in (proxy.pushingAttributes or ())
    stopped = int(proxy.pushedCounts[2])
    time.sleep(0.3)
    assert int(proxy.pushedCounts[2]) == stopped == proxy.myAttr3


def test_stop_pushing_with_empty_list_stops_all(event_source: EventSourceServer) -> None:
    proxy = tango.DeviceProxy(event_source.devices[2])
    proxy.StartPushing([[20.0, 30.0], ["myAttr1", "myAttr4"]])
    proxy.PushBurst([[1_000_000], ["myAttr2"]])
    assert set(proxy.pushingAttributes) == {"myAttr1", "myAttr2", "myAttr4"}
    proxy.StopPushing([])
    assert not proxy.pushingAttributes
    proxy.ResetCounts()
    assert list(proxy.pushedCounts) == [0, 0, 0, 0]
    assert proxy.myAttr2 == 0


def test_bad_arguments_are_refused(event_source: EventSourceServer) -> None:
    proxy = tango.DeviceProxy(event_source.devices[0])
    assert reason_of(lambda: proxy.Push("noSuchAttr")) == "EventSource_UnknownAttribute"
    assert reason_of(lambda: proxy.PushBurst([[1, 2], ["myAttr1"]])) == "EventSource_BadArgument"
    assert reason_of(lambda: proxy.StartPushing([[0.0], ["myAttr1"]])) == "EventSource_BadArgument"
    assert reason_of(lambda: proxy.StopPushing(["myAttr9"])) == "EventSource_UnknownAttribute"
    assert not proxy.pushingAttributes


# -- server processes --------------------------------------------------------------------------


def test_server_defined_before_it_runs(device_server_factory: DeviceServerFactory) -> None:
    server = device_server_factory.event_source(1, start=False)
    server.register()
    name = server.devices[0]
    assert reason_of(tango.DeviceProxy(name).ping) == "API_DeviceNotExported"
    server.start()
    assert server.running and pings(name)


def test_device_added_to_a_running_server(
    device_server_factory: DeviceServerFactory, tango_database: TangoDatabase
) -> None:
    name = f"test/{device_server_factory.unique_name('late')}/1"
    server = device_server_factory.event_source([name], register=False, start=False)
    tango_database.define_server(server.server)
    server.start()
    assert reason_of(lambda: tango.DeviceProxy(name)) == "DB_DeviceNotDefined"
    server.register()
    server.restart()
    assert pings(name)


def test_kill_and_restart_by_pid(device_server_factory: DeviceServerFactory) -> None:
    server = device_server_factory.event_source(1)
    proxy = tango.DeviceProxy(server.devices[0])
    proxy.Push("myAttr1")
    first_pid = server.pid
    assert first_pid is not None
    assert server.kill() == -9
    assert gone(first_pid) and not server.running
    wait_for(lambda: not pings(server.devices[0]), message="killed device stops answering")
    server.start()
    assert server.pid != first_pid and server.starts == 2
    wait_for(lambda: pings(server.devices[0]), message="restarted device answers")
    assert list(tango.DeviceProxy(server.devices[0]).pushedCounts) == [0, 0, 0, 0]


def test_stop_ends_the_process(device_server_factory: DeviceServerFactory) -> None:
    server = device_server_factory.event_source(2)
    pid = server.pid
    assert pid is not None and pid in [p.pid for p in psutil.Process().children()]
    tango.DeviceProxy(server.devices[0]).StartPushing([[100.0], ["myAttr1"]])
    server.stop()
    assert gone(pid)
    assert pid not in [p.pid for p in psutil.Process().children(recursive=True)]
    server.stop()  # a second stop is harmless


def test_failed_start_shows_the_log(device_server_factory: DeviceServerFactory) -> None:
    with pytest.raises(
        RuntimeError,
        match="exited with status 1(.|\n)*No module named no_such_module_for_the_test_bed",
    ):
        device_server_factory(
            "NoServer/x",
            ["test/noserver/1"],
            device_class="NoServer",
            module="no_such_module_for_the_test_bed",
            ready_timeout=30,
        )


def test_factory_teardown_leaves_no_process(tango_database: TangoDatabase, tmp_path: Path) -> None:
    factory = DeviceServerFactory(tango_database, tmp_path)
    servers = [factory.event_source(1), factory.event_source(1, start=False)]
    servers[1].start()
    pids = [s.pid for s in servers]
    factory.close()
    for server, pid in zip(servers, pids, strict=True):
        assert pid is not None and gone(pid)
        assert not tango_database.is_defined(server.devices[0])
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    assert not children & set(pids)


def test_children_die_with_their_parent(tmp_path: Path) -> None:
    """A child of the test bed dies when its parent ends abruptly (os._exit)."""
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import os, time
        from ska_tango_scheduler.testing import ManagedProcess
        child = ManagedProcess(["sleep", "600"], {str(tmp_path / "sleep.log")!r})
        child.spawn()
        with open({str(pid_file)!r}, "w") as f:
            f.write(str(child.pid))
        os._exit(3)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=60, check=False)
    assert result.returncode == 3
    child_pid = int(pid_file.read_text())
    wait_for(lambda: gone(child_pid), timeout=30, message=f"orphan {child_pid} to be killed")


def test_wait_for_reports_the_message() -> None:
    assert wait_for(lambda: 42, timeout=1, message="a truthy value at once") == 42
    with pytest.raises(
        WaitTimeoutError, match=r"never true \(gave up after 0.2 s; last result: 0\)"
    ):
        wait_for(lambda: 0, timeout=0.2, interval=0.05, message="never true")
    with pytest.raises(TimeoutError):
        wait_for(lambda: None, timeout=0.1, message=lambda: "lazy message")


def test_device_server_process_checks_its_arguments(tango_database: TangoDatabase) -> None:
    with pytest.raises(ValueError, match="ServerName/instance"):
        DeviceServerProcess("NoInstance", database=tango_database, device_class="X", module="m")
    with pytest.raises(ValueError, match="exactly one of module and command"):
        DeviceServerProcess("S/i", database=tango_database, device_class="X")
