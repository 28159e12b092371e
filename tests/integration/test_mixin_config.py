"""Bad scheduler configuration of a SchedulerMixin device, in real device servers.

A bad ``SchedulerThreadCount``, ``SchedulerName`` or
``SchedulerSlowCallbackDuration`` must put that one device in FAULT with a
status naming the property and its value, leave the other devices of the
server working, answer ``Init`` with a ``DevFailed`` that says why, and
recover once the property is fixed and ``Init`` sent again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest
import tango

from ska_tango_scheduler.testing import TangoDatabase
from ska_tango_scheduler.testing.mixin_devices import reference_server
from ska_tango_scheduler.testing.pytest_plugin import DeviceServerFactory

# property -> a bad value (as stored in the database)
BAD_SETTINGS = {
    "zero": ("SchedulerThreadCount", "0"),
    "negative": ("SchedulerThreadCount", "-3"),
    "text": ("SchedulerThreadCount", "abc"),
    "blank_name": ("SchedulerName", "   "),
    "slow_negative": ("SchedulerSlowCallbackDuration", "-1"),
    "slow_text": ("SchedulerSlowCallbackDuration", "soon"),
}


def error_text(exc: tango.DevFailed) -> str:
    return " ".join(f"{e.reason}: {e.desc}" for e in exc.args)


def test_bad_properties_at_start_up_fault_only_their_device(
    device_server_factory: DeviceServerFactory,
    tango_database: TangoDatabase,
    own_source: tango.DeviceProxy,
    callbacks_flowing: Callable[..., None],
) -> None:
    family = device_server_factory.unique_name("mixcfg")
    good = f"test/{family}/good"
    bad = {key: f"test/{family}/{key}" for key in BAD_SETTINGS}
    devices: dict[str, dict[str, str]] = {
        good: {"SourceDevice": own_source.dev_name(), "CallbackTakesMonitor": "false"}
    }
    for key, (prop, value) in BAD_SETTINGS.items():
        devices[bad[key]] = {prop: value, "SourceDevice": own_source.dev_name()}
    # Today the whole server exits (status 0) before exporting any device.
    process = reference_server(device_server_factory, tango_database, devices)
    assert process.running
    good_device = tango.DeviceProxy(good)
    assert good_device.state() == tango.DevState.ON
    own_source.StartPushing([[20.0], ["myAttr1"]])
    callbacks_flowing(good_device)
    assert good_device.schedulerThreadCount == 1
    for key, (prop, value) in BAD_SETTINGS.items():
        device = tango.DeviceProxy(bad[key])
        status = device.status()
        print(f"{key}: {device.state()} {status!r}")
        assert device.state() == tango.DevState.FAULT, key
        assert prop in status, (key, status)
        assert repr(value) in status, (key, status)
        # Its diagnostic attributes say why instead of reading a scheduler it has not.
        with pytest.raises(tango.DevFailed) as info:
            _ = device.schedulerThreadCount
        assert prop in error_text(info.value), key
    callbacks_flowing(good_device)
    assert process.running
    # The terminal view says why too.
    prop, value = BAD_SETTINGS["zero"]
    top = subprocess.run(
        [sys.executable, "-m", "ska_tango_scheduler.top", "--once", "--json", bad["zero"], good],
        capture_output=True,
        text=True,
        env=dict(os.environ, TANGO_HOST=tango_database.tango_host),
        timeout=120,
        check=False,
    )
    assert top.returncode == 1, top.stderr
    faulty, working = json.loads(top.stdout)["devices"]
    assert not faulty["ok"] and working["ok"]
    assert (
        f"{prop} = {value!r}" in faulty["error"] and "SKA_SchedulerConfiguration" in faulty["error"]
    )


def test_init_with_a_bad_property_fails_clearly_and_fixing_it_recovers(
    device_server_factory: DeviceServerFactory,
    tango_database: TangoDatabase,
    own_source: tango.DeviceProxy,
    callbacks_flowing: Callable[..., None],
) -> None:
    family = device_server_factory.unique_name("mixcfginit")
    name = f"test/{family}/1"
    other = f"test/{family}/2"
    properties = {"SourceDevice": own_source.dev_name(), "CallbackTakesMonitor": "false"}
    process = reference_server(
        device_server_factory, tango_database, {name: properties, other: properties}
    )
    device = tango.DeviceProxy(name)
    device.set_timeout_millis(10_000)
    neighbour = tango.DeviceProxy(other)
    own_source.StartPushing([[20.0], ["myAttr1"]])
    callbacks_flowing(device)
    for key in ("zero", "text", "blank_name", "slow_negative"):
        prop, value = BAD_SETTINGS[key]
        tango_database.put_device_properties(name, {prop: [value]})
        with pytest.raises(tango.DevFailed) as info:
            device.Init()
        text = error_text(info.value)
        print(f"Init with {prop}={value!r}: {text}")
        assert prop in text and repr(value) in text, text
        assert "CORBA" not in text, text
        # Never ON with a scheduler that is shut down.
        assert device.state() == tango.DevState.FAULT, key
        assert prop in device.status()
        with pytest.raises(tango.DevFailed):
            _ = device.schedulerThreadCount
        # The other device of the server is untouched.
        callbacks_flowing(neighbour)
        # Fixing the property and sending Init recovers.
        tango_database.client.delete_device_property(name, [prop])
        device.Init()
        assert device.state() == tango.DevState.ON, key
        assert device.schedulerThreadCount == 1
        callbacks_flowing(device)
    tango_database.put_device_properties(name, {"SchedulerThreadCount": ["2"]})
    device.Init()
    assert device.schedulerThreadCount == 2
    callbacks_flowing(device)
    assert process.running


# property -> (its largest valid value, the next invalid one), as the database holds them
LIMITS = {
    "SchedulerThreadCount": ("128", "129"),
    "SchedulerSlowCallbackDuration": ("3600", "3600.001"),
}


def test_every_property_bound_at_and_past_its_limit_on_a_real_server(
    device_server_factory: DeviceServerFactory,
    tango_database: TangoDatabase,
    own_source: tango.DeviceProxy,
    callbacks_flowing: Callable[..., None],
) -> None:
    """At its limit a value is taken; just past it FAULT names it; SIGTERM still ends all.

    ``SchedulerThreadCount=20000`` used to be accepted: 25 s of Init, 20,020
    threads, and a server that SIGTERM no longer stopped.
    """
    family = device_server_factory.unique_name("mixcfglim")
    name = f"test/{family}/1"
    started_bad = f"test/{family}/2"
    properties = {"SourceDevice": own_source.dev_name(), "CallbackTakesMonitor": "false"}
    process = reference_server(
        device_server_factory,
        tango_database,
        {name: properties, started_bad: {**properties, "SchedulerThreadCount": "20000"}},
    )
    # Past the limit at start-up: FAULT naming the property and value, server up.
    faulty = tango.DeviceProxy(started_bad)
    assert faulty.state() == tango.DevState.FAULT
    assert "SchedulerThreadCount = '20000'" in faulty.status(), faulty.status()
    device = tango.DeviceProxy(name)
    device.set_timeout_millis(30_000)
    own_source.StartPushing([[20.0], ["myAttr1"]])
    callbacks_flowing(device)
    for prop, (limit, past) in LIMITS.items():
        tango_database.put_device_properties(name, {prop: [limit]})
        device.Init()
        assert device.state() == tango.DevState.ON, (prop, limit, device.status())
        if prop == "SchedulerThreadCount":
            assert device.schedulerThreadCount == int(limit)
        callbacks_flowing(device)
        for bad in (past, "20000" if prop == "SchedulerThreadCount" else "inf"):
            tango_database.put_device_properties(name, {prop: [bad]})
            with pytest.raises(tango.DevFailed) as info:
                device.Init()
            text = error_text(info.value)
            print(f"Init with {prop}={bad!r}: {text}")
            assert f"{prop} = {bad!r}" in text, text
            assert "CORBA" not in text, text
            assert device.state() == tango.DevState.FAULT, (prop, bad)
            assert f"{prop} = {bad!r}" in device.status()
            assert process.running
        # Fixing it and sending Init recovers.
        tango_database.client.delete_device_property(name, [prop])
        device.Init()
        assert device.state() == tango.DevState.ON, (prop, device.status())
        callbacks_flowing(device)
    # The device started in FAULT recovers too.
    tango_database.client.delete_device_property(started_bad, ["SchedulerThreadCount"])
    faulty.Init()
    assert faulty.state() == tango.DevState.ON, faulty.status()
    assert process.running
    own_source.StopPushing([])
    # PyTango 10 servers exit with 0 on SIGTERM; on 9.5.1 any server (a plain
    # EventSource too) is ended by the signal itself (-15). Never SIGKILL (-9).
    expected = 0 if tango.__version_info__ >= (10,) else -signal.SIGTERM
    assert process.stop(grace=60) == expected, "SIGTERM did not end the server as usual"
