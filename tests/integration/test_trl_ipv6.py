"""IPv6 Tango hosts: refused with a message that says so, because cppTango refuses them.

The scheduler's refusal rests on what cppTango does with such a host, checked
here for real so that a cppTango that learns IPv6 makes this test fail (and
the refusal can then be lifted).
"""

from __future__ import annotations

import socket

import pytest
import tango

from ska_tango_scheduler import CallbackScheduler


def free_ipv6_loopback_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.bind(("::1", 0))
        return int(sock.getsockname()[1])


def test_cpptango_cannot_parse_an_ipv6_host() -> None:
    try:
        port = free_ipv6_loopback_port()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with pytest.raises(tango.DevFailed) as info:
        tango.DeviceProxy(f"tango://[::1]:{port}/a/b/c")
    reasons = [e.reason for e in info.value.args]
    descriptions = " ".join(e.desc for e in info.value.args)
    print(reasons, descriptions)
    # It reads the host as "[" with port 0: never a connection attempt to ::1.
    assert "API_CantConnectToDatabase" in reasons
    assert "host [ with port 0" in descriptions


def test_the_scheduler_refuses_an_ipv6_trl_at_the_call() -> None:
    scheduler = CallbackScheduler(name="ipv6")
    try:
        with pytest.raises(ValueError, match="IPv6 addresses are not supported as Tango hosts"):
            scheduler.register_event_callback(
                "tango://[::1]:10000/a/b/c", "state", tango.EventType.CHANGE_EVENT, print
            )
        assert scheduler.diagnostics().streams == ()
    finally:
        scheduler.shutdown(timeout=30)
