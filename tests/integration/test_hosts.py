"""Hosts that do not answer, or answer only part of what is asked, against real Tango.

Every scenario runs real Tango processes on 127.0.0.1 (the test database and
``EventSource`` servers) beside fake hosts in this process: :class:`SilentHost`
(accepts TCP, never answers) and :class:`HalfAnsweringHost` (answers a GIOP
``LocateRequest`` ping, optionally late, and never a request). The promises:
healthy devices never queue behind checks of bad hosts, an already-connected
stream keeps delivering while a bad host is being tried, and a bad host is
retried on the slow schedule.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import tango

from ska_tango_scheduler import CallbackScheduler
from ska_tango_scheduler.testing import HalfAnsweringHost, SilentHost, wait_for

CHANGE = tango.EventType.CHANGE_EVENT
ATTEMPT_TIMEOUT = 3.0
#: Seconds between attempts on a host that timed out (the scheduler's slow retry).
SLOW_RETRY = 10.0


class Recorder:
    """Keeps the arrival time of every good event."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrivals: list[float] = []
        self.errors = 0

    def __call__(self, event: Any) -> None:
        with self.lock:
            if event.err:
                self.errors += 1
            else:
                self.arrivals.append(time.monotonic())

    def times(self) -> list[float]:
        with self.lock:
            return list(self.arrivals)


def _ignore(event: Any) -> None:
    """A callback for streams whose events do not matter."""


def _scheduler(**kwargs: Any) -> CallbackScheduler:
    """A scheduler; ``attempt_timeout`` only where the scheduler has it."""
    known = inspect.signature(CallbackScheduler).parameters
    return CallbackScheduler(**{k: v for k, v in kwargs.items() if k in known})


@pytest.fixture
def silent_hosts() -> Iterator[list[SilentHost]]:
    hosts = [SilentHost() for _ in range(30)]
    try:
        yield hosts
    finally:
        for host in hosts:
            host.close()


def test_thirty_silent_hosts_are_checked_at_once_and_a_healthy_device_does_not_wait(
    silent_hosts: list[SilentHost], event_source: Any
) -> None:
    # Each check of a silent host is bounded far beyond this test: the healthy
    # stream must connect while all thirty are unresolved, and all thirty must
    # be asked at once (not eight at a time, one connector thread each).
    sched = _scheduler(name="silent30", attempt_timeout=120.0, wait_for_subscription=False)
    try:
        hung = [
            sched.register_event_callback(host.trl(f"silent/dev/{i}"), "state", CHANGE, _ignore)
            for i, host in enumerate(silent_hosts)
        ]
        wait_for(
            lambda: all(host.connections for host in silent_hosts),
            timeout=30,
            message=lambda: (
                "not every silent host was asked: "
                f"{sum(1 for h in silent_hosts if h.connections)} of 30"
            ),
        )
        rec = Recorder()
        sched.register_event_callback(event_source.trls[0], "myAttr2", CHANGE, rec).result(
            timeout=60
        )
        wait_for(rec.times, timeout=30, message="the healthy stream got no first value")
        assert not any(f.done() for f in hung), "a silent host was resolved before the healthy one"
    finally:
        sched.shutdown(timeout=10)
    assert not any(t.is_alive() for t in sched.threads)


@pytest.mark.parametrize("locate_delay", [0.0, 2.9], ids=["answers-ping-then-hangs", "late-ping"])
def test_a_host_that_passes_a_ping_and_hangs_stalls_no_healthy_stream(
    locate_delay: float, device_server_factory: Any
) -> None:
    server = device_server_factory.event_source(2)
    pusher = tango.DeviceProxy(server.trls[0])
    sched = _scheduler(
        name="halfhost", attempt_timeout=ATTEMPT_TIMEOUT, wait_for_subscription=False
    )
    with HalfAnsweringHost(locate_delay=locate_delay) as bad:
        try:
            connected = Recorder()
            sched.register_event_callback(server.trls[0], "myAttr1", CHANGE, connected).result(
                timeout=60
            )
            pusher.StartPushing([[50.0], ["myAttr1"]])
            wait_for(lambda: len(connected.times()) > 5, timeout=30, message="no 50 Hz events")
            sched.register_event_callback(bad.trl("bad/dev/1"), "state", CHANGE, _ignore)
            # The first request the bad host will never answer: an attempt is under way.
            first = wait_for(
                lambda: bad.requests[:1], timeout=60, message="the bad host got no request"
            )[0]
            fresh = Recorder()
            sched.register_event_callback(server.trls[1], "myAttr1", CHANGE, fresh).result(
                timeout=60
            )
            pusher_2 = tango.DeviceProxy(server.trls[1])
            pusher_2.Push("myAttr1")
            wait_for(
                lambda: len(fresh.times()) >= 2, timeout=60, message="no value on the fresh stream"
            )
            end = first + ATTEMPT_TIMEOUT
            assert fresh.times()[0] < end, "the healthy registration waited for the bad host"
            wait_for(lambda: time.monotonic() > end + 0.5, timeout=30, message="end of the attempt")
            arrivals = connected.times()
            halves = [(first, first + ATTEMPT_TIMEOUT / 2), (first + ATTEMPT_TIMEOUT / 2, end)]
            for start, stop in halves:
                assert any(start < t < stop for t in arrivals), (
                    f"no event of the connected stream between {start - first:.1f} s and "
                    f"{stop - first:.1f} s after the bad host's request"
                )
        finally:
            pusher.StopPushing([])
            sched.shutdown(timeout=10)


