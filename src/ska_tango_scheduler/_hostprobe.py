"""Ask a Tango host whether it answers, in pure Python, with a deadline.

Part of the pure core: no :mod:`tango` import. Before the scheduler makes a
Tango call that would create a device proxy (which, for a host that accepts
connections but never answers, blocks for about 9 s inside cppTango while
holding a lock that every other proxy creation in the process waits for), it
sends the host one GIOP ``LocateRequest`` over a plain socket and waits at
most ``timeout`` seconds for any GIOP reply. A host that does not answer in
time is reported as failing without Tango ever being called, so a hung host
costs one bounded, interruptible socket wait on its own lane, and nothing
is left inside Tango when the process exits.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import weakref

from . import _exit

__all__ = ["HostProbe"]

_OBJECT_KEY = b"database"
# Seconds a failed check is reused by the callers that come right after it.
_FAILURE_REUSE = 1.0


def _locate_request(request_id: int) -> bytes:
    # GIOP 1.2 LocateRequest, little endian: request id, KeyAddr target, object key.
    body = struct.pack("<IhxxI", request_id, 0, len(_OBJECT_KEY)) + _OBJECT_KEY
    return b"GIOP" + bytes((1, 2, 1, 3)) + struct.pack("<I", len(body)) + body


class HostProbe:
    """Check Tango hosts with a GIOP ping, remembering recent successes.

    Args:
        timeout: Seconds to wait for a host's answer.
        remember: Seconds a host that answered is trusted without asking again.
    """

    def __init__(self, timeout: float = 3.0, remember: float = 5.0) -> None:
        """Create the probe."""
        self.timeout = timeout
        self.remember = remember
        self._lock = threading.Lock()
        self._answered: dict[tuple[str, int], float] = {}
        self._failed: dict[tuple[str, int], tuple[float, str]] = {}
        self._in_flight: dict[tuple[str, int], threading.Event] = {}
        self._open: set[socket.socket] = set()
        self._closed = False
        _live_probes.add(self)

    def check(self, host: str, port: int) -> str | None:
        """Tell whether a host answers.

        Only one check of a host runs at a time; callers that come meanwhile
        wait for it and share its outcome, and a failure is reused for a
        second, so that the many devices of one hung database cost one
        bounded wait, not one each in turn.

        Args:
            host: Host name or address.
            port: TCP port.

        Returns:
            None if the host answered (now or recently), else why not.
        """
        address = (host, port)
        while True:
            with self._lock:
                if self._closed:
                    return "the scheduler is shutting down"
                known = self._known(address)
                if not isinstance(known, bool):
                    return known
                running = self._in_flight.get(address)
                if running is None:
                    running = self._in_flight[address] = threading.Event()
                    break
            running.wait(self.timeout + 1.0)
        try:
            error = self._ask(host, port)
        finally:
            with self._lock:
                del self._in_flight[address]
        with self._lock:
            now = time.monotonic()
            if error is None:
                self._answered[address] = now
                self._failed.pop(address, None)
            else:
                self._failed[address] = (now, error)
                self._answered.pop(address, None)
        running.set()
        return error

    def forget(self, host: str, port: int) -> None:
        """Ask the host again next time (after a failure seen through Tango).

        Args:
            host: Host name or address.
            port: TCP port.
        """
        with self._lock:
            self._answered.pop((host, port), None)

    def close(self) -> None:
        """Interrupt the checks in progress and refuse new ones."""
        with self._lock:
            self._closed = True
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _known(self, address: tuple[str, int]) -> str | None | bool:  # False: ask
        """None: answered recently; text: failed just now; False: ask."""
        now = time.monotonic()
        when = self._answered.get(address)
        if when is not None and now - when < self.remember:
            return None
        failed = self._failed.get(address)
        if failed is not None and now - failed[0] < _FAILURE_REUSE:
            return failed[1]
        return False

    def _ask(self, host: str, port: int) -> str | None:
        where = f"{host}:{port}"
        deadline = time.monotonic() + self.timeout
        try:
            sock = socket.create_connection((host, port), timeout=self.timeout)
        except OSError as exc:
            return f"cannot connect to {where}: {exc.strerror or exc}"
        with self._lock:
            if self._closed:
                sock.close()
                return "the scheduler is shutting down"
            self._open.add(sock)
        try:
            sock.sendall(_locate_request(1))
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                data = sock.recv(12)
                if not data:
                    return f"{where} closed the connection without answering"
                if data.startswith(b"GIOP"[: len(data)]):
                    return None
                return f"{where} does not speak GIOP: is it a Tango host?"
        except TimeoutError:
            return f"{where} accepts connections but did not answer within {self.timeout:g} s"
        except OSError as exc:
            return f"{where} failed: {exc.strerror or exc}"
        finally:
            with self._lock:
                self._open.discard(sock)
            sock.close()


_live_probes: weakref.WeakSet[HostProbe] = weakref.WeakSet()


def _at_exit() -> None:
    for probe in list(_live_probes):
        probe.close()


# Interrupt probes in progress when new work is refused, and close any left at the end.
_exit.at_exit(_exit.REFUSE_NEW_WORK, _at_exit)
_exit.at_exit(_exit.CLOSE_PROBES, _at_exit)
