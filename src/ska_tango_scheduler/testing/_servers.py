"""Tango device servers run as child processes, registered in a test database."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import tango

from ._database import TangoDatabase
from ._process import ManagedProcess

__all__ = [
    "EVENT_SOURCE_ATTRIBUTES",
    "EVENT_SOURCE_CLASS",
    "EVENT_SOURCE_MODULE",
    "LOOPBACK_ORB_ARGS",
    "DeviceServerProcess",
    "event_source_process",
]

#: Module that runs the :class:`~ska_tango_scheduler.testing.event_source.EventSource`
#: device server with ``python -m``.
EVENT_SOURCE_MODULE = "ska_tango_scheduler.testing.event_source"
#: Tango class name (and server name) of the event source device.
EVENT_SOURCE_CLASS = "EventSource"
#: The event source's counter attributes, in the order of its ``pushedCounts``.
EVENT_SOURCE_ATTRIBUTES = ("myAttr1", "myAttr2", "myAttr3", "myAttr4")

#: ORB arguments that make a server listen on the loopback interface only,
#: on a port of the system's choosing.
LOOPBACK_ORB_ARGS = ("-ORBendPoint", "giop:tcp:127.0.0.1:0")


class DeviceServerProcess:
    """A Tango device server in a child process, with its devices in a test database.

    The server is started as ``python -m MODULE INSTANCE -ORBendPoint
    giop:tcp:127.0.0.1:0 [extra args]`` (or ``COMMAND INSTANCE ...``) with
    ``TANGO_HOST`` pointing at ``database``. The module must run its device
    classes under the server name given here, for example with
    ``tango.server.run(classes, args=["ServerName", *sys.argv[1:]])``.

    It can be created without starting (``start()`` later), to test clients
    that see a device defined but not running; and its devices can be left
    undefined (``register=False``) to test clients that see a device that the
    database does not know yet.

    Args:
        server: ``ServerName/instance``.
        devices: Names of the server's devices (``domain/family/member``).
        database: The test database to register devices in.
        device_class: Tango class of ``devices``.
        module: Python module to run with ``-m``; required unless
            ``command`` is given.
        command: Command line to run instead of ``python -m MODULE``.
        python: Interpreter for ``-m MODULE``; ``None``: the current one.
        extra_args: Arguments appended to the command line.
        env: Extra environment variables for the child.
        cwd: Working directory of the child.
        log_dir: Directory of the log file; ``None``: a new temporary one.
        register: Define the devices (and the server) in the database at
            :meth:`start` when they are not defined yet.
        ready_timeout: Seconds :meth:`start` waits for the devices to answer.
        stop_grace: Seconds :meth:`stop` waits after SIGTERM before SIGKILL.
    """

    def __init__(
        self,
        server: str,
        devices: Sequence[str] = (),
        *,
        database: TangoDatabase,
        device_class: str,
        module: str | None = None,
        command: Sequence[str] | None = None,
        python: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        register: bool = True,
        ready_timeout: float = 60.0,
        stop_grace: float = 10.0,
    ) -> None:
        server_name, sep, instance = server.partition("/")
        if not sep or not server_name or not instance or "/" in instance:
            raise ValueError(f"server must be 'ServerName/instance', got {server!r}")
        if (module is None) == (command is None):
            raise ValueError("give exactly one of module and command")
        self.server = server
        self.server_name = server_name
        self.instance = instance
        self.devices = list(devices)
        self.database = database
        self.device_class = device_class
        self.register_devices = register
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        base = (
            list(command) if command is not None else [python or sys.executable, "-m", str(module)]
        )
        self.argv = [*base, instance, *LOOPBACK_ORB_ARGS, *extra_args]
        self._extra_env = dict(env or {})
        self._cwd = cwd
        self._log_dir = Path(
            log_dir if log_dir is not None else tempfile.mkdtemp(prefix="ska-tango-ds-")
        )
        self._process: ManagedProcess | None = None
        self.starts = 0

    # -- names -------------------------------------------------------------------------------

    @property
    def admin_device(self) -> str:
        """Name of the server's admin device, ``dserver/ServerName/instance``."""
        return f"dserver/{self.server}"

    @property
    def trls(self) -> list[str]:
        """Fully qualified TRLs of :attr:`devices`."""
        return [self.database.trl(name) for name in self.devices]

    @property
    def log_path(self) -> Path:
        """The server's log file (all runs, each after a header line)."""
        return self._log_dir / f"{self.server.replace('/', '.')}.log"

    # -- state -------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Pid of the current (or last) server process, ``None`` before the first start."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.running

    @property
    def returncode(self) -> int | None:
        """Exit status of the last process (negative: killed by that signal)."""
        return None if self._process is None else self._process.returncode

    def log_tail(self, max_chars: int = 4000) -> str:
        """Return the end of the current (or last) run's log.

        Args:
            max_chars: At most this many characters, taken from the end.

        Returns:
            The log text.
        """
        if self._process is None:
            return "<not started>"
        return self._process.log_tail(max_chars)

    # -- database ----------------------------------------------------------------------------

    def register(self) -> None:
        """Define the server and those of its devices the database does not know yet."""
        self.database.define_server(self.server)
        for name in self.devices:
            if not self.database.is_defined(name):
                self.database.add_device(name, self.device_class, self.server)

    def unregister(self) -> None:
        """Remove the server and all its devices from the database."""
        self.database.delete_server(self.server)

    # -- life cycle --------------------------------------------------------------------------

    def start(self, wait: bool = True) -> DeviceServerProcess:
        """Start the server (again, after :meth:`stop` or :meth:`kill`).

        Args:
            wait: Wait until the admin device and every defined device answer
                ``ping()``.

        Returns:
            ``self``, for chaining.

        Raises:
            RuntimeError: The server is running already, or it exited or did
                not answer in time; the message ends with its log.
        """
        if self.running:
            raise RuntimeError(f"server {self.server} is running already (pid {self.pid})")
        if self.register_devices:
            self.register()
        env = dict(os.environ)
        env.update(self._extra_env)
        env["TANGO_HOST"] = self.database.tango_host
        env["PYTHONUNBUFFERED"] = "1"
        self._process = ManagedProcess(self.argv, self.log_path, env=env, cwd=self._cwd)
        self._process.spawn()
        self.starts += 1
        if wait:
            self.wait_until_ready()
        return self

    def wait_until_ready(self, timeout: float | None = None) -> None:
        """Wait until the admin device and every defined device answer ``ping()``.

        Devices of :attr:`devices` that the database does not know are not
        waited for.

        Args:
            timeout: Seconds to wait; ``None``: ``ready_timeout``.

        Raises:
            RuntimeError: The process exited, or the devices did not answer in
                time; the message ends with the server's log.
        """
        process = self._process
        if process is None:
            raise RuntimeError(f"server {self.server} has not been started")
        limit = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        waiting = [self.admin_device] + [d for d in self.devices if self.database.is_defined(d)]
        last_error = "no answer yet"
        while waiting:
            if not process.running:
                raise RuntimeError(
                    f"device server {self.server} (pid {process.pid}) exited with status "
                    f"{process.returncode} before its devices answered; "
                    f"log {self.log_path}:\n{process.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"devices {waiting} of server {self.server} (pid {process.pid}) did not "
                    f"answer within {limit:g} s (last error: {last_error}); "
                    f"log {self.log_path}:\n{process.log_tail()}"
                )
            name = waiting[0]
            try:
                tango.DeviceProxy(self.database.trl(name)).ping()
            except tango.DevFailed as exc:
                last_error = f"{name}: {exc.args[0].reason}" if exc.args else repr(exc)
                time.sleep(0.1)
            else:
                waiting.pop(0)

    def stop(self, grace: float | None = None) -> int | None:
        """Stop the server: SIGTERM, then SIGKILL if it is still alive after ``grace``.

        Safe to call when it is not running.

        Args:
            grace: Seconds to wait after SIGTERM; ``None``: ``stop_grace``.

        Returns:
            The exit status, ``None`` if it was never started.
        """
        if self._process is None:
            return None
        return self._process.terminate(self.stop_grace if grace is None else grace)

    def kill(self) -> int | None:
        """Kill the server with SIGKILL, leaving its devices exported in the database.

        For fault tests: clients see the server vanish without a clean exit.

        Returns:
            The exit status, ``None`` if it was never started.
        """
        if self._process is None:
            return None
        return self._process.kill()

    def restart(self, wait: bool = True) -> DeviceServerProcess:
        """Stop the server if it runs, then start it again.

        Args:
            wait: Wait until the devices answer.

        Returns:
            ``self``.
        """
        self.stop()
        return self.start(wait=wait)

    def __enter__(self) -> DeviceServerProcess:
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


def event_source_process(
    database: TangoDatabase,
    instance: str,
    devices: Sequence[str],
    **kwargs: Any,
) -> DeviceServerProcess:
    """Describe (without starting) an ``EventSource`` device server.

    Args:
        database: The test database.
        instance: Server instance name; the server is ``EventSource/<instance>``.
        devices: Names of its ``EventSource`` devices.
        **kwargs: Further keyword arguments for :class:`DeviceServerProcess`.

    Returns:
        The server process object; call :meth:`DeviceServerProcess.start`.
    """
    return DeviceServerProcess(
        f"{EVENT_SOURCE_CLASS}/{instance}",
        devices,
        database=database,
        device_class=EVENT_SOURCE_CLASS,
        module=EVENT_SOURCE_MODULE,
        **kwargs,
    )