def test_a_half_answering_host_is_retried_on_the_slow_schedule(tango_database: Any) -> None:
    sched = _scheduler(
        name="slowretry", attempt_timeout=ATTEMPT_TIMEOUT, wait_for_subscription=False
    )
    with HalfAnsweringHost() as bad:
        try:
            sched.register_event_callback(bad.trl("bad/dev/2"), "state", CHANGE, _ignore)
            first = wait_for(
                lambda: bad.requests[:1], timeout=60, message="the bad host got no request"
            )[0]
            window = 2.5 * SLOW_RETRY
            wait_for(
                lambda: time.monotonic() > first + window, timeout=window + 30, message="window"
            )
            seen = [t for t in bad.requests if t < first + window]
            # One attempt at the start, then one at most every SLOW_RETRY seconds.
            assert len(seen) <= 1 + int(window / SLOW_RETRY), (
                f"{len(seen)} requests in {window:g} s: {[round(t - first, 1) for t in seen]}"
            )
        finally:
            sched.shutdown(timeout=10)


def test_a_host_that_times_out_inside_tango_is_retried_slowly(tango_database: Any) -> None:
    # The host answers the scheduler's check and hangs on what a proxy creation
    # sends: Tango's call times out (TRANSIENT_CallTimedout). The next check of
    # the host, and so the next Tango attempt, must wait for the slow retry.
    sched = _scheduler(name="intango", attempt_timeout=ATTEMPT_TIMEOUT, wait_for_subscription=False)
    with HalfAnsweringHost(answered_operations={"command_inout"}) as bad:
        try:
            rec = Recorder()
            sched.register_event_callback(bad.trl("bad/dev/3"), "state", CHANGE, rec)

            def two_checks() -> list[tuple[float, str]]:
                operations = bad.operations
                checks = [t for t, op in operations if op == "command_inout"]
                return operations if len(checks) >= 2 else []

            operations = wait_for(
                two_checks, timeout=90, message=lambda: f"not two host checks: {bad.operations}"
            )
            checks = [t for t, op in operations if op == "command_inout"]
            in_tango = [t for t, op in operations if op != "command_inout" and t < checks[1]]
            assert in_tango, f"Tango never tried the host: {operations}"
            assert rec.errors, "the time-out was not reported to the callback"
            assert checks[1] - in_tango[-1] >= SLOW_RETRY, (
                f"checked again {checks[1] - in_tango[-1]:.1f} s after Tango's last request"
            )
        finally:
            sched.shutdown(timeout=10)


def test_shutdown_during_a_host_check_is_reported_truthfully(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sched = _scheduler(name="shutcheck", attempt_timeout=120.0, wait_for_subscription=False)
    with SilentHost() as host, caplog.at_level("DEBUG", logger="ska_tango_scheduler"):
        rec = Recorder()
        future = sched.register_event_callback(host.trl("silent/dev/x"), "state", CHANGE, rec)
        wait_for(lambda: host.connections, timeout=30, message="the host was not checked")
        sched.shutdown(timeout=10)
        said = [r.getMessage() for r in caplog.records]
        assert not [m for m in said if "closed the connection" in m], said
        # The registration's first outcome is the shutdown, not a made-up host failure.
        with pytest.raises(Exception, match="shut down"):
            future.result(timeout=30)
