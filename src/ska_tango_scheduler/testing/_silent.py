"""A TCP port that accepts connections and never answers: a hung Tango host."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

__all__ = ["SilentHost"]


class SilentHost:
    """Accept TCP connections on 127.0.0.1 and never send a byte.

    Tango clients that name a device on this host (``tango://127.0.0.1:PORT/a/b/c``)
    see a database that connects but does not answer, as when its host or
    process hangs. Use it as a context manager, or call :meth:`close`.

    Args:
        host: Address to listen on.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="silent-host", daemon=True)
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
        return len(self._accepted)

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._accepted.append(connection)  # held open, never read nor written

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for connection in self._accepted:
            with contextlib.suppress(OSError):
                connection.close()
        self._thread.join(5)

    def __enter__(self) -> SilentHost:
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
