"""The benchmarks' test bed: a Tango database, device servers, client processes."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from ska_tango_scheduler.testing import (
    DeviceServerProcess,
    ManagedProcess,
    TangoDatabase,
    event_source_process,
)

__all__ = ["FARM_DEVICES", "SOURCE_DEVICE", "Bed", "ClientFailedError", "ClientHandle"]

#: The EventSource device every flooding benchmark talks to.
SOURCE_DEVICE = "bench/source/1"
#: Devices per server of :meth:`Bed.farm`.
FARM_DEVICES = 5
_REPO_ROOT = Path(__file__).resolve().parent.parent


class ClientFailedError(RuntimeError):
    """A benchmark client process failed or did not finish in time."""


class ClientHandle:
    """A running benchmark client process.

    Args:
        process: The child process.
        out_path: Where the client writes its JSON result.
        label: Name for messages.
    """

    def __init__(self, process: ManagedProcess, out_path: Path, label: str) -> None:
        self.process = process
        self.out_path = out_path
        self.label = label

    @property
    def running(self) -> bool:
        """Whether the client is still running."""
        return self.process.running

    def wait(self, timeout: float) -> dict[str, Any]:
        """Wait for the client's result.

        Args:
            timeout: Seconds to wait before killing it.

        Returns:
            The client's result.

        Raises:
            ClientFailedError: The client failed or timed out; with its log.
        """
        deadline = time.monotonic() + timeout
        while self.process.running and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.process.running:
            self.process.kill()
            raise ClientFailedError(
                f"client {self.label} did not finish within {timeout:g} s; log:\n"
                f"{self.process.log_tail()}"
            )
        if self.process.returncode != 0 or not self.out_path.exists():
            raise ClientFailedError(
                f"client {self.label} exited with status {self.process.returncode}; log:\n"
                f"{self.process.log_tail()}"
            )
        result: dict[str, Any] = json.loads(self.out_path.read_text(encoding="utf-8"))
        return result

    def kill(self) -> None:
        """Kill the client if it still runs."""
        if self.process.running:
            self.process.kill()


class Bed:
    """A Tango database with an ``EventSource`` server, and client processes.

    Use it as a context manager. Clients run ``python -m benchmarks._client``
    with the current interpreter, from the repository root, with
    ``TANGO_HOST`` set to the database.

    Args:
        work_dir: Directory for logs and client files; None: a temporary one.
        baseline: A ``src`` directory of another revision of the package;
            clients of sides named ``...@base`` import the package from it.
    """

    def __init__(self, work_dir: Path | None = None, baseline: Path | None = None) -> None:
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="ska-bench-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.database = TangoDatabase(log_dir=self.work_dir)
        self.source: DeviceServerProcess | None = None
        self.baseline = baseline
        self._clients = 0
        self._servers: list[DeviceServerProcess] = []
        self._farm: list[list[str]] = []

    def __enter__(self) -> Bed:
        """Start the database and the event source server.

        Returns:
            ``self``.
        """
        self.database.start()
        os.environ["TANGO_HOST"] = self.database.tango_host
        self.source = self.server("main", [SOURCE_DEVICE])
        self.source.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop every server and the database."""
        for server in self._servers:
            server.stop(grace=3.0)
        self.database.stop()

    def server(self, instance: str, devices: list[str]) -> DeviceServerProcess:
        """Describe an ``EventSource`` server (not started) that the bed stops at the end.

        Args:
            instance: Server instance name.
            devices: Its devices.

        Returns:
            The server process object.
        """
        server = event_source_process(
            self.database, instance, devices, log_dir=self.work_dir, stop_grace=3.0
        )
        self._servers.append(server)
        return server

    def farm(self, servers: int) -> list[list[str]]:
        """Start (once) ``servers`` more ``EventSource`` servers of :data:`FARM_DEVICES` devices.

        Args:
            servers: How many server processes are wanted.

        Returns:
            The TRLs of the devices, per server; the servers of an earlier
            call are reused.
        """
        while len(self._farm) < servers:
            index = len(self._farm)
            names = [f"bench/farm{index}/{d}" for d in range(FARM_DEVICES)]
            server = self.server(f"farm{index}", names)
            server.start()
            self._farm.append([self.trl(name) for name in names])
        return self._farm[:servers]

    def trl(self, device: str = SOURCE_DEVICE) -> str:
        """Return the full TRL of a device of the bed.

        Args:
            device: Device name.

        Returns:
            ``tango://host:port/device``.
        """
        return self.database.trl(device)

    def spawn(
        self,
        scenario: str,
        side: str,
        params: dict[str, Any],
        prefix: tuple[str, ...] = (),
    ) -> ClientHandle:
        """Start a client process.

        Args:
            scenario: Benchmark module name (``throughput``, ...).
            side: Which side it runs (``plain``, ``scheduler``, ...); a side
                ending in ``@base`` runs with the baseline package first on
                ``PYTHONPATH`` and gets the side name without the suffix.
            params: Parameters, passed as JSON.
            prefix: Command that runs the client's Python (e.g. a profiler).

        Returns:
            The handle to wait on.
        """
        self._clients += 1
        stem = f"{self._clients:03d}-{scenario}-{side.replace('@', '-')}"
        params_path = self.work_dir / f"{stem}.params.json"
        out_path = self.work_dir / f"{stem}.result.json"
        params_path.write_text(json.dumps(params), encoding="utf-8")
        env = dict(os.environ)
        env["TANGO_HOST"] = self.database.tango_host
        env["PYTHONUNBUFFERED"] = "1"
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(_REPO_ROOT) + (os.pathsep + path if path else "")
        if side.endswith("@base"):
            if self.baseline is None:
                raise ValueError(f"side {side} needs a baseline (--baseline)")
            side = side[: -len("@base")]
            env["PYTHONPATH"] = str(self.baseline) + os.pathsep + env["PYTHONPATH"]
        process = ManagedProcess(
            [
                *prefix,
                sys.executable,
                "-m",
                "benchmarks._client",
                scenario,
                side,
                str(params_path),
                str(out_path),
            ],
            self.work_dir / f"{stem}.log",
            env=env,
            cwd=_REPO_ROOT,
        )
        process.spawn()
        return ClientHandle(process, out_path, stem)

    def run(
        self, scenario: str, side: str, params: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Run a client process to its end.

        Args:
            scenario: Benchmark module name.
            side: Which side it runs.
            params: Parameters.
            timeout: Seconds it may take.

        Returns:
            Its result.
        """
        return self.spawn(scenario, side, params).wait(timeout)
