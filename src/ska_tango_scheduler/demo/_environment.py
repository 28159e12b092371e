"""The Tango processes behind the demo: a database and ``EventSource`` servers.

:class:`DemoEnvironment` starts what the chosen mode needs and ends all of
it in :meth:`DemoEnvironment.close`, by pid:

* default: a private Tango database (in memory, on 127.0.0.1) and the
  ``EventSource`` servers, registered in it;
* ``tango_host`` given: only the ``EventSource`` servers, registered in that
  database under names unique to this run and removed from it afterwards;
* ``device`` given: nothing at all; the demo uses that running device.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tango

from ..testing import DeviceServerProcess, TangoDatabase, event_source_process

__all__ = ["DemoEnvironment", "DemoError", "ExistingDatabase", "parse_tango_host"]


class DemoError(RuntimeError):
    """The demo cannot run; the message says why."""


def parse_tango_host(value: str) -> tuple[str, int]:
    """Split ``host:port`` into its parts.

    Args:
        value: A ``TANGO_HOST`` value such as ``"127.0.0.1:10000"``.

    Returns:
        The host and the port.

    Raises:
        DemoError: If the value is not ``host:port`` with a numeric port.
    """
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DemoError(f"a Tango host must look like HOST:PORT, got {value!r}")
    return host, int(port)


class ExistingDatabase(TangoDatabase):
    """A Tango database that runs already, seen through the test bed's interface.

    It lets :class:`~ska_tango_scheduler.testing.DeviceServerProcess`
    register servers in a database that the demo did not start. Starting and
    stopping it do nothing.

    Args:
        tango_host: ``host:port`` of the database.
        log_dir: Directory for logs (unused, but kept off the temp directory).

    Raises:
        DemoError: If the address is malformed or the database does not answer.
    """

    def __init__(self, tango_host: str, log_dir: Path) -> None:
        host, port = parse_tango_host(tango_host)
        super().__init__(host=host, port=port, log_dir=log_dir)
        try:
            self._existing = tango.Database(host, port)
            self._existing.get_info()
        except tango.DevFailed as exc:
            reason = exc.args[0].desc.strip() if exc.args else repr(exc)
            raise DemoError(f"no Tango database answers at {tango_host}: {reason}") from exc

    @property
    def running(self) -> bool:
        """Always True: the database is run by someone else."""
        return True

    @property
    def client(self) -> tango.Database:
        """A client of the database."""
        return self._existing

    def start(self) -> ExistingDatabase:
        """Do nothing: the database runs already.

        Returns:
            ``self``.
        """
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Do nothing: the database is not ours to stop.

        Args:
            grace: Ignored.
        """


@dataclass(frozen=True)
class DemoDevices:
    """What the demo talks to.

    Attributes:
        source: TRL of the ``EventSource`` device that pushes the two streams.
        late: TRL of a device that is defined and started only while the
            scheduler runs, or None when the demo starts no servers.
    """

    source: str
    late: str | None


class DemoEnvironment:
    """Starts the demo's Tango processes and always ends them.

    Args:
        log_dir: Directory for the processes' log files.
        echo: Prints one line of progress.
        tango_host: Use this running database instead of starting one.
        device: Use this running ``EventSource`` device; start nothing.
        late_device: Prepare a second server to be started during the run.
    """

    def __init__(
        self,
        log_dir: Path,
        echo: Callable[[str], None],
        *,
        tango_host: str | None = None,
        device: str | None = None,
        late_device: bool = True,
    ) -> None:
        self._log_dir = log_dir
        self._echo = echo
        self._tango_host = tango_host
        self._device = device
        self._late_wanted = late_device and device is None
        self._database: TangoDatabase | None = None
        self._servers: list[DeviceServerProcess] = []
        self._late: DeviceServerProcess | None = None
        self._registered: list[str] = []
        self.devices: DemoDevices | None = None

    @property
    def pids(self) -> list[int]:
        """Pids of every process this environment started."""
        pids = [] if self._database is None else [self._database.pid]
        pids += [server.pid for server in self._servers]
        return [pid for pid in pids if pid is not None]

    def start(self) -> DemoDevices:
        """Start the database and the main ``EventSource`` server as needed.

        Returns:
            The devices to use.

        Raises:
            DemoError: If a database or server does not come up.
        """
        if self._device is not None:
            if self._tango_host is not None and "://" not in self._device:
                self._device = f"tango://{self._tango_host}/{self._device}"
            self.devices = DemoDevices(self._device, None)
            self._echo(f"using the running EventSource device {self._device}")
            return self.devices
        self._log_dir.mkdir(parents=True, exist_ok=True)
        if self._tango_host is None:
            database: TangoDatabase = TangoDatabase(log_dir=self._log_dir)
            self._database = database
            try:
                database.start()
            except RuntimeError as exc:
                raise DemoError(f"could not start a Tango database: {exc}") from exc
            self._echo(f"started a Tango database on {database.tango_host} (pid {database.pid})")
            tag = "1"
        else:
            database = ExistingDatabase(self._tango_host, self._log_dir)
            self._echo(f"using the Tango database at {database.tango_host}")
            tag = f"p{os.getpid()}"
        # Every Tango client call below names its database in full, but a
        # default keeps anything that does not from looking elsewhere.
        os.environ["TANGO_HOST"] = database.tango_host
        source = event_source_process(
            database, f"demo{tag}", [f"demo/eventsource/{tag}"], log_dir=self._log_dir
        )
        self._echo(self._start_server(source, wait=True))
        late = None
        if self._late_wanted:
            self._late = event_source_process(
                database, f"demolate{tag}", [f"demo/late/{tag}"], log_dir=self._log_dir
            )
            late = database.trl(self._late.devices[0])
        self.devices = DemoDevices(database.trl(source.devices[0]), late)
        return self.devices

    def _start_server(self, server: DeviceServerProcess, *, wait: bool) -> str:
        self._servers.append(server)
        self._registered.append(server.server)
        try:
            server.start(wait=wait)
        except RuntimeError as exc:
            raise DemoError(f"could not start {server.server}: {exc}") from exc
        return (
            f"started device server {server.server} for {', '.join(server.devices)} "
            f"(pid {server.pid})"
        )

    def start_late_server(self) -> str:
        """Define the late device and start its server, without waiting for it.

        Returns:
            What was started, to show to the user.
        """
        if self._late is None or self._late.pid is not None:
            return ""
        return self._start_server(self._late, wait=False)

    def close(self) -> None:
        """Stop every server and the database; remove what was registered.

        Safe to call more than once and after a failed :meth:`start`.
        """
        for server in reversed(self._servers):
            server.stop(grace=5.0)
        database = self._database
        if self._tango_host is not None and self._servers:
            # A database we did not start keeps nothing of this run.
            for name in self._registered:
                try:
                    self._servers[0].database.delete_server(name)
                except tango.DevFailed:
                    self._echo(f"note: could not remove {name} from the Tango database")
        self._registered.clear()
        self._servers.clear()
        if database is not None:
            database.stop()
