"""Streams that survive start-up order and faults (real database, real servers)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import tango

from ska_tango_scheduler import BackoffPolicy, CallbackScheduler
from ska_tango_scheduler.testing import wait_for

pytestmark = pytest.mark.integration

CHANGE = tango.EventType.CHANGE_EVENT
ARCHIVE = tango.EventType.ARCHIVE_EVENT
ASYNC = hasattr(tango, "EventSubMode")


MakeRecorder = Callable[..., Any]


def test_trl_before_the_device_is_defined(
    sched: CallbackScheduler, device_server_factory: Any, recorder: MakeRecorder
) -> None:
    server = device_server_factory.event_source(1, start=False)
    device = server.devices[0]
    rec = recorder()
    future = sched.register_event_callback(device, "myAttr1", CHANGE, rec)
    future.result(timeout=30)
    wait_for(
        lambda: rec.reasons().count("DB_DeviceNotDefined") >= 3,
        timeout=30,
        message=lambda: f"3 DB_DeviceNotDefined errors; reasons so far {rec.reasons()}",
    )
    error = rec.errors()[0]
    assert error.attr_name.lower().endswith(f"{device}/myattr1")
    if ASYNC:
        assert error.event_reason == tango.EventReason.SubFail
    backoff = sched.diagnostics().backoff
    assert len(backoff) == 1 and backoff[0].attempts >= 3
    assert "DB_DeviceNotDefined" in backoff[0].last_error

    server.start()  # defines the device, then runs its server
    wait_for(lambda: len(rec.good()) >= 1, timeout=30, message="no event after the device appeared")
    proxy = tango.DeviceProxy(device)
    proxy.Push("myAttr1")
    wait_for(
        lambda: 1 in rec.values(),
        timeout=30,
        message=lambda: f"the pushed value 1; values so far {rec.values()}",
    )
    snap = sched.diagnostics()
    assert snap.streams[0].state == "connected" and snap.backoff == ()


def test_defined_but_not_running_connects_soon_after_start(
    sched: CallbackScheduler, device_server_factory: Any, recorder: MakeRecorder
) -> None:
    server = device_server_factory.event_source(1, start=False)
    server.register()
    rec = recorder()
    sched.register_event_callback(server.devices[0], "myAttr1", CHANGE, rec).result(timeout=30)
    # Wait for a second error: with asynchronous subscription that is Tango's
    # own 10 s retry, so Tango's next retry is far away when the server starts.
    wait_for(
        lambda: len(rec.errors()) >= 2,
        timeout=40,
        message="a second error event while the server is defined but not running",
    )
    assert not rec.good()
    server.start()
    reachable = time.monotonic()
    wait_for(
        lambda: len(rec.good()) >= 1,
        timeout=30,
        message="the first event after the server started",
    )
    delay = rec.good()[0][0] - reachable
    # Generous: Tango alone would wait for its next 10 s retry.
    assert delay < 5.0, f"first event {delay:.2f} s after the server was reachable"


def test_missing_attribute_reports_subfail(
    sched: CallbackScheduler, event_source: Any, recorder: MakeRecorder
) -> None:
    rec = recorder()
    good = recorder()
    sched.register_event_callback(event_source.devices[1], "noSuchAttr", CHANGE, rec).result(
        timeout=30
    )
    sched.register_event_callback(event_source.devices[1], "myAttr4", CHANGE, good).result(
        timeout=30
    )
    wait_for(
        lambda: "API_AttrNotFound" in rec.reasons(),
        timeout=30,
        message=lambda: f"an API_AttrNotFound error for noSuchAttr; reasons {rec.reasons()}",
    )
    if ASYNC:
        assert rec.errors()[0].event_reason == tango.EventReason.SubFail
    tango.DeviceProxy(event_source.devices[1]).Push("myAttr4")
    wait_for(  # the other stream is fine
        lambda: len(good.good()) >= 2,
        timeout=30,
        message="the current value and the pushed one on myAttr4, beside the failing stream",
    )
    states = {s.attribute: s.state for s in sched.diagnostics().streams}
    assert states == {"noSuchAttr": "failing", "myAttr4": "connected"}
    (row,) = sched.diagnostics().backoff
    assert "API_AttrNotFound" in row.last_error
    assert not rec.good()


def test_server_killed_and_restarted(
    sched: CallbackScheduler, device_server_factory: Any, recorder: MakeRecorder
) -> None:
    server = device_server_factory.event_source(1)
    device = server.devices[0]
    proxy = tango.DeviceProxy(device)
    rec = recorder()
    sched.register_event_callback(device, "myAttr1", CHANGE, rec).result(timeout=30)
    proxy.command_inout("StartPushing", ([20.0], ["myAttr1"]))
    wait_for(
        lambda: len(rec.good()) >= 10,
        timeout=30,
        message="10 events of the pushing server before it is killed",
    )

    server.kill()
    killed_at = time.monotonic()
    wait_for(
        lambda: any(t > killed_at for t, _ in [(t, e) for t, e in rec.events if e.err]),
        timeout=60,
        message="no error event after the server was killed",
    )
    before_restart = len(rec.good())

    server.start()
    restarted = time.monotonic()
    proxy = tango.DeviceProxy(device)
    proxy.command_inout("StartPushing", ([20.0], ["myAttr1"]))
    wait_for(
        lambda: any(t > restarted for t, _ in rec.good()),
        timeout=60,
        message="delivery did not resume after the restart",
    )
    proxy.command_inout("StopPushing", [])
    assert len(rec.good()) > before_restart

    # Events pushed before StopPushing may still be on their way: wait until
    # the queue is empty and every event that came was delivered to the callback.
    def settled() -> bool:
        snap = sched.diagnostics()
        return snap.totals.queued == 0 and snap.streams[0].delivered == rec.count()

    wait_for(
        settled,
        timeout=30,
        message=lambda: (
            f"an empty queue and {rec.count()} events delivered: {sched.diagnostics().streams[0]}"
        ),
    )
    snap = sched.diagnostics()
    stream = snap.streams[0]
    assert stream.received == stream.delivered + stream.dropped + stream.queued
    assert snap.totals.received == snap.totals.delivered + snap.totals.dropped + snap.totals.queued
    assert stream.delivered == len(rec.events)


def test_concurrent_register_unregister_under_load(event_source: Any) -> None:
    """8 threads churn callbacks on 20 streams for 10 s while events flow."""
    proxies = [tango.DeviceProxy(d) for d in event_source.devices]
    streams = [
        (proxy, attr, etype)
        for proxy in proxies
        for attr in ("myAttr1", "myAttr2", "myAttr3", "myAttr4")
        for etype in (CHANGE, ARCHIVE)
    ][:20]
    sched = CallbackScheduler(thread_count=2, name="churn")
    errors: list[BaseException] = []
    delivered = [0]
    count_lock = threading.Lock()
    stop = threading.Event()

    def count(event: Any) -> None:
        with count_lock:
            delivered[0] += 1

    def nested(event: Any) -> None:
        # Register and unregister from inside a callback too.
        try:
            proxy, attr, etype = random.choice(streams)
            future = sched.register_event_callback(proxy, attr, etype, count)
            if future.done():
                sched.unregister_callback(future.result())
            else:
                future.add_done_callback(lambda f: sched.unregister_callback(f.result()))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    def churn(seed: int) -> None:
        rnd = random.Random(seed)
        mine: list[Any] = []
        try:
            while not stop.is_set():
                if mine and rnd.random() < 0.5:
                    sched.unregister_callback(mine.pop(rnd.randrange(len(mine))).result(30))
                else:
                    proxy, attr, etype = rnd.choice(streams)
                    callback = nested if rnd.random() < 0.05 else count
                    mine.append(sched.register_event_callback(proxy, attr, etype, callback))
                time.sleep(rnd.random() * 0.01)
            for future in mine:
                sched.unregister_callback(future.result(30))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    for proxy in proxies:
        proxy.command_inout(
            "StartPushing", ([50.0] * 4, ["myAttr1", "myAttr2", "myAttr3", "myAttr4"])
        )
    threads = [threading.Thread(target=churn, args=(i,)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        for proxy in proxies:
            proxy.command_inout("StopPushing", [])
    assert not errors, errors[:3]
    assert not any(t.is_alive() for t in threads)
    # Callbacks registered from inside callbacks are gone once their futures resolved.
    wait_for(
        lambda: sched.diagnostics().streams == (),
        timeout=60,
        message="streams left after every callback was unregistered",
    )
    # Every subscription made was taken back (the last ones asynchronously).
    wait_for(
        lambda: (t := sched.diagnostics().totals).subscribe_calls == t.unsubscribe_calls,
        timeout=60,
        message="a Tango subscription was not taken back",
    )
    totals = sched.diagnostics().totals
    assert totals.received == totals.delivered + totals.dropped + totals.queued
    assert totals.received > 0 and delivered[0] > 0
    # No Tango subscription left on the client side.
    wait_for(
        lambda: all(not p.__dict__.get("_subscribed_events") for p in proxies),
        timeout=30,
        message="no subscription left in the client's proxies",
    )
    sched.shutdown(timeout=30)


def test_shutdown_during_backoff_is_prompt(
    device_server_factory: Any, recorder: MakeRecorder
) -> None:
    server = device_server_factory.event_source(1, start=False)
    server.register()  # defined, not running
    sched = CallbackScheduler(name="backoff", backoff=BackoffPolicy(max_delay=0.5))
    rec = recorder()
    sched.register_event_callback("test/undefined/1", "myAttr1", CHANGE, rec).result(timeout=30)
    sched.register_event_callback(server.devices[0], "myAttr1", CHANGE, rec).result(timeout=30)
    wait_for(
        lambda: len(sched.diagnostics().backoff) == 2,
        timeout=30,
        message="both streams (undefined device, server not running) in backoff",
    )
    wait_for(
        lambda: min(b.attempts for b in sched.diagnostics().backoff) >= 3,
        timeout=30,
        message=lambda: f"3 attempts on each stream: {sched.diagnostics().backoff}",
    )
    start = time.monotonic()
    sched.shutdown()
    elapsed = time.monotonic() - start
    assert elapsed < 2.0, f"shutdown took {elapsed:.2f} s"
    assert not any(t.is_alive() for t in sched.threads)
