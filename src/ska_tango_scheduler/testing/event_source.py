"""``EventSource``: a Tango device that pushes numbered events on demand.

Run it with ``python -m ska_tango_scheduler.testing.event_source INSTANCE``
(the server name is ``EventSource``), normally through
:class:`~ska_tango_scheduler.testing.DeviceServerProcess`.

Each of the attributes ``myAttr1`` .. ``myAttr4`` (``DevLong64`` scalars) is a
counter: it starts at 0 and each push adds one and sends the new value as a
change event and an archive event, both stamped with the server's clock at
the push. The n-th event pushed on an attribute therefore carries the value
n, and a client can tell from the values which events it missed. Events are
pushed by code only (no polling, no value-change detection).

Commands (``->`` gives the return type):

``Push(DevString attr) -> DevLong64``
    Push one event on ``attr`` now; returns the value pushed.
``PushBurst(DevVarLongStringArray ([n, ...], [attr, ...]))``
    For each attribute, push ``n`` events as fast as possible in a
    background thread; returns at once.
``StartPushing(DevVarDoubleStringArray ([rate_hz, ...], [attr, ...]))``
    Push on each attribute at its rate (events per second) until stopped;
    starting again on an attribute changes its rate.
``StopPushing(DevVarStringArray [attr, ...])``
    Stop rate pushing and bursts on these attributes (all if the list is
    empty) and wait for their threads to end (on PyTango < 10.1 the threads
    are told to stop and push nothing more, but are not waited for).
``ResetCounts()``
    Stop all pushing and set every counter back to 0 without pushing.

Read-only attributes besides the counters: ``pushedCounts``
(``DevLong64`` spectrum, events pushed on ``myAttr1`` .. ``myAttr4`` in that
order) and ``pushingAttributes`` (``DevString`` spectrum, the attributes that
have a pushing thread running).

Every pushing thread is an omni thread (``tango.EnsureOmniThread``) and is
stopped by ``delete_device``. The device works with PyTango 9.5 and 10.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import tango
from tango.server import Device, attribute, command

from ..mixin import SAFE_MONITOR_RELEASE
from ._servers import EVENT_SOURCE_ATTRIBUTES, EVENT_SOURCE_CLASS

__all__ = ["EventSource", "main"]

_log = logging.getLogger(__name__)

# A rate pusher that falls this far (seconds) behind its schedule starts a new
# schedule instead of pushing the missed events back to back.
_MAX_LAG = 1.0


class _Counter:
    """Sequence number and push time of one attribute."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value = 0
        self.stamp = time.time()


class _Pusher:
    """A background thread that pushes events on one attribute."""

    def __init__(self, kind: str, name: str, target: Any, *args: Any) -> None:
        self.kind = kind
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(target, *args), name=name, daemon=True
        )

    def _run(self, target: Any, *args: Any) -> None:
        with tango.EnsureOmniThread():
            try:
                target(self.stop_event, *args)
            except Exception:
                _log.exception("pushing thread %s failed", self.thread.name)


