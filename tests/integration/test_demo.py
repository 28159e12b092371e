"""``python -m ska_tango_scheduler.demo`` runs end to end and leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ska_tango_scheduler.testing import TangoDatabase, wait_for

pytestmark = pytest.mark.integration

SHORT_RUN = ["--seconds", "2", "--drain", "0.3", "--late-after", "0.5", "--refresh", "0.5"]


class DemoProcess:
    """The demo in a child process, its output in a file, its descendants tracked."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._file = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "ska_tango_scheduler.demo", *args],
            stdin=subprocess.DEVNULL,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.descendants: set[int] = set()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def track(self) -> None:
        """Remember every descendant alive now."""
        try:
            children = psutil.Process(self.popen.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        self.descendants.update(child.pid for child in children)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.popen.poll() is None and time.monotonic() < deadline:
            self.track()
            time.sleep(0.2)
        try:
            return self.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        finally:
            self._file.close()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._file.close()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_no_leftovers(demo: DemoProcess) -> None:
    started = {int(pid) for pid in re.findall(r"\(pid (\d+)\)", demo.output())}
    assert started, demo.output()
    # Give the kernel a moment to reap what the demo ended just before it exited.
    wait_for(
        lambda: not [pid for pid in demo.descendants | started if alive(pid)],
        timeout=15,
        message=lambda: (
            f"processes left behind: "
            f"{[pid for pid in demo.descendants | started if alive(pid)]}\n{demo.output()}"
        ),
    )


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    demo = DemoProcess(SHORT_RUN, tmp_path / "demo.out")
    try:
        status = demo.wait(timeout=180)
    finally:
        demo.kill()
    out = demo.output()
    assert status == 0, out
    assert "started a Tango database on 127.0.0.1:" in out
    assert "1) plain PyTango" in out and "2) the same through a CallbackScheduler," in out
    for attribute in (
        "schedulerThreadCount",
        "schedulerReceivedEvents",
        "schedulerDeliveredEvents",
        "schedulerDroppedEvents",
        "schedulerCallbackErrors",
        "schedulerQueueNames / schedulerQueueDepths",
        "schedulerBackoffState",
    ):
        assert attribute in out, out
    report = out[out.index("Results:") :]
    for label in ("pushed by the server", "delivered to the callback", "dropped", "latency p99"):
        assert label in report, report
    # Both streams report numbers for both runs; never assert on speed here.
    for stream in ("flooding stream", "quiet stream"):
        section = report[report.index(stream) :]
        pushed = re.search(r"pushed by the server\s+(\d+)\s+(\d+)", section)
        delivered = re.search(r"delivered to the callback\s+(\d+)\s+(\d+)", section)
        received = re.search(r"received from Tango\s+n/a\s+(\d+)", section)
        assert pushed and delivered and received, report
        assert int(pushed.group(2)) > 0 and int(received.group(1)) >= int(delivered.group(2))
    assert "late device demo/late/1" in report
    assert "first value" in report or "no value arrived" in report, report
    assert "demo finished: every process it started has ended" in out
    assert_no_leftovers(demo)


@pytest.mark.parametrize(("phase", "seconds"), [("1) plain PyTango", 60), ("2) the same", 5)])
def test_interrupted_demo_leaves_nothing_behind(
    tango_database: TangoDatabase, tmp_path: Path, phase: str, seconds: int
) -> None:
    args = ["--tango-host", tango_database.tango_host, "--seconds", str(seconds)]
    args += ["--late-after", "0", "--drain", "0"]
    demo = DemoProcess(args, tmp_path / "demo.out")
    try:
        wait_for(
            lambda: (demo.track(), phase in demo.output() or demo.popen.poll() is not None)[1],
            timeout=120,
            message=lambda: f"the demo did not reach {phase!r}:\n{demo.output()}",
        )
        time.sleep(1.0)
        demo.track()
        assert demo.popen.poll() is None, demo.output()
        demo.popen.send_signal(signal.SIGINT)
        status = demo.wait(timeout=60)
    finally:
        demo.kill()
    out = demo.output()
    assert status == 128 + signal.SIGINT, out
    assert "interrupted by SIGINT" in out
    assert "started a Tango database" not in out
    assert_no_leftovers(demo)
    # The servers it registered in a database it did not start are gone from it.
    tag = f"p{demo.popen.pid}"
    assert not tango_database.is_defined(f"demo/eventsource/{tag}")
    assert not tango_database.is_defined(f"dserver/EventSource/demo{tag}")
