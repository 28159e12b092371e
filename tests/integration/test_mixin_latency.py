"""Where the time goes, for real: queue waits and slow callbacks of a device falling behind.

One ``SchedulerReference`` device (two worker threads) subscribes to two
attributes of an ``EventSource``: ``myAttr1`` with a callback that sleeps
500 ms (slow: the threshold is 100 ms) and ``myAttr2`` with a quick one.
Both are pushed 10 times a second for the whole module, so the slow queue
stays full and its events wait seconds, while the quick stream, served by
the other thread, never waits behind a slow callback.

The figures are checked through every way a user sees them: the Python API
(a scheduler in this process, and the device's ``schedulerDiagnostics``
JSON, which is ``diagnostics().to_dict()``), the Tango attributes and their
change events, TangoGQL (what Taranta reads), the server's log, and
``ska-tango-scheduler-top``.
"""

from __future__ import annotations

import json
import logging
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import tango

from ska_tango_scheduler import CallbackScheduler
from ska_tango_scheduler.testing import DeviceServerProcess, TangoDatabase, wait_for
from ska_tango_scheduler.testing.mixin_devices import reference_server
from ska_tango_scheduler.testing.pytest_plugin import DeviceServerFactory
from ska_tango_scheduler.testing.tangogql import TangoGQLServer, tangogql_python

CHANGE = tango.EventType.CHANGE_EVENT
# Long enough that the quick stream's bound (under one slow callback) holds on a
# loaded machine; well above the 0.1 s threshold.
SLOW_SECONDS = 0.5
SLOW_MS = SLOW_SECONDS * 1000
NEW_ATTRIBUTES = {
    "schedulerMaxLatency": (tango.CmdArgType.DevDouble, tango.AttrDataFormat.SCALAR),
    "schedulerQueueLatencies": (tango.CmdArgType.DevDouble, tango.AttrDataFormat.SPECTRUM),
    "schedulerSlowCallbacks": (tango.CmdArgType.DevLong64, tango.AttrDataFormat.SCALAR),
}


@dataclass
class Scene:
    database: TangoDatabase
    server: DeviceServerProcess
    device: str
    source: str
    not_running: str
    undefined: str

    def proxy(self) -> tango.DeviceProxy:
        proxy = tango.DeviceProxy(self.device)
        proxy.set_timeout_millis(10_000)
        return proxy


@pytest.fixture(scope="module")
def scene(
    tango_database: TangoDatabase, module_server_factory: DeviceServerFactory
) -> Iterator[Scene]:
    factory = module_server_factory
    try:
        source_process = factory.event_source(1)
        source = source_process.devices[0]
        device = f"test/{factory.unique_name('mixslow')}/1"
        server = reference_server(
            factory,
            tango_database,
            {
                device: {
                    "SourceDevice": source,
                    "SourceAttribute": "myAttr1",
                    "QuickAttribute": "myAttr2",
                    "CallbackDelay": str(SLOW_SECONDS),
                    "CallbackTakesMonitor": "false",
                    "SchedulerThreadCount": "2",
                    "SchedulerSlowCallbackDuration": "0.1",
                }
            },
        )
        # Defined in the database, its server never started.
        idle = reference_server(
            factory, tango_database, {f"test/{factory.unique_name('mixidle')}/1": {}}, start=False
        )
        source_proxy = tango.DeviceProxy(source)
        source_proxy.StartPushing([[10.0, 10.0], ["myAttr1", "myAttr2"]])
        scene = Scene(
            tango_database,
            server,
            device,
            source,
            idle.devices[0],
            f"test/{factory.unique_name('nosuch')}/1",
        )
        proxy = scene.proxy()
        # Both callbacks run, and the slow queue has backed up.
        wait_for(
            lambda: proxy.schedulerSlowCallbacks >= 3 and proxy.quickCallbackCount >= 20,
            timeout=60,
            message="the callbacks do not run, or no slow callback was counted",
        )
        yield scene
    finally:
        try:
            tango.DeviceProxy(source).StopPushing([])
        except Exception:  # noqa: BLE001 - the source may be gone already
            pass


def streams_by_attribute(diagnostics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["attribute"].lower(): s for s in diagnostics["streams"]}


