"""Reference devices for testing :class:`~ska_tango_scheduler.mixin.SchedulerMixin`.

Run a server with ``python -m ska_tango_scheduler.testing.mixin_devices INSTANCE``
(server name ``SchedulerReference``); further arguments go to Tango. The server
serves two classes, in this order:

* :class:`SchedulerReference`: a ``SchedulerMixin`` device that subscribes, in
  ``init_device``, to the attribute named by its properties, with a callback
  that can take the device monitor, like device code that updates its state
  from events does.
* :class:`~ska_tango_scheduler.testing.event_source.EventSource`, so that one
  server can hold both a subscriber and the device it subscribes to (the
  ``SchedulerReference`` devices are created first: their source is not even
  created, let alone exported, when they subscribe).

The environment variable named by :data:`SERIAL_MODEL_ENV` chooses the
server's serial model (``BY_DEVICE`` when unset); the one named by
:data:`GC_THRESHOLD_ENV` sets the garbage collector's thresholds
(``gc.set_threshold``, comma-separated), for stress tests.

``SchedulerReference`` device properties:

``SourceDevice`` (string)
    Device to subscribe to in ``init_device``, by name or TRL; none if empty.
``SourceAttribute`` (string, default ``myAttr1``)
    Its attribute (change events).
``QuickAttribute`` (string, default empty)
    A second attribute of ``SourceDevice`` to subscribe to, with a callback
    that only counts (``quickCallbackCount``); none if empty. With a
    ``CallbackDelay`` above the scheduler's slow-callback threshold this
    makes a device with one slow stream and one quick one.
``CallbackTakesMonitor`` (boolean, default true)
    The callback counts the event under ``tango.AutoTangoMonitor(self)``.
``CallbackDelay`` (double, default 0)
    Seconds the callback sleeps first (outside the monitor).
``NaiveShutdown`` (boolean, default false)
    ``delete_device`` first shuts the scheduler down while holding the
    monitor, without :meth:`~SchedulerMixin.allow_internal_threads`: the
    mistake the mixin exists to avoid.
``InitDelay`` (double, default 0)
    Seconds ``init_device`` sleeps after registering its callbacks, keeping
    the server starting while the scheduler could connect.

The counters of ``SchedulerReference`` survive ``Init``; the diagnostic
attributes describe the current scheduler only.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import tango
from tango.server import Device, attribute, command, device_property

from ska_tango_scheduler.mixin import SchedulerMixin

from .event_source import EventSource

if TYPE_CHECKING:  # the pytest plugin imports pytest, which a device server does not need
    from ._database import TangoDatabase
    from ._servers import DeviceServerProcess
    from .pytest_plugin import DeviceServerFactory

__all__ = [
    "GC_THRESHOLD_ENV",
    "SCHEDULER_REFERENCE_CLASS",
    "SCHEDULER_REFERENCE_MODULE",
    "SERIAL_MODEL_ENV",
    "SchedulerReference",
    "main",
    "reference_server",
]

#: Tango class name of :class:`SchedulerReference`, and the server name.
SCHEDULER_REFERENCE_CLASS = "SchedulerReference"
#: Module to run with ``python -m``.
SCHEDULER_REFERENCE_MODULE = "ska_tango_scheduler.testing.mixin_devices"
#: Environment variable naming the server's serial model (``BY_DEVICE``,
#: ``BY_CLASS``, ``BY_PROCESS`` or ``NO_SYNC``).
SERIAL_MODEL_ENV = "SKA_TANGO_SCHEDULER_SERIAL_MODEL"
#: Environment variable: the server's garbage collector thresholds, comma-separated
#: (e.g. ``700,1,1``); Python's defaults when unset.
GC_THRESHOLD_ENV = "SKA_TANGO_SCHEDULER_GC_THRESHOLD"

_LOGGER = logging.getLogger(__name__)


class _Stats:
    """Counters that outlive ``Init``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.callbacks = 0
        self.quick_callbacks = 0
        self.error_events = 0
        self.monitor_timeouts = 0
        self.inits = 0
        self.init_durations: list[float] = []
        self.delete_durations: list[float] = []
        self.last_block: dict[str, Any] = {}


