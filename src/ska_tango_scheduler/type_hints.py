"""Type aliases for code that uses the scheduler."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias, Union

import tango

from ._queues import EventQueue

__all__ = ["DeviceType", "EventCallbackType", "EventDataType", "QueueFactory"]

#: What an event callback receives: Tango's event data classes, including
#: error events (``err`` true) that Tango or the scheduler makes up.
EventDataType: TypeAlias = Union[  # noqa: UP007 - a runtime alias, readable in docs
    tango.EventData, tango.AttrConfEventData, tango.DataReadyEventData
]

#: A callback registered with a scheduler.
EventCallbackType: TypeAlias = Callable[[EventDataType], None]

#: A device, named by a proxy or by its TRL.
DeviceType: TypeAlias = Union[tango.DeviceProxy, str]  # noqa: UP007

#: A function giving a new stream its queue.
QueueFactory: TypeAlias = Callable[[], EventQueue]