def queue_latencies(proxy: tango.DeviceProxy) -> dict[str, float]:
    names, values = (
        [] if v is None else list(v)
        for v in (proxy.schedulerQueueNames, proxy.schedulerQueueLatencies)
    )
    assert len(names) == len(values)
    return {
        name.rsplit("/", 1)[-1].split("#")[0]: value
        for name, value in zip(names, values, strict=True)
    }


def check_snapshot(diagnostics: dict[str, Any]) -> None:
    """The figures of the device's snapshot (to_dict() form)."""
    streams = streams_by_attribute(diagnostics)
    slow, quick = streams["myattr1"], streams["myattr2"]
    print(
        f"slow: wait p99 {slow['latency']['p99_ms']:.1f} ms, callback mean"
        f" {slow['callback_mean_ms']:.1f} ms, slow {slow['slow_callbacks']};"
        f" quick: wait p99 {quick['latency']['p99_ms']:.2f} ms"
    )
    # Each slow callback sleeps 500 ms, and its events queue up behind it.
    assert slow["callback_mean_ms"] >= SLOW_MS
    assert slow["callback_max_ms"] >= SLOW_MS
    assert slow["latency"]["p99_ms"] >= SLOW_MS
    assert slow["latency"]["max_ms"] >= slow["latency"]["p99_ms"] > 0
    assert slow["slow_callbacks"] >= 1
    # The quick stream has a thread of its own: it never waits for a slow callback.
    assert quick["latency"]["samples"] > 0
    assert quick["latency"]["p99_ms"] < SLOW_MS
    assert quick["callback_max_ms"] < SLOW_MS
    totals = diagnostics["totals"]
    assert totals["slow_callbacks"] == sum(s["slow_callbacks"] for s in streams.values())
    assert totals["max_latency_ms"] >= slow["latency"]["max_ms"]
    queues = {q["name"]: q for q in diagnostics["queues"]}
    assert queues[slow["queue"]]["slow_callbacks"] == slow["slow_callbacks"]
    assert queues[slow["queue"]]["latency"]["p99_ms"] >= SLOW_MS
    assert queues[quick["queue"]]["latency"]["p99_ms"] < SLOW_MS
    assert [w["name"] for w in diagnostics["workers"]]
    assert diagnostics["window"] > 0


# -- the Python API -----------------------------------------------------------------------------


