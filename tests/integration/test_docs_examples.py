"""Every example of the documentation (docs/examples/) runs against the real test bed.

Each example runs as its own process, as a reader would run it, with the
device it needs given on the command line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import tango

from ska_tango_scheduler.testing import DeviceServerProcess, TangoDatabase, wait_for
from ska_tango_scheduler.testing.lrc_device import LRC_SERVER_NAME
from ska_tango_scheduler.testing.pytest_plugin import DeviceServerFactory, EventSourceServer

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
LRC_MODULE = "ska_tango_scheduler.testing.lrc_device"


class Example:
    """One example running in a child process, its output in a file."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.log = log
        self._file = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, str(EXAMPLES / name), *args],
            cwd=log.parent,
            stdin=subprocess.DEVNULL,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 120) -> tuple[int, str]:
        try:
            status = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            pytest.fail(f"the example did not finish within {timeout} s:\n{self.output}")
        finally:
            self._file.close()
        return status, self.output

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._file.close()


StartExample = Callable[..., Example]


@pytest.fixture
def run_example(tmp_path: Path) -> Iterator[StartExample]:
    started: list[Example] = []

    def start(name: str, *args: str) -> Example:
        example = Example(name, list(args), tmp_path / f"{name}.{len(started)}.out")
        started.append(example)
        return example

    yield start
    for example in started:
        example.kill()


def run(run_example: StartExample, name: str, *args: str, timeout: float = 120) -> str:
    status, out = run_example(name, *args).wait(timeout)
    assert status == 0, out
    return out


@pytest.fixture(scope="module")
def lrc_device(tango_database: TangoDatabase, module_server_factory: DeviceServerFactory) -> str:
    factory = module_server_factory
    name = f"test/{factory.unique_name('doclrc')}/1"
    factory(
        f"{LRC_SERVER_NAME}/{factory.unique_name('doc')}",
        [name],
        device_class=LRC_SERVER_NAME,
        module=LRC_MODULE,
    )
    return tango_database.trl(name)


# -- tutorial ----------------------------------------------------------------------------------


def test_tutorial_with_its_own_test_bed(run_example: StartExample) -> None:
    testbed = run_example("testbed.py")
    match = wait_for(
        lambda: (
            re.search(r"device ready: (tango://\S+)", testbed.output)
            or testbed.popen.poll() is not None
        ),
        timeout=120,
        message=lambda: f"the test bed did not start:\n{testbed.output}",
    )
    assert testbed.popen.poll() is None, testbed.output
    children = {p.pid for p in psutil.Process(testbed.popen.pid).children(recursive=True)}
    out = run(run_example, "tutorial.py", match.group(1))
    assert "values seen: [0, 1, 2, 3, 4]" in out, out
    assert "myAttr1: received 5, delivered 5, dropped 0" in out, out
    testbed.popen.send_signal(signal.SIGINT)
    status, out = testbed.wait(60)
    assert status == 0 and out.rstrip().endswith("stopped"), out
    assert len(children) == 2
    wait_for(
        lambda: not any(psutil.pid_exists(pid) for pid in children),
        timeout=15,
        message=lambda: (
            "the test bed's two child processes gone: still there "
            f"{[pid for pid in children if psutil.pid_exists(pid)]}"
        ),
    )


def test_tutorial_against_the_shared_event_source(
    run_example: StartExample, event_source: EventSourceServer
) -> None:
    out = run(run_example, "tutorial.py", event_source.trls[0])
    values = [int(v) for v in re.search(r"values seen: \[(.*)\]", out).group(1).split(",")]
    assert values == list(range(values[0], values[0] + 5)), out


# -- how-to guides -----------------------------------------------------------------------------


def test_registering_callbacks(run_example: StartExample, event_source: EventSourceServer) -> None:
    out = run(run_example, "register_callbacks.py", event_source.trls[1])
    assert "change events: 2" in out and "archive events: 2" in out, out
    assert "MYATTR1 CHANGE" in out.upper() and "MYATTR2 ARCHIVE" in out.upper(), out


def test_event_queues(run_example: StartExample, event_source: EventSourceServer) -> None:
    out = run(run_example, "event_queues.py", event_source.trls[2])
    assert re.search(r"queue \S+: size 8192, streams 2, received \d+, dropped 0", out), out
    assert "myattr1: 200 new values, in order: True" in out, out
    assert "myattr2: 200 new values, in order: True" in out, out


