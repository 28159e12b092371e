"""Pytest fixtures for tests against real Tango processes.

Enable them in a ``conftest.py``::

    pytest_plugins = ["ska_tango_scheduler.testing.pytest_plugin"]

Fixtures:

``tango_database`` (session)
    A running :class:`~ska_tango_scheduler.testing.TangoDatabase`; while it
    runs, ``os.environ["TANGO_HOST"]`` names it. Request it before any Tango
    client call of the test process: the Tango client library remembers the
    first default database it talks to.
``device_server_factory`` (function)
    A :class:`DeviceServerFactory`: call it to define (and by default start)
    device server processes. Every process it made is stopped when the test
    ends, pass or fail, and its server is removed from the database.
``event_source`` (module)
    A running ``EventSource`` server with three devices, as an
    :class:`EventSourceServer`. Shared by the tests of a module: do not stop
    it, and compare counters with their earlier values (or call
    ``ResetCounts``) rather than assuming they start at 0.

At the end of the session, any child process still running is killed.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ._database import TangoDatabase
from ._process import kill_child_processes, kill_started_processes
from ._servers import DeviceServerProcess, event_source_process

__all__ = [
    "DeviceServerFactory",
    "EventSourceServer",
    "device_server_factory",
    "event_source",
    "tango_database",
]

_serial = itertools.count(1)


def _unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}x{next(_serial)}"


@dataclass(frozen=True)
class EventSourceServer:
    """A running ``EventSource`` device server and its devices.

    Attributes:
        process: The server process.
        devices: Device names (``domain/family/member``).
        trls: Fully qualified TRLs of the devices (``tango://host:port/...``).
    """

    process: DeviceServerProcess
    devices: tuple[str, ...]
    trls: tuple[str, ...]


class DeviceServerFactory:
    """Makes device server processes for one test and ends them afterwards.

    Args:
        database: The test database.
        log_dir: Directory for the servers' logs.
    """

    def __init__(self, database: TangoDatabase, log_dir: Path) -> None:
        self.database = database
        self.log_dir = log_dir
        self.processes: list[DeviceServerProcess] = []

    @staticmethod
    def unique_name(prefix: str = "t") -> str:
        """Return a name part that no other call in this session returns.

        Args:
            prefix: Leading letters (Tango names must not start with a digit).

        Returns:
            ``prefix`` followed by a serial number.
        """
        return _unique(prefix)

    def __call__(
        self,
        server: str,
        devices: Sequence[str] = (),
        *,
        device_class: str,
        module: str | None = None,
        command: Sequence[str] | None = None,
        start: bool = True,
        **kwargs: Any,
    ) -> DeviceServerProcess:
        """Make a device server process, started unless ``start`` is False.

        Args:
            server: ``ServerName/instance``.
            devices: Its device names.
            device_class: Tango class of the devices.
            module: Python module to run with ``-m``.
            command: Command line to run instead of ``python -m module``.
            start: Start it (registering its devices) and wait until they answer.
            **kwargs: Further arguments for :class:`DeviceServerProcess`.

        Returns:
            The process object.
        """
        kwargs.setdefault("log_dir", self.log_dir)
        process = DeviceServerProcess(
            server,
            devices,
            database=self.database,
            device_class=device_class,
            module=module,
            command=command,
            **kwargs,
        )
        self.processes.append(process)
        if start:
            process.start()
        return process

    def event_source(
        self,
        devices: int | Sequence[str] = 1,
        *,
        instance: str | None = None,
        start: bool = True,
        **kwargs: Any,
    ) -> DeviceServerProcess:
        """Make an ``EventSource`` server, started unless ``start`` is False.

        Args:
            devices: Device names, or how many devices to name uniquely.
            instance: Server instance; ``None``: a unique one.
            start: Start it and wait until its devices answer.
            **kwargs: Further arguments for :class:`DeviceServerProcess`.

        Returns:
            The process object; its ``devices`` lists the device names.
        """
        instance = instance or _unique("es")
        if isinstance(devices, int):
            family = _unique("evsrc")
            devices = [f"test/{family}/{i}" for i in range(1, devices + 1)]
        kwargs.setdefault("log_dir", self.log_dir)
        process = event_source_process(self.database, instance, devices, **kwargs)
        self.processes.append(process)
        if start:
            process.start()
        return process

    def close(self) -> None:
        """Stop every process made here and remove their servers from the database."""
        for process in reversed(self.processes):
            process.stop()
            if self.database.running:
                try:
                    process.unregister()
                except Exception as exc:  # the database may have no such server
                    print(f"note: could not remove {process.server}: {exc}", file=sys.stderr)
        self.processes.clear()


@pytest.fixture(scope="session")
def tango_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TangoDatabase]:
    """Run a Tango database for the session and point ``TANGO_HOST`` at it.

    Yields:
        The running database.
    """
    database = TangoDatabase(log_dir=tmp_path_factory.mktemp("tango-database"))
    database.start()
    previous = os.environ.get("TANGO_HOST")
    os.environ["TANGO_HOST"] = database.tango_host
    try:
        yield database
    finally:
        database.stop()
        if previous is None:
            os.environ.pop("TANGO_HOST", None)
        else:
            os.environ["TANGO_HOST"] = previous


@pytest.fixture
def device_server_factory(
    tango_database: TangoDatabase, tmp_path: Path
) -> Iterator[DeviceServerFactory]:
    """Make device server processes that end with the test.

    Yields:
        The factory.
    """
    factory = DeviceServerFactory(tango_database, tmp_path / "servers")
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def event_source(
    tango_database: TangoDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EventSourceServer]:
    """Run an ``EventSource`` server with three devices for the tests of a module.

    Yields:
        The server and its device names and TRLs.
    """
    factory = DeviceServerFactory(tango_database, tmp_path_factory.mktemp("event-source"))
    try:
        process = factory.event_source(3)
        yield EventSourceServer(process, tuple(process.devices), tuple(process.trls))
    finally:
        factory.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """End every child process still running when the session ends."""
    leftover = kill_started_processes(grace=2.0) + kill_child_processes()
    if leftover:
        print(
            f"\nska_tango_scheduler.testing: killed leftover child processes {leftover}",
            file=sys.stderr,
        )
