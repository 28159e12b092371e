"""Child processes for the test bed: started, logged, and always ended by pid.

Every child runs in its own session (and so its own process group), with its
output going to a log file, never to a pipe of the parent: a child left over
after a failure then cannot block whoever reads the parent's output. Each
live child is recorded in a registry so that :func:`kill_started_processes`
(run at interpreter exit and by the pytest plugin at session end) can end
whatever is still running. On Linux the kernel also kills each child when
this process ends by any means (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path

__all__ = [
    "ManagedProcess",
    "free_port",
    "kill_child_processes",
    "kill_started_processes",
]

_registry_lock = threading.Lock()
_registry: dict[int, subprocess.Popen[bytes]] = {}

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


# Looked up once here: the child must do as little as possible between fork and exec.
_prctl = _load_prctl()


def _die_with_parent() -> None:
    """In the child before exec: ask the kernel for SIGKILL when the parent goes."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


class _Spawner:
    """Starts children from one long-lived thread.

    Linux sends the "parent died" signal when the *thread* that forked a child
    ends, so children are forked from a thread that lives as long as this
    process: they are then killed with it even when it ends abruptly (for
    example through ``os._exit`` after a test timeout), but not when the
    thread that asked for them ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _serve(self) -> None:
        while True:
            start, future = self._requests.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(start())
                except BaseException as exc:  # handed to the caller
                    future.set_exception(exc)

    def popen(self, start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name="ska-tango-scheduler-spawner", daemon=True
                )
                self._thread.start()
        future: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put((start, future))
        return future.result()


_spawner = _Spawner()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free at the time of the call.

    The port is not reserved: another process may take it before it is used.
    Callers that bind it later should be ready to retry with another port.

    Args:
        host: Address to probe.

    Returns:
        A port number that could be bound just now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to the process group that ``popen`` leads.

    The group outlives its leader while grandchildren are in it. Once the
    leader has been reaped its pid may be reused, so it is then never signalled
    on its own.
    """
    try:
        os.killpg(popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        if popen.poll() is None:  # not reaped yet: its pid is still its own
            with contextlib.suppress(ProcessLookupError, PermissionError):
                popen.send_signal(sig)


def _end_popen(popen: subprocess.Popen[bytes], grace: float) -> None:
    """Send SIGTERM to ``popen``'s group, then SIGKILL after ``grace`` seconds."""
    if popen.poll() is None:
        _signal_group(popen, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=grace)
    # The group may hold grandchildren even after the leader is gone.
    _signal_group(popen, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=10.0)


def kill_started_processes(grace: float = 2.0) -> list[int]:
    """End every process started by this module that is still running.

    Args:
        grace: Seconds each process gets to exit after SIGTERM before SIGKILL.

    Returns:
        The pids that were still running and have been ended.
    """
    with _registry_lock:
        popens = list(_registry.values())
        _registry.clear()
    ended = []
    for popen in popens:
        if popen.poll() is None:
            ended.append(popen.pid)
        _end_popen(popen, grace)
    return ended


def _children_of(pid: int) -> list[int]:
    """Return the pids of all descendants of ``pid`` (psutil, else ``/proc``)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return [p.pid for p in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return []
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) is in parentheses and may hold spaces.
        fields = stat.rsplit(")", 1)[-1].split()
        parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, ppid in parents.items() if ppid == parent]
        found.extend(kids)
        frontier.extend(kids)
    return found


#: Helper processes of the standard library that a session-end sweep leaves alone.
SPARED_COMMANDS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def kill_child_processes(spare: Sequence[str] = SPARED_COMMANDS) -> list[int]:
    """SIGKILL every descendant of the current process that is still alive.

    A last resort for the end of a test session: it ends children that were
    started by other means too (for example by a test context).

    Args:
        spare: Leave alone processes whose command line contains one of these.

    Returns:
        The pids that were sent SIGKILL.
    """
    pids = [
        pid
        for pid in _children_of(os.getpid())
        if not any(word in _command_line(pid) for word in spare)
    ]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        # Reap our direct children; others are reaped by their own parent.
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
    return pids


atexit.register(kill_started_processes)


class ManagedProcess:
    """One child process, restartable, with its output in a log file.

    Each start appends to the same log file, after a header line naming the
    command and pid, so a restarted process keeps the history of earlier runs.

    Args:
        argv: The command line.
        log_path: File that receives the child's stdout and stderr.
        env: The child's full environment (``None``: the current one).
        cwd: The child's working directory (``None``: the current one).
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        """Pid of the current (or last) child, ``None`` before the first start."""
        return None if self._popen is None else self._popen.pid

    @property
    def running(self) -> bool:
        """Whether the child has been started and has not exited."""
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status of the last child (negative: killed by that signal)."""
        return None if self._popen is None else self._popen.poll()

    def spawn(self) -> int:
        """Start the child; it must not be running already.

        Returns:
            The new child's pid.

        Raises:
            RuntimeError: The child is still running.
        """
        if self.running:
            raise RuntimeError(f"process {self.pid} is still running: stop it first")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            log.write(f"==== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            popen = _spawner.popen(
                lambda: subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=_die_with_parent if _prctl is not None else None,
                )
            )
        self._popen = popen
        with _registry_lock:
            _registry[popen.pid] = popen
        return popen.pid

    def terminate(self, grace: float = 10.0) -> int | None:
        """Send SIGTERM, wait up to ``grace`` seconds, then SIGKILL.

        Args:
            grace: Seconds the child gets to exit cleanly.

        Returns:
            The child's exit status, or ``None`` if it was never started.
        """
        return self._end(grace)

    def kill(self) -> int | None:
        """Send SIGKILL at once and wait for the child to end.

        Returns:
            The child's exit status, or ``None`` if it was never started.
        """
        return self._end(0.0)

    def _end(self, grace: float) -> int | None:
        popen = self._popen
        if popen is None:
            return None
        if grace > 0:
            _end_popen(popen, grace)
        else:
            _signal_group(popen, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=10.0)
        with _registry_lock:
            _registry.pop(popen.pid, None)
        return popen.poll()

    def log_tail(self, max_chars: int = 4000) -> str:
        """Return the end of the log of the current (or last) run.

        Args:
            max_chars: At most this many characters, taken from the end.

        Returns:
            The text, or a note when there is no log yet.
        """
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                data = log.read()
        except OSError as exc:
            return f"<no log at {self.log_path}: {exc}>"
        text = data.decode(errors="replace")
        if len(text) > max_chars:
            text = "...\n" + text[-max_chars:]
        return text
