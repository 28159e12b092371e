"""ska-tango-scheduler next to the real ska-tango-base (skipped unless it is importable).

Run with ``make interop`` (see the README): it builds an environment with ska-tango-base
1.3.2 and runs this suite. Every device here is a real device server in its own process,
registered in the test bed's real Tango database.

What is compared: for each long running command of ska-tango-base's reference device,
on LRC protocol version 2 and on version 1, the calls that ska-tango-base's own
``invoke_lrc`` makes to its callback and the calls ours makes. They must be the same,
except for two differences that are ours on purpose (see ``normalise_v1``).
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

stb = pytest.importorskip("ska_tango_base")

import tango  # noqa: E402
from ska_tango_base import faults  # noqa: E402
from ska_tango_base.long_running_commands_api import invoke_lrc as stb_invoke_lrc  # noqa: E402

from ska_tango_scheduler import CallbackScheduler  # noqa: E402
from ska_tango_scheduler.control_model import TERMINAL_STATUSES, TaskStatus  # noqa: E402
from ska_tango_scheduler.long_running_commands import (  # noqa: E402
    CommandError,
    ResultCodeError,
    invoke_lrc,
)
from ska_tango_scheduler.testing import TangoDatabase, wait_for  # noqa: E402
from ska_tango_scheduler.testing.lrc_device import LRC_SERVER_NAME  # noqa: E402
from ska_tango_scheduler.testing.pytest_plugin import DeviceServerFactory  # noqa: E402

pytestmark = pytest.mark.integration

SERVERS = str(Path(__file__).with_name("stb_servers.py"))
DEADLINE = 60.0
#: Long running commands of ReferenceSkaBaseDevice, in an order every one is allowed in.
COMMANDS = [
    "On",
    "Standby",
    "Off",
    "Reset",
    "On",
    "ProgressMsg",
    "SimulateCommandError",
    "SimulateIsCmdAllowedError",
]


def start_server(factory: DeviceServerFactory, cls: str) -> str:
    """Start a server of one class of stb_servers.py; return its device's TRL."""
    name = f"test/{factory.unique_name('stb')}/1"
    process = factory(
        f"Interop{cls}/{factory.unique_name('i')}",
        [name],
        device_class=cls,
        command=[sys.executable, SERVERS, cls],
    )
    return process.database.trl(name)


