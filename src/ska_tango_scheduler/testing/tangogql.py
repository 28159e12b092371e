"""TangoGQL, the GraphQL server behind Taranta, run for tests.

:class:`TangoGQLServer` runs the real ``tangogql`` package under uvicorn, in a
child process, against a test Tango database: exactly what Taranta's web
pages talk to. Queries go over HTTP (``POST /db``); subscriptions over its
websocket (``/socket``, the ``graphql-ws`` subprotocol that Taranta speaks),
through the small dependency-free client :class:`GraphQLSubscription`.

TangoGQL is a separate service in a real deployment, so it need not run on
the PyTango under test: :func:`tangogql_python` finds an interpreter that has
it (the one named by :data:`TANGOGQL_PYTHON_ENV`, the current one, or the one
that runs the test database).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from ._database import DB_PYTHON_ENV
from ._process import ManagedProcess, free_port

__all__ = [
    "TANGOGQL_PYTHON_ENV",
    "GraphQLError",
    "GraphQLSubscription",
    "TangoGQLServer",
    "tangogql_python",
]

#: Environment variable naming a Python interpreter that has ``tangogql``
#: (and so uvicorn) installed.
TANGOGQL_PYTHON_ENV = "SKA_TANGO_SCHEDULER_TANGOGQL_PYTHON"


class GraphQLError(RuntimeError):
    """A GraphQL request failed, or its answer carried errors."""


def _has_tangogql(python: str) -> bool:
    try:
        result = subprocess.run(
            [python, "-c", "import tangogql, uvicorn"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def tangogql_python() -> str | None:
    """Find a Python interpreter that can run TangoGQL.

    Tried in order: the interpreter named by :data:`TANGOGQL_PYTHON_ENV`, the
    current one, and the one that runs the test database (named by
    :data:`~ska_tango_scheduler.testing.DB_PYTHON_ENV`).

    Returns:
        The interpreter's path, or None if none of them has ``tangogql``.
    """
    configured = os.environ.get(TANGOGQL_PYTHON_ENV, "").strip()
    if configured:
        return configured if _has_tangogql(configured) else None
    if importlib.util.find_spec("tangogql") and importlib.util.find_spec("uvicorn"):
        return sys.executable
    database_python = os.environ.get(DB_PYTHON_ENV, "").strip()
    if database_python and _has_tangogql(database_python):
        return database_python
    return None


class TangoGQLServer:
    """TangoGQL served by uvicorn on 127.0.0.1, in a child process.

    Authentication is off (``TANGOGQL_NO_AUTH=true``). The process runs in an
    empty temporary directory so that no ``config.json`` or ``logging.ini``
    of the caller's is picked up, and it is always ended by pid.

    Args:
        tango_host: ``host:port`` of the Tango database it serves.
        python: Interpreter with ``tangogql``; None: :func:`tangogql_python`.
        port: TCP port; None picks a free one.
        log_dir: Directory for its log; None: a new temporary directory.
        start_timeout: Seconds to wait for it to answer.

    Raises:
        RuntimeError: If no interpreter with ``tangogql`` is found.
    """

    def __init__(
        self,
        tango_host: str,
        *,
        python: str | None = None,
        port: int | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        found = python or tangogql_python()
        if found is None:
            raise RuntimeError(
                "no Python interpreter with tangogql found; "
                f"install it or set {TANGOGQL_PYTHON_ENV}"
            )
        self.python = found
        self.tango_host = tango_host
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self._dir = Path(log_dir if log_dir is not None else tempfile.mkdtemp(prefix="tangogql-"))
        self.start_timeout = start_timeout
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Pid of the uvicorn process, None before start."""
        return None if self._process is None else self._process.pid

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self._dir / "tangogql.log"

    def log_tail(self, max_chars: int = 4000) -> str:
        """Return the end of the server's log.

        Args:
            max_chars: At most this many characters.

        Returns:
            The text.
        """
        return "<not started>" if self._process is None else self._process.log_tail(max_chars)

    def start(self) -> TangoGQLServer:
        """Start uvicorn and wait until TangoGQL answers a query.

        Returns:
            ``self``.

        Raises:
            RuntimeError: If it exits or does not answer in time.
        """
        workdir = self._dir / "cwd"
        workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env.update(
            {
                "TANGO_HOST": self.tango_host,
                "TANGOGQL_NO_AUTH": "true",
                "TANGOGQL_LOGGING_CONFIG": "",
                "PYTHONUNBUFFERED": "1",
            }
        )
        argv = [
            self.python,
            "-m",
            "uvicorn",
            "tangogql.main:app",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        self._process = ManagedProcess(argv, self.log_path, env=env, cwd=workdir)
        self._process.spawn()
        deadline = time.monotonic() + self.start_timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not self._process.running:
                raise RuntimeError(
                    f"TangoGQL exited with status {self._process.returncode}; "
                    f"log {self.log_path}:\n{self._process.log_tail()}"
                )
            try:
                self.query("{ tangoHost }", timeout=5.0)
            except (OSError, GraphQLError) as exc:
                last_error = str(exc)
                time.sleep(0.2)
            else:
                return self
        self.stop()
        raise RuntimeError(
            f"TangoGQL did not answer within {self.start_timeout:g} s ({last_error}); "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """End the uvicorn process (SIGTERM, then SIGKILL). Safe to call twice."""
        if self._process is not None:
            self._process.terminate(5.0)

    def __enter__(self) -> TangoGQLServer:
        """Start the server.

        Returns:
            ``self``.
        """
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    def query(
        self, query: str, variables: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Run a GraphQL query or mutation over HTTP (``POST /db``).

        Args:
            query: The GraphQL document.
            variables: Its variables.
            timeout: Seconds to wait for the answer.

        Returns:
            The ``data`` of the answer.

        Raises:
            GraphQLError: If the server answers with errors or no data.
            OSError: If the server cannot be reached.
        """
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/db",
            data=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read().decode())
        except urllib.error.HTTPError as exc:
            raise GraphQLError(f"HTTP {exc.code}: {exc.read()[:500]!r}") from exc
        if answer.get("errors") or answer.get("data") is None:
            raise GraphQLError(f"GraphQL errors: {answer.get('errors')!r}")
        return dict(answer["data"])

    def subscribe(self, query: str, timeout: float = 30.0) -> GraphQLSubscription:
        """Open a GraphQL subscription over the websocket route ``/socket``.

        Args:
            query: The subscription document.
            timeout: Seconds to wait for the connection.

        Returns:
            The open subscription; close it (or use it in a ``with``).
        """
        return GraphQLSubscription(self.host, self.port, "/socket", query, timeout)


class GraphQLSubscription:
    """A GraphQL subscription over a websocket, ``graphql-ws`` subprotocol.

    A minimal websocket client (RFC 6455, text frames, no extensions), enough
    to talk to TangoGQL as Taranta does: ``connection_init``, ``start``, then
    ``data`` messages until ``stop``.

    Args:
        host: Server address.
        port: Server port.
        path: Websocket route.
        query: The subscription document.
        timeout: Seconds to wait for the connection and its acknowledgement.

    Raises:
        GraphQLError: If the server refuses the connection or the subscription.
    """

    def __init__(self, host: str, port: int, path: str, query: str, timeout: float = 30.0) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._buffer = b""
        try:
            self._handshake(host, port, path)
            self._send_json({"type": "connection_init", "payload": {}})
            deadline = time.monotonic() + timeout
            while True:
                message = self._receive_json(max(0.1, deadline - time.monotonic()))
                if message is None:
                    raise GraphQLError("no connection_ack from the server")
                if message.get("type") == "connection_ack":
                    break
                if message.get("type") == "connection_error":
                    raise GraphQLError(f"connection refused: {message!r}")
            self._send_json({"id": "1", "type": "start", "payload": {"query": query}})
        except BaseException:
            self._sock.close()
            raise

    def _handshake(self, host: str, port: int, path: str) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: graphql-ws\r\n"
            "\r\n"
        )
        self._sock.sendall(request.encode())
        while b"\r\n\r\n" not in self._buffer:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise GraphQLError("the server closed the connection during the handshake")
            self._buffer += chunk
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise GraphQLError(f"websocket upgrade refused: {head.decode(errors='replace')}")

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        length = len(payload)
        if length < 126:
            header += bytes([0x80 | length])
        elif length < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", length)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._sock.sendall(header + mask + masked)

    def _send_json(self, message: dict[str, Any]) -> None:
        self._send_frame(0x1, json.dumps(message).encode())

    def _fill(self, count: int) -> None:
        """Receive until the buffer holds ``count`` bytes (nothing is consumed)."""
        while len(self._buffer) < count:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the websocket")
            self._buffer += chunk

    def _read_frame(self) -> tuple[bool, int, bytes]:
        """Take one whole frame off the buffer; a timeout leaves the buffer intact."""
        self._fill(2)
        first, second = self._buffer[0], self._buffer[1]
        offset = 2
        length = second & 0x7F
        if length == 126:
            self._fill(offset + 2)
            (length,) = struct.unpack("!H", self._buffer[offset : offset + 2])
            offset += 2
        elif length == 127:
            self._fill(offset + 8)
            (length,) = struct.unpack("!Q", self._buffer[offset : offset + 8])
            offset += 8
        mask = b""
        if second & 0x80:
            self._fill(offset + 4)
            mask = self._buffer[offset : offset + 4]
            offset += 4
        self._fill(offset + length)
        payload = self._buffer[offset : offset + length]
        self._buffer = self._buffer[offset + length :]
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(first & 0x80), first & 0x0F, payload

    def _receive_json(self, timeout: float) -> dict[str, Any] | None:
        """Return the next JSON message, or None if none came in ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        message = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._sock.settimeout(remaining)
            try:
                fin, opcode, payload = self._read_frame()
            except TimeoutError:
                return None
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
            elif opcode == 0x8:  # close
                raise ConnectionError("the server closed the websocket")
            elif opcode in (0x0, 0x1, 0x2):
                message += payload
                if fin:
                    return dict(json.loads(message.decode()))

    def next_data(self, timeout: float) -> dict[str, Any] | None:
        """Return the ``data`` of the next subscription message.

        Keep-alive messages are skipped.

        Args:
            timeout: Seconds to wait at most.

        Returns:
            The payload's ``data``, or None if nothing came in time.

        Raises:
            GraphQLError: If the server reports an error for the subscription.
        """
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive_json(deadline - time.monotonic())
            if message is None:
                return None
            kind = message.get("type")
            if kind == "data":
                payload = message.get("payload") or {}
                if payload.get("errors"):
                    raise GraphQLError(f"subscription errors: {payload['errors']!r}")
                return dict(payload.get("data") or {})
            if kind in ("error", "connection_error"):
                raise GraphQLError(f"subscription failed: {message!r}")
            if kind == "complete":
                raise GraphQLError("the server ended the subscription")

    def close(self) -> None:
        """Stop the subscription and close the websocket."""
        try:
            self._send_json({"id": "1", "type": "stop"})
            self._send_json({"type": "connection_terminate"})
            self._send_frame(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        finally:
            self._sock.close()

    def __enter__(self) -> GraphQLSubscription:
        """Return the subscription.

        Returns:
            ``self``.
        """
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the subscription."""
        self.close()
