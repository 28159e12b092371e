"""Device servers built on the real ska-tango-base, for the interoperability suite.

Usage: python stb_servers.py CLASS INSTANCE [Tango options]

CLASS is one of:

* ``ReferenceV2``: ska-tango-base's own ``ReferenceSkaBaseDevice`` (LRC protocol 1 to 2);
* ``ReferenceV1``: the same, advertising protocol version 1 only;
* ``ReferenceSlow``: the same with power commands that take 6 s (to abort them);
* ``MixinBase``: ``class MixinBase(SchedulerMixin, SKABaseDevice)``;
* ``MixinReference``: ``class MixinReference(SchedulerMixin, ReferenceSkaBaseDevice)``.

The server name is ``Interop<CLASS>``.
"""

from __future__ import annotations

import sys

from ska_tango_base import SKABaseDevice
from ska_tango_base.testing.reference import (
    FakeBaseComponent,
    ReferenceBaseComponentManager,
    ReferenceSkaBaseDevice,
)
from tango.server import attribute, run

from ska_tango_scheduler import SchedulerMixin


class ReferenceV2(ReferenceSkaBaseDevice):  # type: ignore[misc]
    """ska-tango-base's reference device, under a name of this suite."""


class ReferenceV1(ReferenceSkaBaseDevice):  # type: ignore[misc]
    """The reference device as a server that speaks LRC protocol version 1 only."""

    @attribute(dtype=("int",), max_dim_x=2)  # type: ignore[misc]
    def lrcProtocolVersions(self) -> tuple[int, int]:  # noqa: N802
        """Advertise version 1 only."""
        return (1, 1)


class ReferenceSlow(ReferenceSkaBaseDevice):  # type: ignore[misc]
    """The reference device with power commands slow enough to be aborted."""

    def create_component_manager(self) -> ReferenceBaseComponentManager:
        """Give the device a component that takes 6 s per power command."""
        return ReferenceBaseComponentManager(
            self.logger,
            self._communication_state_changed,
            self._component_state_changed,
            _component=FakeBaseComponent(time_to_complete=6.0),
        )


class MixinBase(SchedulerMixin, SKABaseDevice):  # type: ignore[misc]
    """The scheduler mixin on SKABaseDevice."""


class MixinReference(SchedulerMixin, ReferenceSkaBaseDevice):  # type: ignore[misc]
    """The scheduler mixin on ska-tango-base's reference device."""


CLASSES = {
    c.__name__: c for c in (ReferenceV2, ReferenceV1, ReferenceSlow, MixinBase, MixinReference)
}


if __name__ == "__main__":
    name, *rest = sys.argv[1:]
    run((CLASSES[name],), args=[f"Interop{name}", *rest])
