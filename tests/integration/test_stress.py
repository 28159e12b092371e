"""Stress: the garbage collector frees subscribed proxies while the load goes on.

A ``DeviceProxy`` with live subscriptions, freed by the cyclic garbage collector,
waits in its C++ destructor for Tango's event thread. If the collecting thread
holds a lock that the event thread is waiting for, the process stalls for good
(see the design's concurrency rules). These tests make that likely and watch for
it with real device servers:

* ``test_client_scene_keeps_delivering``: a client process floods through a
  :class:`~ska_tango_scheduler.CallbackScheduler` while user objects holding
  subscribed proxies in reference cycles are dropped, the collector runs often
  (low thresholds, the set-up frozen), callbacks are registered and
  unregistered, long running commands are invoked with their handles dropped
  and ``diagnostics()`` is read in a loop. The holders' finalisers destroy
  their proxy on whichever thread collects, so proxy destructors run inside
  calls of the package, except on Tango's own threads, where they hand the
  proxy to a thread that destroys it with no lock held (destroying a
  subscribed proxy on Tango's own thread is a PyTango hazard, not the one
  under test). The scene runs in a child process (a stall or a segmentation
  fault must not take pytest with it); a canary stream must keep delivering.
  On a stall every thread's stack is dumped into the child's log, which the
  failure names. To run it against another checkout of the package, set
  :data:`~ska_tango_scheduler.testing.stress.STRESS_PACKAGE_PATH_ENV` to its
  ``src`` directory.
* ``test_mixin_server_survives_init_with_readers_and_followers``: a
  ``SchedulerMixin`` device server whose two devices run ``Init`` in loops while
  clients read every diagnostic attribute and follow their change events. The
  server must answer throughout, keep no extra threads, and exit with status 0
  within 10 s of SIGTERM (on PyTango 9.5, which installs no SIGTERM handler in a
  server, the signal's default action ends it at once: status -15).

Each scene runs for :data:`~ska_tango_scheduler.testing.stress.STRESS_SECONDS_ENV`
seconds (default 25).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tango

from ska_tango_scheduler.mixin import DIAGNOSTIC_ATTRIBUTES
from ska_tango_scheduler.testing import TangoDatabase, wait_for
from ska_tango_scheduler.testing.lrc_device import LRC_SERVER_NAME
from ska_tango_scheduler.testing.mixin_devices import GC_THRESHOLD_ENV, reference_server
from ska_tango_scheduler.testing.pytest_plugin import DeviceServerFactory
from ska_tango_scheduler.testing.stress import (
    STRESS_PACKAGE_PATH_ENV,
    run_stress_scene,
    scene_arguments,
    scene_environment,
    stress_seconds,
)

CHANGE = tango.EventType.CHANGE_EVENT
_PYTANGO_MAJOR = int(tango.__version__.split(".")[0])
SECONDS = stress_seconds()
#: Seconds without progress that count as a stall.
STALL_AFTER = 10.0
#: EventSource servers and devices per server of the client scene.
SERVERS, DEVICES_PER_SERVER = 2, 6
#: Server threads above the starting level that are not a leak: omniORB's own
#: connection and pool threads come and go (a leak is one thread per Init).
THREAD_SLACK = 8


def _lrc_device(factory: DeviceServerFactory) -> str:
    name = f"test/{factory.unique_name('stresslrc')}/1"
    server = factory(
        f"{LRC_SERVER_NAME}/{factory.unique_name('stresslrc')}",
        [name],
        device_class=LRC_SERVER_NAME,
        module="ska_tango_scheduler.testing.lrc_device",
    )
    return server.trls[0]


@pytest.mark.timeout(SECONDS + 300)
def test_client_scene_keeps_delivering(
    device_server_factory: DeviceServerFactory, tmp_path: Path
) -> None:
    devices: list[str] = []
    for _ in range(SERVERS):
        devices += device_server_factory.event_source(DEVICES_PER_SERVER).trls
    lrc = _lrc_device(device_server_factory)
    log = tmp_path / "stress-scheduler.log"
    result = run_stress_scene(
        "scheduler",
        devices,
        lrc=lrc,
        duration=SECONDS,
        log_path=log,
        stall_after=STALL_AFTER,
        extra_args=scene_arguments(),
    )
    print(result.describe())
    assert result.ok, result.describe()
    # The scene tests something only if the collector freed proxies inside calls
    # of the package (such as diagnostics(), register_event_callback, invoke_lrc).
    inside = result.summary.get("freed", {}).get("package call", 0)
    assert inside > 0, f"no proxy was destroyed inside a call of the package\n{result.describe()}"


# -- the mixin scene ---------------------------------------------------------------------------


def _server_env(extra: dict[str, str]) -> dict[str, str]:
    """The mixin server's extra environment: ``extra``, and the package path.

    With :data:`~ska_tango_scheduler.testing.stress.STRESS_PACKAGE_PATH_ENV`
    set, the server runs the package (and its test devices) from there.
    """
    env = dict(extra)
    if os.environ.get(STRESS_PACKAGE_PATH_ENV, "").strip():
        env["PYTHONPATH"] = scene_environment()["PYTHONPATH"]
    return env


def _threads_of(pid: int) -> int:
    """The number of threads of process ``pid`` (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError(f"no thread count for process {pid}")


class _Loop:
    """Runs ``body`` in a thread until stopped; counts rounds and Tango errors."""

    def __init__(self, name: str, body: Callable[[], None], pause: float = 0.0) -> None:
        self.name = name
        self.body = body
        self.pause = pause
        self.stop = threading.Event()
        self.rounds = 0
        self.errors: dict[str, int] = {}
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        with tango.EnsureOmniThread():
            while not self.stop.is_set():
                try:
                    self.body()
                    self.rounds += 1
                except tango.DevFailed as exc:
                    reason = exc.args[0].reason if exc.args else "DevFailed"
                    self.errors[reason] = self.errors.get(reason, 0) + 1
                    self.stop.wait(0.2)
                self.stop.wait(self.pause)

    def start(self) -> _Loop:
        self.thread.start()
        return self

    def end(self, timeout: float = 30.0) -> None:
        self.stop.set()
        self.thread.join(timeout)


class _Liveness:
    """Asks the server for its State every 0.5 s; records the longest silence."""

    def __init__(self, device: str) -> None:
        self.proxy = tango.DeviceProxy(device)
        self.proxy.set_timeout_millis(3000)
        self.last_answer = time.monotonic()
        self.longest_silence = 0.0
        self.loop = _Loop("liveness", self._ask, pause=0.5)

    def _ask(self) -> None:
        try:
            self.proxy.State()
        finally:
            self.silence()  # updated on failures too
        self.last_answer = time.monotonic()

    def silence(self) -> float:
        now = time.monotonic() - self.last_answer
        self.longest_silence = max(self.longest_silence, now)
        return now


def _dump_server(pid: int) -> None:
    """Ask the server to print every thread's stack into its log (faulthandler)."""
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        return
    time.sleep(2.0)


@pytest.mark.timeout(SECONDS + 300)
def test_mixin_server_survives_init_with_readers_and_followers(
    device_server_factory: DeviceServerFactory, tango_database: TangoDatabase
) -> None:
    family = device_server_factory.unique_name("stressmix")
    names = [f"test/{family}/{i}" for i in (1, 2)]
    # The sources live in the same server, as peers: events flow inside it.
    sources = [f"test/{family}src/{i}" for i in (1, 2)]
    server = reference_server(
        device_server_factory,
        tango_database,
        {
            name: {"SourceDevice": sources[i], "QuickAttribute": "myAttr2"}
            for i, name in enumerate(names)
        },
        peers=sources,
        env=_server_env({GC_THRESHOLD_ENV: "100,1,1"}),
    )
    assert server.pid is not None
    pid = server.pid
    for device in sources:
        tango.DeviceProxy(device).StartPushing([[100.0, 100.0], ["myAttr1", "myAttr2"]])

    def problem(what: str) -> str:
        _dump_server(pid)
        return f"{what}; server log with every thread's stack: {server.log_path}\n" + (
            server.log_tail(8000)
        )

    # Followers: subscribed to every diagnostic attribute of both devices for the
    # whole scene, plus subscribe/unsubscribe churn.
    followers = [tango.DeviceProxy(name) for name in names]
    follow_counts = [0]

    def followed(event: Any) -> None:
        follow_counts[0] += 1

    for proxy in followers:
        proxy.set_timeout_millis(5000)
        for attr in DIAGNOSTIC_ATTRIBUTES:
            proxy.subscribe_event(attr, CHANGE, followed)

    def follow_churn(name: str) -> Callable[[], None]:
        proxy = tango.DeviceProxy(name)
        proxy.set_timeout_millis(5000)

        def body() -> None:
            ids = [proxy.subscribe_event(a, CHANGE, followed) for a in DIAGNOSTIC_ATTRIBUTES[:4]]
            for event_id in ids:
                proxy.unsubscribe_event(event_id)

        return body

    def reader(name: str) -> Callable[[], None]:
        proxy = tango.DeviceProxy(name)
        proxy.set_timeout_millis(5000)
        return lambda: proxy.read_attributes(list(DIAGNOSTIC_ATTRIBUTES))

    def initer(name: str) -> Callable[[], None]:
        proxy = tango.DeviceProxy(name)
        proxy.set_timeout_millis(10_000)
        return lambda: proxy.Init()

    liveness = _Liveness(names[0])
    clients = [_Loop(f"read-{i}-{k}", reader(n)) for i, n in enumerate(names) for k in range(3)]
    clients += [_Loop(f"follow-{i}", follow_churn(n)) for i, n in enumerate(names)]
    inits = [_Loop(f"init-{i}", initer(n), pause=0.05) for i, n in enumerate(names)]
    loops = [liveness.loop, *clients, *inits]
    try:
        liveness.loop.start()
        for loop in clients:
            loop.start()
        time.sleep(3.0)  # every client connected: the server's steady thread count
        baseline = _threads_of(pid)
        for loop in inits:
            loop.start()
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.5)
            silence = liveness.silence()
            if silence > 20.0:
                pytest.fail(
                    problem(
                        f"the server did not answer State for {silence:.0f} s "
                        f"(Inits done: {[loop.rounds for loop in inits]}, "
                        f"errors: {[loop.errors for loop in loops]}, threads: {_threads_of(pid)}"
                        f" from {baseline})"
                    )
                )
        for loop in inits:
            loop.end()
        init_rounds = [loop.rounds for loop in inits]
        init_errors = [loop.errors for loop in inits]
        assert all(init_rounds), problem(f"no Init completed: {init_errors}")
        # Every Init's scheduler ends: the thread count returns to its level
        # with the same clients connected.
        wait_for(
            lambda: _threads_of(pid) <= baseline + THREAD_SLACK,
            timeout=30,
            message=lambda: problem(
                f"server threads {_threads_of(pid)} after {init_rounds} Inits, "
                f"{baseline} before: a thread leak"
            ),
        )
        assert liveness.longest_silence < 20.0
        assert follow_counts[0] > 0, "no change event of a diagnostic attribute arrived"
        print(
            f"Inits {init_rounds}, reads {[c.rounds for c in clients]}, followed events "
            f"{follow_counts[0]}, longest silence {liveness.longest_silence:.1f} s, "
            f"threads {baseline} -> {_threads_of(pid)}, errors {[c.errors for c in loops]}"
        )
    finally:
        for loop in loops:
            loop.end(timeout=15)
    # SIGTERM: the server must end cleanly and soon.
    for device in sources:
        tango.DeviceProxy(device).StopPushing([])
    del followers
    start = time.monotonic()
    status = server.stop(grace=10.0)
    took = time.monotonic() - start
    # PyTango 10 ends a server on SIGTERM through delete_device and exits with 0.
    # PyTango 9.5 installs no SIGTERM handler in a server: the signal's default
    # action ends it at once (status -15), without delete_device.
    clean = {0} if _PYTANGO_MAJOR >= 10 else {0, -signal.SIGTERM}
    assert status in clean and took < 10.0, (
        f"after SIGTERM the server exited with status {status} after {took:.1f} s "
        f"(SIGKILL after 10 s); log {server.log_path}:\n{server.log_tail(8000)}"
    )
