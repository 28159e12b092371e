"""The pure-Python host check, against real sockets on 127.0.0.1.

The answering host is a small fake GIOP server: it reads one whole GIOP
message and answers it with a ``Reply`` (or a ``LocateReply``, which does
not count as an answer to a request).
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from ska_tango_scheduler._hostprobe import SHUTTING_DOWN, HostProbe, import_request
from ska_tango_scheduler.testing import HalfAnsweringHost, SilentHost, wait_for


def _giop_server(message_type: int = 1) -> tuple[socket.socket, int, list[bytes]]:
    """Answer each connection's first GIOP message with ``message_type``; keep the requests."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    seen: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while len(data) < 12 or len(data) < 12 + struct.unpack("<I", data[8:12])[0]:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                seen.append(data)
                body = data[12:16] + b"\0" * 8  # request id, status, no contexts
                conn.sendall(
                    b"GIOP\x01\x02\x01"
                    + bytes((message_type,))
                    + struct.pack("<I", len(body))
                    + body
                )

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()[1], seen


def test_the_request_names_the_device_and_is_well_formed() -> None:
    message = import_request(7, "a/b/c")
    assert message[:8] == b"GIOP\x01\x02\x01\x00"
    assert struct.unpack("<I", message[8:12])[0] == len(message) - 12
    assert struct.unpack("<I", message[12:16])[0] == 7
    assert b"database" in message and b"command_inout\0" in message
    assert message.endswith(struct.pack("<I", 6) + b"a/b/c\0")
    assert b"ping\0" in import_request(1, "x/y/z", dbase=False)


def test_an_answering_host_passes_and_is_remembered() -> None:
    listener, port, seen = _giop_server()
    probe = HostProbe(timeout=5)
    assert probe.check("127.0.0.1", port, "a/b/c") is None
    assert b"DbImportDevice" in seen[0] and b"a/b/c" in seen[0]
    listener.close()
    assert probe.check("127.0.0.1", port) is None  # remembered
    probe.close()


def test_a_locate_reply_is_not_an_answer() -> None:
    listener, port, _ = _giop_server(message_type=4)
    probe = HostProbe(timeout=5)
    assert "instead of a reply" in str(probe.check("127.0.0.1", port, "a/b/c"))
    listener.close()


def test_a_host_that_answers_pings_but_not_requests_fails() -> None:
    with HalfAnsweringHost() as host:
        probe = HostProbe(timeout=0.5)
        assert "did not answer a request within 0.5 s" in str(probe.check("127.0.0.1", host.port))
        assert len(host.requests) == 1


def test_thirty_silent_hosts_are_asked_at_once_by_one_thread() -> None:
    hosts = [SilentHost() for _ in range(30)]
    try:
        probe = HostProbe(timeout=60)
        outcomes: list[str | None] = []
        threads_before = threading.active_count()
        for host in hosts:
            known, _ = probe.ask("127.0.0.1", host.port, "a/b/c", outcomes.append)
            assert not known
        wait_for(
            lambda: all(h.connections for h in hosts), timeout=30, message="not all hosts asked"
        )
        assert threading.active_count() <= threads_before + 1  # the probe's one thread
        # Meanwhile an answering host is answered at once.
        listener, port, _ = _giop_server()
        done = threading.Event()
        known, _ = probe.ask("127.0.0.1", port, "a/b/c", lambda error: done.set())
        assert not known
        wait_for(done.is_set, timeout=30, message="the answering host was not answered")
        assert not outcomes, "a silent host was resolved before its time-out"
        listener.close()
        probe.close()
        wait_for(lambda: len(outcomes) == 30, timeout=30, message="close did not end the checks")
        assert set(outcomes) == {SHUTTING_DOWN}
    finally:
        for host in hosts:
            host.close()


