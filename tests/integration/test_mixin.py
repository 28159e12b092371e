"""SchedulerMixin in real device servers: Init, allow_internal_threads, diagnostics.

The servers run :mod:`ska_tango_scheduler.testing.mixin_devices`; their
``SchedulerReference`` devices subscribe to an ``EventSource`` in
``init_device`` with a callback that takes the device monitor.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import tango

from ska_tango_scheduler.mixin import DIAGNOSTIC_ATTRIBUTES, SAFE_MONITOR_RELEASE
from ska_tango_scheduler.testing import TangoDatabase, wait_for
from ska_tango_scheduler.testing.mixin_devices import SERIAL_MODEL_ENV, reference_server
from ska_tango_scheduler.testing.pytest_plugin import DeviceServerFactory

CHANGE = tango.EventType.CHANGE_EVENT

EXPECTED_TYPES = {
    "schedulerThreadCount": (tango.CmdArgType.DevLong, tango.AttrDataFormat.SCALAR),
    "schedulerQueueNames": (tango.CmdArgType.DevString, tango.AttrDataFormat.SPECTRUM),
    "schedulerQueueDepths": (tango.CmdArgType.DevLong, tango.AttrDataFormat.SPECTRUM),
    "schedulerReceivedEvents": (tango.CmdArgType.DevLong64, tango.AttrDataFormat.SCALAR),
    "schedulerDeliveredEvents": (tango.CmdArgType.DevLong64, tango.AttrDataFormat.SCALAR),
    "schedulerDroppedEvents": (tango.CmdArgType.DevLong64, tango.AttrDataFormat.SCALAR),
    "schedulerCallbackErrors": (tango.CmdArgType.DevLong64, tango.AttrDataFormat.SCALAR),
    "schedulerMaxLatency": (tango.CmdArgType.DevDouble, tango.AttrDataFormat.SCALAR),
    "schedulerQueueLatencies": (tango.CmdArgType.DevDouble, tango.AttrDataFormat.SPECTRUM),
    "schedulerSlowCallbacks": (tango.CmdArgType.DevLong64, tango.AttrDataFormat.SCALAR),
    "schedulerBackoffState": (tango.CmdArgType.DevString, tango.AttrDataFormat.SCALAR),
    "schedulerDiagnostics": (tango.CmdArgType.DevString, tango.AttrDataFormat.SCALAR),
}


def as_list(value: Any) -> list[Any]:
    """A spectrum's value as a list (PyTango gives None for an empty one)."""
    return [] if value is None else list(value)


def unique_device(factory: DeviceServerFactory, family: str) -> str:
    return f"test/{factory.unique_name(family)}/1"


def test_init_ten_times_while_callbacks_take_the_monitor(
    device_server_factory: DeviceServerFactory,
    tango_database: TangoDatabase,
    own_source: tango.DeviceProxy,
    callbacks_flowing: Callable[..., None],
) -> None:
    name = unique_device(device_server_factory, "mixinit")
    reference_server(
        device_server_factory,
        tango_database,
        {name: {"SourceDevice": own_source.dev_name(), "CallbackDelay": "0.05"}},
    )
    device = tango.DeviceProxy(name)
    device.set_timeout_millis(10_000)
    # 50 events/s against callbacks of >= 50 ms: a callback is always running
    # or about to wait for the monitor when Init comes.
    own_source.StartPushing([[50.0], ["myAttr1"]])
    durations = []
    for _ in range(10):
        callbacks_flowing(device, more=5)  # a backlog: a callback is always in flight
        start = time.monotonic()
        device.Init()
        durations.append(time.monotonic() - start)
        # No thread of an old scheduler (or its diagnostics pusher) is left.
        wait_for(
            lambda: list(device.liveSchedulerThreads) == list(device.currentSchedulerThreads),
            timeout=10,
            message=lambda: (
                f"live {device.liveSchedulerThreads} != current {device.currentSchedulerThreads}"
            ),
        )
    callbacks_flowing(device)
    assert device.initCount == 11
    assert device.monitorTimeouts == 0
    # worker, connector, the connector service's control thread, diagnostics
    assert len(device.currentSchedulerThreads) == 4
    print(f"Init durations with allow_internal_threads: {[round(d, 3) for d in durations]}")
    print(f"delete_device durations: {[round(d, 3) for d in device.deleteDurations]}")


