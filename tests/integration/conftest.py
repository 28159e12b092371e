"""Helpers and fixtures shared by the integration tests.

* ``recorder``: makes :class:`Recorder` callbacks that keep every event they get.
* ``source``: the first device of the module's shared ``EventSource`` server.
* ``own_source``: an ``EventSource`` device of a server of its own.
* ``module_server_factory``: a device server factory whose servers end with the module.
* ``callbacks_flowing``: waits until a ``SchedulerReference`` device's callback
  counts more events.

``sched`` and ``make_scheduler`` come from the top-level ``conftest.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import tango

from ska_tango_scheduler.testing import TangoDatabase, wait_for
from ska_tango_scheduler.testing.pytest_plugin import DeviceServerFactory, EventSourceServer


def _has_value(event: Any) -> bool:
    """Tell whether an event carries a value (no error, an attribute value)."""
    return not event.err and event.attr_value is not None


class Recorder:
    """An event callback keeping every event with the time it arrived.

    ``events`` holds ``(time.monotonic(), event)`` pairs; read it under ``lock``
    or through the methods, which copy.

    Args:
        delay: Seconds each call sleeps after recording, to make a slow callback.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.events: list[tuple[float, Any]] = []
        self._wall: list[float] = []

    def __call__(self, event: Any) -> None:
        with self.lock:
            self.events.append((time.monotonic(), event))
            self._wall.append(time.time())
        if self.delay:
            time.sleep(self.delay)

    def snapshot(self) -> list[tuple[float, Any]]:
        """The ``(arrival, event)`` pairs so far."""
        with self.lock:
            return list(self.events)

    def count(self) -> int:
        """How many events arrived, errors included."""
        with self.lock:
            return len(self.events)

    def good(self) -> list[tuple[float, Any]]:
        """The ``(arrival, event)`` pairs of the events that carry a value."""
        return [(t, e) for t, e in self.snapshot() if _has_value(e)]

    def values(self) -> list[int]:
        """The values of the events that carry one, as integers, in arrival order."""
        return [int(e.attr_value.value) for _, e in self.good()]

    def errors(self) -> list[Any]:
        """The error events."""
        return [e for _, e in self.snapshot() if e.err]

    def reasons(self) -> list[str]:
        """The reason of the first error of each error event."""
        return [e.errors[0].reason for e in self.errors()]

    def latencies(self) -> list[float]:
        """Seconds from each valued event's source timestamp to its arrival (wall clock)."""
        with self.lock:
            pairs = list(zip(self._wall, (e for _, e in self.events), strict=True))
        return [wall - e.attr_value.time.totime() for wall, e in pairs if _has_value(e)]


@pytest.fixture
def recorder() -> Callable[..., Recorder]:
    """Make recorders: ``recorder()`` or ``recorder(delay=0.5)``."""
    return Recorder


@pytest.fixture
def source(event_source: EventSourceServer) -> Iterator[tango.DeviceProxy]:
    """A proxy to the first device of the shared EventSource server, its counters reset."""
    proxy = tango.DeviceProxy(event_source.devices[0])
    proxy.ResetCounts()
    yield proxy
    proxy.command_inout("StopPushing", [])


@pytest.fixture(scope="module")
def module_server_factory(
    tango_database: TangoDatabase,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[DeviceServerFactory]:
    """A device server factory for the whole module; its servers end with the module."""
    factory = DeviceServerFactory(tango_database, tmp_path_factory.mktemp(request.module.__name__))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def own_source(device_server_factory: DeviceServerFactory) -> Iterator[tango.DeviceProxy]:
    """An EventSource device of a server of its own; pushing is stopped afterwards."""
    process = device_server_factory.event_source(1)
    proxy = tango.DeviceProxy(process.devices[0])
    try:
        yield proxy
    finally:
        try:
            proxy.StopPushing([])
        except tango.DevFailed:
            pass


def _callbacks_flowing(device: tango.DeviceProxy, more: int = 2, timeout: float = 30.0) -> None:
    before = device.callbackCount
    wait_for(
        lambda: device.callbackCount >= before + more,
        timeout=timeout,
        message=f"{more} more events counted by the callback of {device.dev_name()} "
        f"(it had counted {before})",
    )


@pytest.fixture
def callbacks_flowing() -> Callable[..., None]:
    """Wait until a device's callback counts ``more`` further events.

    Call it as ``callbacks_flowing(device, more=2, timeout=30.0)``; ``device``
    is a ``SchedulerReference`` proxy (it has ``callbackCount``).
    """
    return _callbacks_flowing
