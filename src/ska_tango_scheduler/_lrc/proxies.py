"""Device proxies as the LRC client meets them: made from TRLs, named, keyed."""

from __future__ import annotations

from typing import Any

import tango

from .. import _compat


def as_proxy(device: Any) -> tango.DeviceProxy:
    """Return the proxy given, or a new one for a TRL.

    Args:
        device: A proxy (or an object with ``command_inout``), or a TRL.

    Returns:
        The proxy.

    Raises:
        TypeError: If ``device`` is neither.
        tango.DevFailed: If no proxy can be made for the TRL.
    """
    if isinstance(device, str):
        return tango.DeviceProxy(device)
    if isinstance(device, tango.DeviceProxy) or callable(getattr(device, "command_inout", None)):
        return device
    raise TypeError(f"proxy must be a tango.DeviceProxy or a device TRL, got {device!r}")


def device_name(proxy: tango.DeviceProxy) -> str:
    """Return the device's name, for messages (the proxy's repr if it cannot tell)."""
    try:
        return str(proxy.dev_name())
    except Exception:  # noqa: BLE001 - a name for messages only
        return repr(proxy)


def device_key(proxy: tango.DeviceProxy) -> str:
    """Return the device's canonical TRL as the scheduler writes it, else its plain name."""
    try:
        return _compat.key_of(proxy).trl
    except Exception:  # noqa: BLE001 - fall back to the plain name
        return device_name(proxy).lower()


def served_here(proxy: tango.DeviceProxy) -> bool:
    """Tell whether this process is the device's server (its monitor may be ours)."""
    try:
        util = tango.Util.instance(False)
    except Exception:  # noqa: BLE001 - not a device server
        return False
    try:
        util.get_device_by_name(device_name(proxy))
    except Exception:  # noqa: BLE001 - not one of ours
        return False
    return True