def test_python_api_of_a_scheduler_in_this_process(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("test.latency")
    caplog.set_level(logging.WARNING, logger="test.latency")

    def slow_callback(event: Any) -> None:
        time.sleep(SLOW_SECONDS)

    def quick_callback(event: Any) -> None:
        pass

    scheduler = CallbackScheduler(
        thread_count=2, name="latency", logger=logger, slow_callback_duration=0.1
    )
    try:
        scheduler.register_event_callback(scene.source, "myAttr1", CHANGE, slow_callback)
        scheduler.register_event_callback(scene.source, "myAttr2", CHANGE, quick_callback)

        def enough() -> bool:
            totals = scheduler.diagnostics().totals
            return totals.slow_callbacks >= 3 and totals.delivered >= 20

        wait_for(enough, timeout=60, message="no slow callbacks counted")
        check_snapshot(scheduler.diagnostics().to_dict())
    finally:
        scheduler.shutdown()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    slow_lines = [r.getMessage() for r in warnings if "slow_callback" in r.getMessage()]
    print(f"log: {slow_lines[:1]}")
    assert slow_lines, [r.getMessage() for r in warnings]
    assert "myattr1" in slow_lines[0].lower()
    # Rate-limited per callback: far fewer lines than slow callbacks.
    assert len(slow_lines) < scheduler.diagnostics().totals.slow_callbacks


def test_device_snapshot_and_its_log_line(scene: Scene) -> None:
    proxy = scene.proxy()
    check_snapshot(json.loads(proxy.schedulerDiagnostics))
    log = scene.server.log_tail(200_000)
    lines = [line for line in log.splitlines() if " WARNING " in line and "_on_event" in line]
    print(f"server log: {lines[:1]}")
    assert lines, log[-3000:]
    assert "myattr1" in lines[0].lower()


# -- the Tango attributes -----------------------------------------------------------------------


def test_tango_attributes_types_values_and_change_events(scene: Scene) -> None:
    proxy = scene.proxy()
    for name, (dtype, dformat) in NEW_ATTRIBUTES.items():
        info = proxy.get_attribute_config(name)
        assert (info.data_type, info.data_format, info.writable) == (
            dtype,
            dformat,
            tango.AttrWriteType.READ,
        ), name
        assert info.description and "No description" not in info.description
    assert proxy.get_attribute_config("schedulerMaxLatency").unit == "ms"
    latencies = queue_latencies(proxy)
    print(f"schedulerQueueLatencies: {latencies}, max {proxy.schedulerMaxLatency:.1f} ms")
    assert latencies["myattr1"] >= SLOW_MS
    assert latencies["myattr2"] < SLOW_MS
    assert proxy.schedulerMaxLatency >= latencies["myattr1"]
    assert proxy.schedulerSlowCallbacks >= 3

    seen: dict[str, list[Any]] = {name.lower(): [] for name in NEW_ATTRIBUTES}
    lock = threading.Lock()

    def record(event: Any) -> None:
        if not event.err:
            value = event.attr_value.value
            if hasattr(value, "__len__"):  # a spectrum: hashable, to compare values
                value = tuple(value)
            with lock:
                seen[event.attr_value.name.lower().split("/")[-1]].append(value)

    def changed() -> bool:
        with lock:
            return all(len(set(values)) >= 2 for values in seen.values())

    ids = [proxy.subscribe_event(name, CHANGE, record) for name in NEW_ATTRIBUTES]
    try:
        # The first value, then new values pushed by the device (at most one a second;
        # PyTango 9.5 may give the first value twice).
        wait_for(
            changed,
            timeout=30,
            message=lambda: f"change events: {seen}",
        )
    finally:
        for subscription in ids:
            proxy.unsubscribe_event(subscription)
    counts = [int(v) for v in seen["schedulerslowcallbacks"]]
    assert counts == sorted(counts) and counts[-1] > counts[0]


# -- TangoGQL (Taranta) -------------------------------------------------------------------------


def test_tangogql_reads_and_follows_the_latency_attributes(scene: Scene, tmp_path: Path) -> None:
    python = tangogql_python()
    if python is None:
        pytest.skip("tangogql is not installed")
    server = TangoGQLServer(scene.database.tango_host, python=python, log_dir=tmp_path)
    server.start()
    try:
        data = server.query(
            "query ($name: String!) { device(name: $name) {"
            ' attributes(pattern: "scheduler*") { name datatype dataformat value } } }',
            {"name": scene.device},
        )
        attributes = {a["name"]: a for a in data["device"]["attributes"]}
        expected = {
            "schedulerMaxLatency": ("DevDouble", "SCALAR"),
            "schedulerQueueLatencies": ("DevDouble", "SPECTRUM"),
            "schedulerSlowCallbacks": ("DevLong64", "SCALAR"),
        }
        for name, (datatype, dataformat) in expected.items():
            assert (attributes[name]["datatype"], attributes[name]["dataformat"]) == (
                datatype,
                dataformat,
            )
        names = [
            n.rsplit("/", 1)[-1].split("#")[0] for n in attributes["schedulerQueueNames"]["value"]
        ]
        latencies = dict(zip(names, attributes["schedulerQueueLatencies"]["value"], strict=True))
        print(f"TangoGQL: max {attributes['schedulerMaxLatency']['value']}, queues {latencies}")
        assert latencies["myattr1"] >= SLOW_MS
        assert latencies["myattr2"] < SLOW_MS
        assert attributes["schedulerMaxLatency"]["value"] >= SLOW_MS
        assert attributes["schedulerSlowCallbacks"]["value"] >= 3
        full = json.loads(attributes["schedulerDiagnostics"]["value"])
        check_snapshot(full)

        query = (
            f'subscription {{ attributes(fullNames: ["{scene.device}/schedulerSlowCallbacks",'
            f' "{scene.device}/schedulerMaxLatency"]) {{ attribute value }} }}'
        )
        with server.subscribe(query) as subscription:
            values: dict[str, list[Any]] = {}

            def two_slow_counts_and_a_latency() -> bool:
                frame = subscription.next_data(1.0)
                if frame:
                    item = frame["attributes"]
                    values.setdefault(item["attribute"].lower(), []).append(item["value"])
                slow = values.get("schedulerslowcallbacks", [])
                return len(set(slow)) >= 2 and "schedulermaxlatency" in values

            wait_for(
                two_slow_counts_and_a_latency,
                timeout=30,
                interval=0.01,
                message=lambda: (
                    "two values of schedulerSlowCallbacks and one of "
                    f"schedulerMaxLatency through the TangoGQL subscription: {values}"
                ),
            )
        print(f"TangoGQL subscription: {values}")
        slow = [int(v) for v in values.get("schedulerslowcallbacks", [])]
        assert len(slow) >= 2 and slow[-1] > slow[0], values
        assert max(float(v) for v in values["schedulermaxlatency"]) >= SLOW_MS
    finally:
        server.stop()


# -- ska-tango-scheduler-top --------------------------------------------------------------------


def top_command() -> list[str]:
    """The console script next to this interpreter, else ``python -m``."""
    script = shutil.which("ska-tango-scheduler-top", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "ska_tango_scheduler.top"]


def run_top(scene: Scene, *args: str, module: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ska_tango_scheduler.top"] if module else top_command()
    env = dict(os.environ, TANGO_HOST=scene.database.tango_host)
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_top_once_json(scene: Scene) -> None:
    result = run_top(
        scene, "--once", "--json", scene.device, scene.not_running, scene.source, scene.undefined
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1  # three of the four devices give no snapshot
    devices = {d["device"]: d for d in json.loads(result.stdout)["devices"]}
    good = devices[scene.device]
    assert good["ok"] and good["error"] is None and good["updated"] > 0
    diagnostics = good["diagnostics"]
    check_snapshot(diagnostics)
    # Worst queue wait first.
    assert diagnostics["queues"][0]["name"].lower().endswith("myattr1#change_event")
    errors = {name: devices[name]["error"] for name in devices if name != scene.device}
    print(json.dumps(errors, indent=1))
    assert not any(devices[name]["ok"] for name in errors)
    assert "not running" in errors[scene.not_running]
    assert "no scheduler attributes" in errors[scene.source]
    assert "not defined" in errors[scene.undefined]


def test_top_once_text(scene: Scene) -> None:
    result = run_top(scene, "--once", scene.device, scene.not_running, module=True)
    print(result.stdout)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{scene.device}: scheduler")
    assert "slow callbacks" in lines[1]
    queue_lines = [line for line in lines if "#CHANGE_EVENT" in line]
    assert "myattr1" in queue_lines[0] and "myattr2" in queue_lines[1]
    assert lines[-1].startswith(f"{scene.not_running}: not running")


def test_top_live_by_events_and_ctrl_c_leaves_nothing_behind(scene: Scene) -> None:
    """On a terminal, redrawn on change events; Ctrl-C ends it cleanly."""
    master, slave = pty.openpty()
    env = dict(os.environ, TANGO_HOST=scene.database.tango_host, COLUMNS="200", LINES="50")
    process = subprocess.Popen(
        [*top_command(), scene.device, scene.not_running],
        stdin=slave,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
        text=False,
    )
    os.close(slave)
    output = bytearray()

    def read_some(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                output.extend(chunk)

    try:
        not_running = f"{scene.not_running}: not running".encode()

        def shown() -> bool:
            # Redrawn in place (cursor up, clear) at least twice, with the device's
            # queues and the other device said to be not running.
            return (
                output.count(b"\x1b[J") >= 2
                and b"myattr1#CHANGE_EVENT" in output
                and not_running in output
            )

        def read_until_shown() -> bool:
            if shown():
                return True
            read_some(0.5)
            return shown()

        wait_for(
            read_until_shown,
            timeout=60,
            interval=0.01,
            message=lambda: (
                "top's screen redrawn twice, with myattr1#CHANGE_EVENT and "
                f"'{not_running.decode()}'; the output ends with: "
                f"{output.decode(errors='replace')[-2000:]!r}"
            ),
        )
        text = output.decode(errors="replace")
        assert text.count("\x1b[J") >= 2, text[-2000:]
        assert "myattr1#CHANGE_EVENT" in text
        assert f"{scene.not_running}: not running" in text
        children = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGINT)
        status = process.wait(timeout=30)
        read_some(0.5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    assert process.stderr is not None
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    assert status == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert not psutil.pid_exists(process.pid) or psutil.Process(process.pid).status() == "zombie"
    assert not [c for c in children if c.is_running()]
    assert output.endswith(b"\n")
