"""A real Tango database for tests: PyTango's sqlite Database device server.

The server keeps its tables in memory and listens on 127.0.0.1 only. It runs
in a child process, by default with the current interpreter. PyTango 9.5's
own Database server does not serve requests, so with an older PyTango under
test point the environment variable named by :data:`DB_PYTHON_ENV` at a
Python interpreter that has PyTango 10 installed: clients and device servers
of the older version work with it.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import tango

from ._process import ManagedProcess, free_port

__all__ = ["DB_PYTHON_ENV", "TangoDatabase", "database_python"]

#: Environment variable naming the Python interpreter that runs the database
#: server (it needs PyTango >= 10). Unset: the current interpreter.
DB_PYTHON_ENV = "SKA_TANGO_SCHEDULER_DB_PYTHON"

_DB_INSTANCE = "2"
_START_ATTEMPTS = 3


def database_python() -> str:
    """Return the interpreter that runs the database server.

    Returns:
        The value of :data:`DB_PYTHON_ENV` if set, else :data:`sys.executable`.

    Raises:
        RuntimeError: The variable is unset and the current PyTango is older
            than 10, whose Database server does not work.
    """
    configured = os.environ.get(DB_PYTHON_ENV, "").strip()
    if configured:
        return configured
    if int(tango.__version_info__[0]) < 10:
        raise RuntimeError(
            f"PyTango {tango.__version__}'s Database server does not answer requests; "
            f"set {DB_PYTHON_ENV} to a Python interpreter that has PyTango >= 10 installed "
            "(the Makefile sets it to .venv/bin/python for the old-PyTango test run)"
        )
    return sys.executable


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


class TangoDatabase:
    """A Tango database server in a child process, on 127.0.0.1.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    It does not change ``TANGO_HOST`` in this process: clients either use
    :attr:`tango_host` in a full TRL, or the caller sets the environment
    (the pytest fixture ``tango_database`` does).

    Args:
        python: Interpreter that runs the server; ``None``: see
            :func:`database_python`.
        host: Address to listen on.
        port: TCP port; ``None`` picks a free one (and retries with another if
            it is taken meanwhile).
        log_dir: Directory for the server's log file; ``None``: a new
            temporary directory.
        start_timeout: Seconds to wait for the server to answer.
    """

    def __init__(
        self,
        *,
        python: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self._python = python
        self.host = host
        self._requested_port = port
        self._port: int | None = port
        self._log_dir = Path(
            log_dir if log_dir is not None else tempfile.mkdtemp(prefix="ska-tango-db-")
        )
        self.start_timeout = start_timeout
        self._process: ManagedProcess | None = None
        self._client: tango.Database | None = None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """TCP port the server listens on.

        Raises:
            RuntimeError: The server has not been started.
        """
        if self._port is None:
            raise RuntimeError("the Tango database has not been started")
        return self._port

    @property
    def tango_host(self) -> str:
        """``host:port``, the value for ``TANGO_HOST``."""
        return f"{self.host}:{self.port}"

    def trl(self, device_name: str) -> str:
        """Return the fully qualified TRL of a device in this database.

        Args:
            device_name: ``domain/family/member``.

        Returns:
            ``tango://host:port/domain/family/member``.
        """
        return f"tango://{self.tango_host}/{device_name}"

    @property
    def pid(self) -> int | None:
        """Pid of the server process, ``None`` before start."""
        return None if self._process is None else self._process.pid

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self._log_dir / "tango-database.log"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.running

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> TangoDatabase:
        """Start the server and wait until it answers.

        Returns:
            ``self``, for chaining.

        Raises:
            RuntimeError: The server is running already, exited, or did not
                answer within ``start_timeout``; the message ends with its log.
        """
        if self.running:
            raise RuntimeError(f"the Tango database is running already (pid {self.pid})")
        python = self._python or database_python()
        attempts = 1 if self._requested_port is not None else _START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port or free_port(self.host)
            self._port = port
            self._process = ManagedProcess(
                [
                    python,
                    "-m",
                    "tango.databaseds.database",
                    "--host",
                    self.host,
                    "--port",
                    str(port),
                    _DB_INSTANCE,
                ],
                self.log_path,
                env=self._server_env(port),
            )
            self._process.spawn()
            if self._wait_until_answering(last_attempt=attempt == attempts):
                return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _server_env(self, port: int) -> dict[str, str]:
        env = dict(os.environ)
        # The server needs nothing from the caller's Python path, and another
        # PyTango on it would break an interpreter chosen for its own PyTango.
        env.pop("PYTHONPATH", None)
        env.pop("PYTHONHOME", None)
        env["TANGO_HOST"] = f"{self.host}:{port}"
        env["PYTANGO_DATABASE_NAME"] = ":memory:"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _wait_until_answering(self, *, last_attempt: bool) -> bool:
        """Wait for the server; False if it exited early and may be retried."""
        process = self._process
        assert process is not None
        deadline = time.monotonic() + self.start_timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not process.running:
                if not last_attempt:
                    return False
                raise RuntimeError(
                    f"the Tango database server exited with status {process.returncode} "
                    f"before answering; log {self.log_path}:\n{process.log_tail()}"
                )
            if _port_open(self.host, self.port):
                try:
                    client = tango.Database(self.host, self.port)
                    client.get_info()
                except tango.DevFailed as exc:
                    last_error = str(exc.args[0].desc).strip() if exc.args else repr(exc)
                else:
                    self._client = client
                    return True
            time.sleep(0.1)
        process.kill()
        raise RuntimeError(
            f"the Tango database on {self.host}:{self.port} did not answer within "
            f"{self.start_timeout:g} s (last error: {last_error}); "
            f"log {self.log_path}:\n{process.log_tail()}"
        )

    def stop(self, grace: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``grace`` seconds).

        Safe to call more than once.

        Args:
            grace: Seconds the server gets to exit cleanly.
        """
        self._client = None
        if self._process is not None:
            self._process.terminate(grace)

    def __enter__(self) -> TangoDatabase:
        """Start the server unless it is running.

        Returns:
            ``self``.
        """
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    # -- contents ----------------------------------------------------------------------------

    @property
    def client(self) -> tango.Database:
        """A :class:`tango.Database` client bound to this server's host and port.

        Raises:
            RuntimeError: The server is not running.
        """
        if self._client is None or not self.running:
            raise RuntimeError("the Tango database is not running")
        return self._client

    def add_device(self, name: str, device_class: str, server: str) -> None:
        """Define a device (replacing any earlier definition of that name).

        Defining the first device of a server also defines the server.

        Args:
            name: Device name, ``domain/family/member``.
            device_class: Tango class name of the device.
            server: ``ServerName/instance``.
        """
        info = tango.DbDevInfo()
        info.name = name
        info._class = device_class  # noqa: SLF001 - the field is called so in PyTango
        info.server = server
        self.client.add_device(info)

    def add_devices(self, names: Sequence[str], device_class: str, server: str) -> None:
        """Define several devices of one class and server.

        Args:
            names: Device names.
            device_class: Tango class name of the devices.
            server: ``ServerName/instance``.
        """
        for name in names:
            self.add_device(name, device_class, server)

    def define_server(self, server: str) -> None:
        """Define a server with no devices of its own (just its admin device).

        Such a server starts and serves nothing until devices are added and
        it is restarted.

        Args:
            server: ``ServerName/instance``.
        """
        if not self.is_defined(f"dserver/{server}"):
            self.add_device(f"dserver/{server}", "DServer", server)

    def delete_device(self, name: str) -> None:
        """Remove a device's definition.

        Args:
            name: Device name.
        """
        self.client.delete_device(name)

    def delete_server(self, server: str) -> None:
        """Remove a server and all its devices.

        Args:
            server: ``ServerName/instance``.
        """
        self.client.delete_server(server)

    def is_defined(self, name: str) -> bool:
        """Whether a device is defined.

        Args:
            name: Device name.

        Returns:
            True if the database knows the device.
        """
        try:
            self.client.get_device_info(name)
        except tango.DevFailed:
            return False
        return True

    def put_device_properties(self, name: str, properties: Mapping[str, Sequence[str]]) -> None:
        """Set device properties.

        Args:
            name: Device name.
            properties: Property name to list of string values.
        """
        self.client.put_device_property(name, {k: list(v) for k, v in properties.items()})
