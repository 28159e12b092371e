"""SchedulerMixin logic that needs no device server.

Device classes are defined here (PyTango builds their Tango class description
at definition), but never run.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import tango
from tango.server import Device, attribute

from ska_tango_scheduler import CallbackScheduler
from ska_tango_scheduler import mixin as mixin_module
from ska_tango_scheduler._device import LOGGER
from ska_tango_scheduler._device import gate as gate_module
from ska_tango_scheduler._device.attributes import ATTRIBUTES
from ska_tango_scheduler._device.pusher import DiagnosticsPusher
from ska_tango_scheduler.diagnostics import (
    BackoffDiagnostics,
    LatencyStats,
    QueueDiagnostics,
    SchedulerDiagnostics,
    Totals,
)
from ska_tango_scheduler.mixin import (
    DIAGNOSTIC_ATTRIBUTES,
    MAX_REPORTED_QUEUES,
    SCHEDULER_PROPERTIES,
    SchedulerConfigurationError,
    SchedulerMixin,
    changed_values,
    check_property_texts,
    check_scheduler_name,
    check_slow_callback_duration,
    check_thread_count,
    diagnostic_values,
)
from ska_tango_scheduler.testing import wait_for

PROPERTIES = {"SchedulerThreadCount", "SchedulerName", "SchedulerSlowCallbackDuration"}


def snapshot(**overrides: Any) -> SchedulerDiagnostics:
    fields: dict[str, Any] = {
        "name": "s",
        "thread_count": 2,
        "running": True,
        "timestamp": 1000.0,
        "totals": Totals(
            received=10,
            delivered=6,
            dropped=1,
            queued=3,
            callback_errors=2,
            slow_callbacks=4,
            max_latency_ms=250.0,
        ),
        "queues": (
            QueueDiagnostics(
                "q1",
                32,
                3,
                9,
                5,
                1,
                ("a#CHANGE_EVENT",),
                latency=LatencyStats(200.0, 250.0, 240.0, 5),
                slow_callbacks=4,
            ),
            QueueDiagnostics(
                "q2", 32, 0, 1, 1, 0, ("b#CHANGE_EVENT",), latency=LatencyStats(0.2, 0.5, 0.5, 1)
            ),
        ),
        "backoff": (BackoffDiagnostics("c#CHANGE_EVENT", 3, 0.4, 0.2, "API_Boom: no", 99.0),),
    }
    fields.update(overrides)
    return SchedulerDiagnostics(**fields)


# -- attribute values -----------------------------------------------------------------------


def test_diagnostic_values_cover_every_attribute() -> None:
    values = diagnostic_values(snapshot())
    assert list(values) == list(DIAGNOSTIC_ATTRIBUTES)
    assert values["schedulerThreadCount"] == 2
    assert values["schedulerQueueNames"] == ["q1", "q2"]
    assert values["schedulerQueueDepths"] == [3, 0]
    assert values["schedulerReceivedEvents"] == 10
    assert values["schedulerDeliveredEvents"] == 6
    assert values["schedulerDroppedEvents"] == 1
    assert values["schedulerCallbackErrors"] == 2
    assert values["schedulerMaxLatency"] == 250.0
    assert values["schedulerQueueLatencies"] == [240.0, 0.5]
    assert values["schedulerSlowCallbacks"] == 4
    backoff = json.loads(values["schedulerBackoffState"])
    assert backoff == {
        "c#CHANGE_EVENT": {
            "attempts": 3,
            "delay": 0.4,
            "next_attempt_in": 0.2,
            "last_error": "API_Boom: no",
            "failing_since": 99.0,
        }
    }
    full = json.loads(values["schedulerDiagnostics"])
    assert full["totals"]["queued"] == 3
    assert [q["name"] for q in full["queues"]] == ["q1", "q2"]


def test_queue_lists_are_capped() -> None:
    queues = tuple(QueueDiagnostics(f"q{i}", 1, 0, 0, 0, 0) for i in range(MAX_REPORTED_QUEUES + 5))
    values = diagnostic_values(snapshot(queues=queues))
    assert len(values["schedulerQueueNames"]) == MAX_REPORTED_QUEUES
    assert len(values["schedulerQueueDepths"]) == MAX_REPORTED_QUEUES


def test_changed_values_ignore_the_snapshot_time() -> None:
    first = diagnostic_values(snapshot())
    assert changed_values({}, first) == first
    later = diagnostic_values(snapshot(timestamp=2000.0))
    assert changed_values(first, later) == {}
    busier = diagnostic_values(
        snapshot(timestamp=3000.0, totals=Totals(received=11, delivered=7, dropped=1, queued=3))
    )
    changed = changed_values(first, busier)
    assert set(changed) == {
        "schedulerReceivedEvents",
        "schedulerDeliveredEvents",
        "schedulerCallbackErrors",
        "schedulerMaxLatency",
        "schedulerSlowCallbacks",
        "schedulerDiagnostics",
    }


# -- the internal threads gate --------------------------------------------------------------


def in_thread(target: Any) -> Any:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(target()))
    thread.start()
    thread.join(10)
    return result[0]


def test_gate_holds_other_threads_only() -> None:
    gate = gate_module.InternalThreadsGate()
    assert not gate.blocks_caller()
    gate.open()
    assert not gate.blocks_caller()  # the thread that opened it is never held
    assert in_thread(gate.blocks_caller)
    assert gate.open_blocks == 1
    gate.close()
    assert not in_thread(gate.blocks_caller)
    assert gate.open_blocks == 0


def test_gate_blocks_nest() -> None:
    gate = gate_module.InternalThreadsGate()
    gate.open()
    gate.open()
    gate.close()
    assert in_thread(gate.blocks_caller)
    gate.close()
    assert not in_thread(gate.blocks_caller)


def test_gate_wait_returns_when_the_last_block_closes() -> None:
    gate = gate_module.InternalThreadsGate()
    gate.open()
    released = threading.Event()

    def waiter() -> None:
        gate.wait()
        released.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.2)
    assert not released.is_set()
    assert gate.stalled == 1
    gate.close()
    assert released.wait(10)
    thread.join(10)
    assert gate.stalled == 0


def test_gate_wait_times_out() -> None:
    gate = gate_module.InternalThreadsGate()
    gate.open()
    assert in_thread(lambda: gate.wait(0.05)) is False
    gate.close()
    assert in_thread(lambda: gate.wait(0.05)) is True


# -- requests from this process ---------------------------------------------------------------


class FakeClient:
    def __init__(self, pid: int, ident: bool = True) -> None:
        self.client_pid = pid
        self.client_ident = ident


class FakeDevice:
    def __init__(self, client: Any) -> None:
        self._client = client

    def get_client_ident(self) -> Any:
        if isinstance(self._client, Exception):
            raise self._client
        return self._client


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        (FakeDevice(FakeClient(os.getpid())), True),
        (FakeDevice(FakeClient(os.getpid() + 1)), False),
        (FakeDevice(FakeClient(os.getpid(), ident=False)), False),
        (FakeDevice(None), False),  # not a client call (polling)
        (FakeDevice(RuntimeError("no context")), False),
        (object(), False),  # PyTango < 10: unknown
    ],
)
def test_requests_from_this_process(device: Any, expected: bool) -> None:
    assert gate_module.from_this_process(device) is expected


def test_serial_model_outside_a_server() -> None:
    assert gate_module.serial_model() == tango.SerialModel.BY_DEVICE


# -- device classes -----------------------------------------------------------------------------


def tango_names(cls: type) -> tuple[set[str], set[str]]:
    klass = cls.TangoClassClass  # type: ignore[attr-defined]
    return set(klass.attr_list), set(klass.device_property_list)


def test_mixin_listed_directly() -> None:
    class Direct(SchedulerMixin, Device):
        pass

    attrs, props = tango_names(Direct)
    assert set(DIAGNOSTIC_ATTRIBUTES) <= attrs
    assert props >= PROPERTIES


def test_every_row_of_the_table_is_a_tango_attribute_as_the_row_says() -> None:
    class Direct(SchedulerMixin, Device):
        pass

    described = Direct.TangoClassClass.attr_list  # type: ignore[attr-defined]
    assert [row.name for row in ATTRIBUTES] == list(DIAGNOSTIC_ATTRIBUTES)
    for row in ATTRIBUTES:
        attr = described[row.name]
        spectrum = isinstance(row.dtype, tuple)
        assert attr.attr_type == (row.dtype[0] if spectrum else row.dtype), row.name
        assert attr.attr_format == (
            tango.AttrDataFormat.SPECTRUM if spectrum else tango.AttrDataFormat.SCALAR
        ), row.name
        assert attr.dim_x == (MAX_REPORTED_QUEUES if spectrum else 1), row.name
        assert attr.attr_write == tango.AttrWriteType.READ, row.name
        assert attr.att_prop.unit == row.unit, row.name
        assert attr.att_prop.label == row.label, row.name
        assert attr.att_prop.description == row.doc, row.name


def test_the_read_methods_give_the_rows_values_of_one_shared_snapshot() -> None:
    class Reader:
        """Stands in for a device: a scheduler, no fault, no snapshot yet."""

    taken: list[SchedulerDiagnostics] = []

    def diagnostics() -> SchedulerDiagnostics:
        taken.append(snapshot())
        return taken[-1]

    device = Reader()
    device.scheduler = device.__dict__["_scheduler_obj"] = SimpleNamespace(  # type: ignore[attr-defined]
        diagnostics=diagnostics
    )
    expected = diagnostic_values(snapshot())
    for row in ATTRIBUTES:
        read = getattr(SchedulerMixin, row.name).fget
        assert read(device) == expected[row.name], row.name
    assert len(taken) == 1  # the reads of one request share one snapshot
    device.__dict__["_scheduler_fault"] = "bad SchedulerThreadCount"
    with pytest.raises(tango.DevFailed, match="bad SchedulerThreadCount"):
        getattr(SchedulerMixin, ATTRIBUTES[0].name).fget(device)


def test_subclass_of_a_mixin_device_keeps_everything() -> None:
    class Base(SchedulerMixin, Device):
        @attribute(dtype=int)
        def own(self) -> int:
            return 1

    class Derived(Base):
        pass

    attrs, props = tango_names(Derived)
    assert set(DIAGNOSTIC_ATTRIBUTES) | {"own"} <= attrs
    assert props >= PROPERTIES


def test_mixin_of_mixins_listed_directly() -> None:
    class MoreMixin(SchedulerMixin):
        """A plain mixin derived from SchedulerMixin."""

    class Indirect(MoreMixin, Device):
        pass

    attrs, props = tango_names(Indirect)
    assert set(DIAGNOSTIC_ATTRIBUTES) <= attrs
    assert props >= PROPERTIES


def test_mixin_after_device_is_refused() -> None:
    with pytest.raises(TypeError, match="before tango.server.Device"):

        class Wrong(Device, SchedulerMixin):  # type: ignore[misc]
            pass


def test_default_configuration() -> None:
    class Configured(SchedulerMixin, Device):
        scheduler_thread_count = 3
        scheduler_name = "custom"

    assert Configured.scheduler_thread_count == 3
    assert SchedulerMixin.scheduler_thread_count == 1
    assert SchedulerMixin.scheduler_name is None
    assert 0.5 <= SchedulerMixin.scheduler_diagnostics_period <= 1.0


# -- the pusher -----------------------------------------------------------------------------------


class PushRecorder:
    """Stands in for a device: records pushed change events."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pushed: list[tuple[float, str, Any]] = []

    def push_change_event(self, name: str, value: Any) -> None:
        with self.lock:
            self.pushed.append((time.monotonic(), name, value))

    def names(self) -> list[str]:
        with self.lock:
            return [name for _, name, _ in self.pushed]