@pytest.fixture(scope="module")
def servers(
    tango_database: TangoDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The reference device on protocol 2 and on protocol 1, ONLINE, and an LrcReference."""
    factory = DeviceServerFactory(tango_database, tmp_path_factory.mktemp("stb"))
    try:
        trls = {
            "v2": start_server(factory, "ReferenceV2"),
            "v1": start_server(factory, "ReferenceV1"),
            "slow": start_server(factory, "ReferenceSlow"),
        }
        keepers = []
        for trl in trls.values():
            proxy = tango.DeviceProxy(trl)
            proxy.adminMode = 0  # ONLINE: the reference device starts OFFLINE
            wait_for(
                lambda p=proxy: p.state() != tango.DevState.DISABLE,
                DEADLINE,
                message=f"{trl} out of DISABLE after adminMode ONLINE",
            )
            # Keep this process's event connection to the server open: a subscription
            # that opens it anew can miss the events of its first milliseconds (see
            # tools/fresh_subscription_misses.py), and both clients subscribe anew for
            # every command here. With the connection kept, neither misses any.
            proxy.subscribe_event(
                "longRunningCommandStatus", tango.EventType.CHANGE_EVENT, lambda _: None
            )
            keepers.append(proxy)
        lrc_name = f"test/{factory.unique_name('ours')}/1"
        factory(
            f"{LRC_SERVER_NAME}/{factory.unique_name('ours')}",
            [lrc_name],
            device_class=LRC_SERVER_NAME,
            module="ska_tango_scheduler.testing.lrc_device",
        )
        trls["ours"] = tango_database.trl(lrc_name)
        ours = tango.DeviceProxy(trls["ours"])
        ours.subscribe_event(
            "longRunningCommandStatus", tango.EventType.CHANGE_EVENT, lambda _: None
        )
        keepers.append(ours)
        yield trls
    finally:
        factory.close()


@pytest.fixture
def sched() -> Iterator[CallbackScheduler]:
    """A scheduler for our client."""
    scheduler = CallbackScheduler(thread_count=2, name="interop")
    yield scheduler
    scheduler.shutdown(timeout=30)


class Calls:
    """An LRC callback that records its calls, whichever client calls it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.raised = ""  # name of the exception invoke_lrc raised, if any

    def __call__(self, **kwargs: Any) -> None:
        with self.lock:
            self.calls.append(dict(kwargs))
        if kwargs.get("status") in TERMINAL_STATUSES:
            self.done.set()

    def sequence(self) -> list[tuple[str, Any]]:
        """The calls as (key, value) pairs, in order, comparable between clients."""
        out: list[tuple[str, Any]] = []
        with self.lock:
            for call in self.calls:
                for key in sorted(call):
                    value = call[key]
                    if key == "status" and value is not None:
                        value = TaskStatus(int(value)).name
                    elif key == "error":
                        value = tuple(str(getattr(e, "reason", e)) for e in value)
                    elif key == "result":
                        value = _plain(value)
                    out.append((key, value))
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return int(value) if isinstance(value, bool) is False and hasattr(value, "__index__") else value


def ensure_state(proxy: tango.DeviceProxy, command: str, state: tango.DevState) -> None:
    """Bring the device to ``state`` with ``command`` (a plain call) unless it is there."""
    if proxy.state() != state:
        proxy.command_inout(command)
        wait_for(lambda: proxy.state() == state, DEADLINE, message=f"{state} after {command}")


#: What each command needs the device to be in, so that it is not refused.
PREPARE: dict[str, Callable[[tango.DeviceProxy], None]] = {
    "On": lambda p: ensure_state(p, "Off", tango.DevState.OFF),
    "Off": lambda p: ensure_state(p, "On", tango.DevState.ON),
    "Standby": lambda p: ensure_state(p, "On", tango.DevState.ON),
    "ProgressMsg": lambda p: ensure_state(p, "On", tango.DevState.ON),
}


def run_one(
    invoke: Callable[..., Any],
    trl: str,
    command: str,
    command_args: tuple[Any, ...] | None,
    **kwargs: Any,
) -> Calls:
    """One invocation through one client, from the state the command needs."""
    proxy = tango.DeviceProxy(trl)
    PREPARE.get(command, lambda _: None)(proxy)
    calls = Calls()
    try:
        handle = invoke(calls, proxy, command, command_args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - compared between the clients
        calls.raised = type(exc).__name__
        return calls
    assert calls.done.wait(DEADLINE), f"{invoke.__module__}: {calls.calls}"
    time.sleep(0.3)  # anything late
    del handle
    return calls


def run_both(
    trl: str, command: str, sched: CallbackScheduler, command_args: tuple[Any, ...] | None = None
) -> tuple[Calls, Calls]:
    """Run a command through ska-tango-base's client, then through ours.

    A subscription that has just been made sometimes misses the events pushed in its
    first milliseconds (a Tango behaviour, see tools/fresh_subscription_misses.py);
    both clients subscribe anew for each command here. When either sequence lacks its
    first status, the pair is run again (up to 3 times) and the loss is reported.
    """
    for attempt in range(3):
        theirs = run_one(stb_invoke_lrc, trl, command, command_args)
        ours = run_one(invoke_lrc, trl, command, command_args, callback_scheduler=sched)
        assert ours.raised == theirs.raised, command
        lost = [
            name
            for name, calls in (("ska-tango-base", theirs), ("ours", ours))
            if not calls.raised and calls.sequence()[:1] != [("status", "STAGING")]
        ]
        if not lost:
            break
        print(f"{command}, attempt {attempt + 1}: {lost} missed the first events; again")
    return theirs, ours


def normalise_v1(theirs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """ska-tango-base's version 1 sequence, with the differences that are ours on purpose.

    * ska-tango-base's v1 client passes on ``longRunningCommandStatus`` each time the
      list changes, so a status repeats whenever another command's entry changes; ours
      passes a status on once.
    * ska-tango-base's v1 client converts progress with ``int()``, which raises on
      Tango's event thread for text progress (ProgressMsg), so it never arrives; ours
      passes the text on. (Compared separately.)
    """
    out: list[tuple[str, Any]] = []
    for item in theirs:
        if item[0] == "status" and any(o[0] == "status" for o in out):
            last = [o for o in out if o[0] == "status"][-1]
            if last == item:
                continue
        out.append(item)
    return out


@pytest.mark.timeout(600)
def test_same_callback_sequences_on_protocol_2(
    servers: dict[str, str], sched: CallbackScheduler
) -> None:
    """Every LRC command of the reference device: the same calls from both clients (v2)."""
    report = []
    for command in COMMANDS:
        theirs, ours = run_both(servers["v2"], command, sched)
        report.append((command, theirs.raised or theirs.sequence()))
        assert ours.sequence() == theirs.sequence(), command
    for command, sequence in report:
        print(f"v2 {command}: {sequence}")


@pytest.mark.timeout(600)
def test_same_callback_sequences_on_protocol_1(
    servers: dict[str, str], sched: CallbackScheduler
) -> None:
    """The same on protocol 1, but for our status de-duplication and text progress."""
    for command in COMMANDS:
        theirs, ours = run_both(servers["v1"], command, sched)
        mine = ours.sequence()
        expected = normalise_v1(theirs.sequence())
        if command == "ProgressMsg":
            texts = [v for k, v in mine if k == "progress"]
            assert texts and all(isinstance(t, str) for t in texts), mine
            mine = [item for item in mine if item[0] != "progress"]
        print(f"v1 {command}: theirs {theirs.sequence()}; ours {ours.sequence()}")
        assert mine == expected, command


@pytest.mark.timeout(300)
def test_abort_a_slow_command_same_sequences(
    servers: dict[str, str], sched: CallbackScheduler
) -> None:
    """A slow On aborted by Abort: the same calls from both clients, for both commands."""
    seen: dict[str, tuple[list[Any], list[Any]]] = {}
    clients: list[tuple[str, Callable[..., Any], dict[str, Any]]] = [
        ("theirs", stb_invoke_lrc, {}),
        ("ours", invoke_lrc, {"callback_scheduler": sched}),
    ]
    for name, invoke, kwargs in clients:
        proxy = tango.DeviceProxy(servers["slow"])
        ensure_state(proxy, "Off", tango.DevState.OFF)
        slow, abort = Calls(), Calls()
        slow_handle = invoke(slow, proxy, "On", None, **kwargs)
        wait_for(
            lambda s=slow: ("status", "IN_PROGRESS") in s.sequence(),
            DEADLINE,
            message=f"the slow On of {name} IN_PROGRESS before the Abort",
        )
        abort_handle = invoke(abort, proxy, "Abort", None, **kwargs)
        assert slow.done.wait(DEADLINE), slow.calls
        assert abort.done.wait(DEADLINE), abort.calls
        time.sleep(0.3)
        seen[name] = (slow.sequence(), abort.sequence())
        del slow_handle, abort_handle
    print(f"slow On then Abort: {seen['theirs']}")
    assert seen["ours"] == seen["theirs"]
    assert seen["ours"][0][-1] == ("status", "ABORTED")


def test_command_args_tuple_means_the_same(
    servers: dict[str, str], sched: CallbackScheduler
) -> None:
    """A command_args tuple is unpacked the same way by both clients."""
    theirs, ours = run_both(servers["ours"], "Echo", sched, ("tuple form",))
    assert ours.sequence() == theirs.sequence()
    assert ("result", [0, "tuple form"]) in ours.sequence()


def test_dropped_handle_stops_both(servers: dict[str, str], sched: CallbackScheduler) -> None:
    """Dropping the handle at once: no terminal call from either client."""
    proxy = tango.DeviceProxy(servers["ours"])
    theirs, ours = Calls(), Calls()
    stb_invoke_lrc(theirs, proxy, "Slow", (1.0,))
    invoke_lrc(ours, proxy, "Slow", (1.0,), callback_scheduler=sched)
    gc.collect()
    time.sleep(3.0)
    assert not theirs.done.is_set(), theirs.calls
    assert not ours.done.is_set(), ours.calls
    assert all(s.callbacks == 0 for s in sched.diagnostics().streams)


def test_ska_tango_base_except_clauses_catch_ours(
    servers: dict[str, str], sched: CallbackScheduler
) -> None:
    """Our CommandError and ResultCodeError are ska-tango-base's too."""
    assert issubclass(CommandError, faults.CommandError)
    assert issubclass(ResultCodeError, faults.ResultCodeError)
    proxy = tango.DeviceProxy(servers["ours"])
    with pytest.raises(faults.CommandError):
        invoke_lrc(Calls(), proxy, "RejectNow", callback_scheduler=sched)
    with pytest.raises(faults.ResultCodeError):
        invoke_lrc(Calls(), proxy, "ReplyWithCode", (0,), callback_scheduler=sched)
    with pytest.raises(RuntimeError):
        invoke_lrc(Calls(), proxy, "RejectNow", callback_scheduler=sched)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("cls", ["MixinBase", "MixinReference"])
def test_scheduler_mixin_on_ska_base_devices(
    device_server_factory: DeviceServerFactory, cls: str
) -> None:
    """SchedulerMixin on SKABaseDevice: it starts, keeps the SKA interface, survives Init."""
    trl = start_server(device_server_factory, cls)
    proxy = tango.DeviceProxy(trl)
    attributes = {a.lower() for a in proxy.get_attribute_list()}
    commands = {c.lower() for c in proxy.get_command_list()}
    for name in ("adminmode", "healthstate", "buildstate", "versionid", "loggingtargets"):
        assert name in attributes
    for name in ("schedulerthreadcount", "schedulerdiagnostics"):
        assert name in attributes
    for name in ("on", "off", "standby", "reset", "abortcommands", "init"):
        assert name in commands
    for _ in range(3):
        proxy.command_inout("Init")
        assert proxy.schedulerThreadCount >= 1
        assert proxy.buildState
    process = device_server_factory.processes[-1]
    assert process.stop() == 0