def test_init_without_allow_internal_threads_times_out(
    device_server_factory: DeviceServerFactory,
    tango_database: TangoDatabase,
    own_source: tango.DeviceProxy,
    callbacks_flowing: Callable[..., None],
) -> None:
    """The failure the mixin prevents: shutting down while holding the monitor."""
    name = unique_device(device_server_factory, "mixnaive")
    reference_server(
        device_server_factory,
        tango_database,
        {
            name: {
                "SourceDevice": own_source.dev_name(),
                "CallbackDelay": "0.05",
                "NaiveShutdown": "true",
            }
        },
    )
    device = tango.DeviceProxy(name)
    own_source.StartPushing([[50.0], ["myAttr1"]])
    callbacks_flowing(device)
    device.set_timeout_millis(2500)
    start = time.monotonic()
    with pytest.raises(tango.DevFailed) as info:
        device.Init()
    print(f"naive Init failed after {time.monotonic() - start:.2f} s: {info.value.args[-1].reason}")
    # The server finishes the Init once Tango gives up on the callback's
    # wait for the monitor (about 3.2 s).
    device.set_timeout_millis(10_000)
    wait_for(
        lambda: device.initCount >= 2,
        timeout=30,
        message="the naive Init to finish on the server (initCount 2)",
    )
    assert device.monitorTimeouts >= 1
    naive_delete = device.deleteDurations[-1]
    print(f"naive delete_device took {naive_delete:.2f} s")
    assert naive_delete > 2.5


@pytest.mark.parametrize("blocks", [1, 2])
def test_client_requests_wait_for_the_block_internal_threads_do_not(
    device_server_factory: DeviceServerFactory, tango_database: TangoDatabase, blocks: int
) -> None:
    """A read issued in the first block is served after the last one.

    With two blocks the command holds the monitor for 0.3 s between them,
    as delete_device does: the held read must not slip in there.
    """
    name = unique_device(device_server_factory, "mixblock")
    reference_server(device_server_factory, tango_database, {name: {}})
    holder = tango.DeviceProxy(name)
    holder.set_timeout_millis(20_000)
    reader = tango.DeviceProxy(name)
    reader.set_timeout_millis(20_000)
    reader.ping()
    result: dict[str, Any] = {}
    # Under 3.2 s in all: with PyTango < 10.1 the monitor stays held, and Tango
    # gives up on a request that waits longer than that for it.
    thread = threading.Thread(
        target=lambda: result.update(json.loads(holder.HoldInternalThreads([1.3, blocks, 0.3]))),
        daemon=True,
    )
    thread.start()
    time.sleep(0.6)  # the first block is open by now (it lasts 1.3 s)
    issued = time.time()
    served_at = reader.read_attribute("serverTime").value
    answered = time.time()
    thread.join(20)
    assert result, "HoldInternalThreads did not answer"
    first = result["blocks"][0]
    assert first["start"] < issued < first["end"], "the read was not issued inside the block"
    # The read was served only after the last block ended ...
    assert served_at >= result["end"]
    assert answered >= result["end"]
    # ... while the device's own thread took the monitor inside each block
    # (PyTango < 10.1: the monitor stays held, see SAFE_MONITOR_RELEASE).
    for block in result["blocks"]:
        if SAFE_MONITOR_RELEASE:
            assert block["internal"] is not None
            assert block["start"] <= block["internal"] <= block["end"]
        else:
            assert block["internal"] is None