@pytest.fixture
def fake_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tango, "AutoTangoMonitor", lambda device: contextlib.nullcontext())


@pytest.fixture
def scheduler() -> Iterator[CallbackScheduler]:
    sched = CallbackScheduler(name="pusher-test")
    yield sched
    sched.shutdown(timeout=10)


def test_pusher_pushes_changes_only_and_stops(
    fake_monitor: None, scheduler: CallbackScheduler
) -> None:
    device = PushRecorder()
    pusher = DiagnosticsPusher(
        device,  # type: ignore[arg-type]
        scheduler,
        0.1,
        LOGGER,
    )
    pusher.start()
    try:
        wait_for(
            lambda: len(device.names()) >= len(DIAGNOSTIC_ATTRIBUTES),
            timeout=10,
            message=lambda: f"a first push of every diagnostic attribute; pushed {device.names()}",
        )
        assert sorted(device.names()) == sorted(DIAGNOSTIC_ATTRIBUTES)
        time.sleep(0.5)  # an idle scheduler: nothing changes, nothing more is pushed
        assert len(device.names()) == len(DIAGNOSTIC_ATTRIBUTES)
        assert pusher.thread.name == "pusher-test.diagnostics"
    finally:
        pusher.request_stop()
        assert pusher.join(10)
    count = len(device.names())
    time.sleep(0.3)
    assert len(device.names()) == count


