"""The hand-off from Tango's event thread, against real device servers.

* No object of the scheduler keeps a subscribed proxy alive after
  ``shutdown()`` (a reference cycle would leave its destructor to the
  garbage collector, on whatever thread it interrupts).
"""

from __future__ import annotations

import gc
import threading
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