def test_a_silent_host_is_remembered_and_callers_share_one_check() -> None:
    with SilentHost() as host:
        probe = HostProbe(timeout=0.5, silent_for=60)
        results: list[str | None] = []
        threads = [
            threading.Thread(target=lambda: results.append(probe.check("127.0.0.1", host.port)))
            for _ in range(5)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(results) == 5
        assert all(r and "did not answer a request within 0.5 s" in r for r in results)
        # Remembered: asked again, it fails at once, without a connection.
        assert probe.known("127.0.0.1", host.port) == results[0]
        assert probe.check("127.0.0.1", host.port) == results[0]
        assert host.connections == 1


def test_silence_is_forgotten_after_silent_for() -> None:
    with SilentHost() as host:
        probe = HostProbe(timeout=0.2, silent_for=0.5)
        assert probe.check("127.0.0.1", host.port) is not None
        wait_for(
            lambda: probe.known("127.0.0.1", host.port) is False,
            timeout=30,
            message="the silence was never forgotten",
        )
        assert probe.check("127.0.0.1", host.port) is not None
        assert host.connections == 2


def test_distrust_reports_a_host_silent_without_asking() -> None:
    listener, port, seen = _giop_server()
    probe = HostProbe(timeout=5, silent_for=60)
    assert probe.check("127.0.0.1", port) is None
    probe.distrust("127.0.0.1", port, "timed out inside Tango")
    assert probe.check("127.0.0.1", port) == "timed out inside Tango"
    assert len(seen) == 1
    listener.close()


def test_a_refusing_host_fails() -> None:
    probe = HostProbe(timeout=5)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert "cannot connect to 127.0.0.1" in str(probe.check("127.0.0.1", port))


@pytest.mark.parametrize("before", [False, True], ids=["during", "before"])
def test_close_interrupts_with_a_truthful_message(before: bool) -> None:
    with SilentHost() as host:
        probe = HostProbe(timeout=60)
        if before:
            probe.close()
        result: list[str | None] = []
        thread = threading.Thread(target=lambda: result.append(probe.check("127.0.0.1", host.port)))
        thread.start()
        if not before:
            wait_for(lambda: host.connections, timeout=30, message="the host was not asked")
        started = time.monotonic()
        probe.close()
        thread.join(30)
        assert result == [SHUTTING_DOWN]
        assert "shutting down" in SHUTTING_DOWN and "closed the connection" not in SHUTTING_DOWN
        assert time.monotonic() - started < 30


def _error(reason: str, desc: str) -> object:
    import tango

    error = tango.DevError()
    error.reason, error.desc = reason, desc
    return error


def test_timeouts_inside_tango_are_recognised() -> None:
    from ska_tango_scheduler._devices import timed_out_in_tango

    corba = "TRANSIENT CORBA system exception: TRANSIENT_CallTimedout"
    assert timed_out_in_tango((_error("API_CorbaException", corba),))
    assert timed_out_in_tango(
        (_error("API_CantConnectToDatabase", "x"), _error("API_DeviceTimedOut", "y"))
    )
    assert not timed_out_in_tango((_error("API_CantConnectToDatabase", "Connection refused"),))
    assert not timed_out_in_tango((_error("API_EventTimeout", "Event channel is not responding"),))


def test_the_probe_thread_ends_when_closed_during_a_check() -> None:
    """A probe closed while a check is in progress lets its thread go (it used to spin forever)."""
    with SilentHost() as host:
        probe = HostProbe(timeout=60)
        outcomes: list[str | None] = []
        probe.ask("127.0.0.1", host.port, "a/b/c", outcomes.append)
        wait_for(lambda: host.connections, timeout=30, message="the silent host to be asked")
        (thread,) = [t for t in threading.enumerate() if t.name == "ska-tango-scheduler.hostprobe"]
        probe.close()
        wait_for(lambda: outcomes == [SHUTTING_DOWN], timeout=30, message="the check to fail")
        thread.join(30)
        assert not thread.is_alive(), "the probe thread still runs after close()"