# -- when the monitor is released ---------------------------------------------------------------


def test_safe_monitor_release_follows_the_pytango_version() -> None:
    assert mixin_module.SAFE_MONITOR_RELEASE == (gate_module.pytango_version() >= (10, 1))


@pytest.mark.parametrize(
    ("model", "released"),
    [
        (tango.SerialModel.BY_DEVICE, mixin_module.SAFE_MONITOR_RELEASE),
        (tango.SerialModel.BY_CLASS, False),
        (tango.SerialModel.BY_PROCESS, False),
        (tango.SerialModel.NO_SYNC, False),
    ],
)
def test_which_serial_models_release_the_monitor(model: Any, released: bool) -> None:
    assert gate_module.releases_monitor(model) is released


# -- configuration checks -------------------------------------------------------------------


def test_scheduler_properties_are_the_documented_ones() -> None:
    assert set(SCHEDULER_PROPERTIES) == PROPERTIES


@pytest.mark.parametrize("good", [1, 4, "2", " 3 "])
def test_thread_count_accepts_whole_numbers_from_one(good: object) -> None:
    assert check_thread_count(good) == int(str(good).strip())


@pytest.mark.parametrize("bad", [0, -3, "0", "-3", "abc", "1.5", "", True, 2.0, None])
def test_thread_count_rejects_with_the_setting_and_value(bad: object) -> None:
    with pytest.raises(SchedulerConfigurationError) as info:
        check_thread_count(bad, "SchedulerThreadCount")
    assert str(info.value).startswith(f"SchedulerThreadCount = {bad!r} is not valid")