def test_diagnostic_attributes_types_and_accounting(
    device_server_factory: DeviceServerFactory,
    tango_database: TangoDatabase,
    own_source: tango.DeviceProxy,
) -> None:
    name = unique_device(device_server_factory, "mixdiag")
    reference_server(
        device_server_factory,
        tango_database,
        {
            name: {
                "SourceDevice": own_source.dev_name(),
                "CallbackTakesMonitor": "false",
                "CallbackDelay": "0.002",
            }
        },
    )
    device = tango.DeviceProxy(name)
    for attr, (dtype, dformat) in EXPECTED_TYPES.items():
        info = device.get_attribute_config(attr)
        assert info.data_type == dtype, attr
        assert info.data_format == dformat, attr
        assert info.writable == tango.AttrWriteType.READ, attr
        assert info.description and "No description" not in info.description, attr
    wait_for(
        lambda: device.schedulerReceivedEvents >= 1,
        timeout=30,
        message="the first event (the current value) received by the device's scheduler",
    )
    # A burst faster than the 2 ms callbacks: the queue (32) overflows.
    own_source.PushBurst([[3000], ["myAttr1"]])
    checks = 0
    values: dict[str, Any] = {}

    def consistent_and_drained() -> bool:
        """Check the accounting on every read; done once the burst is in and drained."""
        nonlocal checks, values
        values = {a.name: a.value for a in device.read_attributes(list(DIAGNOSTIC_ATTRIBUTES))}
        received = values["schedulerReceivedEvents"]
        delivered = values["schedulerDeliveredEvents"]
        dropped = values["schedulerDroppedEvents"]
        depths = as_list(values["schedulerQueueDepths"])
        assert received == delivered + dropped + sum(depths), values
        assert len(depths) == len(as_list(values["schedulerQueueNames"]))
        snapshot = json.loads(values["schedulerDiagnostics"])
        assert snapshot["totals"]["received"] >= received  # taken a moment later
        assert isinstance(json.loads(values["schedulerBackoffState"]), dict)
        assert values["schedulerThreadCount"] == 1
        assert values["schedulerCallbackErrors"] == 0
        checks += 1
        return not own_source.pushingAttributes and sum(depths) == 0 and received > 1000

    # Generous: on a loaded machine the burst takes long to push and drain.
    wait_for(
        consistent_and_drained,
        timeout=240,
        message=lambda: f"the burst pushed, over 1000 events received, the queue drained: {values}",
    )
    received = values["schedulerReceivedEvents"]
    delivered = values["schedulerDeliveredEvents"]
    dropped = values["schedulerDroppedEvents"]
    assert checks > 1
    assert received > 1000
    assert dropped > 0, "the burst was expected to overflow the queue"
    print(f"after the burst: received {received}, delivered {delivered}, dropped {dropped}")


