"""What the streams of one scheduler share: one proxy per device, and host checks.

A device's streams share one ``DeviceProxy``, made on the device's connector
lane once a bounded check (:mod:`._hostprobe`) has shown that the device's
Tango host answers the request a proxy creation makes. A lane never waits for
that check: it asks and gets its job back when the answer is in. A call that
timed out inside Tango marks the host as not answering for a while, so that
retries do not stall inside cppTango again and again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tango

from . import _compat
from ._backoff import BackoffPolicy
from ._callbacks import RateLimitedLogger
from ._dispatch import Dispatcher
from ._hostprobe import HostProbe
from ._lanes import ConnectorPool
from ._trl import DeviceKey

__all__ = ["StreamContext", "timed_out_in_tango"]


@dataclass
class StreamContext:
    """What the streams of one scheduler share.

    Attributes:
        lock: The scheduler's registry lock (never held while calling user
            code or Tango).
        dispatcher: The worker pool.
        connector: The connector threads (one lane per device).
        probe: Bounded check that a device's Tango host answers.
        attempt_timeout: Seconds one Tango call of an attempt may take.
        policy: Back-off policy.
        logger: Where the scheduler logs.
        limited: Rate-limited logger.
        proxies: One device proxy per device, shared by its streams.
        subscribe_calls: Calls made to ``subscribe_event``.
        unsubscribe_calls: Calls made to ``unsubscribe_event``.
        slow_callback_duration: Seconds after which a callback counts as
            slow, or None.
    """

    lock: threading.Lock
    dispatcher: Dispatcher
    connector: ConnectorPool
    probe: HostProbe
    attempt_timeout: float
    policy: BackoffPolicy
    logger: logging.Logger
    limited: RateLimitedLogger
    proxies: dict[DeviceKey, tango.DeviceProxy] = field(default_factory=dict)
    subscribe_calls: int = 0
    unsubscribe_calls: int = 0
    slow_callback_duration: float | None = None

    def cached_proxy(self, key: DeviceKey) -> tango.DeviceProxy | None:
        """Return the shared proxy of a device if there is one.

        Args:
            key: The device.

        Returns:
            The proxy, or None.
        """
        with self.lock:
            return self.proxies.get(key)

    def proxy_for(self, key: DeviceKey) -> tango.DeviceProxy:
        """Return the shared proxy of a device, creating it if needed.

        Creating it waits for the check of the device's host: call it where
        waiting is allowed, or after :meth:`ask_host` said the host answers.

        Args:
            key: The device.

        Returns:
            The proxy.

        Raises:
            tango.DevFailed: If the proxy cannot be created.
        """
        proxy = self.cached_proxy(key)
        if proxy is None:
            made = self.new_proxy(key)
            with self.lock:
                proxy = self.proxies.setdefault(key, made)
            del made  # when another thread's proxy won: released with the lock free
        return proxy

    def ask_host(self, key: DeviceKey, then: Callable[[], None]) -> tuple[bool, str | None]:
        """Whether a device's host answers, without waiting for it.

        Args:
            key: The device.
            then: Submitted to the device's lane once the outcome is known,
                if it is not known now.

        Returns:
            ``(True, None)``: answers (or there is no host to ask);
            ``(True, why)``: does not; ``(False, None)``: being asked.
        """
        if not key.host or key.port is None:
            return True, None
        connector, lane = self.connector, key

        def done(_problem: str | None) -> None:
            connector.submit(lane, then)

        return self.probe.ask(key.host, key.port, key.name, done, key.dbase)

    def forget_host(self, key: DeviceKey) -> None:
        """Check a device's host again before the next proxy (after a failure).

        Args:
            key: The device.
        """
        if key.host and key.port is not None:
            self.probe.forget(key.host, key.port)

    def distrust_host(self, key: DeviceKey, why: str) -> None:
        """Treat a device's host as silent for a while (a call timed out inside Tango).

        Args:
            key: The device.
            why: The time-out, reported meanwhile.
        """
        if key.host and key.port is not None and key.dbase:
            self.probe.distrust(key.host, key.port, why)

    def new_proxy(self, key: DeviceKey) -> tango.DeviceProxy:
        """Create a proxy once the device's host answers a bounded check.

        Waits for the check if the host's outcome is not known; the connector
        asks first with :meth:`ask_host`, so it does not wait.

        Args:
            key: The device.

        Returns:
            The proxy, its timeout set to ``attempt_timeout``.

        Raises:
            tango.DevFailed: If the host does not answer or the proxy cannot
                be created.
        """
        if key.host and key.port is not None:
            problem = self.probe.check(key.host, key.port, key.name, key.dbase)
            if problem is not None:
                raise _compat.host_not_answering(key, problem)
        proxy = _compat.create_proxy(key)
        proxy.set_timeout_millis(max(1, int(self.attempt_timeout * 1000)))
        return proxy


def timed_out_in_tango(errors: tuple[Any, ...]) -> bool:
    """Whether a failure is a call that timed out inside Tango.

    Such a host (or server) accepted the call and did not answer it; trying
    again soon would stall again for the whole time-out.

    Args:
        errors: The ``DevError`` stack.

    Returns:
        True for ``API_DeviceTimedOut`` and CORBA ``TIMEOUT`` or
        ``TRANSIENT_CallTimedout`` failures.
    """
    for error in errors:
        text = f"{getattr(error, 'reason', '')} {getattr(error, 'desc', '')}"
        if "CallTimedout" in text or "API_DeviceTimedOut" in text or "TIMEOUT" in text:
            return True
    return False
