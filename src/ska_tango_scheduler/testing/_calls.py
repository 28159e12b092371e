"""Count the Tango subscription calls made through a device proxy."""

from __future__ import annotations

import warnings
from typing import Any

import tango

__all__ = ["SubscriptionCallCounter"]


class SubscriptionCallCounter:
    """Wraps one proxy's ``subscribe_event`` and ``unsubscribe_event`` to count calls.

    Useful to check that something (a pinned stream, a connected LRC
    interface) makes no Tango subscription call. Only calls made through this
    proxy object are counted; the calls still go to Tango.

    Args:
        proxy: The proxy to watch. Its dynamic interface is unfrozen so that
            the two methods can be replaced on this instance.

    Attributes:
        subscribe: Calls made to ``subscribe_event`` so far.
        unsubscribe: Calls made to ``unsubscribe_event`` so far.
    """

    def __init__(self, proxy: tango.DeviceProxy) -> None:
        self.subscribe = 0
        self.unsubscribe = 0
        if hasattr(proxy, "unfreeze_dynamic_interface"):  # PyTango freezes proxies
            with warnings.catch_warnings():  # and warns when they are opened again
                warnings.simplefilter("ignore")
                proxy.unfreeze_dynamic_interface()
        subscribe, unsubscribe = proxy.subscribe_event, proxy.unsubscribe_event

        def counted_subscribe(*args: Any, **kwargs: Any) -> Any:
            self.subscribe += 1
            return subscribe(*args, **kwargs)

        def counted_unsubscribe(*args: Any, **kwargs: Any) -> Any:
            self.unsubscribe += 1
            return unsubscribe(*args, **kwargs)

        proxy.subscribe_event = counted_subscribe
        proxy.unsubscribe_event = counted_unsubscribe