def test_long_running_command(run_example: StartExample, lrc_device: str) -> None:
    out = run(run_example, "long_running_command.py", lrc_device)
    assert "command id: " in out and "finished: True" in out, out
    assert "'progress': 3" in out and "'result': [0," in out, out


def test_persistent_stream(run_example: StartExample, event_source: EventSourceServer) -> None:
    out = run(run_example, "persistent_stream.py", event_source.trls[0])
    assert "subscribe calls: 1, unsubscribe calls: 0" in out, out
    assert "streams left: 0" in out, out


def test_lrc_interface(run_example: StartExample, lrc_device: str) -> None:
    out = run(run_example, "lrc_interface.py", lrc_device)
    assert out.count("'result': [0,") == 2, out
    calls = int(re.search(r"subscribe calls for two invocations: (\d+)", out).group(1))
    # One subscription per LRC attribute (1 with protocol version 2, 3 with version 1).
    assert calls in (1, 3), out


def test_slow_callbacks(run_example: StartExample, event_source: EventSourceServer) -> None:
    out = run(run_example, "slow_callbacks.py", event_source.trls[1])
    counts = re.search(r"slow callback calls: (\d+), quick callback calls: (\d+)", out)
    assert counts and int(counts.group(1)) > 0 and int(counts.group(2)) > 0, out
    assert re.search(r"myAttr1: received \d+, delivered \d+, queued \d+, dropped 0", out), out


def test_undefined_device(
    run_example: StartExample,
    device_server_factory: DeviceServerFactory,
    tango_database: TangoDatabase,
) -> None:
    name = f"test/{device_server_factory.unique_name('late')}/1"
    example = run_example("undefined_device.py", tango_database.trl(name))
    wait_for(
        lambda: (
            "not connected yet: DB_DeviceNotDefined" in example.output
            or example.popen.poll() is not None
        ),
        timeout=60,
        message=lambda: example.output,
    )
    device_server_factory.event_source([name])
    status, out = example.wait(120)
    assert status == 0, out
    assert re.search(r"connected after \d+ error event\(s\): True", out), out


def test_device_classes_with_a_scheduler(
    device_server_factory: DeviceServerFactory,
    tango_database: TangoDatabase,
    event_source: EventSourceServer,
) -> None:
    plain = f"test/{device_server_factory.unique_name('follower')}/1"
    mixin = f"test/{device_server_factory.unique_name('follower')}/2"
    server: DeviceServerProcess = device_server_factory(
        f"SchedulerExample/{device_server_factory.unique_name('doc')}",
        [plain],
        device_class="FollowerDevice",
        command=[sys.executable, str(EXAMPLES / "device_with_scheduler.py")],
        start=False,
    )
    server.register()
    tango_database.add_device(mixin, "MixinFollowerDevice", server.server)
    for name in (plain, mixin):
        tango_database.put_device_properties(name, {"SourceDevice": [event_source.trls[2]]})
    server.start()
    wait_for(
        lambda: tango_database.is_defined(mixin),
        message=f"the device {mixin} defined in the database by its server",
    )
    source = tango.DeviceProxy(event_source.trls[2])
    followers = [tango.DeviceProxy(tango_database.trl(n)) for n in (plain, mixin)]
    for round_ in range(3):
        pushed = source.Push("myAttr1")
        for follower in followers:
            wait_for(
                lambda f=follower, v=pushed: f.lastValue == v,
                timeout=30,
                message=f"{follower.dev_name()} follows (round {round_})",
            )
            follower.Init()  # delete_device and init_device while events flow


def test_pytest_fixtures_example(tmp_path: Path) -> None:
    log = tmp_path / "pytest.out"
    with log.open("wb") as out:
        status = subprocess.call(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "ska_tango_scheduler.testing.pytest_plugin",
                "-p",
                "no:cacheprovider",
                "-q",
                str(EXAMPLES / "test_with_testbed.py"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if k != "TANGO_HOST"},
            timeout=300,
        )
    text = log.read_text(errors="replace")
    assert status == 0, text
    assert "2 passed" in text, text


def test_every_example_is_tested_and_documented() -> None:
    source = Path(__file__).read_text()
    docs = EXAMPLES.parent
    pages = "".join(p.read_text() for p in docs.rglob("*.rst"))
    for example in sorted(EXAMPLES.glob("*.py")):
        assert f'"{example.name}"' in source, f"{example.name} is not run by a test"
        assert f"examples/{example.name}" in pages, f"{example.name} is in no page"
