"""The pure-Python host check: silent, refusing and answering hosts."""

from __future__ import annotations

import socket
import threading
import time

from ska_tango_scheduler._hostprobe import HostProbe
from ska_tango_scheduler.testing import SilentHost


def _giop_server() -> tuple[socket.socket, int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(64)
            conn.sendall(b"GIOP\x01\x02\x01\x04" + b"\x00" * 12)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()[1]


def test_an_answering_host_passes_and_is_remembered() -> None:
    listener, port = _giop_server()
    probe = HostProbe(timeout=5)
    assert probe.check("127.0.0.1", port) is None
    listener.close()
    assert probe.check("127.0.0.1", port) is None  # remembered


def test_a_silent_host_fails_within_the_timeout_and_callers_share_one_check() -> None:
    with SilentHost() as host:
        probe = HostProbe(timeout=0.5)
        results: list[str | None] = []
        threads = [
            threading.Thread(target=lambda: results.append(probe.check("127.0.0.1", host.port)))
            for _ in range(5)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert all(r and "did not answer within 0.5 s" in r for r in results)
        assert len(results) == 5
        assert host.connections == 1
        assert time.monotonic() - started < 20


def test_a_refusing_host_fails_and_close_interrupts() -> None:
    probe = HostProbe(timeout=5)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert "cannot connect" in str(probe.check("127.0.0.1", port))
    with SilentHost() as host:
        probe = HostProbe(timeout=60)
        result: list[str | None] = []
        thread = threading.Thread(target=lambda: result.append(probe.check("127.0.0.1", host.port)))
        thread.start()
        time.sleep(0.2)
        probe.close()
        thread.join(30)
        assert result and result[0] is not None