class SchedulerReference(SchedulerMixin, Device):
    """A device with a callback scheduler whose callback may take the device monitor."""

    SourceDevice = device_property(dtype=str, default_value="")  # noqa: N815
    SourceAttribute = device_property(dtype=str, default_value="myAttr1")  # noqa: N815
    QuickAttribute = device_property(dtype=str, default_value="")  # noqa: N815
    CallbackTakesMonitor = device_property(dtype=bool, default_value=True)  # noqa: N815
    CallbackDelay = device_property(dtype=float, default_value=0.0)  # noqa: N815
    NaiveShutdown = device_property(dtype=bool, default_value=False)  # noqa: N815
    InitDelay = device_property(dtype=float, default_value=0.0)  # noqa: N815

    def __init__(self, *args: Any) -> None:
        """Create the counters, then the device (which runs ``init_device``)."""
        self._stats = _Stats()
        super().__init__(*args)

    def init_device(self) -> None:
        """Initialise the device and subscribe to the source, without waiting for it."""
        start = time.monotonic()
        super().init_device()
        if self.SourceDevice:
            self.scheduler.register_event_callback(
                self.SourceDevice,
                self.SourceAttribute,
                tango.EventType.CHANGE_EVENT,
                self._on_event,
            )
            if self.QuickAttribute:
                self.scheduler.register_event_callback(
                    self.SourceDevice,
                    self.QuickAttribute,
                    tango.EventType.CHANGE_EVENT,
                    self._on_quick_event,
                )
        if self.InitDelay > 0:
            time.sleep(self.InitDelay)
        self.set_state(tango.DevState.ON)
        with self._stats.lock:
            self._stats.inits += 1
            self._stats.init_durations.append(time.monotonic() - start)

    def delete_device(self) -> None:
        """Shut the scheduler down (naively if so configured), then clean up."""
        start = time.monotonic()
        if self.NaiveShutdown:
            # Joins the workers while this thread holds the device monitor.
            self.scheduler.shutdown()
        super().delete_device()
        with self._stats.lock:
            self._stats.delete_durations.append(time.monotonic() - start)

    def _on_quick_event(self, event: Any) -> None:
        if not event.err:
            with self._stats.lock:
                self._stats.quick_callbacks += 1

    def _on_event(self, event: Any) -> None:
        if event.err:
            with self._stats.lock:
                self._stats.error_events += 1
            return
        if self.CallbackDelay > 0:
            time.sleep(self.CallbackDelay)
        if not self.CallbackTakesMonitor:
            with self._stats.lock:
                self._stats.callbacks += 1
            return
        try:
            with tango.AutoTangoMonitor(self):
                with self._stats.lock:
                    self._stats.callbacks += 1
        except tango.DevFailed:
            with self._stats.lock:
                self._stats.monitor_timeouts += 1
            raise

    # -- commands ----------------------------------------------------------------------------

    @command(dtype_in=(float,), dtype_out=str)
    def HoldInternalThreads(self, argin: Sequence[float]) -> str:  # noqa: N802
        """Keep ``allow_internal_threads`` blocks open for a while.

        Inside each block an internal thread takes the device monitor and
        records when it got it. Between two blocks the command holds the
        monitor, as ``delete_device`` does between its blocks.

        Args:
            argin: ``[seconds, blocks, gap, tail]``, all but the first
                optional: how long each block stays open, how many blocks
                (default 1), the seconds between two blocks (default 0.2) and
                the seconds the command goes on after the last block, holding
                the monitor (default 0).

        Returns:
            JSON: ``blocks``, a list of ``{start, end, internal}`` (Unix
            times; ``internal``: when the internal thread held the monitor),
            and ``start`` / ``end`` of the first and last block.
        """
        values = list(argin)
        seconds = float(values[0])
        count = int(values[1]) if len(values) > 1 else 1
        gap = float(values[2]) if len(values) > 2 else 0.2
        tail = float(values[3]) if len(values) > 3 else 0.0
        blocks = []
        for index in range(count):
            if index:
                time.sleep(gap)
            blocks.append(self._hold_block(seconds))
        if tail > 0:
            time.sleep(tail)
        result = {"blocks": blocks, "start": blocks[0]["start"], "end": blocks[-1]["end"]}
        with self._stats.lock:
            self._stats.last_block = result
        return json.dumps(result)

    def _hold_block(self, seconds: float) -> dict[str, Any]:
        got: list[float] = []

        def internal() -> None:
            with tango.EnsureOmniThread():
                try:
                    with tango.AutoTangoMonitor(self):
                        got.append(time.time())
                except tango.DevFailed:
                    _LOGGER.info("internal thread did not get the monitor (it stayed held)")

        with self.allow_internal_threads():
            start = time.time()
            thread = threading.Thread(target=internal, name="reference-internal")
            thread.start()
            thread.join(seconds)
            remaining = start + seconds - time.time()
            if remaining > 0:
                time.sleep(remaining)
            end = time.time()
        return {"start": start, "end": end, "internal": got[0] if got else None}

    # -- attributes --------------------------------------------------------------------------

    @attribute(dtype=tango.DevLong64, doc="Events counted by the callback (all Inits).")
    def callbackCount(self) -> int:  # noqa: N802
        """Return the number of events the callback counted."""
        return self._stats.callbacks

    @attribute(dtype=tango.DevLong64, doc="Events counted by the quick callback (all Inits).")
    def quickCallbackCount(self) -> int:  # noqa: N802
        """Return the number of events the quick callback counted."""
        return self._stats.quick_callbacks

    @attribute(dtype=tango.DevLong64, doc="Error events received (all Inits).")
    def errorEventCount(self) -> int:  # noqa: N802
        """Return the number of error events."""
        return self._stats.error_events

    @attribute(
        dtype=tango.DevLong64, doc="Callbacks that could not get the device monitor (all Inits)."
    )
    def monitorTimeouts(self) -> int:  # noqa: N802
        """Return the number of callbacks that timed out waiting for the monitor."""
        return self._stats.monitor_timeouts

    @attribute(dtype=tango.DevLong, doc="Times init_device completed.")
    def initCount(self) -> int:  # noqa: N802
        """Return how many times init_device completed."""
        return self._stats.inits

    @attribute(dtype=(tango.DevDouble,), max_dim_x=10_000, doc="Seconds each init_device took.")
    def initDurations(self) -> list[float]:  # noqa: N802
        """Return the duration of each init_device."""
        with self._stats.lock:
            return list(self._stats.init_durations)

    @attribute(dtype=(tango.DevDouble,), max_dim_x=10_000, doc="Seconds each delete_device took.")
    def deleteDurations(self) -> list[float]:  # noqa: N802
        """Return the duration of each delete_device."""
        with self._stats.lock:
            return list(self._stats.delete_durations)

    @attribute(
        dtype=(str,),
        max_dim_x=1000,
        doc="Names of every live thread named after the scheduler (all schedulers so far).",
    )
    def liveSchedulerThreads(self) -> list[str]:  # noqa: N802
        """Return the names of live threads whose names start with the scheduler's name."""
        prefix = f"{self.scheduler.name}."
        return sorted(t.name for t in threading.enumerate() if t.name.startswith(prefix))

    @attribute(dtype=(str,), max_dim_x=1000, doc="Names of the current scheduler's threads.")
    def currentSchedulerThreads(self) -> list[str]:  # noqa: N802
        """Return the names of the threads of the current scheduler and its pusher."""
        names = [t.name for t in self.scheduler.threads]
        names.append(f"{self.scheduler.name}.diagnostics")
        return sorted(names)

    @attribute(dtype=float, doc="The server's clock (Unix time) when read.")
    def serverTime(self) -> float:  # noqa: N802
        """Return the time of the read."""
        return time.time()

    @attribute(dtype=str, doc="JSON timings of the last HoldInternalThreads block.")
    def lastBlock(self) -> str:  # noqa: N802
        """Return the timings of the last block."""
        with self._stats.lock:
            return json.dumps(self._stats.last_block)


