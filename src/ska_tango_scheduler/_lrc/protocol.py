"""The LRC wire protocol: version negotiation, attribute names, value decoding.

Version 2 sends each update of a command as ``(command_id, json_object)`` on one
attribute, ``_lrcEvent``. Version 1 sends flat ``[id1, value1, id2, value2, ...]``
lists on three attributes (status, progress, result). A command's reply is
``([result_code], [text])``; the text of an accepted command is its identifier.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import tango

from ..control_model import ResultCode
from .errors import NoCommonProtocolVersionError, ResultCodeError
from .proxies import device_name

SUPPORTED_PROTOCOL_VERSIONS: tuple[int, int] = (1, 2)
VERSIONS_ATTRIBUTE = "lrcProtocolVersions"
V2_ATTRIBUTES = ("_lrcEvent",)
V1_STATUS = "longRunningCommandStatus"
V1_PROGRESS = "longRunningCommandProgress"
V1_RESULT = "longRunningCommandResult"
V1_ATTRIBUTES = (V1_STATUS, V1_PROGRESS, V1_RESULT)


def negotiate_lrc_protocol_version(proxy: tango.DeviceProxy) -> int:
    """Agree on the LRC protocol version to use with a device.

    The device's ``lrcProtocolVersions`` attribute, when it has one, holds the
    ``(min, max)`` versions it serves; the highest version both sides speak is chosen.
    A device without the attribute speaks version 1.

    Args:
        proxy: Proxy of the device.

    Returns:
        The version to use.

    Raises:
        NoCommonProtocolVersionError: If the ranges do not overlap.
        tango.DevFailed: If the device cannot be asked.
    """
    names = {str(name).lower() for name in proxy.get_attribute_list()}
    if VERSIONS_ATTRIBUTE.lower() not in names:
        server: tuple[int, ...] = (1, 1)
    else:
        value = proxy.read_attribute(VERSIONS_ATTRIBUTE).value
        server = tuple(int(v) for v in value) if value is not None else ()
    low, high = SUPPORTED_PROTOCOL_VERSIONS
    if not server or server[0] > high or server[-1] < low or server[0] > server[-1]:
        raise NoCommonProtocolVersionError(device_name(proxy), SUPPORTED_PROTOCOL_VERSIONS, server)
    return min(server[-1], high)


def lrc_attribute_names(protocol_version: int) -> tuple[str, ...]:
    """Return the attributes whose change events carry LRC updates in a protocol version.

    Args:
        protocol_version: 1 or 2.

    Returns:
        The attribute names, as devices declare them.

    Raises:
        ValueError: For a version this client does not speak.
    """
    if protocol_version == 2:
        return V2_ATTRIBUTES
    if protocol_version == 1:
        return V1_ATTRIBUTES
    raise ValueError(f"LRC protocol version {protocol_version} is not supported")


def stream_kinds(protocol_version: int) -> tuple[str, ...]:
    """Return the kind of update each attribute of :func:`lrc_attribute_names` carries."""
    return ("v2",) if protocol_version == 2 else ("status", "progress", "result")


def parse_reply(reply: Any, command: str, device: str) -> tuple[int, str]:
    """Split a command's reply into its result code and text.

    Args:
        reply: What ``command_inout`` returned.
        command: The command, for the message.
        device: The device, for the message.

    Returns:
        ``(result_code, text)``.

    Raises:
        ResultCodeError: If the reply is not ``([result_code], [text])``.
    """
    try:
        codes, texts = reply
        code = int(codes[0])
        text = str(texts[0]) if len(texts) else ""
    except (TypeError, ValueError, IndexError) as exc:
        raise ResultCodeError(
            f"{device} replied to {command} with {reply!r}, not ([result_code], [text])"
        ) from exc
    return code, text


def code_name(code: int) -> str:
    """Return a result code's name, or the number if it names none."""
    try:
        return ResultCode(code).name
    except ValueError:
        return str(code)


def lookup(flat: Sequence[Any], command_id: str | None) -> str | None:
    """Find the value paired with ``command_id`` in ``[id1, v1, id2, v2, ...]`` (last wins)."""
    found = None
    for index in range(0, len(flat) - 1, 2):
        if flat[index] == command_id:
            found = str(flat[index + 1])
    return found


def progress_value(text: str) -> Any:
    """Return a version 1 progress as an int when it is one, else as the text."""
    try:
        return int(text)
    except ValueError:
        return text


def decode(text: str) -> Any:
    """Return a JSON text decoded, or the text itself if it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text