class EventSource(Device):
    """A device whose counter attributes push change and archive events on command."""

    def init_device(self) -> None:
        """Set up the counters and declare that the code pushes their events."""
        super().init_device()
        self._counters = {name: _Counter() for name in EVENT_SOURCE_ATTRIBUTES}
        self._pushers: dict[str, list[_Pusher]] = {name: [] for name in EVENT_SOURCE_ATTRIBUTES}
        self._pushers_lock = threading.Lock()
        for name in EVENT_SOURCE_ATTRIBUTES:
            self.set_change_event(name, True, False)
            self.set_archive_event(name, True, False)
        self.set_state(tango.DevState.ON)

    def delete_device(self) -> None:
        """Stop every pushing thread and wait for it."""
        self._stop(list(EVENT_SOURCE_ATTRIBUTES))
        super().delete_device()

    # -- pushing -----------------------------------------------------------------------------

    def _check(self, name: str) -> str:
        if name not in self._counters:
            tango.Except.throw_exception(
                "EventSource_UnknownAttribute",
                f"{name!r} is not one of {', '.join(EVENT_SOURCE_ATTRIBUTES)}",
                "EventSource",
            )
        return name

    def _push(self, name: str, stop: threading.Event | None = None) -> int | None:
        """Push the next value of ``name`` as change and archive event.

        Returns None, pushing nothing, if ``stop`` is set once the monitor is held.
        """
        counter = self._counters[name]
        # Monitor first, then the counter: reads hold the monitor and then
        # take the counter's lock, so the other order could deadlock.
        with tango.AutoTangoMonitor(self), counter.lock:
            if stop is not None and stop.is_set():
                return None
            value = counter.value + 1
            stamp = time.time()
            self.push_change_event(name, value, stamp, tango.AttrQuality.ATTR_VALID)
            self.push_archive_event(name, value, stamp, tango.AttrQuality.ATTR_VALID)
            counter.value = value
            counter.stamp = stamp
        return value

    def _push_logged(self, name: str, stop: threading.Event) -> bool:
        try:
            if self._push(name, stop) is None:
                return False
        except tango.DevFailed as exc:
            _log.warning("push on %s failed: %s", name, exc.args[0].desc if exc.args else exc)
            return False
        return True

    def _burst(self, stop: threading.Event, name: str, count: int) -> None:
        pushed = 0
        while pushed < count and not stop.is_set():
            if self._push_logged(name, stop):
                pushed += 1

    def _rate(self, stop: threading.Event, name: str, rate: float) -> None:
        period = 1.0 / rate
        start = time.monotonic()
        ticks = 0
        while not stop.is_set():
            self._push_logged(name, stop)
            ticks += 1
            delay = start + ticks * period - time.monotonic()
            if delay < -_MAX_LAG:
                start, ticks, delay = time.monotonic(), 0, 0.0
            if delay > 0:
                stop.wait(delay)

    def _start(self, name: str, kind: str, target: Any, *args: Any) -> None:
        pusher = _Pusher(kind, f"EventSource-{kind}-{name}", target, name, *args)
        with self._pushers_lock:
            self._pushers[name] = [p for p in self._pushers[name] if p.thread.is_alive()]
            self._pushers[name].append(pusher)
        pusher.thread.start()

    def _stop(self, names: Sequence[str], kinds: tuple[str, ...] = ("burst", "rate")) -> None:
        """Stop the pushers of ``names`` and join them without holding the monitor."""
        stopping: list[_Pusher] = []
        with self._pushers_lock:
            for name in names:
                keep = []
                for pusher in self._pushers[name]:
                    if pusher.kind in kinds:
                        pusher.stop_event.set()
                        stopping.append(pusher)
                    else:
                        keep.append(pusher)
                self._pushers[name] = keep
        if not stopping:
            return
        # A pushing thread needs the device monitor to push; this thread holds
        # it (commands and delete_device run under it), so let go while joining.
        # PyTango < 10.1 can hang while letting go (see mixin.SAFE_MONITOR_RELEASE):
        # there the pushers are only told to stop; they check that under the
        # monitor, so none pushes again, and they end once they get it.
        if not SAFE_MONITOR_RELEASE:
            return
        with tango.AutoTangoAllowThreads(self):
            for pusher in stopping:
                if pusher.thread is not threading.current_thread():
                    pusher.thread.join()

    # -- commands ----------------------------------------------------------------------------

    @command(dtype_in=str, dtype_out=tango.DevLong64)
    def Push(self, attr: str) -> int:  # noqa: N802 - Tango command names are CamelCase
        """Push one event on an attribute now.

        Args:
            attr: Attribute name, ``myAttr1`` .. ``myAttr4``.

        Returns:
            The value pushed (the attribute's new sequence number).
        """
        value = self._push(self._check(attr))
        assert value is not None  # only a stop event makes _push skip
        return value

    @command(dtype_in=tango.DevVarLongStringArray)
    def PushBurst(self, argin: Sequence[Sequence[Any]]) -> None:  # noqa: N802
        """Push a number of events on attributes as fast as possible, in the background.

        Args:
            argin: ``([count, ...], [attr, ...])``, one count per attribute.
        """
        counts, names = list(argin[0]), list(argin[1])
        if len(counts) != len(names):
            tango.Except.throw_exception(
                "EventSource_BadArgument",
                f"{len(counts)} counts for {len(names)} attributes",
                "EventSource.PushBurst",
            )
        for name in names:
            self._check(name)
        for count, name in zip(counts, names, strict=True):
            self._start(name, "burst", self._burst, int(count))

    @command(dtype_in=tango.DevVarDoubleStringArray)
    def StartPushing(self, argin: Sequence[Sequence[Any]]) -> None:  # noqa: N802
        """Push events on attributes at fixed rates until stopped.

        Args:
            argin: ``([rate_hz, ...], [attr, ...])``, one rate (events per
                second, > 0) per attribute.
        """
        rates, names = [float(r) for r in argin[0]], list(argin[1])
        if len(rates) != len(names) or any(not rate > 0 for rate in rates):
            tango.Except.throw_exception(
                "EventSource_BadArgument",
                f"need one positive rate per attribute, got rates {rates} for {names}",
                "EventSource.StartPushing",
            )
        for name in names:
            self._check(name)
        self._stop(names, kinds=("rate",))
        for rate, name in zip(rates, names, strict=True):
            self._start(name, "rate", self._rate, rate)

    @command(dtype_in=[str])
    def StopPushing(self, argin: Sequence[str]) -> None:  # noqa: N802
        """Stop pushing on attributes and wait for their threads to end.

        Args:
            argin: Attribute names; an empty list stops all.
        """
        names = [self._check(n) for n in argin] if len(argin) else list(EVENT_SOURCE_ATTRIBUTES)
        self._stop(names)

    @command
    def ResetCounts(self) -> None:  # noqa: N802
        """Stop all pushing and set every counter back to 0, without pushing."""
        self._stop(list(EVENT_SOURCE_ATTRIBUTES))
        for counter in self._counters.values():
            with counter.lock:
                counter.value = 0
                counter.stamp = time.time()

    # -- attributes --------------------------------------------------------------------------

    def _read(self, name: str) -> tuple[int, float, tango.AttrQuality]:
        counter = self._counters[name]
        with counter.lock:
            return counter.value, counter.stamp, tango.AttrQuality.ATTR_VALID

    @attribute(dtype=tango.DevLong64, doc="Counter 1: events pushed so far.")
    def myAttr1(self) -> tuple[int, float, tango.AttrQuality]:  # noqa: N802
        """Return counter 1 with the time of its last push."""
        return self._read("myAttr1")

    @attribute(dtype=tango.DevLong64, doc="Counter 2: events pushed so far.")
    def myAttr2(self) -> tuple[int, float, tango.AttrQuality]:  # noqa: N802
        """Return counter 2 with the time of its last push."""
        return self._read("myAttr2")

    @attribute(dtype=tango.DevLong64, doc="Counter 3: events pushed so far.")
    def myAttr3(self) -> tuple[int, float, tango.AttrQuality]:  # noqa: N802
        """Return counter 3 with the time of its last push."""
        return self._read("myAttr3")

    @attribute(dtype=tango.DevLong64, doc="Counter 4: events pushed so far.")
    def myAttr4(self) -> tuple[int, float, tango.AttrQuality]:  # noqa: N802
        """Return counter 4 with the time of its last push."""
        return self._read("myAttr4")

    @attribute(
        dtype=(tango.DevLong64,),
        max_dim_x=len(EVENT_SOURCE_ATTRIBUTES),
        doc="Events pushed on myAttr1 .. myAttr4, in that order.",
    )
    def pushedCounts(self) -> list[int]:  # noqa: N802
        """Return the number of events pushed per counter attribute."""
        return [self._counters[name].value for name in EVENT_SOURCE_ATTRIBUTES]

    @attribute(
        dtype=(str,),
        max_dim_x=len(EVENT_SOURCE_ATTRIBUTES),
        doc="Attributes that have a pushing thread running.",
    )
    def pushingAttributes(self) -> list[str]:  # noqa: N802
        """Return the attributes with a live pushing thread."""
        with self._pushers_lock:
            return [
                name
                for name in EVENT_SOURCE_ATTRIBUTES
                if any(p.thread.is_alive() for p in self._pushers[name])
            ]


def main(args: Sequence[str] | None = None) -> None:
    """Run the ``EventSource`` device server.

    Args:
        args: Command line after the program name (instance name, then Tango
            and ORB options); ``None``: ``sys.argv[1:]``.
    """
    argv = list(sys.argv[1:] if args is None else args)
    tango.server.run((EventSource,), args=[EVENT_SOURCE_CLASS, *argv])


if __name__ == "__main__":
    main()
