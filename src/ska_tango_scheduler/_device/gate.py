"""The monitor gate: what ``SchedulerMixin.allow_internal_threads`` does, and when.

While a block is open, the device monitor held by the calling thread is
released (where that is safe), so the device's own threads can take it, and
client requests from other processes wait in ``always_executed_hook``,
without the monitor, until no block is open any more. The book-keeping of
open blocks (:class:`InternalThreadsGate`) is Tango-free; the functions here
add the Tango side: the serial model, the PyTango version, who the client is.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from typing import Any, Final, cast

import tango

from . import LOGGER, device_name

__all__ = [
    "SAFE_MONITOR_RELEASE",
    "InternalThreadsGate",
    "MonitorNotReleasableWarning",
    "device_gate",
    "from_this_process",
    "hold_request",
    "internal_threads_block",
    "monitor_released",
    "pytango_version",
    "releases_monitor",
    "serial_model",
]


def pytango_version() -> tuple[int, int]:
    """Return PyTango's (major, minor) version."""
    major, minor = tango.__version_info__[:2]
    return int(major), int(minor)


#: Whether ``tango.AutoTangoAllowThreads`` can be used safely: PyTango < 10.1
#: releases the monitor in a loop that spins for ever, holding the GIL, when
#: another thread takes the monitor between two of its steps (seen with 9.5.1
#: and 10.0.4 within 20 releases while a thread waits for the monitor; not with
#: 10.1.6 and 10.3.1). The whole server then hangs.
SAFE_MONITOR_RELEASE: Final[bool] = pytango_version() >= (10, 1)


class MonitorNotReleasableWarning(RuntimeWarning):
    """The device monitor cannot be released safely here.

    Issued (once per device) by :meth:`SchedulerMixin.allow_internal_threads`
    under the ``BY_CLASS`` and ``BY_PROCESS`` serial models, and with PyTango
    older than 10.1 (see :data:`SAFE_MONITOR_RELEASE`): the monitor the
    calling thread holds stays held, so a thread that waits for it inside the
    block (a callback using ``tango.AutoTangoMonitor``, an event push) waits
    until the block's thread lets it go or Tango gives up (about 3.2 s).
    """


class InternalThreadsGate:
    """Book-keeping of open :meth:`SchedulerMixin.allow_internal_threads` blocks.

    Knows which threads have a block open and lets other threads wait until
    none is. Tango-free: the caller decides what to release while waiting.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._holders: dict[int, int] = {}
        self.stalled = 0

    def open(self) -> None:
        """Record a block opened by the calling thread (blocks nest)."""
        me = threading.get_ident()
        with self._cond:
            self._holders[me] = self._holders.get(me, 0) + 1

    def close(self) -> None:
        """Record the end of the calling thread's innermost block."""
        me = threading.get_ident()
        with self._cond:
            count = self._holders.get(me, 0) - 1
            if count > 0:
                self._holders[me] = count
            else:
                self._holders.pop(me, None)
            if not self._holders:
                self._cond.notify_all()

    def _blocks(self, ident: int) -> bool:
        return any(holder != ident for holder in self._holders)

    def blocks_caller(self) -> bool:
        """Tell whether another thread has a block open."""
        me = threading.get_ident()
        with self._cond:
            return self._blocks(me)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no other thread has a block open.

        Args:
            timeout: Seconds to wait at most; None waits as long as it takes.

        Returns:
            True if no other thread has a block open on return.
        """
        me = threading.get_ident()
        with self._cond:
            self.stalled += 1
            try:
                return self._cond.wait_for(lambda: not self._blocks(me), timeout)
            finally:
                self.stalled -= 1

    @property
    def open_blocks(self) -> int:
        """Number of blocks open, over all threads."""
        with self._cond:
            return sum(self._holders.values())


_GATE_LOCK = threading.Lock()


def device_gate(device: Any) -> InternalThreadsGate:
    """Return the device's gate, made on first use (kept in its ``__dict__``).

    Args:
        device: A device of a :class:`SchedulerMixin` class.

    Returns:
        Its gate.
    """
    gate = device.__dict__.get("_scheduler_gate_obj")
    if gate is None:
        with _GATE_LOCK:
            gate = device.__dict__.setdefault("_scheduler_gate_obj", InternalThreadsGate())
    return cast(InternalThreadsGate, gate)


def from_this_process(device: tango.server.Device) -> bool:
    """Tell whether the request being served comes from this very process.

    PyTango >= 10.1 tells who the client is; older versions cannot, and
    neither can Tango for requests that no client made (attribute polling):
    those count as coming from elsewhere.
    """
    get_client_ident = getattr(device, "get_client_ident", None)
    if get_client_ident is None:
        return False
    try:
        client = get_client_ident()
    except Exception:  # noqa: BLE001 - unknown client: treat as external
        return False
    if client is None or not getattr(client, "client_ident", False):
        return False
    return bool(getattr(client, "client_pid", 0) == os.getpid())


def releases_monitor(model: tango.SerialModel) -> bool:
    """Tell whether allow_internal_threads releases the monitor under ``model``."""
    return model == tango.SerialModel.BY_DEVICE and SAFE_MONITOR_RELEASE


def serial_model() -> tango.SerialModel:
    """Return the server's serial model (BY_DEVICE outside a running server)."""
    try:
        # instance(False) raises instead of ending the process when there is no Util.
        return tango.Util.instance(False).get_serial_model()
    except Exception:  # noqa: BLE001 - no Util: not in a device server
        return tango.SerialModel.BY_DEVICE


