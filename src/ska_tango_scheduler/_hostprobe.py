"""Ask Tango hosts whether they answer, in pure Python, many at once.

Part of the pure core: no :mod:`tango` import. Before the scheduler makes a
Tango call that would create a device proxy, it checks the device's Tango
host here. Creating a proxy to a host that accepts connections but does not
answer blocks inside cppTango for seconds while holding a lock that every
other proxy creation in the process waits for (and, measured, stalls the
events of healthy streams too), so a host must have *proven* that it answers
before Tango is called for it.

The check is the request that creating the proxy makes first: a GIOP 1.2
``Request`` to the database object (``command_inout("DbImportDevice",
name)``; for a device reached without a database, ``ping`` on the device's
own object), which must be *answered* (any reply, an exception included)
within ``timeout``. A bare ``LocateRequest`` is not enough: a database
server whose ORB answers while its request threads are stuck passes it.

All checks in progress share one thread, which waits on their sockets with
:mod:`selectors`; callers are told the outcome through a callback, so no
connector thread waits for a host. Outcomes are remembered: an answer for
``remember`` seconds, a host that accepted the connection and did not answer
(or timed out inside Tango) for ``silent_for`` seconds, other failures for a
second, so the streams of a silent host back off without asking it again.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal

from . import _exit
from ._threads import start_thread

__all__ = ["SHUTTING_DOWN", "HostProbe", "import_request"]

#: Why checks fail once :meth:`HostProbe.close` was called.
SHUTTING_DOWN = "the check was interrupted: the scheduler is shutting down"
_DATABASE_KEY = b"database"
# Seconds a failure other than silence is reused by the callers that come right after it.
_FAILURE_REUSE = 1.0
_HEADER = 12
_REPLY = 1
_CLOSE_CONNECTION = 5
_MESSAGE_ERROR = 6

Done = Callable[[str | None], None]


def _align(data: bytearray, boundary: int) -> None:
    data.extend(b"\0" * (-len(data) % boundary))


def _string(data: bytearray, text: str) -> None:
    raw = text.encode("latin-1", "replace") + b"\0"
    _align(data, 4)
    data.extend(struct.pack("<I", len(raw)) + raw)


def import_request(request_id: int, device: str, dbase: bool = True) -> bytes:
    """Build the GIOP 1.2 request that a host must answer to pass the check.

    Alignment counts from the start of the message, header included.

    Args:
        request_id: The GIOP request id.
        device: Device name (``domain/family/member``).
        dbase: True: ``command_inout("DbImportDevice", device)`` on the
            ``database`` object; False: ``ping`` on the device's own object.

    Returns:
        The whole message, little endian.
    """
    key = _DATABASE_KEY if dbase else device.encode("latin-1", "replace")
    data = bytearray(b"\0" * _HEADER)
    data.extend(struct.pack("<IB3x", request_id, 3))  # id, response expected
    data.extend(struct.pack("<h2xI", 0, len(key)) + key)  # KeyAddr target
    _string(data, "command_inout" if dbase else "ping")
    _align(data, 4)
    data.extend(struct.pack("<I", 0))  # no service contexts
    if dbase:
        _align(data, 8)  # the body starts on an 8-byte boundary (GIOP 1.2)
        _string(data, "DbImportDevice")
        _align(data, 4)
        data.extend(struct.pack("<II", 18, 0))  # any: TypeCode tk_string, unbounded
        _string(data, device)
    data[:_HEADER] = b"GIOP" + bytes((1, 2, 1, 0)) + struct.pack("<I", len(data) - _HEADER)
    return bytes(data)


@dataclass
class _Check:
    """One check in progress (touched by the probe thread only, once started)."""

    address: tuple[str, int]
    device: str
    dbase: bool
    deadline: float
    sock: socket.socket | None = None
    out: bytes = b""
    received: bytes = b""
    connected: bool = False
    waiting: list[Done] = field(default_factory=list)


class HostProbe:
    """Check Tango hosts with the request a proxy creation makes first.

    Args:
        timeout: Seconds a host has to answer.
        remember: Seconds a host that answered is trusted without asking again.
        silent_for: Seconds a host that did not answer (or timed out inside
            Tango) is reported as failing without asking it again.
        thread_context: Context the probe thread runs in (the scheduler
            passes ``tango.EnsureOmniThread``).
    """

    def __init__(
        self,
        timeout: float = 3.0,
        remember: float = 5.0,
        silent_for: float = 10.0,
        thread_context: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        """Create the probe; its thread starts with the first check."""
        self.timeout = timeout
        self.remember = remember
        self.silent_for = silent_for
        self._thread_context = thread_context
        self._lock = threading.Lock()
        self._answered: dict[tuple[str, int], float] = {}
        self._failed: dict[tuple[str, int], tuple[float, str]] = {}
        self._checks: dict[tuple[str, int], _Check] = {}
        self._new: list[_Check] = []
        self._running = False
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._ids = iter(range(1, 1 << 31))
        _live_probes.add(self)

    # -- asking -------------------------------------------------------------------

    def known(self, host: str, port: int) -> str | None | bool:
        """What is known about a host now, without asking it.

        Args:
            host: Host name or address.
            port: TCP port.

        Returns:
            None if it answered recently, the reason if it failed recently,
            False if it must be asked.
        """
        with self._lock:
            if self._closed:
                return SHUTTING_DOWN
            return self._known((host, port))

    def ask(
        self, host: str, port: int, device: str, done: Done, dbase: bool = True
    ) -> tuple[bool, str | None]:
        """Tell whether a host answers, now if known, else later through ``done``.

        One check of a host runs at a time; callers that come meanwhile share
        its outcome. ``done`` runs on the probe thread, with no lock held.

        Args:
            host: Host name or address.
            port: TCP port.
            device: The device whose proxy is wanted (named in the request).
            done: Called once with the outcome (None: answered; else why
                not) if it is not known yet.
            dbase: False for a device reached without a database.

        Returns:
            ``(True, outcome)`` if the outcome is known now (``done`` is then
            never called), else ``(False, None)``.
        """
        address = (host, port)
        with self._lock:
            if self._closed:
                return True, SHUTTING_DOWN
            known = self._known(address)
            if not isinstance(known, bool):
                return True, known
            check = self._checks.get(address)
            if check is not None:
                check.waiting.append(done)
                return False, None
            check = _Check(address, device, dbase, time.monotonic() + self.timeout, waiting=[done])
            self._checks[address] = check
            self._new.append(check)
            start = not self._running
            self._running = True
        if not start:
            self._wake()
            return False, None
        try:
            start_thread("ska-tango-scheduler.hostprobe", self._run, daemon=True)
        except RuntimeError as exc:  # at interpreter shutdown, say
            self._abandon(f"cannot check {host}:{port}: {exc}")
        return False, None

    def check(self, host: str, port: int, device: str = "", dbase: bool = True) -> str | None:
        """Tell whether a host answers, waiting for the outcome.

        Args:
            host: Host name or address.
            port: TCP port.
            device: The device whose proxy is wanted.
            dbase: False for a device reached without a database.

        Returns:
            None if the host answered (now or recently), else why not.
        """
        outcome: list[str | None] = []
        finished = threading.Event()

        def done(error: str | None) -> None:
            outcome.append(error)
            finished.set()

        known, error = self.ask(host, port, device, done, dbase)
        if known:
            return error
        if not finished.wait(self.timeout + 5.0):  # a safety net: the deadline ends it
            return f"the check of {host}:{port} did not end"
        return outcome[0]

    def forget(self, host: str, port: int) -> None:
        """Ask the host again next time (after a failure seen through Tango).

        Args:
            host: Host name or address.
            port: TCP port.
        """
        with self._lock:
            self._answered.pop((host, port), None)

    def distrust(self, host: str, port: int, why: str) -> None:
        """Treat a host as silent for ``silent_for`` seconds (it timed out inside Tango).

        Args:
            host: Host name or address.
            port: TCP port.
            why: The reason reported meanwhile.
        """
        with self._lock:
            self._answered.pop((host, port), None)
            self._failed[(host, port)] = (time.monotonic() + self.silent_for, why)

    def close(self) -> None:
        """Interrupt the checks in progress (they fail with :data:`SHUTTING_DOWN`)."""
        with self._lock:
            self._closed = True
        self._wake()

    def _abandon(self, why: str) -> None:
        """Fail the checks that no thread will run (starting it failed)."""
        with self._lock:
            self._running = False
            fresh, self._new = self._new, []
            for check in fresh:
                self._checks.pop(check.address, None)
        for check in fresh:
            for done in check.waiting:
                with contextlib.suppress(Exception):
                    done(why)

    def _known(self, address: tuple[str, int]) -> str | None | bool:  # False: ask
        now = time.monotonic()
        when = self._answered.get(address)
        if when is not None and now - when < self.remember:
            return None
        failed = self._failed.get(address)
        if failed is not None:
            if now < failed[0]:
                return failed[1]
            del self._failed[address]
        return False

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # -- the probe thread ---------------------------------------------------------

    def _run(self) -> None:
        with self._thread_context(), selectors.DefaultSelector() as selector:
            selector.register(self._wake_r, selectors.EVENT_READ, None)
            active: list[_Check] = []
            while True:
                with self._lock:
                    closed = self._closed
                    fresh, self._new = self._new, []
                    if not (active or fresh or closed):
                        self._running = False
                        return
                for check in fresh:
                    self._start(selector, check)
                    active.append(check)
                if closed:
                    # No check starts after close(): fail those left and end.
                    for check in active:
                        self._finish(selector, check, SHUTTING_DOWN, silent=False)
                    with self._lock:
                        self._running = False
                    return
                now = time.monotonic()
                for check in [c for c in active if c.sock is None or c.deadline <= now]:
                    if check.sock is not None:
                        where = f"{check.address[0]}:{check.address[1]}"
                        self._finish(
                            selector,
                            check,
                            f"{where} accepts connections but did not answer a request "
                            f"within {self.timeout:g} s",
                            silent=True,
                        )
                    active.remove(check)
                if not active:
                    continue
                wait = max(0.0, min(c.deadline for c in active) - time.monotonic())
                for key, events in selector.select(wait):
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                        continue
                    check = key.data
                    outcome = self._step(selector, check, events)
                    if outcome is not False:
                        self._finish(selector, check, outcome, silent=False)
                        active.remove(check)

    def _start(self, selector: selectors.BaseSelector, check: _Check) -> None:
        host, port = check.address
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            self._finish(selector, check, f"cannot connect to {host}:{port}: {exc}", silent=False)
            return
        sock.setblocking(False)
        check.sock = sock
        check.out = import_request(next(self._ids), check.device, check.dbase)
        try:
            sock.connect(address)
            check.connected = True
        except BlockingIOError:
            pass
        except OSError as exc:
            self._finish(
                selector, check, f"cannot connect to {host}:{port}: {exc.strerror or exc}", False
            )
            check.sock = None
            return
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, check)

    def _step(
        self, selector: selectors.BaseSelector, check: _Check, events: int
    ) -> str | None | Literal[False]:  # False: not done
        """Advance one check; return its outcome once known, else False."""
        sock = check.sock
        assert sock is not None
        where = f"{check.address[0]}:{check.address[1]}"
        try:
            if not check.connected and events & selectors.EVENT_WRITE:
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    raise OSError(error, _strerror(error))
                check.connected = True
            if check.connected and check.out and events & selectors.EVENT_WRITE:
                check.out = check.out[sock.send(check.out) :]
                if not check.out:
                    selector.modify(sock, selectors.EVENT_READ, check)
            if events & selectors.EVENT_READ:
                data = sock.recv(4096)
                if not data:
                    return f"{where} closed the connection without answering"
                check.received += data
        except OSError as exc:
            if not check.connected:
                return f"cannot connect to {where}: {exc.strerror or exc}"
            return f"{where} failed: {exc.strerror or exc}"
        return _verdict(check.received, where)

    def _finish(
        self, selector: selectors.BaseSelector, check: _Check, outcome: str | None, silent: bool
    ) -> None:
        if check.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(check.sock)
            check.sock.close()
        with self._lock:
            self._checks.pop(check.address, None)
            waiting, check.waiting = check.waiting, []
            now = time.monotonic()
            if outcome is None:
                self._answered[check.address] = now
                self._failed.pop(check.address, None)
            elif outcome != SHUTTING_DOWN:
                keep = self.silent_for if silent else _FAILURE_REUSE
                self._failed[check.address] = (now + keep, outcome)
                self._answered.pop(check.address, None)
        for done in waiting:
            with contextlib.suppress(Exception):
                done(outcome)


def _verdict(received: bytes, where: str) -> str | None | Literal[False]:
    """Judge what a host sent: None answered, text failed, False wait for more."""
    if len(received) < _HEADER:
        return False if b"GIOP".startswith(received[:4]) else _not_giop(where)
    if not received.startswith(b"GIOP"):
        return _not_giop(where)
    kind = received[7]
    if kind == _REPLY:
        return None
    if kind == _CLOSE_CONNECTION:
        return f"{where} closed the connection without answering"
    if kind == _MESSAGE_ERROR:
        return f"{where} did not understand the request: is it a Tango host?"
    return f"{where} sent GIOP message type {kind} instead of a reply"


def _not_giop(where: str) -> str:
    return f"{where} does not speak GIOP: is it a Tango host?"


def _strerror(code: int) -> str:
    try:
        return os.strerror(code)
    except ValueError:
        return str(code)


_live_probes: weakref.WeakSet[HostProbe] = weakref.WeakSet()


def _at_exit() -> None:
    for probe in list(_live_probes):
        probe.close()


# Interrupt probes in progress when new work is refused, and close any left at the end.
_exit.at_exit(_exit.REFUSE_NEW_WORK, _at_exit)
_exit.at_exit(_exit.CLOSE_PROBES, _at_exit)
