"""Fake Tango hosts that misbehave: silent, or answering only part of what is asked.

:class:`SilentHost` accepts TCP connections and never answers, like a hung
host. :class:`HalfAnsweringHost` speaks just enough GIOP to pass a bare
``LocateRequest`` ping (optionally after a delay) and never answers a real
request, like a database server whose ORB still answers while its request
threads are stuck.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Collection
from types import TracebackType
from typing import TypeVar

__all__ = ["HalfAnsweringHost", "SilentHost"]

_Host = TypeVar("_Host", bound="SilentHost")


class SilentHost:
    """Accept TCP connections on 127.0.0.1 and never send a byte.

    Tango clients that name a device on this host (``tango://127.0.0.1:PORT/a/b/c``)
    see a database that connects but does not answer, as when its host or
    process hangs. Use it as a context manager, or call :meth:`close`.

    Args:
        host: Address to listen on.
    """

    _THREAD_NAME = "silent-host"

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name=self._THREAD_NAME, daemon=True)
        self._thread.start()

    @property
    def tango_host(self) -> str:
        """``host:port``, as in ``TANGO_HOST``."""
        return f"{self.host}:{self.port}"

    def trl(self, device: str) -> str:
        """Return the TRL of a device on this host.

        Args:
            device: ``domain/family/member``.

        Returns:
            ``tango://host:port/domain/family/member``.
        """
        return f"tango://{self.tango_host}/{device}"

    @property
    def connections(self) -> int:
        """How many connections were accepted so far."""
        with self._lock:
            return len(self._accepted)

    def _handler(self, connection: socket.socket) -> threading.Thread | None:
        """Return a thread that serves a new connection, or None to hold it silently."""
        return None  # held open, never read nor written

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            thread = self._handler(connection)
            with self._lock:
                self._accepted.append(connection)
                if thread is not None:
                    self._threads.append(thread)
            if thread is not None:
                thread.start()

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            accepted = list(self._accepted)
            threads = list(self._threads)
        for connection in accepted:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                connection.close()
        self._thread.join(5)
        for thread in threads:
            thread.join(5)

    def __enter__(self: _Host) -> _Host:
        """Return the host."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close it."""
        self.close()


_GIOP_HEADER = 12
_REQUEST = 0
_LOCATE_REQUEST = 3
_REPLY = 1
_LOCATE_REPLY = 4


class HalfAnsweringHost(SilentHost):
    """A Tango host that answers GIOP ``LocateRequest`` messages and no request.

    Listens on 127.0.0.1. Every ``LocateRequest`` is answered "object here"
    after ``locate_delay`` seconds; every ``Request`` (what a client sends to
    actually use the database) is read, counted and never answered, unless
    its operation is one of ``answered_operations`` (then it gets an empty
    reply). Scenes of a host that passes a check and then hangs:

    * ``HalfAnsweringHost()``: answers a ping at once, then hangs (a stuck
      database server whose ORB still answers).
    * ``HalfAnsweringHost(locate_delay=2.9)``: answers a ping only just
      within a 3 s time-out, then hangs.
    * ``HalfAnsweringHost(answered_operations={"command_inout"})``: also
      answers the scheduler's host check (a ``command_inout`` request), and
      hangs on what a proxy creation sends (``_is_a`` first).

    Use it as a context manager, or call :meth:`close`.

    Args:
        locate_delay: Seconds before each ``LocateRequest`` is answered.
        answered_operations: Operations whose requests are answered.
        host: Address to listen on.
    """

    _THREAD_NAME = "half-host"

    def __init__(
        self,
        locate_delay: float = 0.0,
        answered_operations: Collection[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.locate_delay = locate_delay
        self.answered_operations = frozenset(answered_operations)
        self._locates: list[float] = []
        self._requests: list[tuple[float, str]] = []
        super().__init__(host)

    @property
    def locate_requests(self) -> list[float]:
        """When (``time.monotonic()``) each ``LocateRequest`` arrived."""
        with self._lock:
            return list(self._locates)

    @property
    def requests(self) -> list[float]:
        """When (``time.monotonic()``) each ``Request`` arrived."""
        with self._lock:
            return [when for when, _ in self._requests]

    @property
    def operations(self) -> list[tuple[float, str]]:
        """When each ``Request`` arrived and its operation (GIOP 1.2; else ``""``)."""
        with self._lock:
            return list(self._requests)

    def _handler(self, connection: socket.socket) -> threading.Thread | None:
        """Serve each connection on a thread of its own."""
        return threading.Thread(
            target=self._serve, args=(connection,), name="half-host-conn", daemon=True
        )

    def _serve(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not self._closed:
                header = _read_exactly(connection, _GIOP_HEADER)
                if header is None or not header.startswith(b"GIOP"):
                    return
                order = "<" if header[6] & 1 else ">"
                (size,) = struct.unpack(order + "I", header[8:12])
                body = _read_exactly(connection, size)
                if body is None:
                    return
                kind = header[7]
                now = time.monotonic()
                if kind == _REQUEST:
                    operation = _operation(body, order, header[5])
                    with self._lock:
                        self._requests.append((now, operation))
                    if header[5] >= 2 and operation in self.answered_operations:
                        # GIOP 1.2 Reply: same request id, NO_EXCEPTION, no contexts.
                        reply = body[:4] + struct.pack(order + "II", 0, 0)
                        connection.sendall(
                            b"GIOP"
                            + bytes((1, 2, header[6] & 1, _REPLY))
                            + struct.pack(order + "I", len(reply))
                            + reply
                        )
                elif kind == _LOCATE_REQUEST and header[5] >= 2 and len(body) >= 4:
                    with self._lock:
                        self._locates.append(now)
                    if self.locate_delay:
                        time.sleep(self.locate_delay)
                    # GIOP 1.2 LocateReply: same request id, status OBJECT_HERE.
                    reply = body[:4] + struct.pack(order + "I", 1)
                    connection.sendall(
                        b"GIOP"
                        + bytes((1, 2, header[6] & 1, _LOCATE_REPLY))
                        + struct.pack(order + "I", len(reply))
                        + reply
                    )


def _read_exactly(connection: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _operation(body: bytes, order: str, minor: int) -> str:
    """The operation name of a GIOP request body ("" if it cannot be read)."""

    def aligned(offset: int) -> int:  # alignment counts from the start of the message
        return offset + (-(offset + _GIOP_HEADER) % 4)

    def ulong(offset: int) -> int:
        return int(struct.unpack_from(order + "I", body, aligned(offset))[0])

    try:
        if minor >= 2:
            # request id, flags + 3 reserved, target discriminant (+2 padding), key.
            offset = 16 + ulong(12)
        else:
            # service contexts, request id, response expected (1.1: 3 reserved), key.
            offset = 4
            for _ in range(ulong(0)):
                offset = aligned(offset) + 4
                offset = aligned(offset) + 4 + ulong(offset)
            offset = aligned(offset) + 4 + 1  # request id, response expected
            offset = aligned(offset)
            offset += 4 + ulong(offset)  # object key
        offset = aligned(offset)
        length = ulong(offset)
        return body[offset + 4 : offset + 3 + length].decode("latin-1")
    except (struct.error, UnicodeDecodeError):
        return ""
