"""What differs between PyTango versions, in one place.

PyTango 10.1 added subscription modes (``tango.EventSubMode``) and the
``event_reason`` of events. With them the scheduler subscribes
asynchronously (``AsyncRead``: the call returns at once, the outcome arrives
as an event); before them it subscribes synchronously and a failure raises.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import tango

from ._tango_errors import describe_errors, dev_failed, errors_of
from ._trl import DeviceKey, parse_device_trl, split_tango_host

__all__ = [
    "ASYNC_SUBSCRIPTION",
    "SUPPORTED_EVENT_TYPES",
    "create_proxy",
    "default_tango_host",
    "describe_errors",
    "errors_of",
    "event_reason",
    "host_not_answering",
    "is_synchronous",
    "is_subscription_outcome",
    "make_error_event",
    "proxy_key",
    "reports_missed_events",
    "server_starting",
    "subscribe",
    "unsubscribe",
]

#: True when PyTango offers asynchronous subscription (10.1 and later).
ASYNC_SUBSCRIPTION: bool = hasattr(tango, "EventSubMode")

_EVENT_TYPE_NAMES = (
    "CHANGE_EVENT",
    "ARCHIVE_EVENT",
    "PERIODIC_EVENT",
    "USER_EVENT",
    "ATTR_CONF_EVENT",
    "DATA_READY_EVENT",
    "ALARM_EVENT",
)

#: Event types a stream may have. Interface-change and pipe events are not
#: attribute events and are not supported.
SUPPORTED_EVENT_TYPES: frozenset[tango.EventType] = frozenset(
    getattr(tango.EventType, n) for n in _EVENT_TYPE_NAMES if hasattr(tango.EventType, n)
)

_EVENT_NAMES = {
    "CHANGE_EVENT": "change",
    "ARCHIVE_EVENT": "archive",
    "PERIODIC_EVENT": "periodic",
    "USER_EVENT": "user_event",
    "ATTR_CONF_EVENT": "attr_conf",
    "DATA_READY_EVENT": "data_ready",
    "ALARM_EVENT": "alarm",
}


_server_started = False


def server_starting() -> bool:
    """Tell whether this process is a device server that has not finished starting.

    While a server starts, its devices and its admin device may already be
    exported, but the admin device refuses event subscriptions
    (``API_DServerClassNotInitialised``). A subscription refused that way
    from inside the same process leaves it unable to subscribe to that
    server again (every later attempt fails with ``API_ZmqFailed``,
    "Invalid argument") until the process restarts.

    Returns:
        True while the process's ``tango.Util`` exists and reports that the
        server is starting; False in a client process or once the server
        has started (remembered from then on).
    """
    global _server_started  # noqa: PLW0603 - one fact per process
    if _server_started:
        return False
    try:
        util = tango.Util.instance(False)
    except tango.DevFailed:
        return False  # not (yet) a device server
    if util.is_svr_starting():
        return True
    _server_started = True
    return False


def default_tango_host() -> str | None:
    """Return the TANGO_HOST this process resolves device names through."""
    try:
        value = tango.ApiUtil.get_env_var("TANGO_HOST")
    except (AttributeError, tango.DevFailed):
        value = None
    return value or os.environ.get("TANGO_HOST")


def proxy_key(proxy: tango.DeviceProxy) -> DeviceKey:
    """Return the key of the device a proxy talks to.

    Args:
        proxy: A device proxy.

    Returns:
        The device key; equal to the key of the same device named by TRL.
    """
    name = proxy.dev_name().lower()
    if proxy.is_dbase_used():
        host, port = proxy.get_db_host(), proxy.get_db_port_num()
        if not host:
            host, port = split_tango_host(default_tango_host())
        return DeviceKey(host.lower(), port, name, True)
    return DeviceKey(proxy.get_dev_host().lower(), int(proxy.get_dev_port()), name, False)


def is_synchronous(proxy: tango.DeviceProxy) -> bool:
    """Tell whether a proxy's calls return results (not futures or coroutines).

    Args:
        proxy: A device proxy.

    Returns:
        True for the synchronous green mode.
    """
    try:
        mode = proxy.get_green_mode()
    except Exception:  # noqa: BLE001 - a proxy without green modes is synchronous
        return True
    return bool(mode == tango.GreenMode.Synchronous)


def host_not_answering(key: DeviceKey, problem: str) -> tango.DevFailed:
    """Make the error of a device whose Tango host does not answer.

    Args:
        key: The device.
        problem: What the host check found.

    Returns:
        A ``DevFailed`` with reason ``API_CantConnectToDatabase`` (or
        ``API_CantConnectToDevice`` for a device named without a database).
    """
    reason = "API_CantConnectToDatabase" if key.dbase else "API_CantConnectToDevice"
    return dev_failed(reason, f"Cannot reach {key.trl}: {problem}")


def create_proxy(key: DeviceKey) -> tango.DeviceProxy:
    """Create a proxy to a device (may raise ``DevFailed``).

    Args:
        key: The device.

    Returns:
        The proxy.
    """
    return tango.DeviceProxy(key.trl)


def subscribe(
    proxy: tango.DeviceProxy,
    attribute: str,
    event_type: tango.EventType,
    callback: Callable[[Any], None],
    synchronous: bool = False,
) -> int:
    """Subscribe, asynchronously where PyTango can.

    On PyTango >= 10.1 this returns at once and the outcome arrives through
    ``callback`` as an event whose ``event_reason`` is ``SubSuccess`` (with
    the current value) or ``SubFail``. Before 10.1 it returns once connected,
    with the first event already delivered, and raises on failure.

    Args:
        proxy: Device proxy.
        attribute: Attribute name.
        event_type: Event type.
        callback: Called by Tango's event thread.
        synchronous: Subscribe synchronously on every version (``SyncRead``): the call
            returns once connected, the current value delivered, and raises on failure.

    Returns:
        The Tango subscription id.

    Raises:
        tango.DevFailed: On failure, PyTango < 10.1 or ``synchronous`` only.
    """
    if ASYNC_SUBSCRIPTION and synchronous:
        return int(
            proxy.subscribe_event(
                attribute, event_type, callback, sub_mode=tango.EventSubMode.SyncRead
            )
        )
    if ASYNC_SUBSCRIPTION:
        return int(
            proxy.subscribe_event(
                attribute, event_type, callback, sub_mode=tango.EventSubMode.AsyncRead
            )
        )
    return int(proxy.subscribe_event(attribute, event_type, callback, stateless=False))


def unsubscribe(proxy: tango.DeviceProxy, subscription_id: int) -> None:
    """Cancel a subscription (may raise ``DevFailed``).

    Args:
        proxy: The proxy it was made on.
        subscription_id: Its id.
    """
    proxy.unsubscribe_event(subscription_id)


def event_reason(event: Any) -> str | None:
    """Return the name of an event's ``event_reason`` (None before PyTango 10.1).

    Args:
        event: A Tango event.

    Returns:
        ``"SubFail"``, ``"SubSuccess"``, ``"Update"``, ``"Unknown"`` or None.
    """
    reason = getattr(event, "event_reason", None)
    if reason is None:
        return None
    return str(getattr(reason, "name", reason))


def is_subscription_outcome(event: Any) -> bool:
    """Tell whether an event reports the outcome of a subscription attempt.

    Args:
        event: A Tango event.

    Returns:
        True for ``SubSuccess`` and ``SubFail`` events.
    """
    return event_reason(event) in ("SubSuccess", "SubFail")


#: Reason of the error event Tango sends when ZeroMQ discarded events of a
#: subscription that is still working (the consumer fell behind).
MISSED_EVENTS_REASON = "API_MissedEvents"


def reports_missed_events(event: Any) -> bool:
    """Tell whether an error event only says that events were lost on the way.

    Such an event does not mean the subscription failed: it goes on delivering.

    Args:
        event: A Tango event.

    Returns:
        True if the event's first error has reason ``API_MissedEvents``.
    """
    errors: Sequence[Any] = getattr(event, "errors", None) or ()
    return bool(errors) and str(getattr(errors[0], "reason", "")) == MISSED_EVENTS_REASON


def make_error_event(
    attribute_trl: str,
    event_type: tango.EventType,
    errors: Sequence[tango.DevError],
) -> Any:
    """Build an error event like those Tango sends for a failed subscription.

    Args:
        attribute_trl: Full TRL of the attribute.
        event_type: Event type of the stream.
        errors: The errors to report.

    Returns:
        A ``tango.EventData`` with ``err`` true, the errors, and (PyTango >=
        10.1) ``event_reason`` ``SubFail``.
    """
    event_name = _EVENT_NAMES.get(str(getattr(event_type, "name", event_type)), "change")
    if ASYNC_SUBSCRIPTION:
        return tango.EventData(
            device_proxy=None,
            attr_name=attribute_trl,
            event_name=event_name,
            attr_value=None,
            event_reason=tango.EventReason.SubFail,
            errors=list(errors),
        )
    event = tango.EventData()
    event.attr_name = attribute_trl
    event.event = event_name
    event.attr_value = None
    event.err = True
    event.errors = list(errors)
    event.reception_date = tango.TimeVal.fromtimestamp(time.time())
    return event


def key_of(device: tango.DeviceProxy | str) -> DeviceKey:
    """Return the key of a device given as a proxy or a TRL.

    Args:
        device: A ``tango.DeviceProxy`` or a device TRL.

    Returns:
        The device key.

    Raises:
        TypeError: For anything else.
        ValueError: For a string that is not a device TRL.
    """
    if isinstance(device, tango.DeviceProxy):
        return proxy_key(device)
    return parse_device_trl(device, default_tango_host())