@pytest.mark.parametrize("bad", ["", "   ", "a\nb", "tab\there", 3, None])
def test_scheduler_name_rejects_blank_and_unprintable(bad: object) -> None:
    with pytest.raises(SchedulerConfigurationError, match="SchedulerName = "):
        check_scheduler_name(bad)
    assert check_scheduler_name("my/device.scheduler") == "my/device.scheduler"


def test_slow_callback_duration_zero_or_none_is_off() -> None:
    assert check_slow_callback_duration(None) is None
    assert check_slow_callback_duration(0) is None
    assert check_slow_callback_duration("0") is None
    assert check_slow_callback_duration("0.25") == 0.25
    assert check_slow_callback_duration(2) == 2.0


@pytest.mark.parametrize("bad", [-1, "-0.1", "soon", float("nan"), float("inf"), "inf", True])
def test_slow_callback_duration_rejects_negative_and_non_finite(bad: object) -> None:
    with pytest.raises(SchedulerConfigurationError, match="SchedulerSlowCallbackDuration = "):
        check_slow_callback_duration(bad)


def test_property_texts_name_the_bad_property() -> None:
    check_property_texts({})
    check_property_texts({"SchedulerThreadCount": ["2"], "SchedulerName": [""]})
    with pytest.raises(SchedulerConfigurationError, match="SchedulerName = \\['a', 'b'\\]"):
        check_property_texts({"SchedulerName": ["a", "b"]})
    with pytest.raises(SchedulerConfigurationError, match="SchedulerThreadCount = 'abc'"):
        check_property_texts({"SchedulerThreadCount": ["abc"]})
