"""Type aliases for code that uses the scheduler.

Second tier: the package root exports this module, not its names
(``DeviceType``, ``EventCallbackType``, ``EventDataType``, ``PushEventCallback``,
``QueueFactory``); import them from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeAlias, Union

import tango

from ._queues import EventQueue

__all__ = [
    "DeviceType",
    "EventCallbackType",
    "EventDataType",
    "PushEventCallback",
    "QueueFactory",
]

#: What an event callback receives: Tango's event data classes, including
#: error events (``err`` true) that Tango or the scheduler makes up.
EventDataType: TypeAlias = Union[  # noqa: UP007 - a runtime alias, readable in docs
    tango.EventData, tango.AttrConfEventData, tango.DataReadyEventData
]


class PushEventCallback(Protocol):
    """A Tango-style callback object: events go to its ``push_event`` method."""

    def push_event(self, event: EventDataType) -> None:
        """Receive one event.

        Args:
            event: The event.
        """


#: A callback registered with a scheduler: a callable taking the event, or
#: an object with a ``push_event`` method (as ``tango.utils.EventCallback``).
EventCallbackType: TypeAlias = Union[  # noqa: UP007
    Callable[[EventDataType], None], PushEventCallback
]

#: A device, named by a proxy or by its TRL.
DeviceType: TypeAlias = Union[tango.DeviceProxy, str]  # noqa: UP007

#: A function giving a new stream its queue.
QueueFactory: TypeAlias = Callable[[], EventQueue]
