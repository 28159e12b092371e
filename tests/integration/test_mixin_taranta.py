"""The Taranta path, for real: TangoGQL reads and follows the diagnostic attributes.

TangoGQL (the GraphQL server Taranta's pages talk to) runs under uvicorn
against the test database. The test reads the attributes with a GraphQL
query over HTTP and follows them with a GraphQL subscription over the
websocket, as Taranta does. TangoGQL is a separate service, so it may run on
another interpreter than the one under test (see
:func:`ska_tango_scheduler.testing.tangogql.tangogql_python`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tango

from ska_tango_scheduler.mixin import DIAGNOSTIC_ATTRIBUTES
from ska_tango_scheduler.testing import TangoDatabase, wait_for
from ska_tango_scheduler.testing.mixin_devices import (
    SCHEDULER_REFERENCE_CLASS,
    SCHEDULER_REFERENCE_MODULE,
)
from ska_tango_scheduler.testing.pytest_plugin import DeviceServerFactory
from ska_tango_scheduler.testing.tangogql import (
    TANGOGQL_PYTHON_ENV,
    TangoGQLServer,
    tangogql_python,
)

GQL_TYPES = {
    "schedulerThreadCount": ("DevLong", "SCALAR"),
    "schedulerQueueNames": ("DevString", "SPECTRUM"),
    "schedulerQueueDepths": ("DevLong", "SPECTRUM"),
    "schedulerReceivedEvents": ("DevLong64", "SCALAR"),
    "schedulerDeliveredEvents": ("DevLong64", "SCALAR"),
    "schedulerDroppedEvents": ("DevLong64", "SCALAR"),
    "schedulerCallbackErrors": ("DevLong64", "SCALAR"),
    "schedulerMaxLatency": ("DevDouble", "SCALAR"),
    "schedulerQueueLatencies": ("DevDouble", "SPECTRUM"),
    "schedulerSlowCallbacks": ("DevLong64", "SCALAR"),
    "schedulerBackoffState": ("DevString", "SCALAR"),
    "schedulerDiagnostics": ("DevString", "SCALAR"),
}


@pytest.fixture(scope="module")
def gql_python() -> str:
    python = tangogql_python()
    if python is None:
        pytest.skip(
            "tangogql is not installed here nor in the database's interpreter "
            f"(pip install tangogql, or set {TANGOGQL_PYTHON_ENV})"
        )
    return python


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers; it is reaped by ManagedProcess.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_tangogql_reads_and_follows_the_diagnostic_attributes(
    device_server_factory: DeviceServerFactory,
    tango_database: TangoDatabase,
    gql_python: str,
    tmp_path: Path,
) -> None:
    source_process = device_server_factory.event_source(1)
    source = tango.DeviceProxy(source_process.devices[0])
    name = f"test/{device_server_factory.unique_name('mixgql')}/1"
    process = device_server_factory(
        f"{SCHEDULER_REFERENCE_CLASS}/{device_server_factory.unique_name('gql')}",
        [name],
        device_class=SCHEDULER_REFERENCE_CLASS,
        module=SCHEDULER_REFERENCE_MODULE,
        start=False,
    )
    process.register()
    tango_database.put_device_properties(
        name, {"SourceDevice": [source_process.devices[0]], "CallbackTakesMonitor": ["false"]}
    )
    process.start()
    device = tango.DeviceProxy(name)
    wait_for(
        lambda: device.schedulerReceivedEvents >= 1,
        timeout=30,
        message="the first event (the current value) received by the device's scheduler",
    )

    server = TangoGQLServer(tango_database.tango_host, python=gql_python, log_dir=tmp_path)
    server.start()
    pid = server.pid
    assert pid is not None
    try:
        # Read over HTTP, as Taranta's attribute widgets first do.
        data = server.query(
            "query ($name: String!) { device(name: $name) {"
            ' attributes(pattern: "scheduler*") { name datatype dataformat writable value } } }',
            {"name": name},
        )
        attributes = {a["name"]: a for a in data["device"]["attributes"]}
        assert set(DIAGNOSTIC_ATTRIBUTES) <= set(attributes)
        for attr, (datatype, dataformat) in GQL_TYPES.items():
            assert attributes[attr]["datatype"] == datatype, attr
            assert attributes[attr]["dataformat"] == dataformat, attr
            assert attributes[attr]["writable"] == "READ", attr
        assert attributes["schedulerThreadCount"]["value"] == 1
        assert attributes["schedulerReceivedEvents"]["value"] >= 1

        # Follow over the websocket, as Taranta's live widgets do.
        full_names = [f"{name}/schedulerReceivedEvents", f"{name}/schedulerDiagnostics"]
        names = ", ".join(f'"{n}"' for n in full_names)
        query = (
            f"subscription {{ attributes(fullNames: [{names}]) "
            "{ device attribute value timestamp } }"
        )
        with server.subscribe(query) as subscription:
            seen: dict[str, list[Any]] = {}

            def record_until(done: Callable[[], bool]) -> bool:
                frame = subscription.next_data(1.0)
                if frame:
                    item = frame["attributes"]
                    seen.setdefault(item["attribute"].lower(), []).append(item["value"])
                return done()

            wait_for(
                lambda: record_until(lambda: "schedulerreceivedevents" in seen),
                timeout=30,
                interval=0.01,
                message=lambda: f"a first value of schedulerReceivedEvents: {seen}",
            )
            first = int(seen["schedulerreceivedevents"][0])
            source.StartPushing([[20.0], ["myAttr1"]])
            try:
                wait_for(
                    lambda: record_until(
                        lambda: max(int(v) for v in seen["schedulerreceivedevents"]) > first
                    ),
                    timeout=30,
                    interval=0.01,
                    message=lambda: (
                        f"schedulerReceivedEvents above its first value {first}: {seen}"
                    ),
                )
            finally:
                source.StopPushing([])
            updates = [int(v) for v in seen["schedulerreceivedevents"]]
            print(f"TangoGQL subscription values of schedulerReceivedEvents: {updates}")
            assert max(updates) > first, "no update arrived through the subscription"
            # TangoGQL follows it with Tango change events, not by polling.
            metrics = server.query("{ metrics { subscribedAttrs { name eventType } } }")
            kinds = {
                m["name"].lower(): m["eventType"] for m in metrics["metrics"]["subscribedAttrs"]
            }
            assert kinds[f"{name}/schedulerreceivedevents".lower()] == "CHANGE_EVENT", kinds
    finally:
        server.stop()
    assert not is_alive(pid), f"uvicorn (pid {pid}) still runs"
