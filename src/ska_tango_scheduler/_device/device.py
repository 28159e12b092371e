"""The ``SchedulerMixin`` class: a device's scheduler over the device's life cycle.

The class holds what PyTango must find in its own ``__dict__`` (device
properties, diagnostic attributes) and the methods PyTango calls; the
settings and their checks are in :mod:`.config`, the attribute table in
:mod:`.attributes`, the monitor gate in :mod:`.gate` and the change-event
thread in :mod:`.pusher`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, cast

import tango
from tango.server import BaseDevice, attribute, device_property

from .._tango_errors import has_reason
from ..scheduler import CallbackScheduler
from . import LOGGER, attributes, config, device_name, gate
from .config import CONFIGURATION_ERROR_REASON
from .pusher import DiagnosticsPusher

__all__ = ["SchedulerMixin"]

# How long delete_device waits for the diagnostics pusher thread.
_PUSHER_JOIN_TIMEOUT = 10.0
# How long delete_device waits for callbacks when the monitor stays held: a
# callback waiting for it cannot finish before delete_device returns anyway.
_KEPT_MONITOR_SHUTDOWN_WAIT = 0.2


class SchedulerMixin:
    """Give a Tango device its own :class:`CallbackScheduler` and diagnostic attributes.

    List it before ``tango.server.Device`` (or any class derived from it) in
    the bases; a :class:`TypeError` is raised at class definition otherwise.
    Every method that PyTango calls (``init_device``, ``delete_device``,
    ``always_executed_hook``, ``read_attr_hardware``) calls ``super()``, so
    the mixin composes with other device classes, and subclasses overriding
    them must call ``super()`` too.

    The twelve diagnostic attributes (``schedulerThreadCount`` ...
    ``schedulerDiagnostics``) are members of this class, made from one
    table (see :data:`DIAGNOSTIC_ATTRIBUTES`) when the module is imported.

    Attributes:
        scheduler_thread_count: Default number of worker threads, 1 to 128
            (the device property ``SchedulerThreadCount`` wins when set).
        scheduler_name: Default scheduler name; None means the device name
            (the device property ``SchedulerName`` wins when set).
        scheduler_slow_callback_duration: Default slow-callback threshold in
            seconds: a callback that runs longer is counted and logged (the
            device property ``SchedulerSlowCallbackDuration`` wins when set;
            0 or None turns the check off; at most 3,600).
        scheduler_diagnostics_period: Seconds between two checks of the
            diagnostic values, 0.05 to 3,600; change events are pushed at
            most once per period per attribute, and only for values that
            changed.
        scheduler_shutdown_timeout: Seconds ``delete_device`` waits for
            running callbacks when shutting the scheduler down, 0 to 3,600;
            None waits as long as they take. When the monitor cannot be released (see
            :attr:`monitor_released_by_allow_internal_threads`) it waits
            0.2 s at most: callbacks waiting for the monitor finish once
            ``delete_device`` (or ``Init``) has returned, and then end.
    """

    scheduler_thread_count: ClassVar[int] = 1
    scheduler_name: ClassVar[str | None] = None
    scheduler_slow_callback_duration: ClassVar[float | None] = 0.1
    scheduler_diagnostics_period: ClassVar[float] = 1.0
    scheduler_shutdown_timeout: ClassVar[float | None] = 30.0

    _scheduler_gate_obj: gate.InternalThreadsGate
    _scheduler_pusher: DiagnosticsPusher | None
    _scheduler_snapshot: tuple[float, dict[str, Any]] | None

    # Device properties: Tango property names are CamelCase.
    SchedulerThreadCount = config.THREAD_COUNT_PROPERTY  # noqa: N815
    SchedulerName = config.NAME_PROPERTY  # noqa: N815
    SchedulerSlowCallbackDuration = config.SLOW_CALLBACK_DURATION_PROPERTY  # noqa: N815

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Create the device; a bad scheduler configuration leaves it in FAULT.

        At start-up, the ``DevFailed`` that :meth:`init_device` raises for a
        bad configuration is caught here, so the device is exported in FAULT
        (its status says why) and the server's other devices start as usual.

        Args:
            *args: Passed on to the device class.
            **kwargs: Passed on to the device class.
        """
        try:
            super().__init__(*args, **kwargs)
        except tango.DevFailed as exc:
            fault = self.__dict__.get("_scheduler_fault")
            if fault is None or not has_reason(exc, CONFIGURATION_ERROR_REASON):
                raise

    @property
    def scheduler(self) -> CallbackScheduler:
        """The device's scheduler, created in ``init_device`` and shut down in ``delete_device``.

        It exists before the next class's ``init_device`` runs, so hooks
        called from there can use it.

        Raises:
            RuntimeError: The device has no scheduler: its configuration is
                bad (the message says why) or ``init_device`` has not run.
        """
        scheduler = self.__dict__.get("_scheduler_obj")
        if scheduler is None:
            fault = self.__dict__.get("_scheduler_fault")
            raise RuntimeError(fault or f"{self._device_name()} has no scheduler yet")
        return cast(CallbackScheduler, scheduler)

    @scheduler.setter
    def scheduler(self, value: CallbackScheduler) -> None:
        self.__dict__["_scheduler_obj"] = value

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check where the mixin sits in a device class, and help plain sub-mixins.

        For a device class, the mixin must come before PyTango's ``Device`` in
        the method resolution order, or its ``init_device`` would never run.
        For a plain class derived from the mixin (a mixin of mixins), the
        mixin's Tango attributes and properties are copied into the new class's
        ``__dict__``, where PyTango's ``DeviceMeta`` finds them when that class
        is listed directly in a device class's bases.

        Args:
            **kwargs: Passed on to ``super().__init_subclass__``.

        Raises:
            TypeError: If a device class lists a Device class before the mixin.
        """
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        if issubclass(cls, BaseDevice):
            if mro.index(SchedulerMixin) > mro.index(BaseDevice):
                raise TypeError(
                    f"{cls.__name__}: list SchedulerMixin before tango.server.Device (and any "
                    "class derived from it) in the bases, e.g. "
                    f"class {cls.__name__}(SchedulerMixin, Device)"
                )
            return
        for klass in mro[1:]:
            for key, value in vars(klass).items():
                if key not in cls.__dict__ and _is_tango_object(value):
                    setattr(cls, key, value)

    # -- life cycle ------------------------------------------------------------------

    def init_device(self) -> None:
        """Create the scheduler, initialise the rest of the device, start the pusher.

        The scheduler exists before the next class's ``init_device`` runs.

        Registering callbacks from ``init_device`` does not wait for the
        devices involved to be reachable, including devices of the same
        server, which are not exported yet at start-up: the scheduler keeps
        retrying and connects once they are. With PyTango >= 10.1 the
        registration returns at once. Before 10.1 it waits for one synchronous
        subscription attempt, which fails at once for a device that is not
        exported; subscribing to the device's *own* attribute during an
        ``Init`` command waits about 3.2 s there, because Tango's first read
        needs the device monitor that ``Init`` holds.
        """
        gate.device_gate(self)
        self._scheduler_pusher = None
        self._scheduler_snapshot = None
        self.__dict__["_scheduler_obj"] = None
        device = self._as_device()
        try:
            # Load the properties now (the base class loads them again) so that
            # the scheduler properties apply to the new scheduler.
            config.load_settings(self)
            scheduler = self.create_scheduler()
        except Exception as exc:  # noqa: BLE001 - any failure here is reported the same way
            config.fail(self, exc)
        if self.__dict__.pop("_scheduler_fault", None) is not None:
            # Fixed: back to the state a new device starts in.
            initial = getattr(self, "DEVICE_CLASS_INITIAL_STATE", None) or tango.DevState.UNKNOWN
            device.set_state(initial)
            device.set_status(
                getattr(self, "DEVICE_CLASS_INITIAL_STATUS", None)
                or f"The device is in {initial} state."
            )
        self.scheduler = scheduler
        try:
            super().init_device()  # type: ignore[misc]
            for name in attributes.EVENT_ATTRIBUTES:
                device.set_change_event(name, True, False)
            pusher = DiagnosticsPusher(
                self, self.scheduler, self.scheduler_diagnostics_period, LOGGER
            )
            pusher.start()
            self._scheduler_pusher = pusher
        except BaseException:
            self._shut_scheduler_down(self.scheduler)
            raise

    def delete_device(self) -> None:
        """Stop the diagnostics pusher, clean up the device, shut the scheduler down.

        The pusher is stopped and the scheduler shut down inside
        :meth:`allow_internal_threads`, so threads waiting for the device
        monitor can finish while client requests wait. The next class's
        ``delete_device`` runs in between, while the scheduler still works.
        """
        pusher = getattr(self, "_scheduler_pusher", None)
        self._scheduler_pusher = None
        if pusher is not None:
            pusher.request_stop()
            if self.monitor_released_by_allow_internal_threads:
                with self.allow_internal_threads():
                    if not pusher.join(_PUSHER_JOIN_TIMEOUT):
                        LOGGER.warning("%s: diagnostics thread did not stop", self._device_name())
            # Otherwise it ends by itself once it gets the monitor: it checks
            # the stop request under the monitor and pushes nothing more.
        try:
            super().delete_device()  # type: ignore[misc]
        finally:
            scheduler = self.__dict__.get("_scheduler_obj")
            self.__dict__["_scheduler_obj"] = None
            if scheduler is not None and not scheduler.is_shutdown:
                self._shut_scheduler_down(scheduler)
        self._check_configuration_before_init()

    def _check_configuration_before_init(self) -> None:
        """Fail an ``Init`` command with a bad scheduler configuration, clearly.

        ``Init`` runs ``delete_device`` and then ``init_device``. PyTango 10
        does not pass a ``DevFailed`` raised by ``init_device`` on to the
        client (it gets ``UNKNOWN CORBA system exception``); one raised by
        ``delete_device`` reaches it, and ends the command before
        ``init_device`` runs. So the new configuration is checked here, once
        the old scheduler is gone, unless the server is shutting down or
        restarting the device (its constructor checks it then).

        Raises:
            tango.DevFailed: The configuration is bad; the device is in FAULT.
        """
        try:
            util = tango.Util.instance(False)
            if util.is_svr_shutting_down() or util.is_device_restarting(self._device_name()):
                return
        except Exception:  # noqa: BLE001 - not in a device server
            return
        try:
            config.load_settings(self)
            self.scheduler_default_thread_count()
            self.scheduler_default_name()
            self.scheduler_default_slow_callback_duration()
        except Exception as exc:  # noqa: BLE001 - any failure is reported the same way
            config.fail(self, exc)

    def _shut_scheduler_down(self, scheduler: CallbackScheduler) -> None:
        timeout = self.scheduler_shutdown_timeout
        if not self.monitor_released_by_allow_internal_threads:
            timeout = (
                _KEPT_MONITOR_SHUTDOWN_WAIT
                if timeout is None
                else min(timeout, _KEPT_MONITOR_SHUTDOWN_WAIT)
            )
        with self.allow_internal_threads():
            scheduler.shutdown(timeout)

    def create_scheduler(self) -> CallbackScheduler:
        """Make the device's scheduler; called by every ``init_device``.

        Override it to choose queue sizes, a back-off policy or a logger.
        Device properties are loaded when it is called.

        Returns:
            A new scheduler named :meth:`scheduler_default_name` with
            :meth:`scheduler_default_thread_count` worker threads and
            :meth:`scheduler_default_slow_callback_duration` as its
            slow-callback threshold.
        """
        logger = getattr(self, "logger", None)
        # Never block init_device on a synchronous subscription (PyTango < 10.1):
        # one to this device's own attributes needs the monitor Init holds.
        return CallbackScheduler(
            thread_count=self.scheduler_default_thread_count(),
            name=self.scheduler_default_name(),
            logger=logger if isinstance(logger, logging.Logger) else None,
            wait_for_subscription=False,
            slow_callback_duration=self.scheduler_default_slow_callback_duration(),
        )

    # -- the settings in force ---------------------------------------------------------

    def scheduler_default_thread_count(self) -> int:
        """Return the thread count to use: the device property, else the class attribute.

        Returns:
            The number of worker threads.

        Raises:
            SchedulerConfigurationError: The value is not a number from 1 to 128.
        """
        configured = self.SchedulerThreadCount
        if configured is not None:
            return config.check_thread_count(configured, "SchedulerThreadCount")
        return config.check_thread_count(self.scheduler_thread_count, "scheduler_thread_count")

    def scheduler_default_name(self) -> str:
        """Return the scheduler name to use: the property, the class attribute, the device name.

        Returns:
            The scheduler name.

        Raises:
            SchedulerConfigurationError: The name is blank or not printable.
        """
        configured = self.SchedulerName
        if configured:
            return config.check_scheduler_name(configured, "SchedulerName")
        if self.scheduler_name is not None:
            return config.check_scheduler_name(self.scheduler_name, "scheduler_name")
        return self._device_name()

    def scheduler_default_slow_callback_duration(self) -> float | None:
        """Return the slow-callback threshold: the device property, else the class attribute.

        Returns:
            Seconds, or None when the check is off (a value of 0).

        Raises:
            SchedulerConfigurationError: The value is negative, not finite or
                above 3,600.
        """
        configured = self.SchedulerSlowCallbackDuration
        if configured is not None:
            return config.check_slow_callback_duration(configured, "SchedulerSlowCallbackDuration")
        return config.check_slow_callback_duration(
            self.scheduler_slow_callback_duration, "scheduler_slow_callback_duration"
        )

    # -- internal threads --------------------------------------------------------------

    def allow_internal_threads(self) -> AbstractContextManager[None]:
        """Let the device's own threads take the device monitor; hold client requests.

        Inside the block, the device monitor held by the calling thread is
        released (``tango.AutoTangoAllowThreads``), so threads of the device
        (scheduler callbacks, pushers, anything that takes the monitor with
        ``tango.AutoTangoMonitor`` or pushes events) can run and be joined.
        Client requests from other processes (commands, attribute reads and
        writes) and Tango's attribute polling that arrive meanwhile wait in
        ``always_executed_hook``, without the monitor, until no block is open
        any more: they never see the device half torn down. The monitor is
        taken back before the block ends. Blocks nest; the thread that opened
        a block is never held.

        Requests made by this very process (a callback reading its own
        device through a ``DeviceProxy``, Tango's own reads when it
        subscribes to one of the device's attributes, another device of the
        server) are not held: the block may be waiting for the very thread
        that made them. Telling them apart needs PyTango >= 10.1; older
        versions hold them too.

        A held request then waits for the monitor like any other: if the
        thread that ran the block keeps it for longer than Tango waits
        (about 3.2 s), the request fails with ``API_CommandTimedOut``, as it
        would have without the block.

        Subclasses that override ``always_executed_hook`` must call
        ``super().always_executed_hook()``, or requests are not held.

        Under the ``BY_CLASS`` and ``BY_PROCESS`` serial models the monitor
        cannot be released this way (PyTango 9.5 even hangs trying), and with
        PyTango < 10.1 releasing it can hang the server (see
        :data:`SAFE_MONITOR_RELEASE`): then the monitor stays held, a
        :class:`MonitorNotReleasableWarning` is issued and logged (once per
        device), and the block only holds client requests. Under ``NO_SYNC``
        no monitor is held and there is nothing to release.
        :attr:`monitor_released_by_allow_internal_threads` tells which case
        applies.

        Returns:
            The block: a context manager, used in a ``with`` statement.
        """
        return gate.internal_threads_block(self._as_device())

    @property
    def internal_threads_allowed(self) -> bool:
        """True while an :meth:`allow_internal_threads` block is open on any thread."""
        return gate.device_gate(self).open_blocks > 0

    @property
    def monitor_released_by_allow_internal_threads(self) -> bool:
        """Whether threads waiting for the device monitor can get it inside a block.

        True under the ``BY_DEVICE`` serial model with PyTango >= 10.1 (the
        monitor is released) and under ``NO_SYNC`` (no monitor is held).
        """
        return gate.monitor_released()

    def always_executed_hook(self) -> None:
        """Hold a client request while an :meth:`allow_internal_threads` block is open.

        While it waits the request does not hold the device monitor. Calls
        ``super().always_executed_hook()`` afterwards.
        """
        gate.hold_request(self._as_device())
        super().always_executed_hook()  # type: ignore[misc]

    # -- diagnostic attributes (made from the table: attributes.install) ---------------

    def read_attr_hardware(self, attr_list: Sequence[int]) -> None:
        """Start a new read request: its diagnostic attributes share one snapshot.

        Args:
            attr_list: Indexes of the attributes being read.
        """
        self._scheduler_snapshot = None
        super().read_attr_hardware(attr_list)  # type: ignore[misc]

    # -- helpers -------------------------------------------------------------------------

    def _as_device(self) -> tango.server.Device:
        return cast(tango.server.Device, self)

    def _device_name(self) -> str:
        return device_name(self)


attributes.install(SchedulerMixin)


def _is_tango_object(value: object) -> bool:
    """Tell whether PyTango's DeviceMeta would collect ``value`` from a class."""
    if isinstance(value, (attribute, device_property, tango.server.class_property)):
        return True
    return hasattr(value, "__tango_command__")
