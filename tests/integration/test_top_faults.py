"""``ska-tango-scheduler-top`` against hostile scenes, as a real process.

A host that accepts TCP and never answers (:class:`SilentHost`), a reader
that closes the pipe, bad numbers on the command line, Ctrl-C while a Tango
call hangs, and a device that is not running. The scenes with a working
scheduler device are in ``test_mixin_latency.py``.

Where a test needs to show that top did not wait for a hung Tango call, it
starts the same call first in plain PyTango, in a process of its own on the
same scene: top must be done while that earlier call still hangs (an order,
not a speed).
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ska_tango_scheduler.testing import SilentHost, TangoDatabase, wait_for
from ska_tango_scheduler.testing.mixin_devices import reference_server
from ska_tango_scheduler.testing.pytest_plugin import DeviceServerFactory

TOP = [sys.executable, "-m", "ska_tango_scheduler.top"]


@pytest.fixture
def silent() -> Iterator[SilentHost]:
    with SilentHost() as host:
        yield host


PLAIN_CALL = (
    "import sys, tango\n"
    "try:\n"
    "    tango.DeviceProxy(sys.argv[1]).read_attribute('state')\n"
    "except tango.DevFailed as exc:\n"
    "    print(exc.args[0].reason)\n"
)


def wait_for_connection(silent: SilentHost, before: int, who: str) -> None:
    wait_for(
        lambda: silent.connections > before,
        timeout=60,
        message=f"{who} to connect to the silent host",
    )


@pytest.fixture
def plain_hang(silent: SilentHost) -> Iterator[subprocess.Popen[str]]:
    """Plain PyTango, in a process of its own, hanging in a call to the silent host.

    It is started (and connected) before top, so top is done with its own
    hung call in time only if it did not wait for it: an order, not a speed.
    """
    before = silent.connections
    process = subprocess.Popen(
        [sys.executable, "-c", PLAIN_CALL, silent.trl("plain/hang/1")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_connection(silent, before, "plain PyTango")
        yield process
    finally:
        try:
            out, _ = process.communicate(timeout=120)
            print(f"plain PyTango gave up: {out.strip()}")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def top_env(tango_host: str) -> dict[str, str]:
    return dict(os.environ, TANGO_HOST=tango_host, COLUMNS="200", LINES="50")


def test_once_gives_up_on_a_silent_host_at_its_timeout(
    silent: SilentHost, plain_hang: subprocess.Popen[str]
) -> None:
    start = time.monotonic()
    result = subprocess.run(
        [*TOP, "--once", "--json", "--timeout", "1", silent.trl("a/b/c"), silent.trl("d/e/f")],
        capture_output=True,
        text=True,
        env=top_env(silent.tango_host),
        timeout=120,
        check=False,
    )
    seconds = time.monotonic() - start
    print(f"top --once: {seconds:.1f} s, status {result.returncode}\n{result.stdout}")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    devices = json.loads(result.stdout)["devices"]
    assert [d["ok"] for d in devices] == [False, False]
    assert all("does not answer within 1 s" in d["error"] for d in devices), devices
    # It did not wait for its hung proxy creation to fail by itself: the same
    # call, started earlier by plain PyTango, is still hanging.
    assert plain_hang.poll() is None, "top waited for the hung Tango call"


class Terminal:
    """A top process on a pseudo-terminal, its screen collected."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        self.master = master
        self.process = subprocess.Popen(
            [*TOP, *args], stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=env
        )
        os.close(slave)
        self.output = bytearray()

    def read_some(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                self.output.extend(chunk)

    def wait_for_text(self, text: str, timeout: float) -> None:
        def shown() -> bool:
            if text.encode() in self.output:
                return True
            self.read_some(0.2)
            return text.encode() in self.output

        wait_for(
            shown,
            timeout=timeout,
            interval=0.01,
            message=lambda: (
                f"top to show {text!r}; its screen ends with: "
                f"{self.output.decode(errors='replace')[-2000:]}"
            ),
        )

    def close(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)
        assert self.process.stderr is not None
        stderr = self.process.stderr.read().decode(errors="replace")
        self.process.stderr.close()
        return stderr


def test_ctrl_c_ends_top_while_a_tango_call_hangs(
    silent: SilentHost, plain_hang: subprocess.Popen[str]
) -> None:
    terminal = Terminal(["--timeout", "1", silent.trl("a/b/c")], top_env(silent.tango_host))
    try:
        # The first view comes once the first direct read gave up (--timeout 1),
        # while the scheduler's own attempt is still inside cppTango.
        terminal.wait_for_text("Ctrl-C quits", timeout=60)
        sent = time.monotonic()
        terminal.process.send_signal(signal.SIGINT)
        status = terminal.process.wait(timeout=120)
        seconds = time.monotonic() - sent
        plain_still_hanging = plain_hang.poll() is None
        terminal.read_some(0.5)
    finally:
        stderr = terminal.close()
    print(f"SIGINT to exit: {seconds:.1f} s, status {status}")
    assert status == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert plain_still_hanging, "top waited for the hung Tango call"


def test_ctrl_c_ends_top_once_while_a_tango_call_hangs(
    silent: SilentHost, plain_hang: subprocess.Popen[str]
) -> None:
    """``--once`` reading a silent host: SIGINT ends it at once, status 130."""
    before = silent.connections
    process = subprocess.Popen(
        [*TOP, "--once", "--timeout", "600", silent.trl("a/b/c")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=top_env(silent.tango_host),
    )
    try:
        wait_for_connection(silent, before, "top")
        time.sleep(0.5)  # inside the hung Tango call by now
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        seconds = time.monotonic() - sent
        plain_still_hanging = plain_hang.poll() is None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    print(f"SIGINT to exit: {seconds:.1f} s, status {process.returncode}")
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert plain_still_hanging, "top waited for the hung Tango call"


def test_a_closed_pipe_ends_top_quietly(silent: SilentHost) -> None:
    # Live --json prints a line at least once a second until the pipe closes.
    shell = (
        f"{' '.join(TOP)} --json --timeout 1 {silent.trl('a/b/c')} | head -c 1; "
        "status=${PIPESTATUS[0]}; echo; echo status=$status"
    )
    result = subprocess.run(
        shell,
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        env=top_env(silent.tango_host),
        timeout=120,
        check=False,
    )
    print(result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert "BrokenPipe" not in result.stderr, result.stderr
    assert result.stdout.strip().endswith("status=141"), result.stdout


@pytest.mark.parametrize("option", ["--timeout", "--interval"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1", "3600.5", "soon"])
def test_bad_seconds_are_a_usage_error(option: str, value: str) -> None:
    result = subprocess.run(
        [*TOP, "--once", f"{option}={value}", "a/b/c"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert f"argument {option}: {value!r}: give seconds above 0 and at most 3600" in (result.stderr)


def test_the_first_view_already_says_not_running(
    device_server_factory: DeviceServerFactory, tango_database: TangoDatabase
) -> None:
    idle = reference_server(
        device_server_factory,
        tango_database,
        {f"test/{device_server_factory.unique_name('topidle')}/1": {}},
        start=False,
    )
    name = idle.devices[0]
    process = subprocess.Popen(
        [*TOP, "--json", "--timeout", "60", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=top_env(tango_database.tango_host),
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    print(first)
    (device,) = json.loads(first)["devices"]
    assert device["error"].startswith("not running"), device