class EventCounter:
    """Client callback counting change events (and their reception times)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: list[float] = []
        self.values: list[Any] = []
        self.errors = 0

    def __call__(self, event: Any) -> None:
        with self.lock:
            if event.err:
                self.errors += 1
                return
            self.times.append(time.monotonic())
            self.values.append(event.attr_value.value)

    def count_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for t in self.times if start <= t < end)


def test_diagnostic_change_events_at_a_bounded_rate(
    device_server_factory: DeviceServerFactory,
    tango_database: TangoDatabase,
    own_source: tango.DeviceProxy,
) -> None:
    name = unique_device(device_server_factory, "mixevents")
    reference_server(
        device_server_factory,
        tango_database,
        {name: {"SourceDevice": own_source.dev_name(), "CallbackTakesMonitor": "false"}},
    )
    device = tango.DeviceProxy(name)
    counters = {attr: EventCounter() for attr in DIAGNOSTIC_ATTRIBUTES}
    subscriptions = [
        device.subscribe_event(attr, CHANGE, counter) for attr, counter in counters.items()
    ]
    try:
        for attr, counter in counters.items():
            wait_for(lambda c=counter: c.values, timeout=30, message=f"no first event on {attr}")
        own_source.StartPushing([[100.0], ["myAttr1"]])
        time.sleep(1.5)
        window = 6.0
        start = time.monotonic()
        time.sleep(window)
        end = time.monotonic()
        own_source.StopPushing([])
        received = counters["schedulerReceivedEvents"]
        pushed_events = received.count_between(start, end)
        print(f"schedulerReceivedEvents: {pushed_events} change events in {window} s")
        # ~600 own_source events reached the scheduler in the window, but the
        # attribute's events come at most about once per second.
        assert 2 <= pushed_events <= window / 0.5 + 2
        values = [int(v) for v in received.values]
        assert values == sorted(values)
        # Values that do not change (thread count) get no further events.
        assert counters["schedulerThreadCount"].count_between(start, end) == 0
        assert counters["schedulerDiagnostics"].count_between(start, end) >= 2
        assert all(c.errors == 0 for c in counters.values())
    finally:
        for subscription in subscriptions:
            device.unsubscribe_event(subscription)


def test_subscribing_in_init_device_to_a_device_of_the_same_server(
    device_server_factory: DeviceServerFactory, tango_database: TangoDatabase
) -> None:
    subscriber = unique_device(device_server_factory, "mixsub")
    peer = unique_device(device_server_factory, "mixpeer")
    # The subscriber's class is created first: its peer does not exist yet
    # when its init_device registers the callback.
    process = reference_server(
        device_server_factory,
        tango_database,
        {subscriber: {"SourceDevice": peer, "CallbackTakesMonitor": "true"}},
        peers=[peer],
    )
    device = tango.DeviceProxy(subscriber)
    source = tango.DeviceProxy(peer)

    def events_arrive() -> None:
        before = device.callbackCount

        def pushed() -> bool:
            source.Push("myAttr1")
            return bool(device.callbackCount > before)

        wait_for(pushed, timeout=60, interval=0.2, message="no event from the peer device")

    events_arrive()
    init_durations = list(device.initDurations)
    print(f"init_device with a same-server subscription took {init_durations[0]:.3f} s")
    # Not blocked: no wait on the monitor (3.2 s) nor on the subscription.
    assert init_durations[0] < 3.0
    device.Init()
    events_arrive()
    process.stop()
    process.start()
    events_arrive()
    assert list(device.initDurations)[0] < 3.0


def test_by_class_serial_model_warns_and_does_not_hang(
    device_server_factory: DeviceServerFactory,
    tango_database: TangoDatabase,
    own_source: tango.DeviceProxy,
    callbacks_flowing: Callable[..., None],
) -> None:
    name = unique_device(device_server_factory, "mixbyclass")
    process = reference_server(
        device_server_factory,
        tango_database,
        {name: {"SourceDevice": own_source.dev_name(), "CallbackDelay": "0.05"}},
        env={SERIAL_MODEL_ENV: "BY_CLASS"},
    )
    device = tango.DeviceProxy(name)
    own_source.StartPushing([[50.0], ["myAttr1"]])
    callbacks_flowing(device)
    device.set_timeout_millis(30_000)
    start = time.monotonic()
    device.Init()
    print(f"Init under BY_CLASS took {time.monotonic() - start:.2f} s")
    callbacks_flowing(device)
    assert "keeps the device monitor held (serial model BY_CLASS" in process.log_tail(20_000)


def test_no_subscription_before_the_server_has_started(
    device_server_factory: DeviceServerFactory, tango_database: TangoDatabase
) -> None:
    # A subscription to a device of the same server made while the server is
    # starting can be refused by its admin device (API_DServerClassNotInitialised)
    # and leave the process unable to subscribe to that server again
    # (API_ZmqFailed, "Invalid argument"). Under heavy load the test above hit
    # that window by chance; here init_device sleeps 2 s after registering,
    # keeping the server starting, and no attempt may be made meanwhile.
    subscriber = unique_device(device_server_factory, "mixstarting")
    peer = unique_device(device_server_factory, "mixstartingpeer")
    process = reference_server(
        device_server_factory,
        tango_database,
        {subscriber: {"SourceDevice": peer, "CallbackTakesMonitor": "false", "InitDelay": "2"}},
        peers=[peer],
    )
    device = tango.DeviceProxy(subscriber)
    source = tango.DeviceProxy(peer)
    before = device.callbackCount

    def pushed() -> bool:
        source.Push("myAttr1")
        return bool(device.callbackCount > before)

    wait_for(pushed, timeout=40, interval=0.2, message="no event from the peer device")
    assert device.errorEventCount == 0, process.log_tail()
    assert "cannot connect" not in process.log_tail(20_000)
