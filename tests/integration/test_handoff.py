"""The hand-off from Tango's event thread, against real device servers.

* No object of the scheduler keeps a subscribed proxy alive after
  ``shutdown()`` (a reference cycle would leave its destructor to the
  garbage collector, on whatever thread it interrupts).
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from typing import Any

import pytest
import tango

from ska_tango_scheduler import CallbackScheduler
from ska_tango_scheduler._compat import key_of
from ska_tango_scheduler.testing import wait_for

pytestmark = pytest.mark.integration

CHANGE = tango.EventType.CHANGE_EVENT


class Counter:
    """A callback that counts events and keeps none (an event refers to its proxy)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    def __call__(self, event: Any) -> None:
        with self.lock:
            self.count += 1


def _subscribe_and_shut_down(event_source: Any, backlog: bool) -> weakref.ref[Any]:
    """Subscribe through a scheduler, shut it down and return a weakref to its proxy."""
    counter = Counter()
    gate = threading.Event()

    def blocking(event: Any) -> None:
        counter(event)
        gate.wait(60)

    sched = CallbackScheduler(name="proxy-release")
    try:
        trl = event_source.trls[0]
        sched.register_event_callback(trl, "myAttr1", CHANGE, blocking if backlog else counter)
        wait_for(lambda: counter.count >= 1, message="the first event (the current value)")
        if backlog:
            source = tango.DeviceProxy(event_source.devices[0])
            source.PushBurst([[5], ["myAttr1"]])
            del source
            wait_for(
                lambda: sched.diagnostics().totals.queued >= 3,
                message="events waiting behind the blocked callback",
            )
        proxy_ref = weakref.ref(sched._ctx.proxies[key_of(trl)])  # noqa: SLF001
        sched.shutdown(timeout=0.5 if backlog else 30)
    finally:
        gate.set()
    wait_for(lambda: not any(t.is_alive() for t in sched.threads), message="the workers to end")
    return proxy_ref


@pytest.mark.parametrize("backlog", [False, True], ids=["idle", "events-queued"])
def test_shutdown_lets_the_proxy_go_without_the_collector(event_source: Any, backlog: bool) -> None:
    """With the collector off, the proxy a scheduler made dies once it is shut down.

    With ``backlog``, a callback is blocked at shutdown while events wait in
    its queue: the stream (and its events) must not keep the proxy in a
    reference cycle of the scheduler's objects.
    """
    gc.collect()
    gc.disable()
    try:
        proxy_ref = _subscribe_and_shut_down(event_source, backlog)
        proxy = proxy_ref()
        holders = []
        if proxy is not None:
            holders = [type(r).__name__ for r in gc.get_referrers(proxy)]
            del proxy
        assert proxy_ref() is None, f"the proxy is still alive, referred to by {holders}"
    finally:
        gc.enable()


def _flood(
    sched: CallbackScheduler, source: Any, trl: str, rate: float, seconds: float, loop: bool
) -> tuple[int, int]:
    """Push ``rate`` events/s on myAttr2 for ``seconds``; return (pushed, received).

    With ``loop``, a thread calls ``diagnostics()`` back to back meanwhile.
    Received is what reached the scheduler (delivered, dropped or queued),
    counted once nothing more arrives: the rest was lost in ZeroMQ.
    """

    def received() -> int:
        status = [r for r in sched.diagnostics().streams if r.attribute == "myAttr2"]
        return status[0].received

    floor_pushed, floor_received = int(source.pushedCounts[1]), received()
    stop = threading.Event()
    calls = [0]

    def snapshots() -> None:
        while not stop.is_set():
            sched.diagnostics()
            calls[0] += 1

    looper = threading.Thread(target=snapshots, daemon=True)
    if loop:
        looper.start()
    try:
        source.StartPushing([[rate], ["myAttr2"]])
        time.sleep(seconds)
        source.StopPushing(["myAttr2"])
        wait_for(lambda: not source.pushingAttributes, message="the server to stop pushing")
        last = [-1]

        def settled() -> bool:
            now, last[0] = received(), received()
            return now == last[0] and time.sleep(0.5) is None and received() == now

        wait_for(settled, timeout=60, message="no more events arriving")
    finally:
        stop.set()
        if looper.is_alive():
            looper.join(30)
    assert not loop or calls[0] > 10, "the diagnostics loop did not run"
    return int(source.pushedCounts[1]) - floor_pushed, received() - floor_received


def test_diagnostics_in_a_tight_loop_leaves_the_intake_alone(event_source: Any) -> None:
    """Events that reach the scheduler in a flood: with diagnostics() looping, as without.

    The flooded stream's callback is slow, so thousands of events wait in its
    queue (a snapshot that walks the queues, or holds the lock Tango's event
    thread needs while it builds rows, stalls the event thread and ZeroMQ
    drops what overflows). 200 more streams make each snapshot big.
    """
    sched = CallbackScheduler(1, name="diag-intake")
    try:
        trl = event_source.trls[1]
        sched.register_event_callback(
            trl,
            "myAttr2",
            CHANGE,
            lambda event: time.sleep(0.002),
            queue_factory=lambda: sched.allocate_queue(1_000_000),
        ).result(timeout=30)
        _add_quiet_streams(sched, 200)
        source = tango.DeviceProxy(event_source.devices[1])
        pushed0, received0 = _flood(sched, source, trl, 4000.0, 4.0, loop=False)
        pushed1, received1 = _flood(sched, source, trl, 4000.0, 4.0, loop=True)
    finally:
        sched.shutdown(timeout=30)
    if pushed0 - received0 > 0.005 * pushed0:
        pytest.skip(
            f"without snapshots ZeroMQ lost {pushed0 - received0} of {pushed0} already: "
            "the machine is too busy for this rate, the comparison would mean nothing"
        )
    share0, share1 = received0 / pushed0, received1 / pushed1
    assert share1 >= share0 - 0.01, (
        f"intake with diagnostics() looping: {received1} of {pushed1} ({share1:.2%}); "
        f"without: {received0} of {pushed0} ({share0:.2%})"
    )


def _add_quiet_streams(sched: CallbackScheduler, count: int) -> None:
    """Give the scheduler ``count`` streams without Tango (for the size of a snapshot)."""
    from ska_tango_scheduler._streams import EventStream, StreamKey
    from ska_tango_scheduler._trl import DeviceKey

    ctx = sched._ctx  # noqa: SLF001
    for i in range(count):
        key = StreamKey(DeviceKey("localhost", 1, f"test/quiet/{i}"), "a", CHANGE)
        stream = EventStream(ctx, key, "a", ctx.dispatcher.new_queue(32), None)
        registry = sched._registry  # noqa: SLF001
        with registry.lock:
            registry.streams[key] = stream
            registry.queue_users[stream.queue] = {stream}
        for n in range(20):
            ctx.dispatcher.put(stream.queue, stream, n)