def reference_server(
    factory: DeviceServerFactory,
    database: TangoDatabase,
    devices: Mapping[str, Mapping[str, str | Sequence[str]]],
    *,
    peers: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    start: bool = True,
) -> DeviceServerProcess:
    """Define a ``SchedulerReference`` server with device properties, and start it.

    Args:
        factory: The test's device server factory.
        database: The test database.
        devices: Device name to its properties (a string, or a list of
            strings for a property of several values).
        peers: Names of ``EventSource`` devices to serve in the same server.
        env: Extra environment variables of the server.
        start: Start it and wait until its devices answer.

    Returns:
        The server process.
    """
    instance = factory.unique_name("ref")
    process = factory(
        f"{SCHEDULER_REFERENCE_CLASS}/{instance}",
        list(devices),
        device_class=SCHEDULER_REFERENCE_CLASS,
        module=SCHEDULER_REFERENCE_MODULE,
        start=False,
        env=dict(env or {}),
    )
    process.register()
    for peer in peers:
        database.add_device(peer, "EventSource", process.server)
    for name, properties in devices.items():
        if properties:
            database.put_device_properties(
                name,
                {k: [v] if isinstance(v, str) else list(v) for k, v in properties.items()},
            )
    if start:
        process.start()
    return process


def _set_serial_model() -> None:
    name = os.environ.get(SERIAL_MODEL_ENV, "").strip().upper()
    if name:
        tango.Util.instance().set_serial_model(getattr(tango.SerialModel, name))


def main(args: Sequence[str] | None = None) -> None:
    """Run the ``SchedulerReference`` server (with the ``EventSource`` class).

    Args:
        args: Command line after the program name (instance name, then Tango
            and ORB options); ``None``: ``sys.argv[1:]``.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s"
    )
    # `kill -USR1 <pid>` prints every thread's stack to the log: for hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    thresholds = os.environ.get(GC_THRESHOLD_ENV, "").strip()
    if thresholds:
        gc.set_threshold(*(int(part) for part in thresholds.split(",")))
    argv = list(sys.argv[1:] if args is None else args)
    tango.server.run(
        (SchedulerReference, EventSource),
        args=[SCHEDULER_REFERENCE_CLASS, *argv],
        pre_init_callback=_set_serial_model,
    )


if __name__ == "__main__":
    main()