def monitor_released() -> bool:
    """Tell whether threads waiting for the device monitor can get it inside a block.

    Returns:
        True under ``BY_DEVICE`` with a safe release, and under ``NO_SYNC``.
    """
    model = serial_model()
    return model == tango.SerialModel.NO_SYNC or releases_monitor(model)


@contextlib.contextmanager
def internal_threads_block(device: tango.server.Device) -> Iterator[None]:
    """Open a block on ``device`` (what ``allow_internal_threads`` returns).

    Args:
        device: The device.

    Yields:
        Nothing.
    """
    gate = device_gate(device)
    model = serial_model()
    gate.open()
    try:
        if releases_monitor(model):
            with tango.AutoTangoAllowThreads(device):
                yield
        else:
            if model != tango.SerialModel.NO_SYNC:
                _warn_monitor_kept(device, model)
            yield
    finally:
        gate.close()


def _warn_monitor_kept(device: Any, model: tango.SerialModel) -> None:
    if device.__dict__.get("_scheduler_warned_monitor_kept"):
        return
    device.__dict__["_scheduler_warned_monitor_kept"] = True
    if model == tango.SerialModel.BY_DEVICE:
        why = (
            f"PyTango {tango.__version__}'s AutoTangoAllowThreads can hang the whole "
            "server when another thread waits for the monitor; use PyTango >= 10.1"
        )
    else:
        why = f"serial model {model.name} does not allow it; use BY_DEVICE"
    message = (
        f"{device_name(device)}: allow_internal_threads() keeps the device monitor held "
        f"({why}). Threads that wait for it (callbacks using tango.AutoTangoMonitor, event "
        "pushes) get it only after the block's thread lets it go, or time out after "
        "about 3.2 s; delete_device does not wait for them."
    )
    LOGGER.warning(message)
    # Points at the caller's ``with`` (this function, the block, contextlib's __enter__).
    warnings.warn(message, MonitorNotReleasableWarning, stacklevel=4)


def hold_request(device: tango.server.Device) -> None:
    """Hold a client request while another thread has a block open (``always_executed_hook``).

    While it waits the request does not hold the device monitor.

    Args:
        device: The device.
    """
    gate = device_gate(device)
    if gate.blocks_caller() and not from_this_process(device):
        release = releases_monitor(serial_model())
        # Checked again once the monitor is ours: a thread that ended one
        # block may open the next (delete_device does) before this
        # request got the monitor back.
        while gate.blocks_caller():
            if release:
                with tango.AutoTangoAllowThreads(device):
                    gate.wait()
            else:
                gate.wait()
