"""The object ``invoke_lrc`` returns; dropping it ends the invocation."""

from __future__ import annotations

import weakref
from typing import Protocol, runtime_checkable

from .._lanes import LaneService
from .invocation import Invocation
from .service import lrc_service


@runtime_checkable
class LRCSubscriptionsProtocol(Protocol):
    """What :func:`invoke_lrc` returns: a handle on one invocation."""

    @property
    def command_id(self) -> str:
        """Identifier the device gave the command."""
        ...

    @property
    def protocol_version(self) -> int:
        """LRC protocol version used with the device."""
        ...

    def unsubscribe_lrc_events(self) -> None:
        """Stop calling the callback: unregister it from the scheduler (idempotent).

        This does not unsubscribe from Tango by itself: the scheduler does that when a
        stream has no callback left and is not kept by :func:`connect_lrc_interface`.
        """
        ...


class LrcSubscriptions:
    """The handle :func:`invoke_lrc` returns; losing it ends the invocation.

    It is the only object holding a strong reference to nothing but the invocation:
    the scheduler, the replay thread and the status checks refer to the invocation,
    never to the handle, so the handle's life is the user's to decide.
    """

    __slots__ = ("__weakref__", "_finalizer", "_invocation")

    def __init__(self, invocation: Invocation) -> None:
        """Make the handle of an invocation whose command has started."""
        self._invocation = invocation
        self._finalizer = weakref.finalize(self, _handle_dropped, invocation, lrc_service())
        self._finalizer.atexit = False

    @property
    def command_id(self) -> str:
        """Identifier the device gave the command."""
        return self._invocation.command_id

    @property
    def protocol_version(self) -> int:
        """LRC protocol version used with the device."""
        return self._invocation.protocol_version

    def unsubscribe_lrc_events(self) -> None:
        """Stop calling the callback and unregister it from the scheduler (idempotent)."""
        self._finalizer.detach()
        self._invocation.unsubscribe_lrc_events()

    def __repr__(self) -> str:
        """Return a short description."""
        return repr(self._invocation)


def _handle_dropped(invocation: Invocation, service: LaneService) -> None:
    """Finalizer of a handle: stop the calls at once, release the rest elsewhere.

    A finaliser can run inside any allocation of any thread, even one holding a
    lock the release needs: it takes no lock (``submit`` only puts a message).
    """
    invocation.stop_calls()
    service.submit(invocation, invocation.release_dropped)
